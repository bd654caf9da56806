"""Model registry: ``build(config.model) -> flax module``.

The model config (``default_model_config()``) names the architecture and its
hyper-parameters in PySlowFast terms; ``egoexo_jax.convert.pyslowfast`` derives the same
config from a checkpoint's stored YAML.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from egoexo_jax import ops
from egoexo_jax.models.slowfast import ResNetVideo
from egoexo_jax.ops import space_to_depth

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def default_model_config() -> ml_collections.ConfigDict:
    """SlowFast R50 8x8 for Kinetics-400 (PySlowFast defaults), every field documented."""
    c = ml_collections.ConfigDict()
    c.arch = "slowfast"  # slowfast | slow | mvit
    c.depth = 50  # 50 or 101 (ResNet depth)
    c.width_per_group = 64
    c.num_groups = 1
    c.alpha = 4  # fast/slow frame-rate ratio
    c.beta_inv = 8  # fast pathway has 1/beta_inv of the channels
    c.fusion_conv_channel_ratio = 2
    c.fusion_kernel_size = 7  # 7 for R50, 5 for R101 (Ego-Exo configs)
    c.num_block_temp_kernel = ((3, 3), (4, 4), (6, 6), (3, 3))
    c.spatial_strides = (1, 2, 2, 2)
    c.num_frames = 32  # frames of the fast pathway (or of the only pathway)
    c.crop_size = 224  # sizes the head's fixed pooling window (DATA.CROP_SIZE)
    c.num_classes = (400,)  # task projections in checkpoint order (EPIC: (97, 300))
    c.multi_task = False  # name projections projections_i (PySlowFast MultiTaskHead) even for one task
    c.head_name = "head"  # "head" + PySlowFast TASK; decides fine-tune transfer
    c.head_act = "softmax"  # softmax | sigmoid | none, applied per position at test
    c.dropout_rate = 0.5
    c.ego_classes = 0  # >0: Ego-Score projection (Ego-Exo pre-training: 2)
    c.object_classes = 0  # >0: Object-Score projection (1000)
    c.interaction_head = False  # Interaction-Map head on the slow res5 output
    c.interaction_conv_dim = 512
    c.interaction_num_convs = 1
    c.bn_group_size = 8  # clips per BatchNorm statistics group (PySlowFast: per GPU)
    c.bn_momentum = 0.1  # PyTorch convention
    c.bn_epsilon = 1e-5
    c.zero_init_final_bn = True
    c.dtype = "float32"  # compute dtype; parameters stay float32
    # How the model runs, not what it is (never stored with a checkpoint's model config):
    c.kernels = "auto"  # auto | xla | cpu: egoexo_jax.ops implementation (auto: cpu on the CPU backend)
    c.precision = "auto"  # auto | default | high | highest: matmul / conv precision (auto: highest on CPU)
    c.remat = "none"  # none | dots: training keeps only conv / matmul outputs (+ BN statistics) for backward
    c.rewrites = "auto"  # auto | on | off: exact TPU rewrites of the xla kernels (auto: on for TPU only)
    c.mvit = ml_collections.ConfigDict()  # MViT settings (arch == "mvit")
    return c


_RESNET_FIELDS = (
    "arch",
    "depth",
    "width_per_group",
    "num_groups",
    "alpha",
    "beta_inv",
    "fusion_conv_channel_ratio",
    "fusion_kernel_size",
    "num_block_temp_kernel",
    "spatial_strides",
    "num_frames",
    "crop_size",
    "num_classes",
    "multi_task",
    "head_name",
    "head_act",
    "dropout_rate",
    "ego_classes",
    "object_classes",
    "interaction_head",
    "interaction_conv_dim",
    "interaction_num_convs",
    "bn_group_size",
    "bn_momentum",
    "bn_epsilon",
    "zero_init_final_bn",
)


def _tuplify(v):
    if isinstance(v, (list, tuple)):
        return tuple(_tuplify(x) for x in v)
    return v


RUNTIME_FIELDS = ("kernels", "precision", "remat", "rewrites")


def build(cfg: ml_collections.ConfigDict):
    """Builds the flax module described by a model config, with the kernels, precision and
    rewrites its ``kernels`` / ``precision`` / ``rewrites`` fields select (``auto`` when absent,
    e.g. in a converted checkpoint)."""
    if cfg.dtype not in DTYPES:
        raise ValueError(f"model.dtype={cfg.dtype!r}; expected one of {sorted(DTYPES)}")
    kernels = ops.select(cfg.get("kernels", "auto"), cfg.get("precision", "auto"), cfg.get("rewrites", "auto"))
    if cfg.arch in ("slowfast", "slow"):
        if cfg.depth not in (18, 50, 101, 152):
            raise ValueError(f"model.depth={cfg.depth}; expected 18, 50, 101 or 152")
        kwargs = {k: _tuplify(cfg[k]) for k in _RESNET_FIELDS}
        if isinstance(kwargs["num_classes"], int):
            kwargs["num_classes"] = (kwargs["num_classes"],)
        return ResNetVideo(**kwargs, dtype=DTYPES[cfg.dtype], kernels=kernels)
    if cfg.arch == "mvit":
        from egoexo_jax.models import mvit  # noqa: PLC0415 (optional heavy import)

        return mvit.build_from_model_config(cfg, kernels)
    raise ValueError(f"model.arch={cfg.arch!r}; expected 'slowfast', 'slow' or 'mvit'")


def input_shapes(cfg: ml_collections.ConfigDict, batch: int = 1, crop: int | None = None, folded: bool = False):
    """Shapes of the pathway inputs for a model config: the frames ``[B, T_p, H, W, 3]``, or with
    ``folded`` their 2x2 space-to-depth fold ``[B, T_p, ceil(H/2), ceil(W/2), 12]`` (what the run's
    steps receive when :func:`egoexo_jax.train.folds_input`; every ResNet model takes the frames)."""
    crop = crop or cfg.crop_size
    if cfg.arch == "slowfast":
        shapes = [(batch, cfg.num_frames // cfg.alpha, crop, crop, 3), (batch, cfg.num_frames, crop, crop, 3)]
    else:
        shapes = [(batch, cfg.num_frames, crop, crop, 3)]
    return [space_to_depth.folded_shape(s) for s in shapes] if folded else shapes
