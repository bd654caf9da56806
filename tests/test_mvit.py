"""MViT v1/v2: PySlowFast parity, full-size key/shape/parameter-count checks, training."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml

from egoexo_jax.convert.mvit import (
    mvit_module_from_cfg,
    mvit_variables_from_state_dict,
    plan_mvit_conversion,
)
from egoexo_jax.models import mvit as M

PARITY_FIXTURES = ["mvit_v1_b_16x4", "mvit_v2_b_32x3"]

FULLSIZE = {
    "MVIT_B_16x4_CONV_k400": (M.mvit_v1_b_16x4, 36_610_672),
    "MVITv2_S_16x4_k400": (M.mvitv2_s_16x4, 34_537_744),
    "MVITv2_B_32x3_k400": (M.mvitv2_b_32x3, 51_230_128),
}


def _load_checkpoint(folder):
    """``(model_state, cfg dict)`` from the fixture's ``checkpoint.pyth`` (read without torch)."""
    try:
        from egoexo_jax.convert.torch_zip import load_torch_file
    except ImportError:  # pragma: no cover - reader not available: shared npz copy
        shared = folder.parents[3].parent / "shared" / "fixtures" / "pyslowfast"
        state = dict(np.load(shared / folder.name / "state_dict.npz"))
        return state, yaml.safe_load((folder / "config.yaml").read_text())
    ckpt = load_torch_file(folder / "checkpoint.pyth")
    cfg = ckpt["cfg"]
    return dict(ckpt["model_state"]), yaml.safe_load(cfg) if isinstance(cfg, str) else cfg


@pytest.mark.parametrize("name", PARITY_FIXTURES)
def test_parity_with_pyslowfast(fixtures_dir, name):
    folder = fixtures_dir / "pyslowfast" / name
    state, cfg = _load_checkpoint(folder)
    module = mvit_module_from_cfg(cfg)
    variables, report = mvit_variables_from_state_dict(module, state)
    assert sorted(report["mapped"]) == sorted(state)

    x = np.load(folder / "inputs.npz")["pathway0"].transpose(0, 2, 3, 4, 1)  # NCTHW -> NTHWC
    ref = np.load(folder / "outputs.npz")
    out = jax.jit(lambda v, x: module.apply(v, [x], train=False))(variables, x)
    for key in ("logits", "probs"):
        got, want = np.asarray(out[key]), ref[key]
        assert got.shape == want.shape
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err <= 1e-4, f"{name} {key}: max|d|/max|ref| = {err:.2e}"

    c = module.config
    t, h, w = c.patch_dims
    n_down = sum(1 for e in c.pool_q_stride if np.prod(e[1:]) > 1)
    dim = out["features"].shape[-1]
    assert out["token_grid"].shape == (x.shape[0], t, h >> n_down, w >> n_down, dim)
    np.testing.assert_allclose(
        np.asarray(out["probs"]), np.asarray(jax.nn.softmax(out["logits"], -1)), atol=1e-6
    )


@pytest.mark.parametrize("name", sorted(FULLSIZE))
def test_fullsize_keys_shapes_and_param_count(fixtures_dir, name):
    build, published = FULLSIZE[name]
    path = fixtures_dir / "pyslowfast" / "fullsize_keys" / f"{name}.json"
    listing = json.loads(path.read_text())
    shapes = {k: v["shape"] for k, v in listing["keys"].items()}
    plan, ignored, targets = plan_mvit_conversion(M.MViT(build(num_classes=400)), shapes)
    assert len(plan) + len(ignored) == len(shapes)
    n_params = sum(int(np.prod(s.shape)) for s in targets.values())
    assert n_params == listing["num_params"] == published


def test_v1_b_32x3_yaml_semantics():
    """Duplicated DEPTH (last wins) and no POOL_KVQ_KERNEL, as the official YAML has it."""
    text = """
DATA: {NUM_FRAMES: 32, TRAIN_CROP_SIZE: 224, TEST_CROP_SIZE: 224, INPUT_CHANNEL_NUM: [3]}
MODEL: {NUM_CLASSES: 400, ARCH: mvit, DROPOUT_RATE: 0.5}
MVIT:
  SEP_POS_EMBED: True
  DEPTH: 16
  PATCH_KERNEL: (3, 7, 7)
  PATCH_STRIDE: (2, 4, 4)
  PATCH_PADDING: (1, 3, 3)
  DROPPATH_RATE: 0.3
  DEPTH: 24
  POOL_Q_STRIDE: [[2, 1, 2, 2], [5, 1, 2, 2], [21, 1, 2, 2]]
  DIM_MUL: [[2, 2.0], [5, 2.0], [21, 2.0]]
  HEAD_MUL: [[2, 2.0], [5, 2.0], [21, 2.0]]
  POOL_KV_STRIDE_ADAPTIVE: [1, 8, 8]
"""
    cfg = M.mvit_config_from_pyslowfast(yaml.safe_load(text))
    assert cfg == M.mvit_v1_b_32x3()
    specs = M.block_specs(cfg)
    assert len(specs) == 24
    assert specs[2].kernel_q == (1, 3, 3) and specs[0].kernel_kv == (1, 9, 9)
    assert specs[21].kernel_kv == (1, 1, 1)  # stride 1, kernel 1: no K/V pooling layer
    assert [s.dim_out for s in specs[:3]] == [96, 192, 192]


def test_registry_model_config_round_trip():
    """``egoexo_jax.models.build`` glue: PySlowFast cfg -> model config -> JSON -> module."""
    import ml_collections

    cfg = {"MODEL": {"ARCH": "mvit", "NUM_CLASSES": 7},
           "DATA": {"NUM_FRAMES": 16, "TRAIN_CROP_SIZE": 224, "TEST_CROP_SIZE": 224},
           "MVIT": {"DEPTH": 16, "PATCH_PADDING": [1, 3, 3], "DROPPATH_RATE": 0.2,
                    "USE_ABS_POS": False, "REL_POS_SPATIAL": True, "REL_POS_TEMPORAL": True,
                    "RESIDUAL_POOLING": True, "DIM_MUL_IN_ATT": True,
                    "DIM_MUL": [[1, 2.0], [3, 2.0], [14, 2.0]],
                    "HEAD_MUL": [[1, 2.0], [3, 2.0], [14, 2.0]],
                    "POOL_KVQ_KERNEL": [3, 3, 3], "POOL_KV_STRIDE_ADAPTIVE": [1, 8, 8],
                    "POOL_Q_STRIDE": [[i, 1, 2, 2] if i in (1, 3, 14) else [i, 1, 1, 1]
                                      for i in range(16)]}}
    model_cfg = M.model_config_from_pyslowfast(cfg)
    assert model_cfg.arch == "mvit" and tuple(model_cfg.num_classes) == (7,)
    as_json = ml_collections.ConfigDict(json.loads(json.dumps(model_cfg.to_dict())))
    module = M.build_from_model_config(as_json)
    assert module.config == M.mvitv2_s_16x4(num_classes=7)


def test_resize_table_matches_torch_linear():
    table = jnp.arange(3, dtype=jnp.float32)[:, None]
    got = np.asarray(M._resize_table(table, 5))[:, 0]
    np.testing.assert_allclose(got, [0.0, 0.4, 1.0, 1.6, 2.0], atol=1e-6)
    np.testing.assert_array_equal(M._rel_index(4, 2), [[2, 0], [3, 1], [4, 2], [5, 3]])


def test_converter_rejects_bad_state(fixtures_dir):
    state, cfg = _load_checkpoint(fixtures_dir / "pyslowfast" / "mvit_v1_b_16x4")
    module = mvit_module_from_cfg(cfg)
    extra = dict(state, **{"blocks.0.attn.bogus.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match="bogus"):
        mvit_variables_from_state_dict(module, extra)
    missing = {k: v for k, v in state.items() if k != "norm.weight"}
    with pytest.raises(ValueError, match="norm/scale"):
        mvit_variables_from_state_dict(module, missing)
    wrong = dict(state, **{"head.projection.weight": np.zeros((11, 64), np.float32)})
    with pytest.raises(ValueError, match="head.projection.weight"):
        mvit_variables_from_state_dict(module, wrong)


def _key(seed):
    """RBG keys: XLA:CPU compiles them far faster than threefry (init has ~40 draws)."""
    return jax.random.key(seed, impl="rbg")


def _tiny_v2(**kw):
    return M.MViTConfig(
        num_classes=5, num_frames=4, crop_size=40, embed_dim=8, num_heads=1, depth=3,
        droppath_rate=0.2, head_dropout=0.0, use_abs_pos=False, rel_pos_spatial=True,
        rel_pos_temporal=True, residual_pooling=True, dim_mul_in_att=True,
        dim_mul=((1, 2.0),), head_mul=((1, 2.0),),
        pool_q_stride=((0, 1, 1, 1), (1, 1, 2, 2), (2, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 8, 8), pool_kvq_kernel=(3, 3, 3), **kw,
    )


def test_init_conventions_and_odd_grid():
    """§9.1 init (LN bias / Linear bias 0.02) and a 10x10 grid whose pooled sizes need
    rescaled distances and table interpolation (5 -> 3 tokens, table sized for 2)."""
    module = M.MViT(_tiny_v2())
    x = jnp.ones((1, 4, 40, 40, 3), jnp.float32)
    out, variables = jax.jit(module.init_with_output)(_key(0), [x])
    p = variables["params"]
    np.testing.assert_allclose(p["blocks_0"]["norm1"]["bias"], 0.02)
    np.testing.assert_allclose(p["blocks_0"]["norm1"]["scale"], 1.0)
    np.testing.assert_allclose(p["blocks_1"]["attn"]["qkv"]["bias"], 0.02)
    # nominal sizes 5 // 2 = 2 -> table length 3; at run time q and k are 3 -> 5 needed.
    assert p["blocks_2"]["attn"]["rel_pos_h"].shape == (3, 8)
    assert abs(float(p["blocks_0"]["mlp"]["fc1"]["kernel"].std()) - 0.02) < 0.006
    assert out["token_grid"].shape == (1, 2, 3, 3, 16)
    assert np.isfinite(np.asarray(out["logits"])).all()

    # Drop-path is stochastic in training: two 'dropout' rngs give different outputs.
    train_fn = jax.jit(lambda v, x, r: module.apply(v, [x], train=True, rngs={"dropout": r}))
    x4 = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4, 40, 40, 3)), jnp.float32)
    a, b = train_fn(variables, x4, _key(5))["logits"], train_fn(variables, x4, _key(6))["logits"]
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_training_steps_reduce_loss():
    """SGD on a fixed batch with drop-path active (fixed 'dropout' rng, so the objective
    is fixed): the cross-entropy after each of three steps is lower than before it."""
    module = M.MViT(M.MViTConfig(
        num_classes=4, num_frames=4, crop_size=32, embed_dim=8, num_heads=1, depth=2,
        droppath_rate=0.1, head_dropout=0.0, sep_pos_embed=True,
        dim_mul=((1, 2.0),), head_mul=((1, 2.0),), pool_q_stride=((1, 1, 2, 2),),
        pool_kvq_kernel=(3, 3, 3),  # K/V unpooled: XLA:CPU compiles conv gradients slowly
    ))
    labels = jnp.array([0, 1, 2, 3])
    # Noise plus a per-clip colour offset, so the clips are separable from the cls token.
    noise = np.random.default_rng(1).standard_normal((4, 4, 32, 32, 3))
    offset = np.random.default_rng(2).standard_normal((4, 1, 1, 1, 3))
    x = jnp.asarray(0.5 * noise + offset, jnp.float32)
    params = jax.jit(module.init)(_key(0), [x])["params"]
    # Moderate rate: plain SGD on this freshly initialised transformer overshoots at 0.1.
    tx = optax.sgd(0.03)
    opt_state = tx.init(params)
    rng = _key(2)

    def loss_fn(params):
        out = module.apply({"params": params}, [x], train=True, rngs={"dropout": rng})
        return optax.softmax_cross_entropy_with_integer_labels(out["logits"], labels).mean()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(4):  # the 4th call only reports the loss after the 3rd update
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    print("MViT training losses", losses)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
