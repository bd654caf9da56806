"""PySlowFast MViT ``cfg`` (the YAML stored in a ``.pyth``) -> :class:`MViTConfig` / model config.

Absent keys take the newer facebookresearch/SlowFast defaults; options outside the family our
:class:`egoexo_jax.models.mvit.MViT` reimplements (``MODE=conv``, ``POOL_FIRST=False``, fused
``qkv``, layer norm) are refused by name rather than silently built differently.
:func:`check_against_weights` compares the cfg with what a checkpoint's weight shapes reveal and
names the fields it has to trust (``RESIDUAL_POOLING``, pooling strides ...).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import yaml
from absl import logging

from egoexo_jax.cli import UserError
from egoexo_jax.models.mvit_checks import config_problems
from egoexo_jax.models.mvit_config import (
    MViTConfig,
    as_tuple,
    block_specs,
    model_config_from_mvit_config,
)

__all__ = [
    "MViTCfgError",
    "check_against_weights",
    "mvit_config_from_pyslowfast",
    "model_config_from_pyslowfast",
    "unconfirmed_fields",
]


class MViTCfgError(UserError, ValueError):
    """A stored MViT cfg the JAX model cannot build, or one its weights contradict; names the field."""


# MViTConfig field -> the PySlowFast cfg key it is read from (for messages).
CFG_KEYS = {
    "num_classes": "MODEL.NUM_CLASSES",
    "num_frames": "DATA.NUM_FRAMES",
    "crop_size": "DATA.TRAIN_CROP_SIZE",
    "in_chans": "DATA.INPUT_CHANNEL_NUM",
    "head_dropout": "MODEL.DROPOUT_RATE",
    "head_act": "MODEL.HEAD_ACT",
    **{
        f: "MVIT." + f.upper()
        for f in (
            "embed_dim num_heads depth mlp_ratio qkv_bias droppath_rate dropout_rate patch_kernel patch_stride "
            "patch_padding cls_embed_on use_abs_pos sep_pos_embed rel_pos_spatial rel_pos_temporal "
            "rel_pos_zero_init residual_pooling dim_mul_in_att dim_mul head_mul pool_q_stride pool_kv_stride "
            "pool_kv_stride_adaptive pool_kvq_kernel norm_stem use_mean_pooling layer_scale_init_value "
            "head_init_scale"
        ).split()
    },
}
# Fields that change the outputs but leave no trace in the weight shapes: the converter has to
# trust the stored cfg for them (a wrong RESIDUAL_POOLING converts cleanly and predicts wrongly).
UNCONFIRMED = (
    "MVIT.MODE",
    "MVIT.POOL_FIRST",
    "MVIT.RESIDUAL_POOLING",
    "MVIT.POOL_Q_STRIDE",
    "MVIT.POOL_KV_STRIDE_ADAPTIVE",
    "MVIT.POOL_KV_STRIDE",
    "MVIT.PATCH_STRIDE",
    "MVIT.PATCH_PADDING",
    "MVIT.USE_MEAN_POOLING",
    "MODEL.HEAD_ACT",
)

# Newer facebookresearch/SlowFast defaults (slowfast/config/defaults.py) for the keys used.
_MVIT_DEFAULTS = {
    "MODE": "conv",
    "POOL_FIRST": False,
    "CLS_EMBED_ON": True,
    "PATCH_KERNEL": [3, 7, 7],
    "PATCH_STRIDE": [2, 4, 4],
    "PATCH_PADDING": [2, 4, 4],
    "PATCH_2D": False,
    "EMBED_DIM": 96,
    "NUM_HEADS": 1,
    "MLP_RATIO": 4.0,
    "QKV_BIAS": True,
    "DROPPATH_RATE": 0.1,
    "LAYER_SCALE_INIT_VALUE": 0.0,
    "DEPTH": 16,
    "NORM": "layernorm",
    "DIM_MUL": [],
    "HEAD_MUL": [],
    "POOL_KV_STRIDE": [],
    "POOL_KV_STRIDE_ADAPTIVE": None,
    "POOL_Q_STRIDE": [],
    "POOL_KVQ_KERNEL": None,
    "NORM_STEM": False,
    "SEP_POS_EMBED": False,
    "DROPOUT_RATE": 0.0,
    "USE_ABS_POS": True,
    "REL_POS_SPATIAL": False,
    "REL_POS_TEMPORAL": False,
    "REL_POS_ZERO_INIT": False,
    "RESIDUAL_POOLING": False,
    "DIM_MUL_IN_ATT": False,
    "SEPARATE_QKV": False,
    "HEAD_INIT_SCALE": 1.0,
    "USE_MEAN_POOLING": False,
    "USE_FIXED_SINCOS_POS": False,
}
_DATA_DEFAULTS = {"NUM_FRAMES": 8, "TRAIN_CROP_SIZE": 224, "INPUT_CHANNEL_NUM": [3, 3]}
_MODEL_DEFAULTS = {"NUM_CLASSES": 400, "DROPOUT_RATE": 0.5, "HEAD_ACT": "softmax"}


def mvit_config_from_pyslowfast(cfg: Mapping[str, Any]) -> MViTConfig:
    """Build an :class:`MViTConfig` from a parsed PySlowFast config.

    Args:
      cfg: nested mapping (``cfg["MVIT"]["DEPTH"]`` ...), e.g. ``yaml.safe_load`` of the
        ``cfg`` string stored in a checkpoint; a YAML string is also accepted. Absent keys
        take the newer SlowFast defaults. A stored ``POOL_KV_STRIDE`` is recomputed from
        ``POOL_KV_STRIDE_ADAPTIVE`` when the latter is set, as the official builder does.

    Raises:
      MViTCfgError: (a one-line :class:`UserError` naming the cfg key) for options outside the
        supported family (pool-first, separate q/k/v, non-conv pooling, 2-D patches, reversible,
        sin-cos positions, detection heads), ``DATA.TEST_CROP_SIZE`` != ``DATA.TRAIN_CROP_SIZE``,
        and block indices or tuples the model cannot build (``models.mvit_checks.config_problems``).
    """
    if isinstance(cfg, str):
        cfg = yaml.safe_load(cfg)
    mv = {**_MVIT_DEFAULTS, **(cfg.get("MVIT") or {})}
    data = {**_DATA_DEFAULTS, **(cfg.get("DATA") or {})}
    model = {**_MODEL_DEFAULTS, **(cfg.get("MODEL") or {})}

    unsupported = {
        "MODE": mv["MODE"] != "conv",
        "POOL_FIRST": bool(mv["POOL_FIRST"]),
        "SEPARATE_QKV": bool(mv["SEPARATE_QKV"]),
        "PATCH_2D": bool(mv["PATCH_2D"]),
        "NORM": mv["NORM"] != "layernorm",
        "USE_FIXED_SINCOS_POS": bool(mv["USE_FIXED_SINCOS_POS"]),
        "REV.ENABLE": bool((mv.get("REV") or {}).get("ENABLE", False)),
        "DETECTION.ENABLE": bool((cfg.get("DETECTION") or {}).get("ENABLE", False)),
    }
    supported = {
        "MODE": "'conv'",
        "POOL_FIRST": "False",
        "SEPARATE_QKV": "False",
        "PATCH_2D": "False",
        "NORM": "'layernorm'",
        "USE_FIXED_SINCOS_POS": "False",
        "REV.ENABLE": "False",
        "DETECTION.ENABLE": "False",
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        key = bad[0]
        value = (
            mv.get(key)
            if "." not in key
            else (mv.get("REV") or {}).get("ENABLE")
            if key == "REV.ENABLE"
            else (cfg.get("DETECTION") or {}).get("ENABLE")
        )
        where = key if key == "DETECTION.ENABLE" else f"MVIT.{key}"
        raise MViTCfgError(
            f"MViT cfg {where}={value!r} is not supported; expected {supported[key]} (the only form the JAX MViT "
            "implements)"
        )
    if "TEST_CROP_SIZE" in data and int(data["TEST_CROP_SIZE"]) != int(data["TRAIN_CROP_SIZE"]):
        raise MViTCfgError(
            f"MViT cfg DATA.TEST_CROP_SIZE={data['TEST_CROP_SIZE']} differs from DATA.TRAIN_CROP_SIZE="
            f"{data['TRAIN_CROP_SIZE']}; expected equal crops (the position tables are sized for one crop)"
        )

    def mul_list(v):
        return tuple((int(i), float(m)) for i, m in (as_tuple(v) or ()))

    def idx_list(v):
        return tuple(tuple(int(s) for s in e) for e in (as_tuple(v) or ()))

    try:
        out = _read(mv, data, model, mul_list, idx_list)
    except (TypeError, ValueError, IndexError) as e:
        raise MViTCfgError(
            f"MViT cfg has a malformed MVIT / DATA / MODEL value ({e}); expected PySlowFast's types"
        ) from None
    problems = config_problems(out)
    if problems:
        field, what = problems[0]
        raise MViTCfgError(f"MViT cfg {CFG_KEYS.get(field, field)}={what}")
    return out


def _read(mv, data, model, mul_list, idx_list) -> MViTConfig:
    adaptive = as_tuple(mv["POOL_KV_STRIDE_ADAPTIVE"])
    kvq = as_tuple(mv["POOL_KVQ_KERNEL"])
    return MViTConfig(
        num_classes=int(model["NUM_CLASSES"]),
        num_frames=int(data["NUM_FRAMES"]),
        crop_size=int(data["TRAIN_CROP_SIZE"]),
        in_chans=int(as_tuple(data["INPUT_CHANNEL_NUM"])[0]),
        head_dropout=float(model["DROPOUT_RATE"]),
        head_act=str(model["HEAD_ACT"]),
        embed_dim=int(mv["EMBED_DIM"]),
        num_heads=int(mv["NUM_HEADS"]),
        depth=int(mv["DEPTH"]),
        mlp_ratio=float(mv["MLP_RATIO"]),
        qkv_bias=bool(mv["QKV_BIAS"]),
        droppath_rate=float(mv["DROPPATH_RATE"]),
        dropout_rate=float(mv["DROPOUT_RATE"]),
        patch_kernel=tuple(int(v) for v in as_tuple(mv["PATCH_KERNEL"])),
        patch_stride=tuple(int(v) for v in as_tuple(mv["PATCH_STRIDE"])),
        patch_padding=tuple(int(v) for v in as_tuple(mv["PATCH_PADDING"])),
        cls_embed_on=bool(mv["CLS_EMBED_ON"]),
        use_abs_pos=bool(mv["USE_ABS_POS"]),
        sep_pos_embed=bool(mv["SEP_POS_EMBED"]),
        rel_pos_spatial=bool(mv["REL_POS_SPATIAL"]),
        rel_pos_temporal=bool(mv["REL_POS_TEMPORAL"]),
        rel_pos_zero_init=bool(mv["REL_POS_ZERO_INIT"]),
        residual_pooling=bool(mv["RESIDUAL_POOLING"]),
        dim_mul_in_att=bool(mv["DIM_MUL_IN_ATT"]),
        dim_mul=mul_list(mv["DIM_MUL"]),
        head_mul=mul_list(mv["HEAD_MUL"]),
        pool_q_stride=idx_list(mv["POOL_Q_STRIDE"]),
        pool_kv_stride=idx_list(mv["POOL_KV_STRIDE"]),
        pool_kv_stride_adaptive=None if adaptive is None else tuple(int(v) for v in adaptive),
        pool_kvq_kernel=None if kvq is None else tuple(int(v) for v in kvq),
        norm_stem=bool(mv["NORM_STEM"]),
        use_mean_pooling=bool(mv["USE_MEAN_POOLING"]),
        layer_scale_init_value=float(mv["LAYER_SCALE_INIT_VALUE"]),
        head_init_scale=float(mv["HEAD_INIT_SCALE"]),
    )


def unconfirmed_fields(mcfg: MViTConfig, cfg: Optional[Mapping[str, Any]] = None) -> str:
    """One line naming the cfg fields (with their values) that the weight shapes cannot confirm."""
    if isinstance(cfg, str):
        cfg = yaml.safe_load(cfg)
    mv = {**_MVIT_DEFAULTS, **((cfg or {}).get("MVIT") or {})}
    parts = []
    for key in UNCONFIRMED:
        if key == "MVIT.POOL_KV_STRIDE" and mcfg.pool_kv_stride_adaptive is not None:
            continue  # recomputed from POOL_KV_STRIDE_ADAPTIVE, as the official builder does
        name = key.split(".")[1]
        field = next((f for f, k in CFG_KEYS.items() if k == key), None)
        value = getattr(mcfg, field) if field else mv.get(name)
        parts.append(f"{key}={value!r}")
    return "MViT cfg fields trusted as stored (the weights cannot confirm them): " + ", ".join(parts)


_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def check_against_weights(mcfg: MViTConfig, shapes: Mapping[str, Sequence[int]]) -> str:
    """Compares the cfg with what the checkpoint's weight shapes reveal (depth, widths, heads,
    kernels, optional parameters); raises :class:`MViTCfgError` naming the first contradicted field.

    Returns :func:`unconfirmed_fields`' line for the fields the weights cannot reveal.
    """
    shapes = {k[len("module.") :] if k.startswith("module.") else k: tuple(v) for k, v in shapes.items()}

    def fail(field: str, stored, found, where: str):
        raise MViTCfgError(
            f"MViT cfg {CFG_KEYS.get(field, field)}={stored!r} contradicts the weights ({where}); "
            f"expected {found!r} as the checkpoint's parameters imply"
        )

    blocks = {int(m.group(1)) for k in shapes if (m := _BLOCK.match(k))}
    if blocks and max(blocks) + 1 != mcfg.depth:
        fail("depth", mcfg.depth, max(blocks) + 1, f"blocks.0 .. blocks.{max(blocks)}")
    stem = shapes.get("patch_embed.proj.weight")
    if stem is not None and len(stem) == 5:
        if stem[0] != mcfg.embed_dim:
            fail("embed_dim", mcfg.embed_dim, stem[0], f"patch_embed.proj.weight {stem}")
        if stem[1] != mcfg.in_chans:
            fail("in_chans", mcfg.in_chans, stem[1], f"patch_embed.proj.weight {stem}")
        if tuple(stem[2:]) != tuple(mcfg.patch_kernel):
            fail("patch_kernel", mcfg.patch_kernel, tuple(stem[2:]), f"patch_embed.proj.weight {stem}")
    if ("cls_token" in shapes) != bool(mcfg.cls_embed_on):
        fail("cls_embed_on", mcfg.cls_embed_on, "cls_token" in shapes, "cls_token")
    abs_pos = any(k.startswith("pos_embed") for k in shapes)
    if abs_pos != bool(mcfg.use_abs_pos):
        fail("use_abs_pos", mcfg.use_abs_pos, abs_pos, "pos_embed*")
    if abs_pos and ("pos_embed_spatial" in shapes) != bool(mcfg.sep_pos_embed):
        fail("sep_pos_embed", mcfg.sep_pos_embed, "pos_embed_spatial" in shapes, "pos_embed_spatial")
    if not blocks:
        return unconfirmed_fields(mcfg)
    for i, spec in enumerate(block_specs(mcfg)):
        p = f"blocks.{i}."
        att_dim = spec.dim_out if mcfg.dim_mul_in_att else spec.dim
        norm1 = shapes.get(p + "norm1.weight")
        if norm1 is not None and norm1[0] != spec.dim:
            fail("dim_mul", mcfg.dim_mul, f"width {norm1[0]} at block {i}", f"{p}norm1.weight {norm1}")
        fc2 = shapes.get(p + "mlp.fc2.weight")
        if fc2 is not None and fc2[0] != spec.dim_out:
            fail("dim_mul", mcfg.dim_mul, f"output width {fc2[0]} at block {i}", f"{p}mlp.fc2.weight {fc2}")
        qkv = shapes.get(p + "attn.qkv.weight")
        if qkv is not None and qkv[0] != 3 * att_dim:
            fail("dim_mul_in_att", mcfg.dim_mul_in_att, f"attention width {qkv[0] // 3}", f"{p}attn.qkv.weight {qkv}")
        if (p + "attn.qkv.bias" in shapes) != bool(mcfg.qkv_bias):
            fail("qkv_bias", mcfg.qkv_bias, p + "attn.qkv.bias" in shapes, f"{p}attn.qkv.bias")
        fc1 = shapes.get(p + "mlp.fc1.weight")
        if fc1 is not None and fc1[0] != int(att_dim * mcfg.mlp_ratio):
            fail("mlp_ratio", mcfg.mlp_ratio, fc1[0] / att_dim, f"{p}mlp.fc1.weight {fc1}")
        for name, field in (("rel_pos_h", "rel_pos_spatial"), ("rel_pos_t", "rel_pos_temporal")):
            if (p + "attn." + name in shapes) != bool(getattr(mcfg, field)):
                fail(field, getattr(mcfg, field), p + "attn." + name in shapes, f"{p}attn.{name}")
        table = shapes.get(p + "attn.rel_pos_h") or shapes.get(p + "attn.rel_pos_t")
        if table is not None and table[1] * spec.num_heads != att_dim:
            fail("head_mul", f"{spec.num_heads} heads at block {i}", att_dim // table[1], f"{p}attn rel-pos tables")
        for suffix, kernel in (("q", spec.kernel_q), ("k", spec.kernel_kv)):
            conv = shapes.get(f"{p}attn.pool_{suffix}.weight")
            want = tuple(kernel) if conv is not None else None
            if conv is not None and tuple(conv[2:]) != want:
                fail("pool_kvq_kernel", mcfg.pool_kvq_kernel, tuple(conv[2:]), f"{p}attn.pool_{suffix}.weight {conv}")
        if (p + "gamma_1" in shapes) != (mcfg.layer_scale_init_value > 0):
            fail("layer_scale_init_value", mcfg.layer_scale_init_value, "> 0" if p + "gamma_1" in shapes else 0.0, p)
    return unconfirmed_fields(mcfg)


def model_config_from_pyslowfast(cfg: Mapping[str, Any], shapes: Optional[Mapping[str, Sequence[int]]] = None):
    """Registry model config from a parsed PySlowFast cfg (see :func:`mvit_config_from_pyslowfast`);
    with ``shapes`` ({key: shape} of the checkpoint) checked against them (:func:`check_against_weights`).

    Logs (one line) which fields are trusted without confirmation from the weights."""
    if isinstance(cfg, str):
        cfg = yaml.safe_load(cfg)
    mcfg = mvit_config_from_pyslowfast(cfg)
    line = check_against_weights(mcfg, shapes) if shapes is not None else unconfirmed_fields(mcfg, cfg)
    logging.warning("%s", line)
    return model_config_from_mvit_config(mcfg)
