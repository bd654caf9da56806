"""Running a recipe at another batch size: the batch from the devices at hand, and the linear
LR-scaling rule the trainer applies itself (base LR and warm-up start LR, logged once)."""

import json
import os
import subprocess
import sys

import pytest

from egoexo_jax import batch_scaling, config_schema, train_setup

import fake_media
import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALED = "base_lr 0.05 -> 0.0125, warmup_start_lr 0.005 -> 0.00125"  # tiny config at batch 8 of 32


@pytest.fixture(scope="module")
def kin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    fake_media.write_kinetics_dataset(root, [40] * tiny_config.NUM_CLASSES, height=48, width=64)
    return str(root)


def test_batch_from_devices_is_the_recipes_per_device_batch_times_the_devices():
    c = tiny_config.get_config("")
    assert batch_scaling.resolve_batch(c, 8) is c  # off by default: the recipe's batch
    c.batch_from_devices = True
    c.per_device_batch_size = 3
    resolved = batch_scaling.resolve_batch(c, 4)
    assert (resolved.batch_size, resolved.eval_batch_size) == (12, 12)
    assert c.batch_size == 8  # the given config is not changed
    assert batch_scaling.resolve_batch(resolved, 4).batch_size == 12  # resolving twice: the same


def test_linear_rule_scales_base_and_warmup_start_lr_only(capsys):
    c = tiny_config.get_config("")  # base_lr 0.05, warm-up from 0.005, batch 8 = reference 8
    assert batch_scaling.scaled_learning_rates(c) is c and capsys.readouterr().out == ""
    c.optimizer.reference_batch_size = 32
    c.schedule.cosine_end_lr = 1e-4
    scaled = batch_scaling.scaled_learning_rates(c)
    assert scaled.optimizer.base_lr == pytest.approx(0.0125)
    assert scaled.schedule.warmup_start_lr == pytest.approx(0.00125)
    assert scaled.schedule.cosine_end_lr == 1e-4  # an absolute floor
    assert (c.optimizer.base_lr, c.schedule.warmup_start_lr) == (0.05, 0.005)
    assert SCALED in capsys.readouterr().out
    c.optimizer.scale_lr_with_batch = False
    assert batch_scaling.scaled_learning_rates(c) is c and capsys.readouterr().out == ""


def test_the_trainer_builds_its_schedule_from_the_scaled_rates(kin_root, tmp_path, capsys):
    c = tiny_config.get_config(kin_root)
    c.optimizer.reference_batch_size = 32
    config_schema.validate(c)
    run = train_setup.setup(c, str(tmp_path))
    run.train_iter.close()
    assert SCALED in capsys.readouterr().out
    assert float(run.schedule(0)) == pytest.approx(0.00125)  # the warm-up starts at the scaled LR
    c.optimizer.scale_lr_with_batch = False
    run = train_setup.setup(c, str(tmp_path))
    run.train_iter.close()
    assert float(run.schedule(0)) == pytest.approx(0.005)
    assert "linear LR scaling" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_with_another_batch_logs_and_uses_the_scaled_rates(kin_root, tmp_path):
    """``--config.batch_size=8`` on a recipe tuned for 32 clips: one line at the start, and the
    LR of the first step (the warm-up start) in metrics.jsonl is the scaled one."""
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "egoexo_jax.main",
            f"--config={REPO}/tests/tiny_config.py:{kin_root}",
            f"--workdir={workdir}",
            "--config.optimizer.reference_batch_size=32",
            "--config.batch_size=8",
            "--config.total_steps=2",
            "--config.checkpoint.every_steps=0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("linear LR scaling")]
    assert len(lines) == 1 and SCALED in lines[0] and "batch 8 vs the recipe's reference batch 32" in lines[0]
    with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
        first = json.loads(f.readline())
    assert first["step"] == 1 and first["lr"] == pytest.approx(0.00125, rel=1e-5)
