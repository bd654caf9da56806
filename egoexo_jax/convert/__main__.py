"""``python -m egoexo_jax.convert --input=CKPT.pyth --output=DIR`` (no torch needed; ``egoexo-convert``
takes the same flags once the package is installed).

Reads a PySlowFast / Ego-Exo checkpoint, rebuilds its architecture from the stored
config, maps every weight and writes an orbax checkpoint directory that
``--config.init_from=DIR`` accepts. Either path may be a ``gs://`` URL. Errors are one line on
stderr, exit status 2 (``--debug`` adds the traceback).
"""

from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from absl import flags

from egoexo_jax import cli, hostenv, storage

PROG = "python -m egoexo_jax.convert"


def _define_flags(fv: flags.FlagValues, argv: List[str]) -> None:  # pylint: disable=unused-argument
    flags.DEFINE_string("input", None, "PySlowFast .pyth checkpoint.", flag_values=fv)
    flags.DEFINE_string("output", None, "Directory to write (must not hold variables/).", flag_values=fv)


def _convert(fv: flags.FlagValues) -> int:
    source = storage.check(fv.input, "--input")
    storage.check(fv.output, "--output")
    if storage.isdir(source):
        raise cli.InputError(f"a folder, --input={source}, expected a PySlowFast .pyth checkpoint file")
    if not storage.isfile(source):
        raise cli.MissingFileError(f"no such file, --input={source}, expected a PySlowFast .pyth checkpoint file")
    # Imported here: --help, flag errors and a missing input answer without loading JAX and the models.
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    from egoexo_jax.checkpoint.converted import save_converted  # pylint: disable=import-outside-toplevel
    from egoexo_jax.convert.pyslowfast import convert_checkpoint  # pylint: disable=import-outside-toplevel

    # disable=None: no bar when stderr is not a terminal (logs, pipes).
    steps = tqdm(total=2, desc="convert", unit="step", file=sys.stderr, leave=False, disable=None)
    try:
        conversion = convert_checkpoint(source)
        steps.update()
        summary = save_converted(conversion, fv.output, source)
        steps.update()
    except FileExistsError as e:  # an --output that holds a conversion already
        raise cli.InputError(str(e)) from None
    finally:
        steps.close()
    print(
        f"converted {summary['model_name']} ({summary['arch']}, {summary['num_params']:,} parameters, "
        f"{summary['num_mapped_keys']} keys) -> {fv.output}"
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return cli.run_command(
        PROG, __doc__, _define_flags, _convert, argv, required=("input", "output"), where_flag="output"
    )


def run() -> None:
    """``egoexo-convert`` and ``python -m egoexo_jax.convert``."""
    hostenv.prepare_process()
    sys.exit(main())


if __name__ == "__main__":
    run()
