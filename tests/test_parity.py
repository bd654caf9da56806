"""Converted official weights reproduce the official PyTorch outputs (float32, CPU)."""

import numpy as np
import pytest

from egoexo_jax import ops
from egoexo_jax.convert import load_pyslowfast
from egoexo_jax.ops import space_to_depth

# "xla-rewrites": the xla kernels with model.rewrites=on (space-to-depth stems fed the host fold of
# the inputs, one-pass BatchNorm statistics).
KERNELS = pytest.mark.parametrize(
    "kernels", ["xla", pytest.param("cpu", marks=pytest.mark.slow), pytest.param("xla-rewrites")]
)

RESNET_FIXTURES = ["slowfast_r50", "slow_r50", "egoexo_slowfast_r50", "epic100_multitask_slowfast_r50"]
TOL = 1e-4  # max|ours - ref| <= TOL * max|ref|


def _pathways(inputs, kernels="xla"):
    """Fixture inputs [N, C, T, H, W] -> our [N, T, H, W, C] list, slow first; for the rewritten
    kernels their host space-to-depth fold, as the run's pipeline delivers it."""
    out = [
        inputs[f"pathway{i}"].transpose(0, 2, 3, 4, 1)
        for i in range(len(inputs.files))
        if f"pathway{i}" in inputs.files
    ]
    return [space_to_depth.fold(np.ascontiguousarray(x)) for x in out] if kernels == "xla-rewrites" else out


def _ours(out, name):
    value = out[name]
    if isinstance(value, tuple):  # multi-task head: verb then noun, like the fixture
        value = np.concatenate([np.asarray(v) for v in value], axis=-1)
    value = np.asarray(value)
    if name == "interaction_logits":  # ours [N, T, h, w, 2] -> fixture [N, 2, T, h, w]
        value = value.transpose(0, 4, 1, 2, 3)
    return value


def _select(kernels):
    """The :class:`egoexo_jax.ops.Kernels` of a ``kernels`` parameter."""
    if kernels == "xla-rewrites":
        return ops.select("xla", rewrites="on")
    return ops.select(kernels, rewrites="off")


def _load(path, kernels):
    module, variables = load_pyslowfast(path)
    return module.clone(kernels=_select(kernels)), variables


@KERNELS
@pytest.mark.parametrize("name", RESNET_FIXTURES)
def test_resnet_fixture_parity(fixtures_dir, name, kernels):
    d = fixtures_dir / "pyslowfast" / name
    module, variables = _load(d / "checkpoint.pyth", kernels)
    inputs, ref = np.load(d / "inputs.npz"), np.load(d / "outputs.npz")
    out = module.apply(variables, _pathways(inputs, kernels), train=False)
    assert set(ref.files) <= set(out), f"missing outputs {set(ref.files) - set(out)}"
    for key in ref.files:
        ours, theirs = _ours(out, key), ref[key]
        assert ours.shape == theirs.shape, key
        rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
        assert rel <= TOL, f"{name}/{key}: relative error {rel:.2e}"


@pytest.mark.slow
def test_slowfast_fixture_has_2x2_test_positions(fixtures_dir):
    """The slowfast_r50 fixture tests at 96 px with a 64 px pool: 2x2 pooled positions, and
    the per-position softmax then mean differs from softmax of the averaged logits."""
    d = fixtures_dir / "pyslowfast" / "slowfast_r50"
    module, variables = load_pyslowfast(d / "checkpoint.pyth")
    inputs, ref = np.load(d / "inputs.npz"), np.load(d / "outputs.npz")
    assert inputs["pathway0"].shape[-1] == 96
    out = module.apply(variables, _pathways(inputs), train=False)
    logits = np.asarray(out["logits"])
    naive = np.exp(logits - logits.max(-1, keepdims=True))
    naive /= naive.sum(-1, keepdims=True)
    assert np.abs(naive - ref["probs"]).max() > 1e-4  # the order matters here...
    assert np.abs(np.asarray(out["probs"]) - ref["probs"]).max() < 1e-5  # ...and we follow it


@KERNELS
def test_debug_fixture_stages_and_heads(fixtures_dir, kernels):
    """Newer-PySlowFast SlowFast (debug fixture): pooled feature, res5 maps and logits."""
    d = fixtures_dir / "pyslowfast_debug" / "slowfast_r50_8x8_w8"
    module, variables = _load(d / "checkpoint.pyth", kernels)
    inputs, ref = np.load(d / "inputs.npz"), np.load(d / "outputs.npz")
    out = module.apply(variables, _pathways(inputs, kernels), train=False)
    for ours, key in ((out["logits"], "logits"), (out["probs"], "probs"), (out["features"], "head_projection_in")):
        theirs = ref[key].reshape(np.shape(ours))
        assert np.abs(np.asarray(ours) - theirs).max() <= TOL * np.abs(theirs).max(), key
