"""MViT architecture settings: :class:`MViTConfig`, the per-block bookkeeping, the official presets.

:class:`MViTConfig` describes one MViT v1 / v2 in PySlowFast ``cfg`` terms; :func:`block_specs`
derives each block's widths, heads, pooling kernels / strides and drop-path rate exactly as
PySlowFast's ``MViT.__init__`` does. The presets are the full-size official K400 variants.
The registry glue maps an :class:`MViTConfig` to and from the model config that
``egoexo_jax.models.build`` reads (``arch="mvit"``). Reading a PySlowFast YAML into an
:class:`MViTConfig` is the converter's job (``egoexo_jax.convert.mvit_yaml``); what a config must
satisfy to be built is :func:`egoexo_jax.models.mvit_checks.config_problems`.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Optional

import ml_collections
import numpy as np

from egoexo_jax.models import default_model_config

__all__ = [
    "MViTConfig",
    "BlockSpec",
    "as_tuple",
    "block_specs",
    "kernel_from_stride",
    "round_width",
    "mvit_v1_b_16x4",
    "mvit_v1_b_32x3",
    "mvitv2_s_16x4",
    "mvitv2_b_32x3",
    "model_config_from_mvit_config",
    "mvit_config_from_model_config",
    "model_config_key",
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
        return len(self.task_classes) == 1 and not self.multi_task and not self.ego_classes and not self.object_classes

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


def kernel_from_stride(stride):
    """PySlowFast's default pooling kernel for a stride: ``s + 1`` where ``s > 1``, else ``s``."""
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
        pool_q[i] = kvq_kernel if kvq_kernel is not None else kernel_from_stride(stride)

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
        pool_kv[i] = kvq_kernel if kvq_kernel is not None else kernel_from_stride(stride)

    dpr = [float(v) for v in np.linspace(0.0, cfg.droppath_rate, depth, dtype=np.float32)]

    specs = []
    embed_dim, num_heads = cfg.embed_dim, cfg.num_heads
    input_size = list(cfg.patch_dims)
    for i in range(depth):
        num_heads = round_width(num_heads, head_mul[i])
        if cfg.dim_mul_in_att:
            dim_out = round_width(embed_dim, dim_mul[i], divisor=round_width(num_heads, head_mul[i]))
        else:
            dim_out = round_width(embed_dim, dim_mul[i + 1], divisor=round_width(num_heads, head_mul[i + 1]))
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
# Tuple parsing (YAML / JSON lists and yacs-style tuple strings)
# --------------------------------------------------------------------------------------
def _literal(value):
    """YAML may carry tuples as strings such as ``"(3, 7, 7)"`` (yacs style)."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def as_tuple(value):
    """Nested lists (from YAML / JSON) as nested tuples; tuple strings such as ``"(3, 7, 7)"`` parsed."""
    value = _literal(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(as_tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
    return value


# --------------------------------------------------------------------------------------
# Full-size official variants (configs/Kinetics/*.yaml of facebookresearch/SlowFast)
# --------------------------------------------------------------------------------------
def _stage_list(blocks):
    return tuple((b, 2.0) for b in blocks)


def mvit_v1_b_16x4(num_classes: int = 400, **overrides) -> MViTConfig:
    """``MVIT_B_16x4_CONV``: 16 blocks, transitions at 1, 3, 14, abs. separate pos-embeds."""
    cfg = MViTConfig(
        num_classes=num_classes,
        num_frames=16,
        crop_size=224,
        depth=16,
        droppath_rate=0.2,
        sep_pos_embed=True,
        dim_mul=_stage_list((1, 3, 14)),
        head_mul=_stage_list((1, 3, 14)),
        pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 8, 8),
        pool_kvq_kernel=(3, 3, 3),
    )
    return dataclasses.replace(cfg, **overrides)


def mvit_v1_b_32x3(num_classes: int = 400, **overrides) -> MViTConfig:
    """``MVIT_B_32x3_CONV`` as its YAML builds it: DEPTH listed twice (24 wins), no
    ``POOL_KVQ_KERNEL`` (kernels derived from the strides: q (1,3,3), kv (1,9,9) ...)."""
    cfg = MViTConfig(
        num_classes=num_classes,
        num_frames=32,
        crop_size=224,
        depth=24,
        droppath_rate=0.3,
        sep_pos_embed=True,
        dim_mul=_stage_list((2, 5, 21)),
        head_mul=_stage_list((2, 5, 21)),
        pool_q_stride=((2, 1, 2, 2), (5, 1, 2, 2), (21, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 8, 8),
        pool_kvq_kernel=None,
    )
    return dataclasses.replace(cfg, **overrides)


def _v2_q_strides(depth, transitions):
    return tuple((i, 1, 2, 2) if i in transitions else (i, 1, 1, 1) for i in range(depth))


def mvitv2_s_16x4(num_classes: int = 400, **overrides) -> MViTConfig:
    """``MVITv2_S_16x4``: 16 blocks, transitions at 1, 3, 14, rel-pos + residual pooling."""
    cfg = MViTConfig(
        num_classes=num_classes,
        num_frames=16,
        crop_size=224,
        depth=16,
        droppath_rate=0.2,
        use_abs_pos=False,
        rel_pos_spatial=True,
        rel_pos_temporal=True,
        residual_pooling=True,
        dim_mul_in_att=True,
        dim_mul=_stage_list((1, 3, 14)),
        head_mul=_stage_list((1, 3, 14)),
        pool_q_stride=_v2_q_strides(16, (1, 3, 14)),
        pool_kv_stride_adaptive=(1, 8, 8),
        pool_kvq_kernel=(3, 3, 3),
    )
    return dataclasses.replace(cfg, **overrides)


def mvitv2_b_32x3(num_classes: int = 400, **overrides) -> MViTConfig:
    """``MVITv2_B_32x3``: 24 blocks, transitions at 2, 5, 21, rel-pos + residual pooling."""
    cfg = MViTConfig(
        num_classes=num_classes,
        num_frames=32,
        crop_size=224,
        depth=24,
        droppath_rate=0.3,
        use_abs_pos=False,
        rel_pos_spatial=True,
        rel_pos_temporal=True,
        residual_pooling=True,
        dim_mul_in_att=True,
        dim_mul=_stage_list((2, 5, 21)),
        head_mul=_stage_list((2, 5, 21)),
        pool_q_stride=_v2_q_strides(24, (2, 5, 21)),
        pool_kv_stride_adaptive=(1, 8, 8),
        pool_kvq_kernel=(3, 3, 3),
    )
    return dataclasses.replace(cfg, **overrides)


# --------------------------------------------------------------------------------------
# Model-registry glue (egoexo_jax.models.build / egoexo_jax.convert)
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
    c = default_model_config()
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
    kwargs = {k: as_tuple(v) if isinstance(v, (list, tuple, str)) else v for k, v in sub.items()}
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


def model_config_key(field: str) -> str:
    """Dotted model-config key (``model.dropout_rate``, ``model.mvit.depth`` ...) of an MViTConfig field."""
    if field == "num_classes" or field in _SHARED_FIELDS:
        return f"model.{_SHARED_FIELDS.get(field, field)}"
    return f"model.mvit.{field}"
