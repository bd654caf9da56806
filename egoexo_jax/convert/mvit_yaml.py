"""PySlowFast MViT ``cfg`` (the YAML stored in a ``.pyth``) -> :class:`MViTConfig` / model config.

Absent keys take the newer facebookresearch/SlowFast defaults; options outside the family our
:class:`egoexo_jax.models.mvit.MViT` reimplements (``MODE=conv``, ``POOL_FIRST=False``, fused
``qkv``, layer norm) are refused by name rather than silently built differently.
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml

from egoexo_jax.models.mvit_config import MViTConfig, as_tuple, model_config_from_mvit_config

__all__ = ["mvit_config_from_pyslowfast", "model_config_from_pyslowfast"]

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
      NotImplementedError: for options outside the supported family (pool-first,
        separate q/k/v, non-conv pooling, 2-D patches, reversible, sin-cos positions,
        detection heads).
      ValueError: if ``DATA.TEST_CROP_SIZE`` is given and differs from the train crop.
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
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise NotImplementedError(f"MViT options not supported: {bad}")
    if "TEST_CROP_SIZE" in data and int(data["TEST_CROP_SIZE"]) != int(data["TRAIN_CROP_SIZE"]):
        raise ValueError("MViT requires DATA.TRAIN_CROP_SIZE == DATA.TEST_CROP_SIZE")

    def mul_list(v):
        return tuple((int(i), float(m)) for i, m in (as_tuple(v) or ()))

    def idx_list(v):
        return tuple(tuple(int(s) for s in e) for e in (as_tuple(v) or ()))

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


def model_config_from_pyslowfast(cfg: Mapping[str, Any]):
    """Registry model config from a parsed PySlowFast cfg (see :func:`mvit_config_from_pyslowfast`)."""
    return model_config_from_mvit_config(mvit_config_from_pyslowfast(cfg))
