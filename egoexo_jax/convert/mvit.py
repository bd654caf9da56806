"""PySlowFast MViT ``model_state`` -> Flax variables for :class:`egoexo_jax.models.mvit.MViT`.

Names map as in docs/checkpoints.md#layout-conversion: list entries ``blocks.{i}.`` -> ``blocks_{i}/``
(likewise a multi-task head's ``projections.{j}.`` -> ``projections_{j}/``), dots ->
nesting, and the last component by layer type:

- Linear ``weight [out, in]`` -> ``kernel [in, out]`` (transpose);
- Conv3d ``weight [O, I, kt, kh, kw]`` (OIDHW) -> ``kernel [kt, kh, kw, I, O]`` (DHWIO),
  ``transpose(2, 3, 4, 1, 0)``; depthwise pooling convs have ``I = 1``;
- LayerNorm ``weight`` -> ``scale``; ``bias`` -> ``bias``;
- raw parameters (``cls_token``, ``pos_embed_*``, ``attn.rel_pos_{h,w,t}``,
  ``gamma_{1,2}``) keep their names and layouts.

Every checkpoint key must land on a module parameter of the same shape and every module
parameter must be covered; otherwise ``ValueError`` names the offending keys.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from egoexo_jax.convert.mvit_yaml import mvit_config_from_pyslowfast
from egoexo_jax.models.mvit import MViT

__all__ = [
    "mvit_module_from_cfg",
    "mvit_param_shapes",
    "plan_mvit_conversion",
    "mvit_variables_from_state_dict",
]

# Buffers that carry no model parameter (none in MViT today; kept for robustness).
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def mvit_module_from_cfg(cfg: Mapping[str, Any] | str) -> MViT:
    """Build the :class:`MViT` module described by a PySlowFast cfg (dict or YAML string)."""
    return MViT(config=mvit_config_from_pyslowfast(cfg))


def _default_input_shape(module: MViT) -> tuple:
    c = module.config
    return (1, c.num_frames, c.crop_size, c.crop_size, c.in_chans)


def mvit_param_shapes(module: MViT, sample_input_shape: Optional[Sequence[int]] = None) -> dict:
    """Flattened ``{path tuple: ShapeDtypeStruct}`` of the module's params (no compute)."""
    shape = tuple(sample_input_shape or _default_input_shape(module))

    def init(key):
        return module.init({"params": key, "dropout": key}, [jnp.zeros(shape, jnp.float32)], train=False)

    tree = jax.eval_shape(init, jax.random.key(0))
    return traverse_util.flatten_dict(tree["params"])


def _target_path(key: str, targets: Mapping[tuple, Any]):
    """Flax path and layout transform for one PyTorch key, or ``None`` if it has no home."""
    parts = key.split(".")
    path = []
    i = 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i + 1].isdigit():  # blocks.3 / projections.0
            path.append(f"{parts[i]}_{parts[i + 1]}")
            i += 2
        else:
            path.append(parts[i])
            i += 1
    *prefix, leaf = path
    prefix = tuple(prefix)
    if leaf == "weight":
        if prefix + ("kernel",) in targets:
            return prefix + ("kernel",), "kernel"
        if prefix + ("scale",) in targets:
            return prefix + ("scale",), "identity"
        return None
    full = prefix + (leaf,)
    return (full, "identity") if full in targets else None


def _transformed_shape(shape: Sequence[int], kind: str) -> tuple:
    shape = tuple(shape)
    if kind == "kernel":
        if len(shape) == 2:
            return shape[::-1]
        if len(shape) == 5:
            return tuple(shape[i] for i in (2, 3, 4, 1, 0))
        raise ValueError(f"unexpected kernel rank {len(shape)}")
    return shape


def _transform(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "kernel":
        return value.T if value.ndim == 2 else value.transpose(2, 3, 4, 1, 0)
    return value


def plan_mvit_conversion(
    module: MViT,
    shapes: Mapping[str, Sequence[int]],
    sample_input_shape: Optional[Sequence[int]] = None,
):
    """Match checkpoint key shapes against the module without touching values.

    Args:
      module: the target :class:`MViT`.
      shapes: ``{pytorch key: shape}`` (e.g. from a checkpoint or a key listing).
      sample_input_shape: clip shape for abstract init; default from the module config.

    Returns:
      ``(plan, ignored, targets)``: ``plan`` maps each used key to ``(flax path, kind)``;
      ``ignored`` lists skipped buffer keys; ``targets`` is :func:`mvit_param_shapes`.

    Raises:
      ValueError: naming unmapped checkpoint keys, shape mismatches and module
        parameters that no checkpoint key covers.
    """
    targets = mvit_param_shapes(module, sample_input_shape)
    plan, ignored, unmapped, mismatched = {}, [], [], []
    for key, shape in shapes.items():
        if key.endswith(_IGNORED_SUFFIXES):
            ignored.append(key)
            continue
        hit = _target_path(key, targets)
        if hit is None:
            unmapped.append(key)
            continue
        path, kind = hit
        want = tuple(targets[path].shape)
        try:
            got = _transformed_shape(shape, kind)
        except ValueError:
            got = tuple(shape)
        if got != want:
            mismatched.append(f"{key} {tuple(shape)} -> {'/'.join(path)} {want}")
            continue
        plan[key] = (path, kind)
    covered = {path for path, _ in plan.values()}
    missing = ["/".join(p) for p in targets if p not in covered]
    problems = []
    if unmapped:
        problems.append(f"checkpoint keys with no module parameter: {unmapped}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    if missing:
        problems.append(f"module parameters not in the checkpoint: {missing}")
    if problems:
        raise ValueError("MViT conversion failed; " + "; ".join(problems))
    return plan, ignored, targets


def mvit_variables_from_state_dict(
    module: MViT,
    state: Mapping[str, np.ndarray],
    sample_input_shape: Optional[Sequence[int]] = None,
):
    """Convert a PySlowFast MViT ``model_state`` into Flax variables.

    Args:
      module: the target :class:`MViT` (e.g. from :func:`mvit_module_from_cfg`).
      state: ``{pytorch key: array}`` (numpy; OIDHW convs, ``[out, in]`` linears).
      sample_input_shape: ``[B, T, H, W, C]`` used for the abstract init; defaults to
        the module's configured clip.

    Returns:
      ``(variables, report)``: ``variables = {"params": ...}`` (float32 jnp arrays);
      ``report = {"mapped": [keys], "ignored": [keys]}``.

    Raises:
      ValueError: see :func:`plan_mvit_conversion`.
    """
    shapes = {k: np.shape(v) for k, v in state.items()}
    plan, ignored, targets = plan_mvit_conversion(module, shapes, sample_input_shape)
    flat = {}
    for key, (path, kind) in plan.items():
        value = _transform(np.asarray(state[key]), kind)
        flat[path] = jnp.asarray(value, dtype=targets[path].dtype)
    params = traverse_util.unflatten_dict(flat)
    return {"params": params}, {"mapped": list(plan), "ignored": ignored}
