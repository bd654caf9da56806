"""Logging unreadable inputs, each once, from several worker processes and hosts.

One line per input: `path<TAB>reason`, listing each input once (with the first reason seen; a
truncated video fails with a different frame number per clip).

Local file: each line is written with a single `write` on a file opened with O_APPEND, under an
exclusive `flock`, after checking (under the lock) that the file does not list that input yet, so
lines from different processes never interleave or repeat across workers, epochs or resumed runs.

`gs://` object: there is no append and no lock. Each process writes its own part object,
`{log}.parts/{random id}.txt`, rewritten whole with that process's lines whenever it adds one
(bad inputs are rare), after checking the parts already there. :func:`read_bad_input_log` merges
the log object and every part; :func:`consolidate` (process 0, at the end of a training run or
an evaluation) writes the merged list into the log object itself. Parts are never deleted, so a
worker still running cannot lose a line to a merge.
"""

from __future__ import annotations

import os
import threading
import uuid

from egoexo_jax import storage

PARTS = ".parts"


class BadInputLog:
    """Picklable handle on the log (a path of None or '' disables logging); see the module doc."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = os.fspath(path) if path else None
        self._seen: set[str] = set()
        self._part: tuple[int, str, list[bytes], threading.Lock] | None = None  # pid, object, lines, lock

    def __getstate__(self):
        return {"path": self.path, "_seen": set(), "_part": None}

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
        if storage.is_url(self.path):
            self._write_part(clean_path, line)
        else:
            self._append_locked(head, line)

    def _append_locked(self, head: bytes, line: bytes) -> None:
        def unless_listed(existing: bytes) -> bytes | None:
            return None if any(old.startswith(head) for old in existing.splitlines()) else line

        storage.locked_append(self.path, unless_listed)

    def _write_part(self, clean_path: str, line: bytes) -> None:
        if self._part is None or self._part[0] != os.getpid():  # first write in this process
            name = storage.join(self.path + PARTS, f"{uuid.uuid4().hex}.txt")
            self._part = (os.getpid(), name, [], threading.Lock())
        _, name, lines, lock = self._part
        with lock:
            if any(p == clean_path for p, _ in read_bad_input_log(self.path)):
                return
            lines.append(line)
            storage.write_bytes(name, b"".join(lines))


def read_bad_input_log(path: str | os.PathLike) -> list[tuple[str, str]]:
    """[(path, reason)] of a log (and, for a `gs://` log, its parts), each input once; [] when
    there is none."""
    path = os.fspath(path)
    texts = [storage.read_text(path)] if storage.exists(path) else []
    parts = path + PARTS
    if storage.is_url(path) and storage.isdir(parts):
        names = [storage.join(parts, n) for n in storage.listdir(parts) if n.endswith(".txt")]
        texts += [data.decode("utf-8") for data in storage.read_many(names) if isinstance(data, bytes)]
    out, seen = [], set()
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                entry = tuple(line.split("\t", 1))
                if entry[0] not in seen:
                    seen.add(entry[0])
                    out.append(entry)
    return out


def consolidate(path: str | os.PathLike | None) -> None:
    """Writes the merged entries of a `gs://` log's parts into the log object (nothing to do for
    a local file, which is written in place)."""
    if not path or not storage.is_url(os.fspath(path)) or not storage.isdir(os.fspath(path) + PARTS):
        return
    entries = read_bad_input_log(path)
    storage.write_text(os.fspath(path), "".join(f"{p}\t{r}\n" for p, r in entries))
