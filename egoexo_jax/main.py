"""Entry point: ``python -m egoexo_jax.main --config=configs/<recipe>.py[:variant] --workdir=DIR``
(``egoexo-train`` once the package is installed).

``config.mode``: ``train`` (resumes from the newest checkpoint in DIR), ``evaluate`` (multi-view
test of a checkpoint) or ``demo`` (the bundled synthetic demo, ``configs/demo.py``). Overrides
use ml_collections syntax, ``--config.batch_size=8``; a key that does not exist is an error that
suggests the closest existing key. Multi-process launches (TPU pods, SLURM, or the
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` environment) initialise
``jax.distributed`` before anything touches a device.

The config is validated (ranges, and the batch against the device count and BatchNorm groups)
before any data or model is built. A user's mistake ends with one line on stderr,
``error: <what>, <where>, <what was expected>``, and exit status 2 (``--debug`` adds the
traceback); a SIGTERM-stopped training run exits 75 (preempted, resumable). See ``egoexo_jax.cli``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from egoexo_jax import cli, hostenv
from egoexo_jax.preemption import Preemption

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file, optionally file.py:variant.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_DEBUG = flags.DEFINE_bool("debug", False, "Print the traceback of user errors too (bugs always show it).")


def _fail(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)
    sys.exit(cli.EXIT_USER_ERROR)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        _run(_CONFIG.value, _WORKDIR.value)
    except (Exception, cli.Preempted) as e:  # pylint: disable=broad-except
        if not cli.handles(e):
            raise  # a bug: keep the traceback
        code = cli.report(e, debug=_DEBUG.value, where=_WORKDIR.value or "")
        # Checkpoints and logs are closed by now (train's finally). Leave without the interpreter's
        # teardown, where failed background writes (orbax's asyncio tasks) would each print a
        # traceback after the one line that matters.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # pylint: disable=protected-access


def _run(config, workdir: str) -> None:
    import jax  # pylint: disable=import-outside-toplevel

    from egoexo_jax import batch_scaling, config_schema, sharding  # pylint: disable=import-outside-toplevel

    sharding.maybe_initialize_distributed()
    cli.quiet_disk_error_tracebacks()
    config = batch_scaling.resolve_batch(config, jax.device_count())
    config_schema.validate(config, num_devices=jax.device_count(), num_processes=jax.process_count())
    logging.info("config:\n%s", config)
    if config.mode == "train":
        from egoexo_jax import train_loop  # pylint: disable=import-outside-toplevel

        train_loop.train_and_evaluate(config, workdir)
    elif config.mode == "evaluate":
        from egoexo_jax import evaluate  # pylint: disable=import-outside-toplevel

        evaluate.evaluate_only(config, workdir)
    else:
        from egoexo_jax import demo  # pylint: disable=import-outside-toplevel

        demo.run_demo(config, workdir)


def _parse_flags(argv):
    """absl flag parsing with flag errors (a bad override value) as one ``error:`` line, exit 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(" ".join(str(e).split()))


def run():
    """``egoexo-train`` and ``python -m egoexo_jax.main``: host set-up, the recipe checks, then absl.

    A SIGTERM from here until the training loop takes over ends the process with exit 75 (this
    module imports the heavy libraries only after the handler is installed)."""
    hostenv.prepare_process()
    with Preemption():
        try:
            _run_command()
        except cli.Preempted as e:
            sys.exit(cli.report(e))


def _run_command():
    from egoexo_jax import recipe  # pylint: disable=import-outside-toplevel

    argv = sys.argv
    if "--help" in argv[1:] or "-h" in argv[1:]:  # the same help as the other entry points, exit 0
        module = flags.FLAGS.find_module_defining_flag(_WORKDIR.name)
        print(
            f"{__doc__.strip()}\n\nflags of python -m egoexo_jax.main:\n{flags.FLAGS.module_help(module)}\n"
            "(--helpfull: every flag, also absl's)"
        )
        sys.exit(0)
    try:
        recipe.check_argv(argv[1:])
    except cli.UserError as e:
        _fail(cli.message(e))
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
