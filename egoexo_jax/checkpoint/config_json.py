"""A model config as JSON: how converted directories and training checkpoints store the architecture.

Only the architecture is stored; how a model runs (``models.RUNTIME_FIELDS``: kernels,
precision, rematerialisation, rewrites) is the reader's choice. Reading back turns JSON lists into the
tuples the model config uses and refuses keys the model config does not have.
"""

from __future__ import annotations

import json

import ml_collections

from egoexo_jax import models
from egoexo_jax.cli import InputError

__all__ = ["model_config_to_json", "model_config_from_json"]


def _json_ready(v):
    if isinstance(v, (tuple, list)):
        return [_json_ready(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_ready(x) for k, x in v.items()}
    return v


def model_config_to_json(cfg: ml_collections.ConfigDict) -> str:
    """The architecture part of a model config as JSON (how it runs, ``models.RUNTIME_FIELDS``,
    is the reader's choice and not stored)."""
    data = {k: v for k, v in cfg.to_dict().items() if k not in models.RUNTIME_FIELDS}
    return json.dumps(_json_ready(data), indent=2, sort_keys=True)


def model_config_from_json(text: str, where: str = "model_config.json") -> ml_collections.ConfigDict:
    """The model config stored as ``text`` (defaults for keys it lacks); ``where`` names it in errors."""
    base = models.default_model_config()
    data = json.loads(text)
    for k, v in data.items():
        if k not in base:
            raise InputError(f"unknown model config key {k!r} in {where}")
        base[k] = _retuple(v) if k != "mvit" else ml_collections.ConfigDict(v)
    return base


def _retuple(v):
    if isinstance(v, list):
        return tuple(_retuple(x) for x in v)
    return v
