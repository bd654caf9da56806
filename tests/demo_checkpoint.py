"""A tiny trained Ego-Exo demo checkpoint shared by the predict and notebook tests (one per session).

It is what ``launch/colab_demo.ipynb`` makes in quick mode (``EGOEXO_NOTEBOOK_QUICK=1``): the demo
data generator at tiny size, then the demo's Ego-Exo pre-training stage
(``configs/demo.py:pretrain``) for 2 steps through the training CLI, on one CPU device. The
notebook test points the notebook at the same folder, so its training command resumes at step 2
instead of training again. Keep ``QUICK_DATA`` / ``QUICK_OVERRIDES`` equal to the notebook's.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICK_DATA = dict(
    seed=0, num_pretrain_videos=16, num_finetune_videos=4, height=48, width=64, num_frames=16, finetune_frames=8
)
QUICK_OVERRIDES = (
    "--config.total_steps=2",
    "--config.test_at_end=False",
    "--config.checkpoint.every_steps=2",
    "--config.log_every_steps=1",
)
QUICK_STEPS = 2


def one_device_env(**extra) -> dict:
    """``os.environ`` without the tests' 8 fake CPU devices (a laptop / Colab CPU), plus ``extra``."""
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def train_quick_demo(root: pathlib.Path) -> pathlib.Path:
    """Writes the quick demo data under ``root/data`` and trains ``root/pretrain_egoexo``."""
    from egoexo_jax.demo_data import demo_sets  # pylint: disable=import-outside-toplevel

    paths = demo_sets.write_demo_data(root / "data", **QUICK_DATA)
    workdir = root / "pretrain_egoexo"
    cmd = [
        sys.executable,
        "-m",
        "egoexo_jax.main",
        "--config=configs/demo.py:pretrain",
        f"--workdir={workdir}",
        *QUICK_OVERRIDES,
    ]
    proc = subprocess.run(
        cmd, env=one_device_env(EGOEXO_DEMO_DATA=paths.root), cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def quick_demo_root(tmp_path_factory) -> pathlib.Path:
    """Folder with ``data/`` (quick demo data) and ``pretrain_egoexo/`` (trained 2 steps)."""
    root = tmp_path_factory.getbasetemp() / "quick_demo"
    if not (root / "pretrain_egoexo" / "checkpoints" / str(QUICK_STEPS)).is_dir():
        train_quick_demo(root)
    return root
