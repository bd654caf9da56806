"""``python -m egoexo_jax.convert --input CKPT.pyth --output DIR`` (no torch needed).

Reads a PySlowFast / Ego-Exo checkpoint, rebuilds its architecture from the stored
config, maps every weight and writes an orbax checkpoint directory that
``--config.init_from=DIR`` accepts. Errors are one line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m egoexo_jax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="PySlowFast .pyth checkpoint")
    parser.add_argument("--output", required=True, help="directory to write (must not hold variables/)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from egoexo_jax.convert.export import save_converted
    from egoexo_jax.convert.pyslowfast import ConversionError, convert_checkpoint
    from egoexo_jax.convert.torch_zip import CheckpointReadError

    steps = tqdm(total=2, desc="convert", unit="step", file=sys.stderr, leave=False,
                 disable=None)  # no bar when stderr is not a terminal (logs, pipes)
    try:
        conversion = convert_checkpoint(args.input)
        steps.update()
        summary = save_converted(conversion, args.output, args.input)
        steps.update()
    except (CheckpointReadError, ConversionError, FileExistsError, OSError) as e:
        steps.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    steps.close()
    print(f"converted {summary['model_name']} ({summary['arch']}, {summary['num_params']:,} parameters, "
          f"{summary['num_mapped_keys']} keys) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
