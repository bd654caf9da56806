"""Idempotent output folders for the demo sets: a marker holding the generation parameters is
written last, so an interrupted run is never taken for a complete one; text files; progress."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Sequence

from egoexo_jax.storage import atomic_write

__all__ = ["MARKER", "FORMAT_VERSION", "read_marker", "write_marker", "remove", "write_lines", "progress"]

MARKER = "COMPLETE"
FORMAT_VERSION = 1  # of the generated sets; part of every marker, so a change regenerates them


def read_marker(path: str) -> dict | None:
    """The parameters stored in the marker file `path`; None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_marker(path: str, params: dict) -> None:
    """Writes `params` as one line of sorted-key JSON into the marker file `path`, atomically."""
    text = json.dumps(params, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove(path: str) -> None:
    """Removes a file, link or folder tree; nothing when `path` does not exist."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def write_lines(path: str, lines: Sequence[str]) -> None:
    """Writes `lines` as UTF-8 text, one per line (creating the folder)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def progress(enabled: bool, what: str, done: int, total: int, start: float) -> None:
    """Prints `done/total` of `what` to stderr at every tenth of the total (when `enabled`)."""
    if enabled and (done == total or done % max(1, total // 10) == 0):
        print(f"[synthetic] {what}: {done}/{total} ({time.time() - start:.1f} s)", file=sys.stderr, flush=True)
