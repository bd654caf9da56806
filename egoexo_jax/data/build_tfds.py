"""Command line for packing a dataset into TFDS ArrayRecord shards (see `tfds_builders.py`).

    python -m egoexo_jax.data.build_tfds --dataset kinetics --manual_dir data/kinetics \
        --path_prefix data/kinetics/videos --data_dir /path/to/tfds

Then set `source="tfds"` and `tfds_data_dir="/path/to/tfds"` in the data config.

Every folder may be a `gs://` URL. A `gs://` `--data_dir` is built in a local temporary folder
(`--tmp_dir`, room for the whole build) and then copied to the bucket (ArrayRecord writes local files
only); the last line says so.
"""

from __future__ import annotations

import argparse

from egoexo_jax import storage
from egoexo_jax.data import tfds_builders


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Pack a dataset into TFDS ArrayRecord shards.")
    parser.add_argument("--dataset", required=True, choices=sorted(tfds_builders.BUILDERS))
    parser.add_argument("--manual_dir", required=True, help="folder with the split lists")
    parser.add_argument("--data_dir", required=True, help="TFDS data dir to write")
    parser.add_argument("--path_prefix", default=None, help="media root (default: manual_dir)")
    parser.add_argument(
        "--tmp_dir",
        default=None,
        help="local folder for the build when --data_dir is gs:// (default: the system's temporary folder)",
    )
    args = parser.parse_args(argv)
    skipped = tfds_builders.build(
        args.dataset,
        manual_dir=args.manual_dir,
        data_dir=args.data_dir,
        path_prefix=args.path_prefix,
        tmp_dir=args.tmp_dir,
    )
    for what, why in skipped:
        print(f"left out: {what}\t{why}")
    how = "; built in a local temporary folder and copied to the bucket" if storage.is_url(args.data_dir) else ""
    print(f"done: {args.data_dir}{how}; {len(skipped)} items left out")


if __name__ == "__main__":
    main()
