"""torchvision ``resnet*.pth`` state dicts -> :class:`egoexo_jax.models.resnet2d.ResNet2D`, without torch.

A torchvision ImageNet checkpoint is a plain ``state_dict`` (``OrderedDict`` name -> tensor)
saved with ``torch.save`` (zip layout for torch >= 1.6, legacy layout before);
``egoexo_jax.convert.torch_zip.load_torch_file`` reads both. The architecture is read off the
keys (depth from the blocks per stage and the presence of ``conv3``, width from ``conv1``,
classes from ``fc``) unless ``depth`` is given. The key map is mechanical:

- ``layer2.0.conv1.weight`` <-> params ``layer2_0/conv1/kernel`` (OIHW -> HWIO);
- ``*.bn*.weight/bias`` <-> ``scale``/``bias``; ``running_mean/var`` <-> ``batch_stats`` ``mean``/``var``;
- ``fc.weight`` ``[out, in]`` <-> ``fc/kernel`` ``[in, out]``;
- ``num_batches_tracked`` buffers are ignored, a leading ``module.`` (DataParallel) is dropped.

Every checkpoint key must land on a module variable of the same shape and every module
variable must be filled; otherwise :class:`ConversionError` names the offending keys.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from egoexo_jax.convert.pyslowfast import ConversionError, normalise_state_keys
from egoexo_jax.convert.torch_zip import load_torch_file
from egoexo_jax.models.naming import flax_to_torch_key
from egoexo_jax.models.resnet2d import BLOCKS, BOTTLENECK_DEPTHS, ResNet2D

__all__ = ["ConversionError", "infer_architecture", "load_torchvision_resnet", "variables_from_torchvision"]

_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")
_LAYOUTS = {(d in BOTTLENECK_DEPTHS, blocks): d for d, blocks in BLOCKS.items()}


def _state_dict_of(obj: Any, path: str) -> dict[str, np.ndarray]:
    """The tensor dict of a loaded file (a bare state_dict, or one under ``state_dict``/``model``)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
        if arrays and len(arrays) == len(obj):
            return normalise_state_keys(arrays)
    raise ConversionError(
        f"{path}: not a torchvision ResNet state_dict (expected a mapping of "
        f"parameter names to tensors, got {type(obj).__name__})"
    )


def infer_architecture(state: Mapping[str, np.ndarray]) -> dict[str, int]:
    """``{"depth", "width", "num_classes"}`` read off torchvision ResNet keys.

    Raises:
      ConversionError: the keys are not a torchvision ResNet-18/34/50/101/152 layout.
    """
    blocks = collections.defaultdict(set)
    for k in state:
        m = _BLOCK_KEY.match(k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    counts = tuple(len(blocks[s]) for s in (1, 2, 3, 4))
    bottleneck = any(".conv3." in k for k in state)
    depth = _LAYOUTS.get((bottleneck, counts))
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ConversionError(
            f"keys do not describe a torchvision ResNet: {kind} blocks per stage {counts}; "
            f"known layouts: { {d: BLOCKS[d] for d in sorted(BLOCKS)} }"
        )
    for needed in ("conv1.weight", "fc.weight"):
        if needed not in state:
            raise ConversionError(f"torchvision ResNet key '{needed}' is missing")
    return {
        "depth": depth,
        "width": int(state["conv1.weight"].shape[0]),
        "num_classes": int(state["fc.weight"].shape[0]),
    }


def _natural(key: str):
    """Sort key keeping ``layer1.2.*`` before ``layer1.10.*`` and one module's entries together."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in key.split(".")]


def _to_flax(leaf_name: str, value: np.ndarray) -> np.ndarray:
    if leaf_name == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if leaf_name == "kernel" and value.ndim == 2:
        return value.T  # [out, in] -> [in, out]
    return value


def _describe(report: dict, limit: int = 8) -> str:
    parts = []
    for what, label in (
        ("mismatched", "shape mismatches"),
        ("missing", "module variables without a checkpoint key"),
        ("unused", "checkpoint keys without a module variable"),
    ):
        items = report[what]
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def variables_from_torchvision(module: ResNet2D, state: Mapping[str, Any]) -> tuple[dict, dict]:
    """Maps a torchvision ResNet ``state_dict`` onto ``module``'s variables (strict).

    Args:
      module: the target :class:`ResNet2D`.
      state: torch key -> numpy array (``num_batches_tracked`` / ``module.`` handled here).
    Returns:
      ``({"params", "batch_stats"} of float32 numpy arrays, report)`` with report lists
      ``mapped`` (torch keys).
    Raises:
      ConversionError: unmapped checkpoint keys, module variables without a key, or shape
        mismatches, each named.
    """
    state = normalise_state_keys(dict(state))
    target = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))
    out: dict = {}
    report = {"mapped": [], "missing": [], "mismatched": [], "unused": []}
    for collection, tree in target.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            names = tuple(p.key for p in path)
            key = flax_to_torch_key(collection, names)
            if key not in state:
                report["missing"].append(key)
                continue
            value = _to_flax(names[-1], state[key])
            if value.shape != leaf.shape:
                report["mismatched"].append(
                    f"{key}: checkpoint {tuple(state[key].shape)} -> "
                    f"{tuple(value.shape)}, module expects {tuple(leaf.shape)}"
                )
                continue
            node = out.setdefault(collection, {})
            for n in names[:-1]:
                node = node.setdefault(n, {})
            node[names[-1]] = np.asarray(value, dtype=leaf.dtype)
            report["mapped"].append(key)
    report["unused"] = sorted(set(state) - set(report["mapped"]), key=_natural)
    report["missing"].sort(key=_natural)
    if report["missing"] or report["mismatched"] or report["unused"]:
        raise ConversionError(
            f"checkpoint does not match ResNet-{module.depth} (width {module.width}, "
            f"{module.num_classes} classes): {_describe(report)}"
        )
    return out, report


def load_torchvision_resnet(path: str, depth: int | None = None, *, dtype=jnp.float32):
    """``(ResNet2D module, variables)`` from a torchvision ``resnet*.pth`` file (no torch needed).

    Args:
      path: a ``torch.save``-d ResNet state_dict (zip or legacy layout).
      depth: expected depth; None infers it from the keys. Width and classes always come from
        the checkpoint.
      dtype: compute dtype of the module (parameters stay float32).
    Returns:
      ``(module, {"params": ..., "batch_stats": ...})`` with numpy float32 leaves.
    Raises:
      ConversionError: not a ResNet state_dict, or keys/shapes that do not fit ``depth``; the
        message names the file and the keys.
      egoexo_jax.convert.torch_zip.CheckpointReadError: unreadable file.
    """
    path = str(path)
    state = _state_dict_of(load_torch_file(path), path)
    try:
        arch = infer_architecture(state)
    except ConversionError as e:
        if depth is None:
            raise ConversionError(f"{path}: {e}") from None
        arch = {
            "depth": None,
            "width": int(state.get("conv1.weight", np.zeros((64,))).shape[0]),
            "num_classes": int(state.get("fc.weight", np.zeros((1000,))).shape[0]),
        }
    want = arch["depth"] if depth is None else int(depth)
    if want not in BLOCKS:
        raise ConversionError(f"{path}: depth={want}; expected one of {sorted(BLOCKS)}")
    module = ResNet2D(depth=want, width=arch["width"], num_classes=arch["num_classes"], dtype=dtype)
    try:
        variables, _ = variables_from_torchvision(module, state)
    except ConversionError as e:
        hint = (
            f" (the keys look like a ResNet-{arch['depth']})"
            if arch["depth"] is not None and arch["depth"] != want
            else ""
        )
        raise ConversionError(f"{path}: {e}{hint}") from None
    return module, variables
