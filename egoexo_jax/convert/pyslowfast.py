"""PySlowFast / Ego-Exo ``.pyth`` checkpoints -> flax module + variables, without torch.

The architecture is rebuilt from the ``cfg`` YAML stored in the checkpoint. Every
``model_state`` key must land on a module parameter of the same shape (conv kernels
OIDHW -> DHWIO, linear weights transposed, BatchNorm buffers into ``batch_stats``) and
every module parameter must be filled; anything else is an error naming the keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import yaml

from egoexo_jax import models
from egoexo_jax.cli import UserError
from egoexo_jax.convert import mvit_yaml
from egoexo_jax.convert.torch_zip import CheckpointReadError, load_torch_file
from egoexo_jax.models.naming import flax_to_torch_key

__all__ = [
    "Conversion",
    "ConversionError",
    "convert_checkpoint",
    "load_pyslowfast",
    "model_config_from_pyslowfast",
    "variables_from_state_dict",
]


class ConversionError(UserError, ValueError):
    """The checkpoint does not fit the architecture it describes (or the one asked for)."""


# PySlowFast MODEL_NAME -> which heads the model carries.
_MODEL_NAMES = {
    # name: (multi_task, kd_heads, interaction_head)
    "SlowFast": (False, False, False),
    "ResNet": (False, False, False),
    "MultiTaskSlowFast": (True, False, False),
    "MultiTaskResNet": (True, False, False),
    "KDSlowFast": (False, True, False),
    "KDResNet": (False, True, False),
    "HandObjSlowFastHSlow": (False, False, True),
    "HandObjResNet": (False, False, True),
    "HandObjKdSlowFastHSlow": (False, True, True),
    "HandObjKdResNet": (False, True, True),
    "HandObjMultiTaskSlowFastHSlow": (True, False, True),
}


def _get(cfg: dict, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def model_config_from_pyslowfast(cfg: dict, shapes: dict | None = None) -> ml_collections.ConfigDict:
    """Our model config from a parsed PySlowFast config (the checkpoint's ``cfg``); for MViT,
    ``shapes`` ({key: shape} of the checkpoint's weights) are checked against the cfg."""
    arch = _get(cfg, "MODEL.ARCH")
    name = _get(cfg, "MODEL.MODEL_NAME")
    if arch == "mvit":
        return mvit_yaml.model_config_from_pyslowfast(cfg, shapes)
    if arch not in ("slowfast", "slow"):
        raise ConversionError(f"MODEL.ARCH={arch!r} is not supported (expected slowfast, slow or mvit)")
    if name not in _MODEL_NAMES:
        raise ConversionError(f"MODEL.MODEL_NAME={name!r} is not supported; known: {sorted(_MODEL_NAMES)}")
    multi_task, kd, handobj = _MODEL_NAMES[name]
    c = models.default_model_config()
    c.arch = arch
    c.depth = int(_get(cfg, "RESNET.DEPTH", 50))
    c.width_per_group = int(_get(cfg, "RESNET.WIDTH_PER_GROUP", 64))
    c.num_groups = int(_get(cfg, "RESNET.NUM_GROUPS", 1))
    c.alpha = int(_get(cfg, "SLOWFAST.ALPHA", 8))
    c.beta_inv = int(_get(cfg, "SLOWFAST.BETA_INV", 8))
    c.fusion_conv_channel_ratio = int(_get(cfg, "SLOWFAST.FUSION_CONV_CHANNEL_RATIO", 2))
    c.fusion_kernel_size = int(_get(cfg, "SLOWFAST.FUSION_KERNEL_SZ", 5))
    c.num_block_temp_kernel = tuple(tuple(r) for r in _get(cfg, "RESNET.NUM_BLOCK_TEMP_KERNEL"))
    strides = _get(cfg, "RESNET.SPATIAL_STRIDES", [[1], [2], [2], [2]])
    if any(len(set(s)) != 1 for s in strides):
        raise ConversionError(f"RESNET.SPATIAL_STRIDES={strides}: per-pathway strides must agree")
    c.spatial_strides = tuple(int(s[0]) for s in strides)
    dil = _get(cfg, "RESNET.SPATIAL_DILATIONS", [[1]] * 4)
    if any(d != 1 for row in dil for d in row):
        raise ConversionError(f"RESNET.SPATIAL_DILATIONS={dil}: only dilation 1 is supported")
    if _get(cfg, "RESNET.STRIDE_1X1", False):
        raise ConversionError("RESNET.STRIDE_1X1=True is not supported")
    if _get(cfg, "RESNET.TRANS_FUNC", "bottleneck_transform") != "bottleneck_transform":
        raise ConversionError(f"RESNET.TRANS_FUNC={_get(cfg, 'RESNET.TRANS_FUNC')!r} is not supported")
    if any(loc for row in _get(cfg, "NONLOCAL.LOCATION", []) for loc in row):
        raise ConversionError("non-local blocks (NONLOCAL.LOCATION) are not supported")
    c.num_frames = int(_get(cfg, "DATA.NUM_FRAMES"))
    # The old (Ego-Exo) PySlowFast sizes the head pool with DATA.CROP_SIZE, the newer one
    # with DATA.TRAIN_CROP_SIZE (it has no CROP_SIZE key).
    c.crop_size = int(_get(cfg, "DATA.CROP_SIZE", _get(cfg, "DATA.TRAIN_CROP_SIZE", 224)))
    if multi_task:
        c.num_classes = tuple(int(n) for n in _get(cfg, "MODEL.NUM_CLASSES_LIST"))
    else:
        c.num_classes = (int(_get(cfg, "MODEL.NUM_CLASSES")),)
    c.multi_task = multi_task or kd
    c.head_name = "head" + (_get(cfg, "TASK", "") or "")
    c.head_act = _get(cfg, "MODEL.HEAD_ACT", "softmax")
    c.dropout_rate = float(_get(cfg, "MODEL.DROPOUT_RATE", 0.5))
    if kd:
        kd_classes = _get(cfg, "KD.NUM_CLASSES_LIST", [2, 1000])
        c.ego_classes, c.object_classes = int(kd_classes[0]), int(kd_classes[1])
    c.interaction_head = handobj
    c.interaction_conv_dim = int(_get(cfg, "HANDOBJ.HEAD_CONV_DIM", 512))
    c.interaction_num_convs = int(_get(cfg, "HANDOBJ.HEAD_NUM_CONV", 1))
    c.bn_epsilon = float(_get(cfg, "BN.EPSILON", 1e-5))
    c.bn_momentum = float(_get(cfg, "BN.MOMENTUM", 0.1))
    c.zero_init_final_bn = bool(_get(cfg, "RESNET.ZERO_INIT_FINAL_BN", True))
    return c


_RENAMED_PREFIXES = (("module.", ""), ("headobjhead.", "handobjhead."))


def _to_flax(name: str, value: np.ndarray, target_shape) -> np.ndarray:
    if name == "kernel" and value.ndim == 5:
        value = value.transpose(2, 3, 4, 1, 0)  # OIDHW -> DHWIO
    elif name == "kernel" and value.ndim == 2:
        value = value.T
    return value


def normalise_state_keys(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """Drops ``num_batches_tracked`` and applies the legacy renames."""
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        for old, new in _RENAMED_PREFIXES:
            if k.startswith(old):
                k = new + k[len(old) :]
        out[k] = np.asarray(v)
    return out


def variables_from_state_dict(module, state: dict[str, Any], input_shapes, *, strict: bool = True):
    """Maps a PyTorch ``model_state`` onto ``module``'s variable tree.

    Args:
      module: the flax module.
      state: PyTorch key -> numpy array.
      input_shapes: pathway shapes for ``jax.eval_shape(module.init, ...)``.
      strict: every checkpoint key and every module variable must be mapped.
    Returns:
      (variables, report) with ``report = {"mapped": [...], "unused": [...], "missing": [...]}``.
    Raises:
      ConversionError: (strict) unmapped keys, missing parameters or shape mismatches.
    """
    state = normalise_state_keys(state)
    target = jax.eval_shape(
        lambda: module.init(jax.random.key(0), [jnp.zeros(s, jnp.float32) for s in input_shapes], train=False)
    )
    flat = {}
    mapped, missing, mismatched = [], [], []
    for collection, tree in target.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            names = tuple(p.key for p in path)
            key = flax_to_torch_key(collection, names)
            if key not in state:
                missing.append(key)
                continue
            value = _to_flax(names[-1], state[key], leaf.shape)
            if value.shape != leaf.shape:
                mismatched.append(
                    f"{key}: checkpoint {tuple(state[key].shape)} -> {tuple(value.shape)}, "
                    f"module expects {tuple(leaf.shape)}"
                )
                continue
            flat[(collection,) + names] = value.astype(leaf.dtype)
            mapped.append(key)
    unused = sorted(set(state) - set(mapped))
    report = {"mapped": mapped, "unused": unused, "missing": missing, "mismatched": mismatched}
    if strict and (missing or unused or mismatched):
        raise ConversionError(_describe(report))
    return _unflatten(flat), report


def _describe(report, limit=8) -> str:
    parts = []
    for what, label in (
        ("mismatched", "shape mismatches"),
        ("missing", "module parameters without a checkpoint key"),
        ("unused", "checkpoint keys without a module parameter"),
    ):
        items = report[what]
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "checkpoint does not match the architecture: " + "; ".join(parts)


def _unflatten(flat: dict[tuple, Any]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return out


@dataclasses.dataclass
class Conversion:
    """Everything a conversion produced."""

    module: Any
    variables: dict
    model_config: ml_collections.ConfigDict
    report: dict
    pyslowfast_cfg: dict
    epoch: int | None


def read_checkpoint(path: str) -> tuple[dict, dict, int | None]:
    """(model_state, parsed cfg, epoch) of a PySlowFast checkpoint (a local path or ``gs://`` URL)."""
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        raise CheckpointReadError(f"{path}: no 'model_state' entry; not a PySlowFast checkpoint")
    cfg_text = ckpt.get("cfg")
    if not isinstance(cfg_text, str):
        raise CheckpointReadError(f"{path}: no 'cfg' YAML string; cannot tell the architecture")
    try:
        cfg = yaml.safe_load(cfg_text)
    except yaml.YAMLError as e:
        raise CheckpointReadError(f"{path}: the stored 'cfg' is not valid YAML ({e})") from None
    return ckpt["model_state"], cfg, ckpt.get("epoch")


def convert_checkpoint(
    path: str, dtype: str = "float32", check: Callable[[ml_collections.ConfigDict, str], None] | None = None
) -> Conversion:
    """Reads ``path`` and builds the matching module and variables (see module doc).

    ``check(model_config, path)``, when given, runs on the architecture read from the stored cfg
    before any weight is converted, so a checkpoint the caller cannot use fails early.
    """
    state, cfg, epoch = read_checkpoint(path)
    model_cfg = model_config_from_pyslowfast(cfg, {k: np.shape(v) for k, v in state.items()})
    if check is not None:
        check(model_cfg, path)
    model_cfg.dtype = dtype
    module = models.build(model_cfg)
    try:
        variables, report = variables_from_state_dict(module, state, models.input_shapes(model_cfg))
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None
    return Conversion(module, variables, model_cfg, report, cfg, epoch)


def load_pyslowfast(path: str):
    """``(module, variables)`` for a PySlowFast / Ego-Exo ``.pyth`` file (no torch needed)."""
    conv = convert_checkpoint(path)
    return conv.module, conv.variables
