"""Appending unreadable inputs to a log file, safely from several worker processes.

One line per input: `path<TAB>reason`. Each line is written with a single `write` on a file opened
with O_APPEND, under an exclusive `flock`, so lines from different processes never interleave, and
only when the file does not list that input yet (no duplicates across workers, epochs or resumed
runs).
"""

from __future__ import annotations

import fcntl
import os


class BadInputLog:
    """Picklable handle on the log file (opened per write; a path of None or '' disables logging).

    Each input is listed once (with the first reason seen; a truncated video fails with a different
    frame number per clip): a process remembers what it wrote, and before appending it checks, under
    the lock, the lines already there (from other workers, or from the run before a resume).
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = os.fspath(path) if path else None
        self._seen: set[str] = set()

    def __getstate__(self):
        return {"path": self.path, "_seen": set()}

    def write(self, input_path: str, reason: str) -> None:
        if not self.path:
            return
        reason = " ".join(str(reason).split())
        clean_path = str(input_path).replace("\t", " ").replace("\n", " ")
        if clean_path in self._seen:
            return
        self._seen.add(clean_path)
        head = f"{clean_path}\t".encode("utf-8", errors="backslashreplace")
        line = head + f"{reason}\n".encode("utf-8", errors="backslashreplace")
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "rb") as existing:
                if any(old.startswith(head) for old in existing.read().splitlines()):
                    return
            os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def read_bad_input_log(path: str | os.PathLike) -> list[tuple[str, str]]:
    """[(path, reason)] from a log file ([] when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in f if line.strip()]
