"""Training checkpoints of a workdir (orbax ``CheckpointManager``): save, resume, best, read.

Layout of ``workdir/checkpoints/<step>/``: ``state`` (orbax ``StandardSave`` of the train-state
tree: step, params, batch_stats, opt_state, rng) and ``meta`` (JSON: data-iterator state, the
metric accumulator, the model config). Saves are asynchronous and atomic (orbax writes to a
temporary directory and renames it when complete), so a run killed at any moment leaves only
complete checkpoints; the newest ``keep`` are kept.

Every committed checkpoint also holds ``digests.json``, checked before a restore: a file whose bytes
changed makes the checkpoint damaged (set aside, the previous one used; see
:mod:`egoexo_jax.checkpoint.integrity`).

The state with the best periodic validation metric (PySlowFast's ``checkpoint_best.pyth``) lives in
``workdir/checkpoints_best/<step>/`` with the same layout (:class:`BestCheckpoints`), outside the
keep-N pruning; ``meta["best"]`` names the metric and its value.

Readers for other uses (evaluation, prediction, teachers, fine-tuning) take the model config and
variables of a workdir's newest readable checkpoint (:func:`load_workdir_variables`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from egoexo_jax import storage
from egoexo_jax.checkpoint.config_json import model_config_from_json
from egoexo_jax.checkpoint.integrity import (  # noqa: F401  (re-exported: the checkpoint API)
    DAMAGED_DIR,
    DIGESTS,
    DamagedCheckpointError,
    PendingDigests,
    move_aside,
    verify_digests,
    write_digests,
)
from egoexo_jax.checkpoint.integrity import short as _short
from egoexo_jax.cli import InputError, MissingFileError, UserError

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"  # best-validation states, outside keep-N pruning


class CheckpointMismatchError(UserError, ValueError):
    """A readable checkpoint that does not fit this run's config (the message names the key)."""


class Checkpointer:
    """Keep-N asynchronous checkpoints of ``(state tree, JSON meta)`` in ``workdir/checkpoints``."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.directory = storage.join(storage.absolute(workdir), CHECKPOINT_DIR)
        self._digests = PendingDigests(self.directory)  # of the last save, written once committed
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> List[int]:
        return sorted(self.manager.all_steps())

    def read_meta(self, step: int) -> Dict[str, Any]:
        """The JSON meta of checkpoint ``step``; :class:`DamagedCheckpointError` if unreadable."""
        try:
            return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # orbax raises many types (OSError, ValueError, JSONDecodeError ...)
            raise DamagedCheckpointError(_short(e)) from e

    def restore_newest(
        self, state_like: Any, check_meta: Callable[[int, Dict[str, Any]], None]
    ) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
        """``(step, state, meta)`` of the newest readable checkpoint (None when there is none).

        ``check_meta(step, meta)`` raises when the checkpoint does not fit the run's config
        (a :class:`CheckpointMismatchError`, which propagates: the checkpoint is fine, the config
        is not). A checkpoint whose files cannot be read is reported in one line and moved to
        ``workdir/checkpoints_damaged/`` (never deleted); the previous one is tried next. So is
        one whose files differ from its ``digests.json`` (:func:`verify_digests`).
        """
        self.wait()
        for step in reversed(self.all_steps()):
            try:
                verify_digests(storage.join(self.directory, str(step)))
                meta = self.read_meta(step)
                check_meta(step, meta)
                check_tree(
                    state_tree_metadata(storage.join(self.directory, str(step), "state")),
                    state_like,
                    f"{self.directory}/{step}",
                )
                state, meta = self._restore(state_like, step)
                return step, state, meta
            except DamagedCheckpointError as e:
                moved = self.move_aside(step)
                print(
                    f"checkpoint {self.directory}/{step} cannot be read ({e}); moved to {moved}, "
                    "trying the previous one",
                    flush=True,
                )
        return None

    def move_aside(self, step: int) -> str:
        """Moves checkpoint ``step`` to ``<workdir>/checkpoints_damaged/<step>`` (process 0; a
        numbered suffix when that exists; on ``gs://`` a copy, then a delete) and reopens the
        manager without it."""
        target = move_aside(self.directory, step, str(step))
        self.manager.close()
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)
        return target

    def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
        """Starts an (asynchronous) save of ``state`` (pytree of arrays) and ``meta`` (JSON).

        Refuses up front, with an ``OSError(ENOSPC)`` naming the folder, a save the disk has no
        room for (estimated from the newest checkpoint's size, else the arrays' bytes); a disk
        that fills during a save ends in the same one-line error (:func:`_disk_errors`).
        """
        with _disk_errors(self.directory):
            self.manager.wait_until_finished()  # the previous save counts in the space left
            self._digests.write()
            self._check_space(state)
            self._digests.start(step)
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        if self._options.enable_async_checkpointing:
            self._digests.watch(self.manager, step)
        else:
            with _disk_errors(self.directory):
                self._digests.write()

    def _check_space(self, state: Any) -> None:
        free = storage.free_bytes(self.directory)
        if free is None:  # a bucket: no free-space figure
            return
        steps = self.all_steps()
        if steps:
            need = storage.tree_bytes(storage.join(self.directory, str(steps[-1])))
        else:
            need = sum(
                int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                for x in jax.tree.leaves(state)
                if hasattr(x, "shape")
            )
        if need > free:
            raise OSError(
                errno.ENOSPC,
                f"No space left on device (a checkpoint needs about "
                f"{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free)",
                self.directory,
            )

    def restore(self, state_like: Any, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
        """Restores ``(state, meta)`` at ``step`` (default newest) onto ``state_like``'s structure,
        shapes and shardings (arrays or ``jax.ShapeDtypeStruct`` s).

        Raises :class:`DamagedCheckpointError` when the files cannot be read or differ from their
        digests, and :class:`CheckpointMismatchError` when they are readable but hold a train
        state of another structure (e.g. optimizer settings changed).
        """
        self.wait()
        step = self.latest_step() if step is None else step
        verify_digests(storage.join(self.directory, str(step)))
        return self._restore(state_like, step)

    def _restore(self, state_like: Any, step: int) -> Tuple[Any, Dict[str, Any]]:
        abstract = jax.tree.map(_abstract, state_like)
        try:
            out = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
            )
        except Exception as e:  # orbax raises many types for unreadable files
            if "pytree structure" in str(e):
                raise CheckpointMismatchError(
                    f"checkpoint {self.directory}/{step} holds a train state of another structure "
                    f"({_short(e)}); expected the optimizer settings it was saved with"
                ) from e
            raise DamagedCheckpointError(_short(e)) from e
        return out["state"], out["meta"]

    def wait(self) -> None:
        """Waits for the save in progress to be committed and its digests written."""
        with _disk_errors(self.directory):
            self.manager.wait_until_finished()
            self._digests.write()

    def close(self) -> None:
        with _disk_errors(self.directory):
            try:
                self.manager.wait_until_finished()
                self._digests.write()
            finally:
                self.manager.close()


_DISK_MESSAGES = (
    (errno.ENOSPC, "No space left on device"),
    (errno.EDQUOT, "Disk quota exceeded"),
    (errno.EROFS, "Read-only file system"),
    (errno.EACCES, "Permission denied"),
)


@contextlib.contextmanager
def _disk_errors(directory: str):
    """Re-raises an orbax / tensorstore failure caused by the disk (full, quota, read-only) as the
    ``OSError`` it is, naming the file it could not write (else ``directory``)."""
    try:
        yield
    except OSError as e:
        if e.filename or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, directory) from e
    except Exception as e:  # orbax wraps the OS error in ValueError / RuntimeError text
        text = str(e)
        for code, words in _DISK_MESSAGES:
            if words in text or f"os_error_code='{code}'" in text:
                path = re.search(r'Failed (?:writing|to write)[^"]*"([^"]+)"', text)
                raise OSError(code, words, path.group(1) if path else directory) from e
        raise


def state_tree_metadata(directory: str) -> Any:
    """The saved tree (shapes and dtypes) of an orbax ``StandardSave`` item directory, read without
    the step-level metadata (so no orbax warning about it); :class:`DamagedCheckpointError` if it
    cannot be read."""
    try:
        meta = ocp.StandardCheckpointHandler().metadata(epath.Path(directory))
    except Exception as e:  # pylint: disable=broad-except
        raise DamagedCheckpointError(_short(e)) from e
    tree = getattr(meta, "item_metadata", meta)
    return getattr(tree, "tree", tree)


def _leaf_paths(tree: Any) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """``{path: (shape, dtype)}`` with attribute and key steps spelled alike (``['trace']``), so a
    saved tree (lists and dicts) compares with the live one (tuples and named tuples)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = re.sub(r"\.(\w+)", r"['\1']", jax.tree_util.keystr(path))
        out[name] = (
            tuple(np.shape(leaf) if not hasattr(leaf, "shape") else leaf.shape),
            str(np.dtype(leaf.dtype)) if hasattr(leaf, "dtype") else "",
        )
    return out


def check_tree(saved: Any, state_like: Any, where: str) -> None:
    """Raises :class:`CheckpointMismatchError` naming the first array whose presence, shape or
    dtype differs between a checkpoint's saved tree and this run's train state."""
    have, want = _leaf_paths(saved), _leaf_paths(state_like)
    for name in sorted(set(have) | set(want)):
        if have.get(name) != want.get(name):
            got = "absent" if name not in have else f"{have[name][0]} {have[name][1]}"
            exp = "absent" if name not in want else f"{want[name][0]} {want[name][1]}"
            raise CheckpointMismatchError(
                f"checkpoint {where} does not fit this config: {name} is {got} there; expected {exp} "
                "(resume with the config the run started with, or use a new --workdir)"
            )


class BestCheckpoints:
    """Best-validation states of a run in ``workdir/checkpoints_best/<step>/``.

    Saves are synchronous, so a periodic checkpoint whose meta records a best step is never on
    disk before that best state. Older bests are removed only once a periodic checkpoint at or
    after a newer best exists (:meth:`prune`), and a resumed run first drops the bests saved after
    the step it restarts from (:meth:`discard_after`; it recomputes them): a run killed at any
    moment and resumed ends with the same best checkpoint as an uninterrupted one.
    """

    def __init__(self, workdir: str):
        self.directory = storage.join(storage.absolute(workdir), BEST_DIR)
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=None, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)

    def steps(self) -> List[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
        """Saves a best state and, once committed, its ``digests.json``."""
        self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True
        )
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            write_digests(storage.join(self.directory, str(step)))

    def set_aside_damaged(self) -> List[int]:
        """Checks every best state against its digests (:func:`verify_digests`); a damaged one is
        reported in one line and moved to ``<workdir>/checkpoints_damaged/best-<step>``. Returns
        the steps set aside."""
        damaged = []
        for step in self.steps():
            try:
                verify_digests(storage.join(self.directory, str(step)))
            except DamagedCheckpointError as e:
                moved = move_aside(self.directory, step, f"best-{step}")
                print(f"best checkpoint {self.directory}/{step} cannot be read ({e}); moved to {moved}", flush=True)
                damaged.append(step)
        if damaged:
            self.manager.close()
            self.manager = ocp.CheckpointManager(self.directory, options=self._options)
        return damaged

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


def _steps_newest_first(workdir: str, best: bool = False) -> Tuple[str, List[int]]:
    directory = storage.join(storage.absolute(workdir), BEST_DIR if best else CHECKPOINT_DIR)
    if best and not storage.isdir(directory):
        raise MissingFileError(
            f"no best-validation checkpoint, {directory}, expected a run that validated at least once"
        )
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    steps = sorted(manager.all_steps(), reverse=True)
    manager.close()
    if not steps:
        raise MissingFileError(f"no checkpoint, {directory}, expected a training workdir with a saved step")
    return directory, steps


def _read_step_meta(directory: str, step: int) -> Dict[str, Any]:
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for unreadable files
        raise DamagedCheckpointError(_short(e)) from e
    finally:
        manager.close()


def _newest_readable(
    workdir: str, step: Optional[int], read: Callable[[str, int], Any], best: bool = False
) -> Tuple[int, Any]:
    """``(step, read(directory, step))`` for ``step``, or for the newest checkpoint ``read`` can
    read (of the best-validation ones with ``best``): an unreadable one is reported in one line and
    skipped (left in place: this only reads)."""
    directory, steps = _steps_newest_first(workdir, best)
    if step is not None:
        return step, read(directory, step)
    for candidate in steps:
        try:
            return candidate, read(directory, candidate)
        except DamagedCheckpointError as e:
            print(f"checkpoint {directory}/{candidate} cannot be read ({e}); using the previous one", flush=True)
    raise InputError(f"no readable checkpoint, {directory}, expected at least one undamaged saved step")


def read_meta(workdir: str, step: Optional[int] = None, *, best: bool = False) -> Tuple[int, Dict[str, Any]]:
    """(step, meta JSON) of a workdir's newest readable (or the given) checkpoint, or of its
    best-validation checkpoint (``best``); :class:`cli.MissingFileError` if it has none."""
    return _newest_readable(workdir, step, _read_step_meta, best)


def load_workdir_variables(
    workdir: str, step: Optional[int] = None, *, best: bool = False
) -> Tuple[ml_collections.ConfigDict, dict, int]:
    """``(model_config, {"params", "batch_stats"}, step)`` from a training workdir's newest
    readable (or the given) checkpoint, or with ``best`` its best-validation one; a checkpoint
    whose files differ from its digests counts as unreadable."""

    def read(directory: str, step: int):
        verify_digests(storage.join(directory, str(step)))
        meta = _read_step_meta(directory, step)
        if "model_config" not in meta:
            raise InputError(
                f"no model_config in the checkpoint meta, {directory}/{step}, expected a "
                "checkpoint written by egoexo_jax training"
            )
        return meta, restore_on_this_host(storage.join(directory, str(step), "state"))

    step, (meta, tree) = _newest_readable(workdir, step, read, best)
    model_cfg = model_config_from_json(json.dumps(meta["model_config"]))
    variables = {"params": tree["params"]}
    if tree.get("batch_stats"):
        variables["batch_stats"] = tree["batch_stats"]
    return model_cfg, jax.tree.map(np.asarray, variables), step


def restore_on_this_host(directory: str) -> Any:
    """Restores a saved tree onto this process's first device, whatever topology saved it (a
    pod's checkpoint opened on a laptop)."""
    checkpointer = ocp.StandardCheckpointer()
    tree = state_tree_metadata(directory)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree)
    try:
        return checkpointer.restore(directory, abstract)
    except Exception as e:  # orbax / tensorstore raise many types for unreadable files
        raise DamagedCheckpointError(_short(e)) from e


def is_training_workdir(path: str) -> bool:
    """Whether ``path`` is a training workdir (holds ``checkpoints/``)."""
    return storage.isdir(storage.join(path, CHECKPOINT_DIR))


def prepare_workdir(workdir: str, flag: str = "--workdir") -> str:
    """``workdir`` as an absolute path or URL, created if new; an empty value or a file is a
    :class:`UserError` naming ``flag``."""
    if not str(workdir or "").strip():
        raise UserError(f"{flag} is empty; expected a directory (local or gs://BUCKET/PATH) for this run")
    workdir = storage.absolute(storage.check(workdir, flag))
    if storage.isfile(workdir):
        raise UserError(f"{flag}={workdir} is a file; expected a directory (new or of an earlier run)")
    storage.makedirs(workdir)
    return workdir
