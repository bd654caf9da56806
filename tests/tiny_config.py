"""A tiny SlowFast training config on a generated Kinetics-format folder (tests only).

``get_config("DATA_ROOT")``: DATA_ROOT holds ``train.csv``/``val.csv``/``test.csv`` and the videos
(``tests/fake_media.py``: ``write_kinetics_dataset``). Usable as a recipe file:
``python -m egoexo_jax.main --config=tests/tiny_config.py:DATA_ROOT --workdir=...``.
"""

import os
import pathlib
import sys

from egoexo_jax import config_schema
from egoexo_jax.models import presets

NUM_CLASSES = 8
REPO = pathlib.Path(__file__).resolve().parents[1]


def main_command(data_root, workdir, *overrides) -> list:
    """``python -m egoexo_jax.main`` on this config over ``data_root``, as the subprocess tests run it."""
    return [
        sys.executable,
        "-m",
        "egoexo_jax.main",
        f"--config={REPO}/tests/tiny_config.py:{data_root}",
        f"--workdir={workdir}",
        *overrides,
    ]


def main_env(**extra) -> dict:
    """The environment of those subprocesses: the repository first on PYTHONPATH, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def get_config(data_root: str = ""):
    c = config_schema.base_config()
    c.model = presets.slowfast(
        18, width_per_group=8, num_frames=8, crop_size=64, num_classes=(NUM_CLASSES,), bn_group_size=4, dropout_rate=0.5
    )
    c.data.update(
        path_to_data_dir=data_root,
        path_prefix=data_root,
        num_frames=8,
        sampling_rate=2,
        train_jitter_scales=(64, 80),
        train_crop_size=64,
        test_crop_size=64,
        num_ensemble_views=2,
        num_spatial_crops=1,
        num_classes=NUM_CLASSES,
        num_threads=1,
        prefetch=1,
    )
    c.batch_size = 8
    c.eval_batch_size = 8
    c.optimizer.reference_batch_size = 8  # the LRs below are for batch 8: no linear scaling
    c.num_epochs = 4.0
    c.optimizer.base_lr = 0.05
    c.schedule.warmup_epochs = 1.0
    c.schedule.warmup_start_lr = 0.005
    c.log_every_steps = 1
    c.eval_every_epochs = 0.0
    c.test_at_end = False
    c.checkpoint.every_epochs = 0.0
    c.checkpoint.every_steps = 2
    c.checkpoint.keep = 2
    return c
