"""``python -m egoexo_jax.convert --input CKPT.pyth --output DIR`` (no torch needed).

Reads a PySlowFast / Ego-Exo checkpoint, rebuilds its architecture from the stored
config, maps every weight and writes an orbax checkpoint directory that
``--config.init_from=DIR`` accepts. Errors are one line on stderr, exit status 2 (``--debug`` adds
the traceback).
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m egoexo_jax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="PySlowFast .pyth checkpoint")
    parser.add_argument("--output", required=True, help="directory to write (must not hold variables/)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of user errors too")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from egoexo_jax import cli
    from egoexo_jax.checkpoint.converted import save_converted
    from egoexo_jax.convert.pyslowfast import convert_checkpoint

    steps = tqdm(total=2, desc="convert", unit="step", file=sys.stderr, leave=False,
                 disable=None)  # no bar when stderr is not a terminal (logs, pipes)
    try:
        conversion = convert_checkpoint(args.input)
        steps.update()
        summary = save_converted(conversion, args.output, args.input)
        steps.update()
    except FileExistsError as e:  # an --output that holds a conversion already
        steps.close()
        print(f"error: {e}", file=sys.stderr)
        return cli.EXIT_USER_ERROR
    except Exception as e:  # pylint: disable=broad-except
        steps.close()
        if not cli.handles(e):
            raise  # a bug: keep the traceback
        return cli.report(e, debug=args.debug, where=args.output)
    steps.close()
    print(f"converted {summary['model_name']} ({summary['arch']}, {summary['num_params']:,} parameters, "
          f"{summary['num_mapped_keys']} keys) -> {args.output}")
    return 0


if __name__ == "__main__":
    from egoexo_jax import hostenv

    hostenv.prepare_process()
    sys.exit(main())
