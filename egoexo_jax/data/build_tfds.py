"""Command line for packing a dataset into TFDS ArrayRecord shards (see `tfds_builders.py`).

    python -m egoexo_jax.data.build_tfds --dataset kinetics --manual_dir data/kinetics \
        --path_prefix data/kinetics/videos --data_dir /path/to/tfds

Then set `source="tfds"` and `tfds_data_dir="/path/to/tfds"` in the data config.
"""

from __future__ import annotations

import argparse

from egoexo_jax.data import tfds_builders


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Pack a dataset into TFDS ArrayRecord shards.")
    parser.add_argument("--dataset", required=True, choices=sorted(tfds_builders.BUILDERS))
    parser.add_argument("--manual_dir", required=True, help="folder with the split lists")
    parser.add_argument("--data_dir", required=True, help="TFDS data dir to write")
    parser.add_argument("--path_prefix", default=None, help="media root (default: manual_dir)")
    args = parser.parse_args(argv)
    skipped = tfds_builders.build(
        args.dataset, manual_dir=args.manual_dir, data_dir=args.data_dir, path_prefix=args.path_prefix
    )
    for what, why in skipped:
        print(f"left out: {what}\t{why}")
    print(f"done: {args.data_dir}; {len(skipped)} items left out")


if __name__ == "__main__":
    main()
