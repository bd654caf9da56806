"""The PyTorch name of a flax variable: how our module paths spell PySlowFast / torchvision keys.

Our flax submodules are named after the PyTorch modules they reimplement, so a variable's
PyTorch ``state_dict`` key follows from its flax path by one mechanical rule. The converters
(``egoexo_jax.convert``) use it to find each checkpoint key's home, and the optimiser
(``egoexo_jax.optim``) uses it for PySlowFast's weight-decay rule, which matches on PyTorch
names (``bn`` in the key).
"""

from __future__ import annotations

import re

__all__ = ["flax_to_torch_key"]

_INDEXED = re.compile(r"^(.*)_(\d+)$")
_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def flax_to_torch_key(collection: str, path: tuple[str, ...]) -> str:
    """``('params', ('s2', 'pathway0_res0', 'branch2', 'a', 'kernel'))`` -> PyTorch key.

    Module names ending in ``_<i>`` are PyTorch list entries (``projections_0`` ->
    ``projections.0``, ``blocks_3`` -> ``blocks.3``).
    """
    leaf = _LEAF_TO_TORCH.get((collection, path[-1]), path[-1])
    parts = []
    for p in path[:-1]:
        m = _INDEXED.match(p)
        parts.extend([m.group(1), m.group(2)] if m else [p])
    return ".".join(parts + [leaf])
