"""Model behaviour beyond parity: BN groups, initialisation, outputs of every head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from egoexo_jax import models
from egoexo_jax.models import presets


def tiny(arch="slowfast", **kw):
    base = presets.slowfast(50) if arch == "slowfast" else presets.slow(50)
    # Depth 18 (2 bottlenecks per stage) keeps compile times short on 2 cores.
    temporal = ((2, 2),) * 4 if arch == "slowfast" else ((2,),) * 4
    base.update(
        dict(depth=18, num_block_temp_kernel=temporal, width_per_group=8, num_frames=8, crop_size=32, num_classes=(5,))
    )
    base.update(kw)
    return base


def _init_apply(cfg, x_init, x_apply=None):
    """Jitted init + eval-mode apply (op-by-op execution of these nets is very slow)."""
    m = models.build(cfg)
    v = jax.jit(lambda k, x: m.init(k, x, train=False))(jax.random.key(0, impl="rbg"), x_init)
    out = jax.jit(lambda v, x: m.apply(v, x, train=False))(v, x_apply if x_apply is not None else x_init)
    return v, out


def _inputs(cfg, batch, key=0, crop=None):
    keys = jax.random.split(jax.random.key(key), 2)
    return [jax.random.normal(k, s) for k, s in zip(keys, models.input_shapes(cfg, batch, crop))]


@pytest.mark.slow
def test_bn_groups_make_batch_composition_irrelevant():
    """Train-mode outputs of 16 clips in groups of 8 == two separate batches of 8."""
    cfg = tiny(bn_group_size=8, dropout_rate=0.0)
    m = models.build(cfg)
    x = _inputs(cfg, 16)
    v = jax.jit(lambda k, x: m.init(k, x, train=False))(jax.random.key(1, impl="rbg"), x)
    step = jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"])[0])
    full = step(v, x)
    a = step(v, [p[:8] for p in x])
    b = step(v, [p[8:] for p in x])
    np.testing.assert_allclose(full["logits"], jnp.concatenate([a["logits"], b["logits"]]), rtol=1e-5, atol=1e-6)


def test_running_stats_follow_pytorch_update():
    """running <- 0.9 running + 0.1 batch, with the unbiased batch variance."""
    from egoexo_jax.models.norm import BatchNorm

    x = jax.random.normal(jax.random.key(0), (4, 2, 3, 3, 5)) * 3 + 1
    bn = BatchNorm(group_size=4)
    v = bn.init(jax.random.key(0), x, train=False)
    _, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    xs = np.asarray(x).reshape(-1, 5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * xs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * xs.var(0, ddof=1), rtol=1e-5)


@pytest.mark.slow
def test_pyslowfast_initialisation():
    cfg = presets.egoexo_pretrain_heads(tiny())
    v, _ = _init_apply(cfg, _inputs(cfg, 2))
    p = v["params"]
    block = p["s3"]["pathway0_res1"]["branch2"]
    assert np.all(block["c_bn"]["scale"] == 0) and np.all(block["a_bn"]["scale"] == 1)
    head = p["head"]["projections_0"]
    assert abs(float(jnp.std(head["kernel"])) - 0.01) < 0.003 and np.all(head["bias"] == 0)
    conv = p["s4"]["pathway0_res0"]["branch2"]["b"]["kernel"]  # [1, 3, 3, in, out]
    fan_out = 9 * conv.shape[-1]
    assert abs(float(jnp.std(conv)) - np.sqrt(2 / fan_out)) < 0.15 * np.sqrt(2 / fan_out)
    score = p["handobjhead"]["score_projection"]["kernel"]
    assert float(jnp.std(score)) < 0.02


@pytest.mark.slow
def test_egoexo_outputs_and_test_time_positions():
    cfg = presets.egoexo_pretrain_heads(tiny(num_classes=(7,)))
    cfg.object_classes = 11
    _, out = _init_apply(cfg, _inputs(cfg, 2), _inputs(cfg, 2, crop=64))  # 64 px test crop, 32 px pool
    assert out["logits"].shape == (2, 7) and out["probs"].shape == (2, 7)
    assert out["ego_logits"].shape == (2, 2) and out["object_logits"].shape == (2, 11)
    assert out["interaction_logits"].shape == (2, 2, 2, 2, 2)  # [B, T_slow, h, w, hand/object]
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_multitask_and_sigmoid_heads():
    cfg = presets.epic100_heads(tiny(arch="slow", num_frames=4))
    _, out = _init_apply(cfg, _inputs(cfg, 2))
    assert [x.shape for x in out["logits"]] == [(2, 97), (2, 300)]
    cfg = presets.charades_ego_heads(tiny())
    _, out = _init_apply(cfg, _inputs(cfg, 2))
    np.testing.assert_allclose(out["probs"], jax.nn.sigmoid(out["logits"]), rtol=1e-5)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params():
    cfg = tiny(dtype="bfloat16")
    v, out = _init_apply(cfg, _inputs(cfg, 2))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v))
    assert np.isfinite(np.asarray(out["logits"])).all()


def _train_mode_loss_and_grads(module, variables, xs):
    """Train-mode ``sum(sin(logits)) + sum(sin(features))``, its gradients w.r.t. the parameters
    and the inputs, and the updated BatchNorm statistics (jitted)."""

    def loss(params, xs):
        out, upd = module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, xs, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(jnp.sin(out["logits"])) + jnp.sum(jnp.sin(out["features"])), (out, upd["batch_stats"])

    (value, (out, stats)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables["params"], xs
    )
    return value, out, stats, grads


def _assert_close_trees(got, want, rtol, what):
    """Every leaf within ``rtol`` of its largest entry, or of 1 % of the tree's largest entry when
    that is more (a leaf of near-cancelling sums, e.g. the 1-channel fast stem's BN scale, is only
    as exact as the terms it sums)."""
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    top = max(float(np.abs(np.asarray(w)).max()) for w in flat_want.values())
    for path, g in jax.tree_util.tree_flatten_with_path(got)[0]:
        w = np.asarray(flat_want[path])
        assert np.shape(g) == w.shape, (what, jax.tree_util.keystr(path))
        err = float(np.abs(np.asarray(g) - w).max())
        bound = rtol * max(float(np.abs(w).max()), 1e-2 * top)
        assert err <= bound, f"{what}{jax.tree_util.keystr(path)}: {err:.3g} > {bound:.3g}"


@pytest.mark.slow  # 35 s (slow) and 90 s (slowfast) on 2 cores: six train-step compiles
@pytest.mark.parametrize("arch", ["slowfast", "slow"])
def test_rewrites_on_is_the_same_model(arch):
    """model.rewrites=on (space-to-depth stems, one-pass BatchNorm statistics) vs off, kernels=xla:
    the same parameter tree (official stem kernel shapes), and in train mode the same outputs, BatchNorm
    statistics and gradients (parameters and inputs), whether the rewritten model gets the frames
    (its stems fold them) or their host fold (numpy, as the pipeline delivers it)."""
    from egoexo_jax.ops import space_to_depth

    off = tiny(arch, kernels="xla", rewrites="off", bn_group_size=2, dropout_rate=0.0)
    on = tiny(arch, kernels="xla", rewrites="on", bn_group_size=2, dropout_rate=0.0)
    m_off, m_on = models.build(off), models.build(on)
    assert m_on.kernels.space_to_depth and not m_off.kernels.space_to_depth
    xs = _inputs(off, 4)
    folded = [jnp.asarray(space_to_depth.fold(np.asarray(x))) for x in xs]
    assert [f.shape for f in folded] == [tuple(s) for s in models.input_shapes(on, 4, None, folded=True)]
    v_off = jax.jit(lambda k, x: m_off.init(k, x, train=False))(jax.random.key(0, impl="rbg"), xs)
    shapes = lambda m, x: jax.tree.map(np.shape, jax.eval_shape(lambda: m.init(jax.random.key(0), x, train=False)))  # noqa: E731
    assert shapes(m_on, xs) == shapes(m_on, folded) == jax.tree.map(np.shape, v_off)
    assert v_off["params"]["s1"]["pathway0_stem"]["conv"]["kernel"].shape == (1, 7, 7, 3, 8)
    value, out, stats, (gp, gx) = _train_mode_loss_and_grads(m_off, v_off, xs)
    for inputs in (xs, folded):
        v, o, s, (gp_on, gx_on) = _train_mode_loss_and_grads(m_on, v_off, inputs)
        np.testing.assert_allclose(v, value, rtol=1e-5)
        _assert_close_trees(o, out, 2e-4, "outputs")
        _assert_close_trees(s, stats, 2e-4, "batch_stats")
        _assert_close_trees(gp_on, gp, 2e-4, "grads")
        want = gx if inputs is xs else [space_to_depth.fold(np.asarray(g)) for g in gx]
        _assert_close_trees(list(gx_on), list(want), 2e-4, "input grads")
