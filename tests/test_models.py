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
