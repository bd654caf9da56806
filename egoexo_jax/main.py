"""Entry point: ``python -m egoexo_jax.main --config=configs/<recipe>.py[:variant] --workdir=DIR``.

``config.mode``: ``train`` (resumes from the newest checkpoint in DIR), ``evaluate`` (multi-view
test of a checkpoint) or ``demo`` (the bundled synthetic demo, ``configs/demo.py``). Overrides
use ml_collections syntax, ``--config.batch_size=8``; a key that does not exist is an error that
suggests the closest existing key. Multi-process launches (TPU pods, SLURM, or the
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` environment) initialise
``jax.distributed`` before anything touches a device.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from egoexo_jax import config_schema

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file, optionally file.py:variant.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")


def _load_config_file(spec: str):
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise SystemExit(f"error: --config={spec}: file {path} not found")
    module_spec = importlib.util.spec_from_file_location("_egoexo_recipe", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def check_overrides(argv) -> None:
    """Fails early, with a suggestion, on ``--config.<key>`` overrides naming no existing key."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return
    keys = None
    for arg in argv:
        if not arg.startswith("--config.") or arg.startswith("--config=" ):
            continue
        name = arg[len("--config."):].split("=", 1)[0]
        if keys is None:
            config = _load_config_file(spec)
            keys = set(config_schema.all_keys(config))
        if name not in keys:
            raise SystemExit(f"error: --config.{name}: {config_schema.unknown_key_message(name, config)}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from egoexo_jax import sharding  # pylint: disable=import-outside-toplevel
    sharding.maybe_initialize_distributed()
    config = _CONFIG.value
    try:
        config_schema.validate(config)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    workdir = _WORKDIR.value
    logging.info("config:\n%s", config)
    if config.mode == "train":
        from egoexo_jax import train  # pylint: disable=import-outside-toplevel
        train.train_and_evaluate(config, workdir)
    elif config.mode == "evaluate":
        from egoexo_jax import train  # pylint: disable=import-outside-toplevel
        train.evaluate_only(config, workdir)
    else:
        from egoexo_jax import demo  # pylint: disable=import-outside-toplevel
        demo.run_demo(config, workdir)


def run():
    check_overrides(sys.argv[1:])
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    from egoexo_jax import hostenv

    hostenv.prepare_process()
    run()
