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

import common  # benchmarks/common.py (pytest.ini puts benchmarks/ on the import path)
from conftest import REPO

BENCH = REPO / "benchmarks"


def _last_json(text: str) -> dict:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return json.loads(lines[-1])


@pytest.mark.slow
def test_train_step_dry_run_without_torch(capsys):
    import train_step  # pylint: disable=import-outside-toplevel

    train_step.main(
        ["--dry-run", "--models", "slow_r50", "--heads", "on", "--no-torch", "--steps", "1", "--kernels", "xla,cpu"]
    )
    out = capsys.readouterr().out
    result = _last_json(out)
    assert "disabled (--no-torch)" in out
    assert result["benchmark"] == "train_step"
    assert result["slow_r50_speedup"] is None  # no reference to divide by
    assert [r["kernels"] for r in result["runs"]] == ["xla", "cpu"]
    assert "slow_r50_dry_heads_cpu_speedup" in result
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
    code = (
        "import sys; sys.modules['torch'] = None; import common; t = common.import_torch(); print('RESULT', t is None)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        cwd=BENCH,
        check=True,
    )  # -c imports from the cwd
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


def test_hlo_bytes_follow_the_tpu_tiled_layout():
    import tpu_compile  # pylint: disable=import-outside-toplevel

    # 1 channel in the minor-most position pads to 128 lanes; the batch (second-minor) to 8 rows.
    assert tpu_compile.padded_bytes("bf16", "8,8,16,16,1", "{4,0,3,2,1:T(8,128)(2,1)}") == 8 * 8 * 16 * 16 * 128 * 2
    assert tpu_compile.padded_bytes("f32", "3,200", "{1,0:T(8,128)}") == 8 * 256 * 4
    assert tpu_compile.padded_bytes("f32", "3,200", None) == 3 * 200 * 4
    hlo = (
        "HloModule m\n\nENTRY %main (p: f32[4,256]) -> f32[4,256] {\n"
        "  %p = f32[4,256]{1,0:T(8,128)} parameter(0)\n"
        "  ROOT %f = f32[4,256]{1,0:T(8,128)} fusion(%p), kind=kLoop, calls=%fused\n}\n"
    )
    top = tpu_compile.top_hbm_instructions(hlo, 5)
    assert [(r["name"], r["op"], r["bytes"]) for r in top] == [("f", "fusion/kLoop", 2 * 8 * 256 * 4)]


def test_model_flops_count_convolutions_and_matmuls():
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    import tpu_compile  # pylint: disable=import-outside-toplevel

    def f(x, w, m):
        y = jax.lax.conv_general_dilated(x, w, (1, 2, 2), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
        return jax.jit(lambda a: a.reshape(2, -1) @ m)(y)  # a nested jaxpr

    x, w = jnp.zeros((2, 4, 8, 8, 3)), jnp.zeros((3, 3, 3, 3, 5))
    m = jnp.zeros((4 * 4 * 4 * 5, 7))
    jaxpr = jax.make_jaxpr(f)(x, w, m).jaxpr
    conv = 2 * (2 * 4 * 4 * 4 * 5) * (3 * 3 * 3 * 3)
    assert tpu_compile.forward_flops(jaxpr) == conv + 2 * 2 * (4 * 4 * 4 * 5) * 7


def test_max_batch_doubles_then_bisects_over_bn_groups(monkeypatch):
    import tpu_compile  # pylint: disable=import-outside-toplevel

    gib = 2**30
    chip = {"hbm_gib": 16.0}
    # XLA:TPU rematerialises: peak flattens below the limit, then compiles run out of memory past 40.
    peaks = {8: 10.8 * gib, 16: 14.2 * gib, 24: 14.6 * gib, 32: 14.6 * gib, 40: 15.9 * gib, 48: None, 64: None}
    monkeypatch.setattr(tpu_compile, "_fits", lambda cfg, mesh, chip, b, options: peaks[b])
    result = tpu_compile.max_batch(lambda b: None, None, chip, 8, 8, {})
    assert result["max_batch_per_chip"] == 40
    assert list(result["checked"]) == [8, 16, 32, 64, 48, 40]
    peaks[40] = 16.1 * gib  # compiled, but over the chip's HBM
    assert tpu_compile.max_batch(lambda b: None, None, chip, 8, 8, {})["max_batch_per_chip"] == 32


@pytest.mark.slow
def test_tpu_compile_dry_run():
    """The real sharded train step of the dry SlowFast compiles for a TPU v5e 2x2 slice without a
    TPU (libtpu, installed by CI from benchmarks/requirements-tpu.txt)."""
    pytest.importorskip("libtpu", reason="pip install -r benchmarks/requirements-tpu.txt")
    import tpu_compile  # pylint: disable=import-outside-toplevel

    result = tpu_compile.main(
        ["--dry-run", "--models", "slowfast_r50", "--kernels", "xla", "--steps", "train", "--top-ops", "3"]
    )
    assert result["chips"] == 4 and result["chip"]["name"] == "v5e"
    (row,) = result["rows"]
    assert row["step"] == "train" and row["kernels"] == "xla" and row["batch_per_chip"] == 8
    assert row["xla_flops"] > 0 and row["hbm_bytes"] > 0 and row["fits_hbm"]
    assert row["alias_bytes"] > 0  # the state is donated
    assert 0.5 < row["model_over_xla_flops"] < 2.0
    assert len(row["top_hbm_instructions"]) == 3
