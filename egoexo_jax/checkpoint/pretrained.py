"""Initialising from another checkpoint: one reader for every checkpoint kind, and the transfer.

:func:`load_pretrained` is the one place that tells the checkpoint kinds apart. It reads what
``config.init_from``, ``config.evaluate.checkpoint``, ``predict --checkpoint`` and
``config.teachers.ego.checkpoint`` name: a converted checkpoint directory
(:mod:`egoexo_jax.checkpoint.converted`), a training workdir (its newest readable checkpoint,
:mod:`egoexo_jax.checkpoint.workdir`) or an official PySlowFast / Ego-Exo ``.pyth`` file
(converted on the fly, :mod:`egoexo_jax.convert.pyslowfast`).

:func:`transfer` matches parameters by name and shape, as PySlowFast's fine-tune loading does:
backbone and interaction head transfer, task heads whose name (``head`` vs
``headcharades-ego``) or shape differ are left at their fresh initialisation. What was loaded
and what was not is reported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import ml_collections
import numpy as np
from absl import logging
from flax import traverse_util

from egoexo_jax import storage
from egoexo_jax.checkpoint import converted
from egoexo_jax.checkpoint.workdir import (
    CHECKPOINT_DIR,
    CheckpointMismatchError,
    is_training_workdir,
    load_workdir_variables,
)
from egoexo_jax.cli import InputError, MissingFileError
from egoexo_jax.convert import pyslowfast


def load_pretrained(
    path: str,
    flag: str = "config.init_from",
    check: Optional[Callable[[ml_collections.ConfigDict, str], None]] = None,
) -> Tuple[ml_collections.ConfigDict, dict, str]:
    """``(model_config, variables, description)`` from a converted dir, a training workdir or a ``.pyth``.

    Args:
      path: the checkpoint, a local path or a ``gs://`` URL.
      flag: the option that named it, for error messages.
      check: ``check(model_config, path)`` raises when the architecture cannot serve the caller
        (e.g. an ego teacher that is not 2-way); for a ``.pyth`` it runs before the weights are
        converted.
    Raises:
      cli.MissingFileError: ``path`` does not exist.
      cli.InputError: ``path`` is none of the three kinds (the message lists the checkpoints a
        folder of them holds).
    """
    path = storage.check(str(path), flag)
    if not storage.exists(path):
        raise MissingFileError(
            f"checkpoint not found, {flag}={path}, expected a converted checkpoint "
            "directory, a training workdir or a .pyth file"
        )
    is_dir = storage.isdir(path)
    if is_dir and converted.is_converted_dir(path):
        _, variables, cfg = converted.load_converted(path)
        what = f"converted checkpoint {path}"
    elif is_dir and is_training_workdir(path):
        cfg, variables, step = load_workdir_variables(path)
        what = f"training workdir {path} (step {step})"
    elif storage.isfile(path):
        conv = pyslowfast.convert_checkpoint(path, check=check)
        return conv.model_config, conv.variables, f"PySlowFast checkpoint {path} (epoch {conv.epoch})"
    else:
        inside = sorted(
            f"{name}/"
            for name in storage.listdir(path)
            if is_training_workdir(storage.join(path, name)) or converted.is_converted_dir(storage.join(path, name))
        )
        hint = (
            f"; it holds {', '.join(inside)}: pass one of them, e.g. {flag}={storage.join(path, inside[0][:-1])}"
            if inside
            else ""
        )
        raise InputError(
            f"not a checkpoint, {flag}={path}, expected a converted checkpoint directory (with "
            f"{converted.MODEL_CONFIG}), a training workdir (with {CHECKPOINT_DIR}/) or a .pyth "
            f"file{hint}"
        )
    if check is not None:
        check(cfg, path)
    return cfg, variables, what


@dataclasses.dataclass
class TransferReport:
    """What :func:`transfer` copied, and what it left at the fresh initialisation (full paths)."""

    loaded: List[str]
    reinitialised: List[str]  # present in the source with another shape
    missing: List[str]  # target parameters the source does not have
    unused: List[str]  # source entries the target does not have

    def summary(self, limit: int = 12) -> str:
        def show(names):
            s = ", ".join(names[:limit])
            return s + (f", ... (+{len(names) - limit})" if len(names) > limit else "")

        lines = [f"loaded {len(self.loaded)} arrays"]
        if self.reinitialised:
            lines.append(f"re-initialised (shape differs) {len(self.reinitialised)}: {show(self.reinitialised)}")
        if self.missing:
            lines.append(f"not in the checkpoint, freshly initialised {len(self.missing)}: {show(self.missing)}")
        if self.unused:
            lines.append(f"in the checkpoint but not in this model (dropped) {len(self.unused)}: {show(self.unused)}")
        return "\n".join(lines)


def transfer(target: dict, source: dict, *, allow_reinit: bool = True) -> Tuple[dict, TransferReport]:
    """Copies ``source`` arrays into ``target`` ({collection: tree}) where names and shapes agree.

    Names are compared as full paths (``params/s2/pathway0_res0/...``), so heads with a task suffix
    in their name never transfer across tasks (PySlowFast's behaviour). A same-named entry with a
    different shape is re-initialised when ``allow_reinit`` (else a ``ValueError`` naming it).
    """
    flat_t = {(c,) + k: v for c in target for k, v in traverse_util.flatten_dict(target[c]).items()}
    flat_s = {(c,) + k: v for c in source for k, v in traverse_util.flatten_dict(source[c]).items()}
    out, loaded, reinit, missing = {}, [], [], []
    for key, value in flat_t.items():
        name = "/".join(key)
        src = flat_s.get(key)
        if src is None:
            out[key] = value
            missing.append(name)
        elif tuple(np.shape(src)) != tuple(np.shape(value)):
            if not allow_reinit:
                raise CheckpointMismatchError(
                    f"init_from: {name} has shape {np.shape(src)} in the checkpoint, {np.shape(value)} in the model"
                )
            out[key] = value
            reinit.append(name)
        else:
            out[key] = np.asarray(src, dtype=np.asarray(value).dtype)
            loaded.append(name)
    unused = sorted("/".join(k) for k in flat_s if k not in flat_t)
    tree: Dict[str, Any] = {}
    for key, value in out.items():
        tree.setdefault(key[0], {})[key[1:]] = value
    result = {c: traverse_util.unflatten_dict(v) for c, v in tree.items()}
    report = TransferReport(loaded, reinit, missing, unused)
    logging.info("init_from transfer:\n%s", report.summary())
    return result, report
