"""The benchmark scripts run end to end at dry-run sizes and end with one JSON line.

CI has no torch, so the JAX side is what runs here; the torch-missing path is simulated with a
``sys.modules['torch'] = None`` entry (``import torch`` then raises ImportError) in a subprocess,
and, where torch is installed, the reference is skipped with ``--no-torch`` in-process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402  pylint: disable=wrong-import-position


def _last_json(text: str) -> dict:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return json.loads(lines[-1])


def test_train_step_dry_run_without_torch(capsys):
    import train_step  # pylint: disable=import-outside-toplevel

    train_step.main(["--dry-run", "--models", "slow_r50", "--heads", "on", "--no-torch", "--steps", "1"])
    out = capsys.readouterr().out
    result = _last_json(out)
    assert "disabled (--no-torch)" in out
    assert result["benchmark"] == "train_step"
    assert result["slow_r50_speedup"] is None  # no reference to divide by
    run = result["runs"][0]
    assert run["model"] == "slow_r50" and run["size"] == "dry" and run["heads"] is True
    j = run["jax"]
    assert j["compile_s"] > 0 and j["clips_per_s"] > 0 and j["flops_per_step"] > 0
    assert j["host_rss_peak_mb"] > 0 and len(j["step_s"]) == 1
    assert result["machine"]["nproc"] >= 1 and result["machine"]["jax"]
    assert "torch" not in run


def test_evaluate_dry_run(capsys):
    import evaluate  # pylint: disable=import-outside-toplevel

    evaluate.main(["--dry-run", "--model", "slow_r50", "--videos", "1"])
    result = _last_json(capsys.readouterr().out)
    assert result["benchmark"] == "evaluate" and result["views_per_video"] == 30
    assert result["videos_per_s"] > 0 and result["compile_s"] > 0
    # Softmax scores summed over 30 views: every video's ensembled scores sum to 30.
    assert result["ensembled_sum_check"] == pytest.approx(30.0, rel=1e-3)


def test_missing_torch_prints_a_clear_skip_message():
    """``import torch`` fails (sys.modules entry None) -> the skip message, and no exception."""
    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, %r); import common; "
            "t = common.import_torch(); print('RESULT', t is None)" % str(BENCH))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ), check=True)
    assert "torch is not installed: skipping the PyTorch reference" in proc.stdout
    assert "RESULT True" in proc.stdout


def test_train_step_cli_parses_gpu_defaults():
    import train_step  # pylint: disable=import-outside-toplevel

    args = train_step.parse_args(["--device", "gpu", "--dtype", "bfloat16"])
    assert args.peak_tflops == 989.0 and args.sizes == "reduced"
    dry = train_step.parse_args(["--dry-run", "--steps", "8"])
    assert dry.sizes == "dry" and dry.steps == 2


@pytest.mark.parametrize("model", common.MODELS)
def test_experiment_configs_match_the_recipes(model):
    full = common.experiment_config(model, "full", heads=True)
    assert full.model.crop_size == 224 and full.loss.ego == 0.1 and full.model.interaction_head
    off = common.experiment_config(model, "reduced", heads=False)
    assert not off.model.interaction_head and off.loss.hand == 0.0 and off.loss.ce == 1.0
    assert off.data.num_frames == common.SHAPES[(model, "reduced")]["frames"]


def test_gpu_script_has_a_dry_run():
    text = (BENCH / "gpu.sh").read_text()
    assert "--dry-run" in text and "bfloat16" in text and "evaluate.py" in text
