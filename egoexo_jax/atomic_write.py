"""Atomic file writes: a reader sees the previous file or the complete new one, never a torn one.

A base module (standard library only) so that the data readers / writers and the entry points
share one implementation.
"""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], object]) -> None:
    """Writes ``path`` through ``write_fn(binary file)`` on a temporary file, then renames it.

    The temporary file (``.tmp-*-{name}``) lives in ``path``'s folder, which is created if needed,
    and is flushed to disk before the rename, so a crash leaves either the old ``path`` or the
    new one. On any error (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
