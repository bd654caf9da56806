"""Training checkpoints (orbax ``CheckpointManager``) and fine-tune initialisation.

Layout of ``workdir/checkpoints/<step>/``: ``state`` (orbax ``StandardSave`` of the train-state
tree: step, params, batch_stats, opt_state, rng) and ``meta`` (JSON: data-iterator state, the
metric accumulator, the model config). Saves are asynchronous and atomic (orbax writes to a
temporary directory and renames it when complete), so a run killed at any moment leaves only
complete checkpoints; the newest ``keep`` are kept.

The state with the best periodic validation metric (PySlowFast's ``checkpoint_best.pyth``) lives in
``workdir/checkpoints_best/<step>/`` with the same layout (:class:`BestCheckpoints`), outside the
keep-N pruning; ``meta["best"]`` names the metric and its value.

``init_from`` (:func:`load_pretrained` / :func:`transfer`): a converted checkpoint directory
(``python -m egoexo_jax.convert``), an official ``.pyth`` file or another training workdir.
Parameters are matched by name and shape, as PySlowFast's fine-tune loading does: backbone and
interaction head transfer, task heads whose name (``head`` vs ``headcharades-ego``) or shape
differ are left at their fresh initialisation. What was loaded and what was not is reported.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from egoexo_jax.convert import export

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"


class Checkpointer:
    """Keep-N asynchronous checkpoints of ``(state tree, JSON meta)`` in ``workdir/checkpoints``."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
        """Starts an (asynchronous) save of ``state`` (pytree of arrays) and ``meta`` (JSON)."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, state_like: Any, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
        """Restores ``(state, meta)`` at ``step`` (default newest) onto ``state_like``'s structure,
        shapes and shardings (arrays or ``jax.ShapeDtypeStruct`` s)."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(_abstract, state_like)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class BestCheckpoints:
    """Best-validation states of a run in ``workdir/checkpoints_best/<step>/``.

    Saves are synchronous, so a periodic checkpoint whose meta records a best step is never on
    disk before that best state. Older bests are removed only once a periodic checkpoint at or
    after a newer best exists (:meth:`prune`), and a resumed run first drops the bests saved after
    the step it restarts from (:meth:`discard_after`; it recomputes them): a run killed at any
    moment and resumed ends with the same best checkpoint as an uninterrupted one.
    """

    def __init__(self, workdir: str):
        self.directory = os.path.join(os.path.abspath(workdir), BEST_DIR)
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                               enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> List[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def discard_after(self, step: int) -> None:
        """Deletes the bests saved after ``step`` (the step a run resumes from)."""
        for s in self.steps():
            if s > step:
                self.manager.delete(s)

    def prune(self, committed_step: Optional[int]) -> None:
        """Keeps the newest best at or before ``committed_step`` (the newest periodic checkpoint on
        disk) and every best after it; deletes the older ones."""
        if committed_step is None:
            return
        covered = [s for s in self.steps() if s <= committed_step]
        for s in covered[:-1]:
            self.manager.delete(s)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def read_meta(workdir: str, step: Optional[int] = None, *, best: bool = False) -> Tuple[int, Dict[str, Any]]:
    """(step, meta JSON) of a workdir's newest (or given) checkpoint, or of its best-validation
    checkpoint (``best``); FileNotFoundError if none."""
    directory = os.path.join(os.path.abspath(workdir), BEST_DIR if best else CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        what = "best-validation checkpoint (none saved yet?)" if best else "checkpoint"
        raise FileNotFoundError(f"no {what} in {directory}")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    manager.close()
    return step, meta


def load_workdir_variables(workdir: str, step: Optional[int] = None, *,
                           best: bool = False) -> Tuple[ml_collections.ConfigDict, dict, int]:
    """``(model_config, {"params", "batch_stats"}, step)`` from a training workdir's checkpoint
    (the newest, ``step``, or with ``best`` its best-validation one)."""
    step, meta = read_meta(workdir, step, best=best)
    folder = BEST_DIR if best else CHECKPOINT_DIR
    if "model_config" not in meta:
        raise ValueError(f"checkpoint {workdir}/{folder}/{step} has no model_config in its meta")
    model_cfg = export.model_config_from_json(json.dumps(meta["model_config"]))
    directory = os.path.join(os.path.abspath(workdir), folder, str(step), "state")
    tree = restore_on_this_host(directory)
    variables = {"params": tree["params"]}
    if tree.get("batch_stats"):
        variables["batch_stats"] = tree["batch_stats"]
    return model_cfg, jax.tree.map(np.asarray, variables), step


def restore_on_this_host(directory: str) -> Any:
    """Restores a saved tree onto this process's first device, whatever topology saved it (a
    pod's checkpoint opened on a laptop)."""
    checkpointer = ocp.StandardCheckpointer()
    meta = checkpointer.metadata(directory)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree)
    return checkpointer.restore(directory, abstract)


def is_training_workdir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, CHECKPOINT_DIR))


def load_pretrained(path: str) -> Tuple[ml_collections.ConfigDict, dict, str]:
    """``(model_config, variables, description)`` from a converted dir, ``.pyth`` or workdir."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"config.init_from: {path} does not exist")
    if os.path.isdir(path) and export.is_converted_dir(path):
        _, variables, cfg = export.load_converted(path)
        return cfg, variables, f"converted checkpoint {path}"
    if os.path.isdir(path) and is_training_workdir(path):
        cfg, variables, step = load_workdir_variables(path)
        return cfg, variables, f"training workdir {path} (step {step})"
    if os.path.isfile(path):
        from egoexo_jax.convert import pyslowfast  # pylint: disable=import-outside-toplevel
        conv = pyslowfast.convert_checkpoint(path)
        return conv.model_config, conv.variables, f"PySlowFast checkpoint {path} (epoch {conv.epoch})"
    raise ValueError(f"config.init_from: {path} is neither a converted checkpoint directory "
                     f"(with {export.MODEL_CONFIG}), a training workdir (with {CHECKPOINT_DIR}/) "
                     f"nor a .pyth file")


@dataclasses.dataclass
class TransferReport:
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
                raise ValueError(f"init_from: {name} has shape {np.shape(src)} in the checkpoint, "
                                 f"{np.shape(value)} in the model")
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
