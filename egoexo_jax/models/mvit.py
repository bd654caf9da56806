"""Multiscale Vision Transformers (MViT v1 and v2) with PySlowFast semantics.

Reimplements the ``MViT`` model of the newer facebookresearch/SlowFast repository
(docs/method.md#mvit-students) for the configuration family the official K400 models use:
``MODE=conv``, ``POOL_FIRST=False``, fused ``qkv`` projection, layer norm everywhere.

Data flow (channels-last; ``B`` batch, ``C`` width, ``L = T' * H' * W'`` tokens):

- patch stem: Conv3d (3, 7, 7) stride (2, 4, 4) pad (1, 3, 3) with bias,
  ``[B, T, H, W, 3] -> [B, T', H', W', C] -> [B, L, C]`` (tokens in (t, h, w) order);
- cls token prepended (``[B, 1 + L, C]``), absolute position embeddings added (v1);
- ``DEPTH`` pre-norm multiscale blocks. Each pools Q (and the residual, by max pooling)
  where a Q stride is set, pools K/V with a depthwise conv shared by all heads, and
  changes the width where ``DIM_MUL`` says (v1: in the MLP of the block before, v2: in
  the attention of the block itself). v2 adds decomposed relative position biases and
  residual pooling;
- final LayerNorm -> cls token -> dropout -> ``head/projection``; softmax at test.

Ego-Exo students (docs/method.md#mvit-as-an-ego-exo-student) use the same head fields as the ResNet students
(``egoexo_jax.models.slowfast.ResNetVideo``): ``num_classes`` may list several tasks
(PySlowFast ``MultiTaskHead``: ``{head_name}/projections_{j}``), ``ego_classes`` /
``object_classes`` append the Ego-Score / Object-Score projections to that head (on the
same dropped-out cls feature), and ``interaction_head`` adds the Interaction-Map head
(``handobjhead``) on the final token grid. A plain single-task MViT keeps PySlowFast's
``head/projection``.

Flax submodule names mirror the PyTorch ``state_dict`` names (``patch_embed/proj``,
``blocks_3/attn/qkv``, ``blocks_3/attn/pool_q``, ``norm``, ``head/projection``), so the
converter in :mod:`egoexo_jax.convert.mvit` is a renaming plus layout transposes.
"""
from __future__ import annotations

import ast
import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from egoexo_jax import ops
from egoexo_jax.models.heads import InteractionHead, split_projections

LN_EPS = 1e-6

__all__ = [
    "MViT",
    "MViTConfig",
    "BlockSpec",
    "block_specs",
    "round_width",
    "mvit_config_from_pyslowfast",
    "mvit_v1_b_16x4",
    "mvit_v1_b_32x3",
    "mvitv2_s_16x4",
    "mvitv2_b_32x3",
    "model_config_from_mvit_config",
    "model_config_from_pyslowfast",
    "mvit_config_from_model_config",
    "build_from_model_config",
]


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MViTConfig:
    """Architecture of one MViT, in PySlowFast ``cfg`` terms (frozen, hashable).

    Index lists keep PySlowFast's ``[[block, ...], ...]`` format as tuples, e.g.
    ``dim_mul=((1, 2.0), (3, 2.0))`` or ``pool_q_stride=((1, 1, 2, 2),)``.
    Defaults are the newer SlowFast ``defaults.py`` values, except the stem padding,
    which is the (1, 3, 3) every official MViT YAML sets.

    Head fields (as the ResNet students' model config): ``num_classes`` is an int (one
    task) or a tuple of task sizes in checkpoint order (EPIC: ``(97, 300)``);
    ``multi_task`` names even a single task projection ``projections_0``; ``head_name``
    is the head module's name (``"head" + TASK``, decides fine-tune transfer);
    ``ego_classes`` / ``object_classes`` > 0 append the Ego-Score / Object-Score
    projections; ``interaction_head`` adds the Interaction-Map head
    (``interaction_num_convs`` convs 1x3x3 -> ``interaction_conv_dim``).
    """

    num_classes: Any = 400  # int, or a tuple of task sizes
    num_frames: int = 16  # DATA.NUM_FRAMES
    crop_size: int = 224  # DATA.TRAIN_CROP_SIZE
    in_chans: int = 3  # DATA.INPUT_CHANNEL_NUM[0]
    head_dropout: float = 0.5  # MODEL.DROPOUT_RATE
    head_act: str = "softmax"  # MODEL.HEAD_ACT
    embed_dim: int = 96
    num_heads: int = 1
    depth: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    droppath_rate: float = 0.1
    dropout_rate: float = 0.0  # MVIT.DROPOUT_RATE (pos / attention-proj / MLP dropout)
    patch_kernel: tuple = (3, 7, 7)
    patch_stride: tuple = (2, 4, 4)
    patch_padding: tuple = (1, 3, 3)
    cls_embed_on: bool = True
    use_abs_pos: bool = True
    sep_pos_embed: bool = False
    rel_pos_spatial: bool = False
    rel_pos_temporal: bool = False
    rel_pos_zero_init: bool = False
    residual_pooling: bool = False
    dim_mul_in_att: bool = False
    dim_mul: tuple = ()
    head_mul: tuple = ()
    pool_q_stride: tuple = ()
    pool_kv_stride: tuple = ()
    pool_kv_stride_adaptive: Optional[tuple] = None
    pool_kvq_kernel: Optional[tuple] = None
    norm_stem: bool = False
    use_mean_pooling: bool = False
    layer_scale_init_value: float = 0.0
    head_init_scale: float = 1.0
    multi_task: bool = False
    head_name: str = "head"
    ego_classes: int = 0
    object_classes: int = 0
    interaction_head: bool = False
    interaction_conv_dim: int = 512
    interaction_num_convs: int = 1

    @property
    def patch_dims(self) -> tuple:
        """Token grid after the stem, ``(T', H', W')``."""
        size = (self.num_frames, self.crop_size, self.crop_size)
        return tuple(s // st for s, st in zip(size, self.patch_stride))

    @property
    def task_classes(self) -> tuple:
        """``num_classes`` as a tuple of task sizes."""
        n = self.num_classes
        return tuple(int(c) for c in n) if isinstance(n, (tuple, list)) else (int(n),)

    @property
    def single_projection(self) -> bool:
        """PySlowFast ``TransformerBasicHead`` (``head/projection``) rather than a multi-task
        head (``projections_{j}``): one task, no score heads, ``multi_task`` off."""
        return (len(self.task_classes) == 1 and not self.multi_task
                and not self.ego_classes and not self.object_classes)

    @property
    def feature_stride(self) -> int:
        """Spatial stride of the final token grid w.r.t. the input: patch stride x the
        product of the spatial Q strides (4 x 2 x 2 x 2 = 32 for every official model).
        Max pooling rounds up, so the grid is ``crop // feature_stride`` when that divides."""
        stride = int(self.patch_stride[1])
        for spec in block_specs(self):
            if len(spec.stride_q) > 0:
                stride *= int(spec.stride_q[1])
        return stride


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """Static description of one multiscale block (derived from :class:`MViTConfig`).

    ``kernel_*``/``stride_*`` are ``()`` where PySlowFast has no pooling layer; every
    non-empty tuple is a (t, h, w) triple. ``input_size`` is the nominal block-input
    token grid used only to size the relative-position tables.
    """

    dim: int
    dim_out: int
    num_heads: int
    input_size: tuple
    kernel_q: tuple
    stride_q: tuple
    kernel_kv: tuple
    stride_kv: tuple
    drop_path: float


def round_width(width, multiplier, min_width=1, divisor=1):
    """PySlowFast ``round_width``: ``width * multiplier`` rounded to a multiple of ``divisor``."""
    if not multiplier:
        return width
    width = float(np.float32(width) * np.float32(multiplier))
    min_width = min_width or divisor
    width_out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if width_out < 0.9 * width:
        width_out += divisor
    return int(width_out)


def _kernel_from_stride(stride):
    return tuple(s + 1 if s > 1 else s for s in stride)


def block_specs(cfg: MViTConfig) -> list:
    """Per-block widths, heads, pooling kernels/strides and drop-path rates.

    Mirrors the bookkeeping of PySlowFast's ``MViT.__init__`` exactly, including the
    cumulative head count and the divisor quirk of the width rounding.
    """
    depth = cfg.depth
    dim_mul = [1.0] * (depth + 1)
    head_mul = [1.0] * (depth + 1)
    for i, m in cfg.dim_mul:
        dim_mul[int(i)] = float(m)
    for i, m in cfg.head_mul:
        head_mul[int(i)] = float(m)

    kvq_kernel = tuple(cfg.pool_kvq_kernel) if cfg.pool_kvq_kernel is not None else None
    stride_q = [()] * depth
    pool_q = [()] * depth
    for entry in cfg.pool_q_stride:
        i, stride = int(entry[0]), tuple(int(s) for s in entry[1:])
        stride_q[i] = stride
        pool_q[i] = kvq_kernel if kvq_kernel is not None else _kernel_from_stride(stride)

    kv_entries = [tuple(e) for e in cfg.pool_kv_stride]
    if cfg.pool_kv_stride_adaptive is not None:
        cur = [int(s) for s in cfg.pool_kv_stride_adaptive]
        kv_entries = []
        for i in range(depth):
            if len(stride_q[i]) > 0:
                cur = [max(cur[d] // stride_q[i][d], 1) for d in range(len(cur))]
            kv_entries.append((i, *cur))
    stride_kv = [()] * depth
    pool_kv = [()] * depth
    for entry in kv_entries:
        i, stride = int(entry[0]), tuple(int(s) for s in entry[1:])
        stride_kv[i] = stride
        pool_kv[i] = kvq_kernel if kvq_kernel is not None else _kernel_from_stride(stride)

    dpr = [float(v) for v in np.linspace(0.0, cfg.droppath_rate, depth, dtype=np.float32)]

    specs = []
    embed_dim, num_heads = cfg.embed_dim, cfg.num_heads
    input_size = list(cfg.patch_dims)
    for i in range(depth):
        num_heads = round_width(num_heads, head_mul[i])
        if cfg.dim_mul_in_att:
            dim_out = round_width(
                embed_dim, dim_mul[i], divisor=round_width(num_heads, head_mul[i])
            )
        else:
            dim_out = round_width(
                embed_dim, dim_mul[i + 1], divisor=round_width(num_heads, head_mul[i + 1])
            )
        specs.append(
            BlockSpec(
                dim=embed_dim,
                dim_out=dim_out,
                num_heads=num_heads,
                input_size=tuple(input_size),
                kernel_q=tuple(pool_q[i]),
                stride_q=tuple(stride_q[i]),
                kernel_kv=tuple(pool_kv[i]),
                stride_kv=tuple(stride_kv[i]),
                drop_path=dpr[i],
            )
        )
        if len(stride_q[i]) > 0:
            input_size = [s // st for s, st in zip(input_size, stride_q[i])]
        embed_dim = dim_out
    return specs


# --------------------------------------------------------------------------------------
# PySlowFast cfg -> MViTConfig
# --------------------------------------------------------------------------------------
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


def _literal(value):
    """YAML may carry tuples as strings such as ``"(3, 7, 7)"`` (yacs style)."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _as_tuple(value):
    value = _literal(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
    return value


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
        import yaml

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
        return tuple((int(i), float(m)) for i, m in (_as_tuple(v) or ()))

    def idx_list(v):
        return tuple(tuple(int(s) for s in e) for e in (_as_tuple(v) or ()))

    adaptive = _as_tuple(mv["POOL_KV_STRIDE_ADAPTIVE"])
    kvq = _as_tuple(mv["POOL_KVQ_KERNEL"])
    return MViTConfig(
        num_classes=int(model["NUM_CLASSES"]),
        num_frames=int(data["NUM_FRAMES"]),
        crop_size=int(data["TRAIN_CROP_SIZE"]),
        in_chans=int(_as_tuple(data["INPUT_CHANNEL_NUM"])[0]),
        head_dropout=float(model["DROPOUT_RATE"]),
        head_act=str(model["HEAD_ACT"]),
        embed_dim=int(mv["EMBED_DIM"]),
        num_heads=int(mv["NUM_HEADS"]),
        depth=int(mv["DEPTH"]),
        mlp_ratio=float(mv["MLP_RATIO"]),
        qkv_bias=bool(mv["QKV_BIAS"]),
        droppath_rate=float(mv["DROPPATH_RATE"]),
        dropout_rate=float(mv["DROPOUT_RATE"]),
        patch_kernel=tuple(int(v) for v in _as_tuple(mv["PATCH_KERNEL"])),
        patch_stride=tuple(int(v) for v in _as_tuple(mv["PATCH_STRIDE"])),
        patch_padding=tuple(int(v) for v in _as_tuple(mv["PATCH_PADDING"])),
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


# --------------------------------------------------------------------------------------
# Full-size official variants (configs/Kinetics/*.yaml of facebookresearch/SlowFast)
# --------------------------------------------------------------------------------------
def _stage_list(blocks):
    return tuple((b, 2.0) for b in blocks)


def mvit_v1_b_16x4(num_classes: int = 400, **overrides) -> MViTConfig:
    """``MVIT_B_16x4_CONV``: 16 blocks, transitions at 1, 3, 14, abs. separate pos-embeds."""
    cfg = MViTConfig(
        num_classes=num_classes, num_frames=16, crop_size=224, depth=16, droppath_rate=0.2,
        sep_pos_embed=True, dim_mul=_stage_list((1, 3, 14)), head_mul=_stage_list((1, 3, 14)),
        pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 8, 8), pool_kvq_kernel=(3, 3, 3),
    )
    return dataclasses.replace(cfg, **overrides)


def mvit_v1_b_32x3(num_classes: int = 400, **overrides) -> MViTConfig:
    """``MVIT_B_32x3_CONV`` as its YAML builds it: DEPTH listed twice (24 wins), no
    ``POOL_KVQ_KERNEL`` (kernels derived from the strides: q (1,3,3), kv (1,9,9) ...)."""
    cfg = MViTConfig(
        num_classes=num_classes, num_frames=32, crop_size=224, depth=24, droppath_rate=0.3,
        sep_pos_embed=True, dim_mul=_stage_list((2, 5, 21)), head_mul=_stage_list((2, 5, 21)),
        pool_q_stride=((2, 1, 2, 2), (5, 1, 2, 2), (21, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 8, 8), pool_kvq_kernel=None,
    )
    return dataclasses.replace(cfg, **overrides)


def _v2_q_strides(depth, transitions):
    return tuple((i, 1, 2, 2) if i in transitions else (i, 1, 1, 1) for i in range(depth))


def mvitv2_s_16x4(num_classes: int = 400, **overrides) -> MViTConfig:
    """``MVITv2_S_16x4``: 16 blocks, transitions at 1, 3, 14, rel-pos + residual pooling."""
    cfg = MViTConfig(
        num_classes=num_classes, num_frames=16, crop_size=224, depth=16, droppath_rate=0.2,
        use_abs_pos=False, rel_pos_spatial=True, rel_pos_temporal=True,
        residual_pooling=True, dim_mul_in_att=True,
        dim_mul=_stage_list((1, 3, 14)), head_mul=_stage_list((1, 3, 14)),
        pool_q_stride=_v2_q_strides(16, (1, 3, 14)),
        pool_kv_stride_adaptive=(1, 8, 8), pool_kvq_kernel=(3, 3, 3),
    )
    return dataclasses.replace(cfg, **overrides)


def mvitv2_b_32x3(num_classes: int = 400, **overrides) -> MViTConfig:
    """``MVITv2_B_32x3``: 24 blocks, transitions at 2, 5, 21, rel-pos + residual pooling."""
    cfg = MViTConfig(
        num_classes=num_classes, num_frames=32, crop_size=224, depth=24, droppath_rate=0.3,
        use_abs_pos=False, rel_pos_spatial=True, rel_pos_temporal=True,
        residual_pooling=True, dim_mul_in_att=True,
        dim_mul=_stage_list((2, 5, 21)), head_mul=_stage_list((2, 5, 21)),
        pool_q_stride=_v2_q_strides(24, (2, 5, 21)),
        pool_kv_stride_adaptive=(1, 8, 8), pool_kvq_kernel=(3, 3, 3),
    )
    return dataclasses.replace(cfg, **overrides)


# --------------------------------------------------------------------------------------
# Initialisers (docs/method.md#mvit-initialisation)
# --------------------------------------------------------------------------------------
def trunc_normal_init(std: float = 0.02, bound: float = 2.0):
    """torch ``trunc_normal_(std=std)``: N(0, std^2) truncated at the *absolute* bounds
    +-``bound`` (+-100 sigma for std 0.02, i.e. practically untruncated)."""

    def init(key, shape, dtype=jnp.float32):
        lim = bound / std
        return (jax.random.truncated_normal(key, -lim, lim, shape, jnp.float32) * std).astype(dtype)

    return init


def torch_conv_bias_init(fan_in: int):
    """PyTorch's default Conv bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    def init(key, shape, dtype=jnp.float32):
        b = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -b, b)

    return init


_W_INIT = trunc_normal_init(0.02)
_B_INIT = nn.initializers.constant(0.02)


def _dense(features, name, dtype, precision, use_bias=True, scale=1.0):
    w_init, b_init = _W_INIT, _B_INIT
    if scale != 1.0:
        w_init = lambda k, s, d=jnp.float32: _W_INIT(k, s, d) * scale  # noqa: E731
        b_init = nn.initializers.constant(0.02 * scale)
    return nn.Dense(
        features, use_bias=use_bias, kernel_init=w_init, bias_init=b_init,
        precision=precision, dtype=dtype, name=name,
    )


def _layer_norm(name, dtype):
    # Two-pass variance (as torch) rather than E[x^2] - E[x]^2, for float32 parity.
    return nn.LayerNorm(
        epsilon=LN_EPS, use_fast_variance=False, bias_init=_B_INIT, dtype=dtype, name=name
    )


# --------------------------------------------------------------------------------------
# Relative position helpers (static index arithmetic in numpy, gathers in jnp)
# --------------------------------------------------------------------------------------
def _resize_table(table: jnp.ndarray, length: int) -> jnp.ndarray:
    """``F.interpolate(mode="linear", align_corners=False)`` of a ``[L, C]`` table along L."""
    src_len = table.shape[0]
    if src_len == length:
        return table
    scale = src_len / length
    pos = np.maximum((np.arange(length) + 0.5) * scale - 0.5, 0.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src_len - 1)
    lam = jnp.asarray((pos - lo).astype(np.float32))[:, None]
    return table[lo] * (1.0 - lam) + table[hi] * lam


def _rel_index(q_len: int, k_len: int) -> np.ndarray:
    """Rescaled relative distances ``[q_len, k_len]`` (int), float32 arithmetic as torch."""
    q_ratio = np.float32(max(k_len / q_len, 1.0))
    k_ratio = np.float32(max(q_len / k_len, 1.0))
    dist = np.arange(q_len, dtype=np.float32)[:, None] * q_ratio - (
        np.arange(k_len, dtype=np.float32)[None, :] * k_ratio
    )
    dist = dist + np.float32((k_len - 1) * float(max(q_len / k_len, 1.0)))
    return dist.astype(np.int64)  # truncation toward zero, as ``.long()``


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample (rate ``rate``).

    Active only with ``train=True`` and a ``'dropout'`` rng; kept samples are scaled by
    ``1 / (1 - rate)``. ``x``: ``[B, ...]``.
    """

    rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate <= 0.0:
            return x
        keep = 1.0 - self.rate
        u = jax.random.uniform(self.make_rng("dropout"), (x.shape[0],) + (1,) * (x.ndim - 1))
        mask = jnp.floor(keep + u).astype(x.dtype)
        return x / keep * mask


class PatchEmbed(nn.Module):
    """Conv3d stem: ``[B, T, H, W, Cin] -> ([B, L, C], (T', H', W'))``."""

    dim_out: int
    kernel: tuple
    stride: tuple
    padding: tuple
    in_chans: int = 3
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        fan_in = self.in_chans * int(np.prod(self.kernel))
        y = nn.Conv(
            self.dim_out, tuple(self.kernel), strides=tuple(self.stride),
            padding=[(p, p) for p in self.padding], use_bias=True, precision=self.precision,
            kernel_init=_W_INIT, bias_init=torch_conv_bias_init(fan_in), dtype=self.dtype,
            name="proj",
        )(x)
        b, t, h, w, c = y.shape
        return y.reshape(b, t * h * w, c), (t, h, w)


class DepthwiseConv3D(nn.Module):
    """The attention pooling conv: ``nn.Conv(C, kernel, stride, padding=kernel // 2,
    feature_group_count=C, use_bias=False)``'s parameter (``kernel [kt, kh, kw, 1, C]``, same name
    and init), computed by ``kernels.depthwise_conv3d``."""

    kernel_size: tuple
    strides: tuple
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        w = self.param("kernel", _W_INIT, (*self.kernel_size, 1, c), jnp.float32)
        return self.kernels.depthwise_conv3d(x.astype(self.dtype), w.astype(self.dtype), self.strides,
                                             self.kernels.precision)


def _pool_tokens(x, thw, pool, has_cls):
    """Apply ``pool`` (a channels-last 3-D op) to the token grid, cls token untouched.

    Args:
      x: ``[B, N, L, C]`` tokens per head (``L = [1 +] T*H*W``).
      thw: ``(T, H, W)`` of the non-cls tokens.
      pool: callable ``[B*N, T, H, W, C] -> [B*N, T', H', W', C]``.
    Returns:
      ``([B, N, L', C], (T', H', W'))``.
    """
    b, n, _, c = x.shape
    if has_cls:
        cls_tok, x = x[:, :, :1], x[:, :, 1:]
    y = pool(x.reshape(b * n, *thw, c))
    new_thw = tuple(y.shape[1:4])
    y = y.reshape(b, n, -1, c)
    if has_cls:
        y = jnp.concatenate([cls_tok, y], axis=2)
    return y, new_thw


class MultiScaleAttention(nn.Module):
    """Pooling attention (``MODE=conv``, ``POOL_FIRST=False``).

    ``x [B, N, dim] -> qkv Linear(dim, 3*att_dim) -> q, k, v [B, heads, N, head_dim]``;
    each is pooled by a depthwise Conv3d over ``head_dim`` channels shared by all heads
    (no bias, padding ``kernel // 2``) followed by LayerNorm(head_dim) over all tokens
    including cls (which bypasses the conv). Scores ``(q * head_dim**-0.5) k^T`` plus the
    v2 decomposed relative position terms; output ``[B, Nq, att_dim]`` after ``proj``.
    """

    spec: BlockSpec
    att_dim: int
    qkv_bias: bool
    has_cls: bool
    rel_pos_spatial: bool
    rel_pos_temporal: bool
    rel_pos_zero_init: bool
    residual_pooling: bool
    drop_rate: float
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    def _pool_layer(self, kernel, stride, suffix, head_dim):
        """(conv, norm) for one of q/k/v, or (None, None) when PySlowFast skips it."""
        if len(kernel) == 0 or (np.prod(kernel) == 1 and np.prod(stride) == 1):
            return None, None
        stride = tuple(stride) if len(stride) > 0 else (1, 1, 1)
        conv = DepthwiseConv3D(tuple(kernel), stride, self.dtype, self.kernels, name=f"pool_{suffix}")
        return conv, _layer_norm(f"norm_{suffix}", self.dtype)

    @nn.compact
    def __call__(self, x, thw, train: bool):
        s = self.spec
        heads = s.num_heads
        head_dim = self.att_dim // heads
        b, n, _ = x.shape

        precision = self.kernels.precision
        qkv = _dense(3 * self.att_dim, "qkv", self.dtype, precision, use_bias=self.qkv_bias)(x)
        qkv = qkv.reshape(b, n, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]

        pools = {}
        for name, kern, strd in (
            ("q", s.kernel_q, s.stride_q), ("k", s.kernel_kv, s.stride_kv),
            ("v", s.kernel_kv, s.stride_kv),
        ):
            pools[name] = self._pool_layer(kern, strd, name, head_dim)

        def pool(t, name):
            conv, norm = pools[name]
            if conv is None:
                return t, tuple(thw)
            t, new_thw = _pool_tokens(t, thw, conv, self.has_cls)
            return norm(t), new_thw

        q, q_thw = pool(q, "q")
        k, k_thw = pool(k, "k")
        v, _ = pool(v, "v")

        attn = jnp.einsum("bnqc,bnkc->bnqk", q * (head_dim ** -0.5), k, precision=precision)

        if self.rel_pos_spatial or self.rel_pos_temporal:
            attn = self._add_rel_pos(attn, q, q_thw, k_thw, head_dim)

        attn = jax.nn.softmax(attn.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = jnp.einsum("bnqk,bnkc->bnqc", attn, v, precision=precision)
        if self.residual_pooling:
            if self.has_cls:
                out = out.at[:, :, 1:].add(q[:, :, 1:])
            else:
                out = out + q
        out = out.transpose(0, 2, 1, 3).reshape(b, -1, self.att_dim)
        out = _dense(self.att_dim, "proj", self.dtype, precision)(out)
        if self.drop_rate > 0.0:
            out = nn.Dropout(self.drop_rate)(out, deterministic=not train)
        return out, q_thw

    def _add_rel_pos(self, attn, q, q_thw, k_thw, head_dim):
        """Add decomposed relative position terms to ``attn [B, N, Lq, Lk]`` (non-cls part)."""
        s = self.spec
        rel_init = nn.initializers.zeros if self.rel_pos_zero_init else _W_INIT
        sp = 1 if self.has_cls else 0
        qt, qh, qw = q_thw
        kt, kh, kw = k_thw
        b, n = q.shape[:2]
        r_q = q[:, :, sp:].reshape(b, n, qt, qh, qw, head_dim)
        bias = jnp.zeros((b, n, qt, qh, qw, kt, kh, kw), attn.dtype)

        if self.rel_pos_spatial:
            size = s.input_size[1]
            q_size = size // s.stride_q[1] if len(s.stride_q) > 0 else size
            kv_size = size // s.stride_kv[1] if len(s.stride_kv) > 0 else size
            table_len = 2 * max(q_size, kv_size) - 1
            table_h = self.param("rel_pos_h", rel_init, (table_len, head_dim))
            table_w = self.param("rel_pos_w", rel_init, (table_len, head_dim))
            r_h = _resize_table(table_h, 2 * max(qh, kh) - 1)[_rel_index(qh, kh)].astype(self.dtype)
            r_w = _resize_table(table_w, 2 * max(qw, kw) - 1)[_rel_index(qw, kw)].astype(self.dtype)
            rel_h = jnp.einsum("bnthwc,hkc->bnthwk", r_q, r_h, precision=self.kernels.precision)
            rel_w = jnp.einsum("bnthwc,wkc->bnthwk", r_q, r_w, precision=self.kernels.precision)
            bias = bias + rel_h[:, :, :, :, :, None, :, None] + rel_w[:, :, :, :, :, None, None, :]

        if self.rel_pos_temporal:
            table_t = self.param("rel_pos_t", rel_init, (2 * s.input_size[0] - 1, head_dim))
            r_t = _resize_table(table_t, 2 * max(qt, kt) - 1)[_rel_index(qt, kt)].astype(self.dtype)
            rel_t = jnp.einsum("bnthwc,tkc->bnthwk", r_q, r_t, precision=self.kernels.precision)
            bias = bias + rel_t[:, :, :, :, :, :, None, None]

        bias = bias.reshape(b, n, qt * qh * qw, kt * kh * kw)
        return attn.at[:, :, sp:, sp:].add(bias)


class Mlp(nn.Module):
    """``fc1 -> GELU (erf) -> dropout -> fc2 -> dropout``; ``[B, L, C] -> [B, L, out]``."""

    hidden: int
    out: int
    drop_rate: float
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = _dense(self.hidden, "fc1", self.dtype, self.precision)(x)
        x = nn.gelu(x, approximate=False)
        if self.drop_rate > 0.0:
            x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
        x = _dense(self.out, "fc2", self.dtype, self.precision)(x)
        if self.drop_rate > 0.0:
            x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
        return x


class MultiScaleBlock(nn.Module):
    """Pre-norm block: ``x = skip(x) + DropPath(attn(LN1 x)); x = x' + DropPath(MLP(LN2 x'))``.

    ``skip`` max-pools the non-cls tokens (kernel stride+1, pad kernel//2) where Q is
    strided; where the width changes, ``proj`` maps the skip path (v2: from LN1 output
    before the attention, v1: from LN2 output before the MLP). ``[B, 1+L, dim] ->
    [B, 1+L', dim_out]``.
    """

    spec: BlockSpec
    cfg: MViTConfig
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA

    @nn.compact
    def __call__(self, x, thw, train: bool):
        s, cfg, dtype = self.spec, self.cfg, self.dtype
        att_dim = s.dim_out if cfg.dim_mul_in_att else s.dim
        drop_path = DropPath(s.drop_path)
        proj = _dense(s.dim_out, "proj", dtype, self.kernels.precision) if s.dim != s.dim_out else None

        x_norm = _layer_norm("norm1", dtype)(x)
        x_block, thw_new = MultiScaleAttention(
            spec=s, att_dim=att_dim, qkv_bias=cfg.qkv_bias, has_cls=cfg.cls_embed_on,
            rel_pos_spatial=cfg.rel_pos_spatial, rel_pos_temporal=cfg.rel_pos_temporal,
            rel_pos_zero_init=cfg.rel_pos_zero_init, residual_pooling=cfg.residual_pooling,
            drop_rate=cfg.dropout_rate, dtype=dtype, kernels=self.kernels, name="attn",
        )(x_norm, thw, train)
        if cfg.dim_mul_in_att and proj is not None:
            x = proj(x_norm)

        if len(s.stride_q) > 0 and np.prod(s.stride_q) > 1:
            kernel = _kernel_from_stride(s.stride_q)
            pad = [(k // 2, k // 2) for k in kernel]

            def max_pool(t):
                return nn.max_pool(t, kernel, strides=tuple(s.stride_q), padding=pad)

            x, _ = _pool_tokens(x[:, None], thw, max_pool, cfg.cls_embed_on)
            x = x[:, 0]

        if cfg.layer_scale_init_value > 0:
            gamma_1 = self.param(
                "gamma_1", nn.initializers.constant(cfg.layer_scale_init_value), (s.dim,)
            )
            x_block = gamma_1.astype(dtype) * x_block
        x = x + drop_path(x_block, train)

        x_norm = _layer_norm("norm2", dtype)(x)
        x_mlp = Mlp(
            hidden=int(att_dim * cfg.mlp_ratio), out=s.dim_out, drop_rate=cfg.dropout_rate,
            dtype=dtype, precision=self.kernels.precision, name="mlp",
        )(x_norm, train)
        if not cfg.dim_mul_in_att and proj is not None:
            x = proj(x_norm)
        if cfg.layer_scale_init_value > 0:
            gamma_2 = self.param(
                "gamma_2", nn.initializers.constant(cfg.layer_scale_init_value), (s.dim_out,)
            )
            x_mlp = gamma_2.astype(dtype) * x_mlp
        return x + drop_path(x_mlp, train), thw_new


class TransformerBasicHead(nn.Module):
    """``dropout -> projection(s)``; ``[B, C] -> [[B, classes_j], ...]`` logits (float32).

    ``single``: PySlowFast's ``TransformerBasicHead`` (one Linear named ``projection``);
    otherwise a ``MultiTaskHead`` whose Linears ``projections_{j}`` share the same
    dropped-out feature (task projections first, then Ego-Score, then Object-Score, as
    the ResNet students' ``PooledHead``). Every projection has the MViT Linear init
    (trunc-normal 0.02, bias 0.02; PySlowFast's ``MViT._init_weights`` applies it to all
    Linears) scaled by ``init_scale`` (``HEAD_INIT_SCALE``).
    """

    num_classes: Sequence[int]
    dropout_rate: float
    init_scale: float = 1.0
    single: bool = True
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        if self.dropout_rate > 0.0:
            x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        if self.single and len(self.num_classes) != 1:
            raise ValueError(f"a single projection needs one task, got {self.num_classes}")
        return [
            _dense(n, "projection" if self.single else f"projections_{j}", self.dtype, self.precision,
                   scale=self.init_scale)(x).astype(jnp.float32)
            for j, n in enumerate(self.num_classes)
        ]


_HEAD_ACTS = {
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "sigmoid": jax.nn.sigmoid,
    "none": lambda x: x,
}


class MViT(nn.Module):
    """MViT v1/v2 video classifier with PySlowFast parameter names and numerics.

    ``apply(variables, x_list, train=False)`` where ``x_list`` is a list holding one clip
    ``[B, T, H, W, 3] float32`` (``T = num_frames``, ``H = W = crop_size``). Returns the
    ResNet students' output dict (``egoexo_jax.models.slowfast``):

    - ``logits`` ``[B, classes]``: pre-activation classifier output (a tuple of one
      ``[B, classes_j]`` per task when ``num_classes`` lists several tasks);
    - ``probs``: ``head_act`` (softmax / sigmoid / none) of ``logits`` (tuple likewise);
    - ``features`` ``[B, C]``: the head input (final-norm cls token, or the pooled feature
      when ``use_mean_pooling`` / no cls token), before the head dropout;
    - ``ego_logits`` ``[B, ego_classes]`` / ``object_logits`` ``[B, object_classes]``:
      the Ego-Score / Object-Score projections of the same head (when configured);
    - ``interaction_logits`` ``[B, T', h, w, 2]`` (when ``interaction_head``): the
      Interaction-Map head (channel 0 hand, 1 object) on ``token_grid``;
    - ``token_grid`` ``[B, T', h, w, C]``: the final tokens after the final LayerNorm,
      cls token removed, on the last token grid (``h = crop // feature_stride``).

    The map head reads the tokens after the *final* LayerNorm (``norm``), the same
    normalised features the classifier sees: the residual stream of a pre-norm
    transformer is not normalised (its scale grows with depth), and PySlowFast's own
    dense head on MViT (the AVA detection path of ``MViT.forward``) also applies
    ``self.norm`` to all tokens, drops the cls token and reshapes to ``[B, C, T, H, W]``.
    Its convs keep the ResNet head's init (1x3x3 conv: He fan-out, bias 0;
    ``score_projection``: N(0, 0.01^2), bias 0) and names (``handobjhead/...``).

    Training (``train=True``) enables drop-path and dropout and needs a ``'dropout'`` rng.
    ``dtype`` is the compute dtype (parameters stay float32; softmaxes run in float32;
    ``logits``/``probs`` are returned in float32).
    """

    config: MViTConfig
    dtype: Any = jnp.float32
    kernels: ops.Kernels = ops.XLA  # how the pooling convs run and at which precision (egoexo_jax.ops)

    @nn.compact
    def __call__(self, x_list, train: bool = False):
        cfg, dtype, kernels = self.config, self.dtype, self.kernels
        x = x_list[0] if isinstance(x_list, (list, tuple)) else x_list
        x, thw = PatchEmbed(
            cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding,
            in_chans=cfg.in_chans, dtype=dtype, precision=kernels.precision, name="patch_embed",
        )(x.astype(dtype))
        if thw != cfg.patch_dims:
            raise ValueError(
                f"token grid {thw} != {cfg.patch_dims}: input must be "
                f"[B, {cfg.num_frames}, {cfg.crop_size}, {cfg.crop_size}, {cfg.in_chans}]"
            )
        b, n_tok, c = x.shape

        if cfg.cls_embed_on:
            cls_token = self.param("cls_token", _W_INIT, (1, 1, c))
            x = jnp.concatenate([jnp.broadcast_to(cls_token, (b, 1, c)).astype(dtype), x], 1)

        if cfg.use_abs_pos:
            t, h, w = thw
            if cfg.sep_pos_embed:
                spatial = self.param("pos_embed_spatial", _W_INIT, (1, h * w, c))
                temporal = self.param("pos_embed_temporal", _W_INIT, (1, t, c))
                pos = (spatial[:, None, :, :] + temporal[:, :, None, :]).reshape(1, t * h * w, c)
                if cfg.cls_embed_on:
                    pos_cls = self.param("pos_embed_class", _W_INIT, (1, 1, c))
                    pos = jnp.concatenate([pos_cls, pos], axis=1)
            else:
                pos = self.param("pos_embed", _W_INIT, (1, x.shape[1], c))
            x = x + pos.astype(dtype)

        if cfg.dropout_rate > 0.0:
            x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
        if cfg.norm_stem:
            x = _layer_norm("norm_stem", dtype)(x)

        for i, spec in enumerate(block_specs(cfg)):
            x, thw = MultiScaleBlock(spec=spec, cfg=cfg, dtype=dtype, kernels=kernels, name=f"blocks_{i}")(
                x, thw, train
            )

        norm = _layer_norm("norm", dtype)
        sp = 1 if cfg.cls_embed_on else 0
        if cfg.use_mean_pooling:
            tokens = norm(x)
            features = norm(x[:, sp:].mean(axis=1))
        else:
            tokens = norm(x)
            features = tokens[:, 0] if cfg.cls_embed_on else tokens.mean(axis=1)
        token_grid = tokens[:, sp:].reshape(b, *thw, tokens.shape[-1])

        task = cfg.task_classes
        extra = tuple(n for n in (cfg.ego_classes, cfg.object_classes) if n)
        logits = TransformerBasicHead(
            task + extra, cfg.head_dropout, cfg.head_init_scale, single=cfg.single_projection,
            dtype=dtype, precision=kernels.precision, name=cfg.head_name,
        )(features, train)
        act = _HEAD_ACTS[cfg.head_act]
        k = len(task)
        out = {"features": features, "token_grid": token_grid}
        out.update(split_projections(logits, [act(y) for y in logits[:k]], k, cfg.ego_classes,
                                     cfg.object_classes))
        if cfg.interaction_head:
            out["interaction_logits"] = InteractionHead(
                cfg.interaction_conv_dim, cfg.interaction_num_convs, dtype, kernels, name="handobjhead"
            )(token_grid)
        return out

    @property
    def feature_stride(self) -> int:
        """Spatial stride of ``token_grid`` / ``interaction_logits`` (32 for the official models)."""
        return self.config.feature_stride


# --------------------------------------------------------------------------------------
# Model-registry glue (egoexo_jax.models.build / egoexo_jax.convert.pyslowfast)
# --------------------------------------------------------------------------------------
# Fields the registry's model config holds at top level (MViTConfig name -> model config
# name, same meaning as for the ResNet students); everything else of MViTConfig lives in
# ``model_config.mvit``. ``num_classes`` is top-level too (a tuple there).
_SHARED_FIELDS = {
    "num_frames": "num_frames",
    "crop_size": "crop_size",
    "head_act": "head_act",
    "head_dropout": "dropout_rate",
    "multi_task": "multi_task",
    "head_name": "head_name",
    "ego_classes": "ego_classes",
    "object_classes": "object_classes",
    "interaction_head": "interaction_head",
    "interaction_conv_dim": "interaction_conv_dim",
    "interaction_num_convs": "interaction_num_convs",
}


def model_config_from_mvit_config(mcfg: MViTConfig, dtype: str = "float32"):
    """Registry model config (``ml_collections.ConfigDict``, ``arch="mvit"``) for ``mcfg``.

    Top-level ``num_frames``, ``crop_size``, ``num_classes`` (a tuple of tasks),
    ``head_act``, ``dropout_rate``, the head fields (``multi_task``, ``head_name``,
    ``ego_classes``, ``object_classes``, ``interaction_*``) and ``dtype`` are
    authoritative (so ``--config.model.num_classes`` works for fine-tuning and
    ``presets.egoexo_pretrain_heads`` adds the Ego-Exo heads); ``mvit`` holds the
    remaining architecture fields.
    """
    import ml_collections  # noqa: PLC0415

    from egoexo_jax import models  # noqa: PLC0415 (registry imports this module lazily)

    c = models.default_model_config()
    c.arch = "mvit"
    c.num_frames = mcfg.num_frames
    c.crop_size = mcfg.crop_size
    c.num_classes = mcfg.task_classes
    for field, top in _SHARED_FIELDS.items():
        c[top] = getattr(mcfg, field)
    c.dtype = dtype
    rest = {
        f.name: getattr(mcfg, f.name)
        for f in dataclasses.fields(MViTConfig)
        if f.name not in _SHARED_FIELDS and f.name != "num_classes"
    }
    c.mvit = ml_collections.ConfigDict(rest)
    return c


def model_config_from_pyslowfast(cfg: Mapping[str, Any]):
    """Registry model config from a parsed PySlowFast cfg (see :func:`mvit_config_from_pyslowfast`)."""
    return model_config_from_mvit_config(mvit_config_from_pyslowfast(cfg))


def mvit_config_from_model_config(model_cfg) -> MViTConfig:
    """:class:`MViTConfig` of a registry model config (lists from JSON become tuples).

    Top-level fields absent from an older model config take the MViTConfig defaults; a
    single task gives an int ``num_classes`` (several tasks: a tuple).
    """
    fields = {f.name for f in dataclasses.fields(MViTConfig)}
    sub = dict(model_cfg.mvit.to_dict() if hasattr(model_cfg.mvit, "to_dict") else model_cfg.mvit)
    unknown = sorted(set(sub) - fields)
    if unknown:
        raise ValueError(f"unknown model.mvit fields: {unknown}")
    kwargs = {k: _as_tuple(v) if isinstance(v, (list, tuple, str)) else v for k, v in sub.items()}
    defaults = MViTConfig()
    for field, top in _SHARED_FIELDS.items():
        kwargs[field] = model_cfg.get(top, getattr(defaults, field))
    num_classes = model_cfg.num_classes
    if isinstance(num_classes, (list, tuple)):
        if len(num_classes) == 0:
            raise ValueError("model.num_classes is empty")
        num_classes = tuple(int(n) for n in num_classes)
        num_classes = num_classes[0] if len(num_classes) == 1 else num_classes
    else:
        num_classes = int(num_classes)
    kwargs["num_classes"] = num_classes
    for key in ("dim_mul", "head_mul", "pool_q_stride", "pool_kv_stride"):
        if key in kwargs and kwargs[key] is None:
            kwargs[key] = ()
    return MViTConfig(**kwargs)


def build_from_model_config(model_cfg, kernels: ops.Kernels = ops.XLA) -> "MViT":
    """:class:`MViT` for a registry model config (see :func:`mvit_config_from_model_config`)."""
    from egoexo_jax.models import DTYPES  # noqa: PLC0415

    return MViT(config=mvit_config_from_model_config(model_cfg), dtype=DTYPES[model_cfg.dtype], kernels=kernels)
