"""One writer per workdir: a lock file ``<workdir>/workdir.lock`` taken when a run starts and released
when it ends; a second run into the same workdir is a one-line :class:`WorkdirLockedError`.

Local disk: ``fcntl.flock`` on the lock file, held for the life of the process, so a process that
dies (even by SIGKILL) releases it and the next run takes it over (one logged line naming the
previous holder). The file holds the holder's host, pid, start time and command, for the message.

``gs://``: an object store has no ``flock``. The lock object is created only if absent (upload with
the ``ifGenerationMatch=0`` precondition) and rewritten by a background thread every
``heartbeat_s`` seconds (each rewrite conditional on the generation the holder last wrote). A lock
whose heartbeat (the holder's wall-clock time in the object) is older than ``stale_after_s`` is
stale: the next run replaces it (conditional on the stale generation, so of two runs that race
only one wins) with one logged line. Clocks of the hosts must agree to well within
``stale_after_s``. A lock whose holder ran on this host (same host name) under a pid that no
longer exists is stale at once: a run killed by SIGKILL and restarted on the same machine goes on
without waiting. Release deletes the object.

Several processes of one run (a multi-host JAX job) share the workdir: only process 0 takes the
lock; on the others :class:`WorkdirLock` does nothing (``process_index``, default
``jax.process_index()``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, Optional
from urllib.parse import quote

from absl import logging

from egoexo_jax.cli import UserError
from egoexo_jax.storage import files
from egoexo_jax.storage.paths import absolute, is_url, join, split_url

LOCK_FILE = "workdir.lock"
HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 600.0


class WorkdirLockedError(UserError):
    """Another run holds the workdir's lock (the message names its pid, host, start and command)."""


def _holder() -> Dict[str, Any]:
    """What the lock records about this process: host, pid, start time, command, heartbeat."""
    now = time.time()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
        "heartbeat": now,
        "token": uuid.uuid4().hex,
    }


def _parse(data: bytes) -> Dict[str, Any]:
    """The holder record of a lock file, ``{}`` when empty or unreadable (a holder mid-write)."""
    try:
        info = json.loads(data)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _dead_here(info: Dict[str, Any]) -> bool:
    """Whether the holder ran on this host and its pid is gone (a run killed by SIGKILL or a crash
    leaves its lock object behind: a restart on the same machine need not wait for it to go stale)."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _who(info: Dict[str, Any]) -> str:
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"


class WorkdirLock:
    """``with WorkdirLock(workdir):`` around a run that writes ``workdir`` (training, evaluation).

    :meth:`acquire` raises :class:`WorkdirLockedError` while another live run holds the lock, and
    takes over a stale one (see the module docstring); :meth:`release` gives it back. Only the
    process with ``process_index`` 0 locks; on the others both are no-ops.
    """

    def __init__(
        self,
        workdir: str,
        *,
        heartbeat_s: float = HEARTBEAT_SECONDS,
        stale_after_s: float = STALE_AFTER_SECONDS,
        process_index: Optional[int] = None,
    ):
        self.path = join(absolute(workdir), LOCK_FILE)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        if process_index is None:
            import jax  # pylint: disable=import-outside-toplevel

            process_index = jax.process_index()
        self.active = process_index == 0
        self.held = False
        self.lost = False  # gs://: another run replaced the lock while this one held it
        self._fd: Optional[int] = None
        self._generation: Optional[str] = None
        self._info: Dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _error(self, info: Dict[str, Any]) -> WorkdirLockedError:
        command = f" (command: {info['command']})" if info.get("command") else ""
        return WorkdirLockedError(
            f"{self.path} is held by {_who(info)}{command}; expected one run per workdir "
            "(stop it, or remove the lock if that run is gone)"
        )

    def acquire(self) -> "WorkdirLock":
        """Takes the lock (process 0); :class:`WorkdirLockedError` when another run holds it."""
        if not self.active or self.held:
            return self
        self._info = _holder()
        if is_url(self.path):
            self._acquire_object()
            self._thread = threading.Thread(target=self._heartbeat, name="workdir-lock-heartbeat", daemon=True)
            self._thread.start()
        else:
            self._acquire_file()
        self.held = True
        return self

    def release(self) -> None:
        """Gives the lock back: deletes the lock file / object (only if still this run's)."""
        if not self.held:
            return
        self.held = False
        if is_url(self.path):
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._release_object()
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- local disk: flock -------------------------------------------------------------------

    def _acquire_file(self) -> None:
        files.makedirs(os.path.dirname(self.path))
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    raise
                info = _read_fd(fd)
                for _ in range(20):  # the holder writes its record just after taking the lock
                    if info:
                        break
                    time.sleep(0.05)
                    info = _read_fd(fd)
                os.close(fd)
                raise self._error(info) from None
            if not _same_file(fd, self.path):  # removed by a holder releasing it meanwhile
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                continue
            previous = _read_fd(fd)
            if previous.get("pid") is not None:
                print(f"{self.path}: taking over the lock of {_who(previous)} (that process is gone)", flush=True)
            data = json.dumps(self._info).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            self._fd = fd
            return

    # -- gs://: create-if-absent plus heartbeat ----------------------------------------------

    def _upload(self, generation: str) -> str:
        """Writes this run's record if the object's generation is ``generation`` ("0": absent);
        returns the new generation. ``FileExistsError`` when the precondition fails (HTTP 412)."""
        fs = files.gcs()
        bucket, key = split_url(self.path)
        self._info["heartbeat"] = time.time()
        metadata = json.dumps({"name": key, "contentType": "application/json"}).encode()
        body = (
            b"--==0==\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            + metadata
            + b"\r\n--==0==\r\nContent-Type: application/json\r\n\r\n"
            + json.dumps(self._info).encode()
            + b"\r\n--==0==--"
        )
        with files._errors(self.path):  # pylint: disable=protected-access
            out = fs.call(
                "POST",
                f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",  # pylint: disable=protected-access
                uploadType="multipart",
                ifGenerationMatch=str(generation),
                headers={"Content-Type": 'multipart/related; boundary="==0=="'},
                data=body,
                json_out=True,
            )
        return str(out["generation"])

    def _read_object(self):
        """``(holder record, generation)`` of the lock object, ``(None, None)`` when absent."""
        fs = files.gcs()
        bucket, key = split_url(self.path)
        try:
            with files._errors(self.path):  # pylint: disable=protected-access
                headers, data = fs.call("GET", "b/{}/o/{}", bucket, key, alt="media")
        except FileNotFoundError:
            return None, None
        generation = {k.lower(): v for k, v in dict(headers).items()}.get("x-goog-generation")
        return _parse(data), generation

    def _acquire_object(self) -> None:
        for _ in range(10):
            try:
                self._generation = self._upload("0")
                return
            except FileExistsError:
                pass
            info, generation = self._read_object()
            if info is None:  # released meanwhile: try to create it again
                continue
            age = time.time() - float(info.get("heartbeat", 0) or 0)
            dead = _dead_here(info)
            if age <= self.stale_after_s and not dead:
                raise self._error(info)
            try:
                self._generation = self._upload(generation)
            except FileExistsError:  # another run took it over first
                continue
            why = (
                "that process is gone from this host"
                if dead
                else f"no heartbeat for {age:.0f} s, more than {self.stale_after_s:g} s"
            )
            print(f"{self.path}: taking over the lock of {_who(info)} ({why})", flush=True)
            return
        raise self._error(self._read_object()[0] or {})

    def _heartbeat(self) -> None:
        """Background thread: rewrites the lock object every ``heartbeat_s`` seconds."""
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._generation = self._upload(self._generation)
            except FileExistsError:
                self.lost = True
                info, _ = self._read_object()
                logging.error("%s: another run replaced this run's lock: %s", self.path, _who(info or {}))
                return
            except Exception as e:  # pylint: disable=broad-except  (a network hiccup: next beat)
                logging.warning("%s: heartbeat not written: %s", self.path, e)

    def _release_object(self) -> None:
        if self.lost:
            return
        info, generation = self._read_object()
        if info is None or info.get("token") != self._info.get("token"):
            return
        fs = files.gcs()
        bucket, key = split_url(self.path)
        try:
            with files._errors(self.path):  # pylint: disable=protected-access
                fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=str(generation))
        except (FileNotFoundError, FileExistsError):  # gone or replaced meanwhile: not ours to delete
            pass


def _read_fd(fd: int) -> Dict[str, Any]:
    return _parse(os.pread(fd, 1 << 16, 0))


def _same_file(fd: int, path: str) -> bool:
    """Whether the open ``fd`` is still the file at ``path`` (not unlinked or replaced)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
