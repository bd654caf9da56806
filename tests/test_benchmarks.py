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
    import hlo_cost  # pylint: disable=import-outside-toplevel

    # 1 channel in the minor-most position pads to 128 lanes; the batch (second-minor) to 8 rows.
    assert hlo_cost.padded_bytes("bf16", "8,8,16,16,1", "{4,0,3,2,1:T(8,128)(2,1)}") == 8 * 8 * 16 * 16 * 128 * 2
    assert hlo_cost.padded_bytes("f32", "3,200", "{1,0:T(8,128)}") == 8 * 256 * 4
    assert hlo_cost.padded_bytes("f32", "3,200", None) == 3 * 200 * 4
    assert hlo_cost.memory_space("{1,0:T(8,128)S(1)}") == 1 and hlo_cost.memory_space("{1,0:T(8,128)}") == 0


_T = "{1,0:T(8,128)}"  # an HBM array's layout; VMEM ones add S(1)
HLO = f"""HloModule m

ENTRY %main (p: f32[4,256]) -> f32[4,256] {{
  %p = f32[4,256]{_T} parameter(0), metadata={{op_name="x"}}
  %cs = (f32[4,256]{_T}, f32[4,256]{{1,0:T(8,128)S(1)}}, u32[]{{:S(2)}}) copy-start(%p)
  %cd = f32[4,256]{{1,0:T(8,128)S(1)}} copy-done(%cs)
  %f = f32[4,256]{_T} fusion(%cd, %p), kind=kLoop, calls=%fused,
    metadata={{op_name="jit(step)/transpose(jvp(Net))/block/conv/conv_general_dilated"}},
    backend_config={{"window_config":{{"estimated_cycles":"3000"}}}}
  %g = f32[4,256]{{1,0:T(8,128)S(1)}} fusion(%f), kind=kLoop, calls=%fused2,
    metadata={{op_name="jit(step)/jvp(Net)/pathway1_stem/relu"}},
    backend_config={{"window_config":{{"estimated_cycles":"1000"}}}}
  %s = f32[4,256]{_T} select-and-scatter(%g, %p), metadata={{op_name="jit(step)/transpose(jvp(Net))/pool"}}
  ROOT %r = f32[4,256]{_T} add(%s, %p), metadata={{op_name="jit(step)/add"}},
    backend_config={{"window_config":{{"estimated_cycles":"500"}}}}
}}
""".replace(",\n    ", ", ")  # one instruction per line, as XLA prints them


def test_hlo_cost_counts_hbm_only_and_sums_estimated_cycles():
    import hlo_cost  # pylint: disable=import-outside-toplevel

    tile = 8 * 256 * 4  # one f32[4,256] array in its (8, 128) tiles
    traffic = hlo_cost.hbm_bytes(hlo_cost.entry_instructions(HLO))
    # copy-start reads from HBM into VMEM once; copy-done moves nothing; the fusion reads its HBM
    # operand (not the VMEM one) and writes HBM; the second fusion only reads HBM (result in VMEM).
    assert traffic == {"p": 0, "cs": tile, "cd": 0, "f": 2 * tile, "g": tile, "s": 2 * tile, "r": 3 * tile}
    est = hlo_cost.estimate(HLO, clock_hz=1e9, hbm_bytes_per_s=1e9, top=2)
    assert est["estimated_cycles"] == 4500 and est["estimated_s"] == pytest.approx(4.5e-6)
    assert est["control_flow"] == 0
    assert est["hbm_only_bytes"] == 9 * tile
    assert est["unestimated"] == {"select-and-scatter": {"count": 1, "hbm_bytes": 2 * tile, "hbm_s": 2 * tile / 1e9}}
    assert est["estimated_by_region"] == pytest.approx({"model": 3e-6, "fast": 1e-6, "outside": 0.5e-6})
    first, second = est["top_estimated"]
    assert (first["layer"], first["pass"], first["share"]) == ("block/conv", "backward", 3000 / 4500)
    assert (second["layer"], second["pass"]) == ("pathway1_stem", "forward")


@pytest.mark.parametrize(
    "op_name, layer, where",
    [
        (
            "jit(train_step)/transpose(jvp(ResNetVideo))/s1/pathway1_stem/conv/conv_general_dilated",
            "s1/pathway1_stem/conv",
            "fast",
        ),
        ("jit(train_step)/jvp(ResNetVideo)/s2_fuse/bn/reduce_sum", "s2_fuse/bn", "lateral"),
        (
            "jit(train_step)/jvp(ResNetVideo)/s3/pathway0_res1/branch2/a/conv_general_dilated",
            "s3/pathway0_res1/branch2/a",
            "slow",
        ),
        ("jit(train_step)/jvp(ResNetVideo)/head/dot_general", "head", "heads"),
        ("jit(train_step)/add", "-", "outside"),
        ("jit(train_step)/jvp(ResNetVideo)/convert_element_type", "(top)", "top"),
    ],
)
def test_op_names_map_back_to_model_layers(op_name, layer, where):
    import hlo_cost  # pylint: disable=import-outside-toplevel

    assert hlo_cost.model_layer(op_name)["layer"] == layer
    assert hlo_cost.region(layer) == where


def test_chip_clock_follows_from_the_bf16_peak():
    import tpu_compile  # pylint: disable=import-outside-toplevel

    assert tpu_compile.clock_hz(tpu_compile.CHIPS["v5e"]) == pytest.approx(1.503e9, rel=1e-3)
    assert tpu_compile.clock_hz(tpu_compile.CHIPS["v4"]) == pytest.approx(1.049e9, rel=1e-3)


def test_hlo_cost_of_a_small_program_compiled_for_tpu():
    """A small flax network's gradient compiled for a v5e 2x2 slice: every instruction XLA:TPU
    estimated is summed, the convolution maps back to its module and pass, and HBM-only bytes are
    below "bytes accessed" (which also counts VMEM)."""
    pytest.importorskip("libtpu", reason="pip install -r benchmarks/requirements-tpu.txt")
    import flax.linen as nn  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    import hlo_cost  # pylint: disable=import-outside-toplevel
    import tpu_compile  # pylint: disable=import-outside-toplevel

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(16, (3, 3), name="stem")(x))
            return nn.Dense(4, name="head")(x.mean((1, 2)))

    mesh = tpu_compile.tpu_mesh("v5e:2x2")
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    x = jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.bfloat16, sharding=rep)
    params = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
        jax.eval_shape(lambda: Net().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.bfloat16))),
    )
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(Net().apply(p, x).astype(jnp.float32) ** 2)))
    compiled = grad.lower(params, x).compile()
    text = compiled.as_text()
    est = hlo_cost.estimate(text, 1.5e9, 819e9, top=50)
    cycles = [int(c) for c in __import__("re").findall(r'"estimated_cycles":"(\d+)"', text)]
    assert est["estimated_cycles"] == sum(cycles) > 0
    layers = {(r["layer"], r["pass"]) for r in est["top_estimated"]}
    assert ("stem", "backward") in layers and ("stem", "forward") in layers
    accessed = compiled.cost_analysis()
    accessed = (accessed[0] if isinstance(accessed, (list, tuple)) else accessed)["bytes accessed"]
    assert 0 < est["hbm_only_bytes"] < accessed
    assert np.isfinite(est["estimated_s"])


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
    assert row["rewrites"] == "on" and 0 < row["estimated_s"] and 0 < row["estimated_mfu"] < 1
    assert 0 < row["hbm_only_bytes"] < row["hbm_bytes"]
    assert len(row["top_estimated"]) == 3 and sum(row["estimated_by_region"].values()) <= row["estimated_s"] * 1.0001


@pytest.mark.slow
def test_tpu_micro_compares_exact_stem_forms():
    """The stem micro-benchmark compiles the plain and the shipped rewritten stem for a TPU v5e
    2x2 slice (a small crop) and reads both through XLA:TPU's cost model."""
    pytest.importorskip("libtpu", reason="pip install -r benchmarks/requirements-tpu.txt")
    import tpu_micro  # pylint: disable=import-outside-toplevel

    result = tpu_micro.main(["--layer", "stem", "--crop", "32", "--variants", "plain,s2d-one-pass-bn"])
    plain, rewritten = result["rows"]
    assert (plain["variant"], rewritten["variant"]) == ("plain", "s2d-one-pass-bn")
    assert plain["estimated_s"] > 0 and rewritten["estimated_s"] > 0
    assert 0 < rewritten["hbm_only_bytes"] and 0 < plain["hbm_only_bytes"]
    with pytest.raises(SystemExit, match="unknown"):
        tpu_micro.main(["--variants", "plain,fastest"])
