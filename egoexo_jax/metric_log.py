"""Metric sinks: ``workdir/metrics.jsonl``, TensorBoard events and the log, on local disk or ``gs://``.

``metrics.jsonl`` holds one JSON object per line, ``{"step": int, "<name>": float, ...}``; only
process 0 writes it. On local disk each line is appended as it is written. An object store cannot
append, so for a ``gs://`` workdir the logger keeps the file's lines in memory and writes the whole
object at once: at :meth:`MetricLogger.flush`, which the training loop calls before every
checkpoint save and at the end, and otherwise at most every :data:`FLUSH_SECONDS`. Either way every
line up to a saved checkpoint's step is stored before that checkpoint. On resume, lines with a step
after the restored checkpoint (all lines when the run starts without one, e.g. after a kill before
the first checkpoint) are dropped first, so a resumed run's file reads exactly like an
uninterrupted one's.

TensorBoard events go through :class:`egoexo_jax.storage.events.EventWriter` (process 0), written
whole at the same flushes; every process logs its scalars through absl (CLU's ``LoggingWriter``).
"""

from __future__ import annotations

import json
import math
import time
from typing import List, Mapping, Optional

import jax
from clu.metric_writers import LoggingWriter

from egoexo_jax import storage
from egoexo_jax.storage.events import EventWriter

JSONL = "metrics.jsonl"
FLUSH_SECONDS = 10.0


def _plain(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


def read_lines(path: str, up_to_step: Optional[int] = None) -> List[str]:
    """The lines of a ``metrics.jsonl`` (``[]`` when it does not exist), those with a step after
    ``up_to_step`` left out; reading stops at the first line that is not a JSON object with a
    step (a torn end)."""
    if not storage.exists(path):
        return []
    keep = []
    for line in storage.read_text(path).splitlines(keepends=True):
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            break
        if up_to_step is None or step <= up_to_step:
            keep.append(line if line.endswith("\n") else line + "\n")
    return keep


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
        """Drops the lines of steps after ``step`` (written by a run that was then interrupted;
        ``step`` 0: all of them, for a run that starts without a checkpoint) and rewrites the file."""
        if not self.is_main:
            return
        self._lines = read_lines(self.path, up_to_step=step)
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
            self._lines = read_lines(self.path)
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
                storage.write_text(self.path, text)
            except OSError as e:  # a full disk reports no file name: name it
                raise OSError(e.errno, e.strerror, e.filename or self.path) from None
            self._dirty = False
        self.events.flush()

    def close(self) -> None:
        self.flush()
