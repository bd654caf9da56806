"""MViT v1/v2: PySlowFast parity, full-size key/shape/parameter-count checks, training."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml

from egoexo_jax.convert import mvit_yaml
from egoexo_jax.convert.mvit import (
    mvit_module_from_cfg,
    mvit_variables_from_state_dict,
    plan_mvit_conversion,
)
from egoexo_jax.models import mvit as M
from egoexo_jax.models import mvit_config as MC
from egoexo_jax.models import mvit_layers

PARITY_FIXTURES = ["mvit_v1_b_16x4", "mvit_v2_b_32x3"]

FULLSIZE = {
    "MVIT_B_16x4_CONV_k400": (MC.mvit_v1_b_16x4, 36_610_672),
    "MVITv2_S_16x4_k400": (MC.mvitv2_s_16x4, 34_537_744),
    "MVITv2_B_32x3_k400": (MC.mvitv2_b_32x3, 51_230_128),
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


@pytest.mark.parametrize("kernels", ["xla", "cpu"])
@pytest.mark.parametrize("name", PARITY_FIXTURES)
def test_parity_with_pyslowfast(fixtures_dir, name, kernels):
    from egoexo_jax import ops

    folder = fixtures_dir / "pyslowfast" / name
    state, cfg = _load_checkpoint(folder)
    module = mvit_module_from_cfg(cfg).clone(kernels=ops.select(kernels))
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
    np.testing.assert_allclose(np.asarray(out["probs"]), np.asarray(jax.nn.softmax(out["logits"], -1)), atol=1e-6)


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
    cfg = mvit_yaml.mvit_config_from_pyslowfast(yaml.safe_load(text))
    assert cfg == MC.mvit_v1_b_32x3()
    specs = MC.block_specs(cfg)
    assert len(specs) == 24
    assert specs[2].kernel_q == (1, 3, 3) and specs[0].kernel_kv == (1, 9, 9)
    assert specs[21].kernel_kv == (1, 1, 1)  # stride 1, kernel 1: no K/V pooling layer
    assert [s.dim_out for s in specs[:3]] == [96, 192, 192]


def test_registry_model_config_round_trip():
    """``egoexo_jax.models.build`` glue: PySlowFast cfg -> model config -> JSON -> module."""
    import ml_collections

    cfg = {
        "MODEL": {"ARCH": "mvit", "NUM_CLASSES": 7},
        "DATA": {"NUM_FRAMES": 16, "TRAIN_CROP_SIZE": 224, "TEST_CROP_SIZE": 224},
        "MVIT": {
            "DEPTH": 16,
            "PATCH_PADDING": [1, 3, 3],
            "DROPPATH_RATE": 0.2,
            "USE_ABS_POS": False,
            "REL_POS_SPATIAL": True,
            "REL_POS_TEMPORAL": True,
            "RESIDUAL_POOLING": True,
            "DIM_MUL_IN_ATT": True,
            "DIM_MUL": [[1, 2.0], [3, 2.0], [14, 2.0]],
            "HEAD_MUL": [[1, 2.0], [3, 2.0], [14, 2.0]],
            "POOL_KVQ_KERNEL": [3, 3, 3],
            "POOL_KV_STRIDE_ADAPTIVE": [1, 8, 8],
            "POOL_Q_STRIDE": [[i, 1, 2, 2] if i in (1, 3, 14) else [i, 1, 1, 1] for i in range(16)],
        },
    }
    model_cfg = mvit_yaml.model_config_from_pyslowfast(cfg)
    assert model_cfg.arch == "mvit" and tuple(model_cfg.num_classes) == (7,)
    as_json = ml_collections.ConfigDict(json.loads(json.dumps(model_cfg.to_dict())))
    module = M.build_from_model_config(as_json)
    assert module.config == MC.mvitv2_s_16x4(num_classes=7)


def test_resize_table_matches_torch_linear():
    table = jnp.arange(3, dtype=jnp.float32)[:, None]
    got = np.asarray(mvit_layers._resize_table(table, 5))[:, 0]
    np.testing.assert_allclose(got, [0.0, 0.4, 1.0, 1.6, 2.0], atol=1e-6)
    np.testing.assert_array_equal(mvit_layers._rel_index(4, 2), [[2, 0], [3, 1], [4, 2], [5, 3]])


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
    return MC.MViTConfig(
        num_classes=5,
        num_frames=4,
        crop_size=40,
        embed_dim=8,
        num_heads=1,
        depth=3,
        droppath_rate=0.2,
        head_dropout=0.0,
        use_abs_pos=False,
        rel_pos_spatial=True,
        rel_pos_temporal=True,
        residual_pooling=True,
        dim_mul_in_att=True,
        dim_mul=((1, 2.0),),
        head_mul=((1, 2.0),),
        pool_q_stride=((0, 1, 1, 1), (1, 1, 2, 2), (2, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 8, 8),
        pool_kvq_kernel=(3, 3, 3),
        **kw,
    )


@pytest.mark.slow
def test_init_conventions_and_odd_grid():
    """docs/method.md#mvit-initialisation (LN, Linear bias 0.02) and a 10x10 grid whose pooled sizes need
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
    module = M.MViT(
        MC.MViTConfig(
            num_classes=4,
            num_frames=4,
            crop_size=32,
            embed_dim=8,
            num_heads=1,
            depth=2,
            droppath_rate=0.1,
            head_dropout=0.0,
            sep_pos_embed=True,
            dim_mul=((1, 2.0),),
            head_mul=((1, 2.0),),
            pool_q_stride=((1, 1, 2, 2),),
            pool_kvq_kernel=(3, 3, 3),  # K/V unpooled: XLA:CPU compiles conv gradients slowly
        )
    )
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


# --------------------------------------------------------------------------------------
# Ego-Exo heads (multi-task / Ego-Score / Object-Score / Interaction-Map) on MViT
# --------------------------------------------------------------------------------------
def _small_v2(num_classes=400, **kw):
    """MViTv2-style student at 8 x 64^2: patch stride (2, 4, 4) then three spatial Q strides,
    so the final grid is 4 x 2 x 2 at stride 32 (like the 224-crop models' 8 x 7 x 7)."""
    return MC.MViTConfig(
        num_classes=num_classes,
        num_frames=8,
        crop_size=64,
        embed_dim=16,
        num_heads=1,
        depth=4,
        droppath_rate=0.1,
        use_abs_pos=False,
        rel_pos_spatial=True,
        rel_pos_temporal=True,
        residual_pooling=True,
        dim_mul_in_att=True,
        dim_mul=((1, 2.0), (3, 2.0)),
        head_mul=((1, 2.0), (3, 2.0)),
        pool_q_stride=((0, 1, 1, 1), (1, 1, 2, 2), (2, 1, 2, 2), (3, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 4, 4),
        pool_kvq_kernel=(3, 3, 3),
        **kw,
    )


def _abstract_outputs(model_cfg, batch=2):
    from egoexo_jax import models

    module = models.build(model_cfg)
    x = jax.ShapeDtypeStruct((batch, model_cfg.num_frames, model_cfg.crop_size, model_cfg.crop_size, 3), jnp.float32)
    out, variables = jax.eval_shape(lambda x: module.init_with_output({"params": _key(0), "dropout": _key(1)}, [x]), x)
    return module, out, variables["params"]


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def test_egoexo_heads_through_the_model_config():
    """``presets.egoexo_pretrain_heads`` on an MViT model config: action / ego / object
    projections of one multi-task head on the cls feature, the map head on the final grid,
    whose size is what ``data/aux_targets`` rasterises the teacher maps on."""
    from egoexo_jax import offline_teachers
    from egoexo_jax.models import presets

    mc = presets.egoexo_pretrain_heads(MC.model_config_from_mvit_config(_small_v2()))
    module, out, params = _abstract_outputs(mc)
    assert module.feature_stride == 32 == offline_teachers.map_stride(mc)
    g = mc.crop_size // offline_teachers.map_stride(mc)
    assert _shapes({k: v for k, v in out.items() if k != "token_grid"}) == {
        "logits": (2, 400),
        "probs": (2, 400),
        "features": (2, 64),
        "ego_logits": (2, 2),
        "object_logits": (2, 1000),
        "interaction_logits": (2, 4, g, g, 2),
    }
    assert g == 2 and out["token_grid"].shape == (2, 4, 2, 2, 64)
    assert _shapes(params["head"]) == {
        "projections_0": {"kernel": (64, 400), "bias": (400,)},
        "projections_1": {"kernel": (64, 2), "bias": (2,)},
        "projections_2": {"kernel": (64, 1000), "bias": (1000,)},
    }
    assert _shapes(params["handobjhead"]) == {
        "pathway0_conv_fcn0": {"kernel": (1, 3, 3, 64, 512), "bias": (512,)},
        "score_projection": {"kernel": (1, 1, 1, 512, 2), "bias": (2,)},
    }

    # The JSON round trip of a converted / exported model config keeps the heads.
    from egoexo_jax.checkpoint import config_json

    back = config_json.model_config_from_json(config_json.model_config_to_json(mc))
    assert M.build_from_model_config(back).config == module.config

    # Compute dtype: parameters stay float32, every returned score is float32.
    mc.dtype = "bfloat16"
    _, out16, params16 = _abstract_outputs(mc)
    assert {a.dtype for a in jax.tree.leaves(params16)} == {jnp.dtype(jnp.float32)}
    for k in ("logits", "ego_logits", "object_logits", "interaction_logits"):
        assert out16[k].dtype == jnp.float32, k


def test_multitask_and_single_task_heads():
    """EPIC verb + noun: ``logits``/``probs`` tuples from ``headepic100/projections_{0,1}``;
    one task without score heads keeps PySlowFast's ``{head_name}/projection``."""
    from egoexo_jax.models import presets

    mc = presets.epic100_heads(MC.model_config_from_mvit_config(_small_v2(97)))
    module, out, params = _abstract_outputs(mc)
    assert module.config.task_classes == (97, 300)
    assert _shapes(out["logits"]) == _shapes(out["probs"]) == ((2, 97), (2, 300))
    assert sorted(params["headepic100"]) == ["projections_0", "projections_1"]
    assert "head" not in params and "handobjhead" not in params and "ego_logits" not in out

    star = presets.epic100_heads(MC.model_config_from_mvit_config(_small_v2(97)), star=True)
    _, out, params = _abstract_outputs(star)
    assert out["interaction_logits"].shape == (2, 4, 2, 2, 2) and "handobjhead" in params

    mc = presets.charades_ego_heads(MC.model_config_from_mvit_config(_small_v2(157)))
    _, out, params = _abstract_outputs(mc)
    assert list(params["headcharades-ego"]) == ["projection"]
    assert out["logits"].shape == out["probs"].shape == (2, 157)
    mc.multi_task = True
    _, _, params = _abstract_outputs(mc)
    assert list(params["headcharades-ego"]) == ["projections_0"]


def test_converter_maps_egoexo_heads():
    """A PySlowFast-named state of an Ego-Exo MViT (``head.projections.{j}``,
    ``handobjhead.*``) converts onto the module, values and layouts intact."""
    from egoexo_jax.models import presets
    from egoexo_jax.models.naming import flax_to_torch_key

    mc = presets.egoexo_pretrain_heads(MC.model_config_from_mvit_config(_small_v2()))
    module, _, params = _abstract_outputs(mc)
    flat = {p: s for p, s in jax.tree_util.tree_flatten_with_path(params)[0]}
    rng = np.random.default_rng(0)
    state, want = {}, {}
    for path, leaf in flat.items():
        names = tuple(k.key for k in path)
        value = rng.standard_normal(leaf.shape).astype(np.float32)
        want[names] = value
        torch_value = value
        if names[-1] == "kernel":
            torch_value = value.T if value.ndim == 2 else value.transpose(4, 3, 0, 1, 2)
        state[flax_to_torch_key("params", names)] = torch_value
    assert {
        "head.projections.2.weight",
        "handobjhead.pathway0_conv_fcn0.weight",
        "handobjhead.score_projection.bias",
    } <= set(state)
    variables, report = mvit_variables_from_state_dict(module, state, (1, 8, 64, 64, 3))
    assert sorted(report["mapped"]) == sorted(state)
    got = {
        tuple(k.key for k in p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    }
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.slow
def test_egoexo_student_trains_with_all_auxiliary_losses():
    """Acceptance: an Ego-Exo MViT student (ego 2 / object 1000 / interaction map, docs/method.md#total-loss
    weights, the MViT AdamW recipe) trains through ``train.create_train_state`` and
    ``train.make_train_step`` on one fixed batch: every loss term stays finite and the task
    and every auxiliary term end lower than they started.

    v1-style backbone (absolute positions, Q pooling only, K/V unpooled) and no drop-path so
    the objective is fixed and XLA:CPU compiles it quickly; the heads do not depend on it.
    """
    from egoexo_jax import config_schema, models, offline_teachers, optim, sharding, train
    from egoexo_jax.models import presets

    small = MC.MViTConfig(
        num_classes=8,
        num_frames=8,
        crop_size=64,
        embed_dim=16,
        num_heads=1,
        depth=3,
        droppath_rate=0.0,
        sep_pos_embed=True,
        dim_mul=((1, 2.0),),
        head_mul=((1, 2.0),),
        pool_q_stride=((0, 1, 2, 2), (1, 1, 2, 2), (2, 1, 2, 2)),
        pool_kvq_kernel=(1, 3, 3),
    )
    c = config_schema.base_config()
    c.model = presets.egoexo_pretrain_heads(MC.model_config_from_mvit_config(small))
    c.model.interaction_conv_dim = 32
    c.data.update(arch="mvit", num_frames=8, train_crop_size=64, test_crop_size=64, num_classes=8)
    c.loss.update(ce=0.5, ego=0.1, object=0.5, hand=1.0, object_map=1.0)
    for signal in ("ego", "object", "interaction"):
        c.teachers[signal].source = "file"
    c.batch_size = 4
    c.optimizer.update(
        name="adamw", base_lr=3e-3, reference_batch_size=4, weight_decay=0.05, no_decay="1d", grad_clip_norm=1.0
    )
    c.schedule.update(policy="constant", warmup_epochs=0.0)
    config_schema.validate(c)

    model = models.build(train.model_config(c))
    mesh = sharding.make_mesh(1)
    steps_per_epoch = 1
    abstract = jax.eval_shape(lambda: train.init_variables(model, c, 0))["params"]
    tx = optim.make_optimizer(c, steps_per_epoch, abstract)
    schedule = optim.make_schedule(c, steps_per_epoch)
    state, _ = train.create_train_state(c, model, tx, mesh)

    b, t, g = 4, 8, 64 // offline_teachers.map_stride(c.model)
    rng = np.random.default_rng(0)
    batch = sharding.global_batch(
        {
            "pathway0": rng.standard_normal((b, t, 64, 64, 3)).astype(np.float32),
            "label": np.arange(b, dtype=np.int32),
            "ego_target": 2 * rng.standard_normal((b, 2)).astype(np.float32),
            "object_target": 2 * rng.standard_normal((b, 1000)).astype(np.float32),
            "interaction_target": rng.uniform(size=(b, t // 2, g, g, 2)).astype(np.float32),
        },
        mesh,
    )
    step = train.make_train_step(
        mesh, model=model, tx=tx, schedule=schedule, loss_weights=train.loss_weights(c), arch="mvit"
    )
    history = []
    for _ in range(7):  # the 7th call reports the losses after the 6th update
        state, metrics = step(state, batch, {})
        history.append({k: float(v) for k, v in jax.device_get(metrics).items() if k.startswith("loss")})
    print("Ego-Exo MViT losses", {k: [round(h[k], 4) for h in history] for k in history[0]})
    terms = ("loss_ce", "loss_ego", "loss_object", "loss_hand", "loss_object_map")
    assert set(terms) <= set(history[0])
    assert all(np.isfinite(v) for h in history for v in h.values())
    for k in terms + ("loss",):
        assert history[-1][k] < history[0][k], (k, [h[k] for h in history])


@pytest.mark.parametrize("kernels", ["xla", "cpu"])
def test_depthwise_pool_conv_has_the_grouped_conv_parameter(kernels):
    """DepthwiseConv3D == nn.Conv(feature_group_count=C) for either kernel set: parameter tree and
    output (the ops themselves are compared in tests/test_ops.py)."""
    import flax.linen as nn

    from egoexo_jax import ops
    from egoexo_jax.models.mvit_layers import DepthwiseConv3D

    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 7, 6, 5)), jnp.float32)
    ours = DepthwiseConv3D((3, 3, 3), (1, 2, 2), kernels=ops.select(kernels))
    ref = nn.Conv(
        5,
        (3, 3, 3),
        strides=(1, 2, 2),
        padding=[(1, 1)] * 3,
        feature_group_count=5,
        use_bias=False,
        precision=jax.lax.Precision.HIGHEST,
    )
    v = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, ref.init(jax.random.key(0), x))
    np.testing.assert_allclose(ours.apply(v, x), ref.apply(v, x), rtol=1e-5, atol=1e-5)
