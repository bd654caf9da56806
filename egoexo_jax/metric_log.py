"""Metric sinks: CLU writers (TensorBoard) plus ``workdir/metrics.jsonl``.

``metrics.jsonl`` holds one JSON object per line, ``{"step": int, "<name>": float, ...}``. Only
process 0 writes. On start, lines with a step after the restored checkpoint (all lines when the
run starts without one, e.g. after a kill before the first checkpoint) are dropped first, so a
resumed run's file reads exactly like an uninterrupted one's.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax
from clu import metric_writers

JSONL = "metrics.jsonl"


def _plain(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


class MetricLogger:
    """``write(step, {name: scalar})`` to TensorBoard and JSON lines."""

    def __init__(self, workdir: str):
        self.is_main = jax.process_index() == 0
        self.path = os.path.join(workdir, JSONL)
        self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.is_main)

    def truncate_after(self, step: int) -> None:
        """Drops the lines of steps after ``step`` (written by a run that was then interrupted;
        ``step`` 0: all of them, for a run that starts without a checkpoint)."""
        if not self.is_main or not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            lines = f.readlines()
        keep = []
        for line in lines:
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError):
                break  # a torn last line from a killed run
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        scalars = {k: _plain(v) for k, v in scalars.items()}
        self.writer.write_scalars(step, {k: v for k, v in scalars.items() if isinstance(v, float)})
        if self.is_main:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": int(step), **scalars}, sort_keys=False) + "\n")
            except OSError as e:  # a full disk reports no file name: name it
                raise OSError(e.errno, e.strerror, e.filename or self.path) from None

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
