"""Metric sinks: ``workdir/metrics.jsonl``, TensorBoard events and the log, on local disk or ``gs://``.

``metrics.jsonl`` holds one JSON object per line, ``{"step": int, "<name>": float, ...}``; only
process 0 writes it. On local disk each line is appended as it is written. An object store cannot
append, so for a ``gs://`` workdir the logger keeps the file's lines in memory and writes the whole
object at once: at :meth:`MetricLogger.flush`, which the training loop calls before every
checkpoint save and at the end, and otherwise at most every :data:`FLUSH_SECONDS`. Either way every
line up to a saved checkpoint's step is stored before that checkpoint. On resume, lines with a step
after the restored checkpoint (all lines when the run starts without one, e.g. after a kill before
the first checkpoint) are dropped first, so a resumed run's file reads exactly like an
uninterrupted one's. Unreadable lines (a write cut by a crash, NUL bytes some file systems leave)
are moved to ``metrics.jsonl.unreadable`` byte for byte, never silently dropped, and the readable
lines around them are kept.

TensorBoard events go through :class:`egoexo_jax.storage.events.EventWriter` (process 0), written
whole at the same flushes; every process logs its scalars through absl (CLU's ``LoggingWriter``).
"""

from __future__ import annotations

import json
import math
import time
from typing import List, Mapping, Optional, Tuple

import jax
from clu.metric_writers import LoggingWriter

from egoexo_jax import storage
from egoexo_jax.storage.events import EventWriter

JSONL = "metrics.jsonl"
UNREADABLE = JSONL + ".unreadable"  # lines a resume found unreadable, kept byte for byte
FLUSH_SECONDS = 10.0


def _plain(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


def _step(line: bytes) -> Optional[int]:
    """The step of a ``metrics.jsonl`` line, None when it is not a JSON object with an int step."""
    try:
        value = json.loads(line)
    except ValueError:  # also bad UTF-8 (UnicodeDecodeError)
        return None
    step = value.get("step") if isinstance(value, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def split_lines(path: str) -> List[Tuple[Optional[int], bytes]]:
    """``(step or None when unreadable, line bytes ending in a newline)`` for each non-blank line
    of a ``metrics.jsonl``, in file order (``[]`` when it does not exist)."""
    if not storage.exists(path):
        return []
    out = []
    for line in storage.read_bytes(path).splitlines(keepends=True):
        if line.strip(b" \t\r\n"):
            out.append((_step(line), line if line.endswith(b"\n") else line + b"\n"))
    return out


def read_lines(path: str, up_to_step: Optional[int] = None) -> List[str]:
    """The readable lines of a ``metrics.jsonl`` (``[]`` when it does not exist), those with a
    step after ``up_to_step`` left out; unreadable lines (a torn or NUL-filled write) are skipped."""
    return [
        line.decode("utf-8")
        for step, line in split_lines(path)
        if step is not None and (up_to_step is None or step <= up_to_step)
    ]


class MetricLogger:
    """``write(step, {name: scalar})`` to ``metrics.jsonl``, TensorBoard and the log."""

    def __init__(self, workdir: str, flush_seconds: float = FLUSH_SECONDS):
        self.is_main = jax.process_index() == 0
        self.path = storage.join(workdir, JSONL)
        self.flush_seconds = flush_seconds
        self.writer = LoggingWriter()
        self.events = EventWriter(workdir) if self.is_main else None
        self._lines: Optional[List[str]] = None  # loaded on first use: the file's lines kept
        self._dirty = False
        self._last_flush = time.monotonic()

    def truncate_after(self, step: int) -> None:
        """Keeps the readable lines of steps up to ``step`` in order, drops those after it
        (written by a run that was then interrupted; ``step`` 0: all of them, for a run that
        starts without a checkpoint) and rewrites the file. Unreadable lines (a crash mid-write)
        are appended to ``metrics.jsonl.unreadable`` as they were, with one printed line."""
        if not self.is_main:
            return
        lines = split_lines(self.path)
        bad = [line for s, line in lines if s is None]
        if bad:
            side = storage.join(storage.dirname(self.path), UNREADABLE)
            if storage.is_url(side):  # no append on an object store: rewrite it whole
                before = storage.read_bytes(side) if storage.exists(side) else b""
                storage.write_bytes(side, before + b"".join(bad))
            else:
                storage.append_bytes(side, b"".join(bad))
            print(f"{self.path}: {len(bad)} unreadable line(s) set aside in {side}", flush=True)
        self._lines = [line.decode("utf-8") for s, line in lines if s is not None and s <= step]
        if storage.exists(self.path):
            self._dirty = True
            self.flush()
        self.events.restart(step)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        scalars = {k: _plain(v) for k, v in scalars.items()}
        floats = {k: v for k, v in scalars.items() if isinstance(v, float)}
        self.writer.write_scalars(step, floats)
        if not self.is_main:
            return
        line = json.dumps({"step": int(step), **scalars}, sort_keys=False) + "\n"
        self.events.write_scalars(step, floats)
        if not storage.is_url(self.path):
            try:
                storage.append_bytes(self.path, line.encode("utf-8"))
            except OSError as e:  # a full disk reports no file name: name it
                raise OSError(e.errno, e.strerror, e.filename or self.path) from None
            return
        if self._lines is None:  # another run's lines (e.g. evaluation into a training workdir) stay
            self._lines = [line.decode("utf-8", "surrogateescape") for _, line in split_lines(self.path)]
        self._lines.append(line)
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """TensorBoard and the log only (CLU's ``ReportProgress`` writes its rates here)."""
        self.writer.write_scalars(step, scalars)
        if self.events is not None:
            self.events.write_scalars(step, scalars)

    def flush(self) -> None:
        """Writes ``metrics.jsonl`` and the TensorBoard events as they stand (process 0)."""
        self._last_flush = time.monotonic()
        if not self.is_main:
            return
        if self._dirty:
            text = "".join(self._lines or [])
            try:
                storage.write_bytes(self.path, text.encode("utf-8", "surrogateescape"))
            except OSError as e:  # a full disk reports no file name: name it
                raise OSError(e.errno, e.strerror, e.filename or self.path) from None
            self._dirty = False
        self.events.flush()

    def close(self) -> None:
        self.flush()
