"""Whether a workdir checkpoint's files are the bytes that were saved, and where damaged ones go.

Every committed checkpoint folder (``checkpoints/<step>``, ``checkpoints_best/<step>``) holds
``digests.json``: the sha256 and size of each of its files (:func:`write_digests`), checked before
a restore (:func:`verify_digests`). A missing or changed file is a :class:`DamagedCheckpointError`,
which the callers treat like an unreadable checkpoint: moved to ``checkpoints_damaged/``
(:func:`move_aside`), never deleted. Files are read through :mod:`egoexo_jax.storage` in chunks, so
local disks and ``gs://`` work alike.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import List, Optional, Tuple

import jax
from absl import logging

from egoexo_jax import storage

DAMAGED_DIR = "checkpoints_damaged"  # unreadable checkpoints are moved here, never deleted
DIGESTS = "digests.json"  # in each step folder: {"algorithm": "sha256", "files": {path: {sha256, size}}}
_CHUNK = 8 * 2**20  # files are hashed in chunks of this many bytes
_POLL_SECONDS = 0.2  # how often an asynchronous save is checked for its commit


class DamagedCheckpointError(Exception):
    """A checkpoint's files cannot be read (truncated, missing, corrupt, or differ from their digests)."""


def short(e: BaseException, limit: int = 200) -> str:
    """One line of an exception's message (orbax / tensorstore messages span pages)."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = text.split(" See full TensorStore details")[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def move_aside(directory: str, step: int, name: str) -> str:
    """Moves ``directory/<step>`` to ``<workdir>/checkpoints_damaged/<name>`` (process 0; a
    numbered suffix when that exists; on ``gs://`` a copy, then a delete) and returns the target;
    all processes wait for it."""
    workdir = storage.dirname(directory)
    target = storage.join(workdir, DAMAGED_DIR, name)
    if jax.process_index() == 0:
        n = 1
        while storage.exists(target):
            target = storage.join(workdir, DAMAGED_DIR, f"{name}.{n}")
            n += 1
        storage.move_tree(storage.join(directory, str(step)), target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

        multihost_utils.sync_global_devices(f"egoexo_move_aside_{name}")
    return target


def _files_under(directory: str) -> List[str]:
    """Sorted ``/``-separated paths of every file / object under ``directory``."""
    out = []
    for name in storage.listdir(directory):
        path = storage.join(directory, name)
        if storage.isdir(path):
            out.extend(f"{name}/{rel}" for rel in _files_under(path))
        else:
            out.append(name)
    return sorted(out)


def _sha256(path: str) -> Tuple[str, int]:
    """``(hex sha256, size)`` of a file or object, read in :data:`_CHUNK` pieces."""
    digest, size = hashlib.sha256(), 0
    with storage.open_read(path, block_size=_CHUNK) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_digests(step_dir: str) -> None:
    """Writes ``step_dir/digests.json``: the sha256 and size of every file of a committed
    checkpoint, so that bytes changed later (disk, copy, bit rot) are found on restore."""
    files = {}
    for rel in _files_under(step_dir):
        if rel != DIGESTS:
            sha, size = _sha256(storage.join(step_dir, *rel.split("/")))
            files[rel] = {"sha256": sha, "size": size}
    storage.write_text(
        storage.join(step_dir, DIGESTS), json.dumps({"algorithm": "sha256", "files": files}, indent=1) + "\n"
    )


def verify_digests(step_dir: str) -> bool:
    """Checks every file listed in ``step_dir/digests.json`` against its size and sha256: True when
    all match, False (and a logged warning) for a checkpoint without digests (written before they
    were kept, or killed between its commit and its digests; restored unverified). Raises
    :class:`DamagedCheckpointError` naming the first file that is missing or differs, or an
    unreadable ``digests.json``. Files not listed are not checked."""
    path = storage.join(step_dir, DIGESTS)
    if not storage.exists(path):
        logging.warning("checkpoint %s has no %s (saved before digests were kept); not verified", step_dir, DIGESTS)
        return False
    try:
        listed = json.loads(storage.read_bytes(path))["files"]
        expected = {str(rel): (str(v["sha256"]), int(v["size"])) for rel, v in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DamagedCheckpointError(f"{DIGESTS} cannot be read: {short(e)}") from e
    for rel, (sha, size) in sorted(expected.items()):
        file = storage.join(step_dir, *rel.split("/"))
        try:
            got_size = storage.size(file)
        except FileNotFoundError:
            raise DamagedCheckpointError(f"{rel} is missing; {DIGESTS} lists it") from None
        if got_size != size:
            raise DamagedCheckpointError(f"{rel} has {got_size} bytes; {DIGESTS} records {size}")
        got, _ = _sha256(file)
        if got != sha:
            raise DamagedCheckpointError(f"{rel} has sha256 {got[:12]}...; {DIGESTS} records {sha[:12]}...")
    return True


class PendingDigests:
    """The digests of a checkpoint manager's last save, written once that save is committed:
    by :meth:`watch` (a thread that polls orbax's local ``is_saving_in_progress`` flag) for an
    asynchronous save, or by :meth:`write` (after a wait, a synchronous save or before the next
    save), whichever comes first. Process 0 writes; the others only clear the step."""

    def __init__(self, directory: str):
        self.directory = directory
        self.step: Optional[int] = None
        self._lock = threading.Lock()

    def start(self, step: int) -> None:
        with self._lock:
            self.step = step

    def watch(self, manager, step: int) -> None:
        """Writes the digests of ``step`` in a background thread once ``manager`` has committed it;
        a failure is logged and leaves them pending for :meth:`write` in the training thread."""

        def run():
            while manager.is_saving_in_progress():
                time.sleep(_POLL_SECONDS)
                if self.step != step:
                    return
            try:
                self.write(step)
            except Exception as e:  # pylint: disable=broad-except
                logging.warning("digests of checkpoint %s/%s not written yet: %s", self.directory, step, e)

        threading.Thread(target=run, name=f"digests-{step}", daemon=True).start()

    def write(self, step: Optional[int] = None) -> None:
        """Writes ``digests.json`` of the pending step unless done already (``step``: only if that
        is the one pending). Call only once its save is committed."""
        with self._lock:
            if self.step is None or (step is not None and step != self.step):
                return
            step_dir = storage.join(self.directory, str(self.step))
            if not storage.isdir(step_dir):  # a failed save: orbax reports it at the next wait
                return
            if jax.process_index() == 0:
                write_digests(step_dir)
            self.step = None
