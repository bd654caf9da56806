"""Errors raised by the data pipeline (user errors: see `egoexo_jax.cli`; a `DecodeError` spoils one
sample, which the pipelines count and list)."""

from __future__ import annotations

import io
import os

from egoexo_jax import storage
from egoexo_jax.cli import UserError


class DecodeError(RuntimeError):
    """A video or frame could not be read (missing, empty, corrupt)."""


class AnnotationError(UserError, ValueError):
    """A malformed row in an annotation or split file; the message names the file and line."""

    def __init__(self, path: str | os.PathLike, line: int, message: str):
        self.path = os.fspath(path)
        self.line = line
        super().__init__(f"{self.path}:{line}: {message}")


class TeacherFileError(UserError, ValueError):
    """A teacher file (score pickle, detection file) or one of its entries does not have the
    official format; the message names the file and the entry."""


class TooManyBadInputsError(UserError, RuntimeError):
    """More than the allowed fraction of samples could not be read (see the bad-input log)."""


def not_utf8(path: str | os.PathLike, error: UnicodeDecodeError) -> AnnotationError:
    """The :class:`AnnotationError` for a text file that is not UTF-8, naming the first bad line."""
    with io.BytesIO(storage.read_bytes(os.fspath(path))) as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                shown = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
                return AnnotationError(
                    path,
                    number,
                    f"byte {raw[e.start]:#04x} at column {e.start + 1} is not "
                    f"UTF-8 in: {shown}; expected a UTF-8 text file",
                )
    return AnnotationError(path, 0, f"not UTF-8 text ({error}); expected a UTF-8 text file")
