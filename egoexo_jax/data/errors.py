"""Errors raised by the data pipeline."""

from __future__ import annotations

import os


class AnnotationError(ValueError):
  """A malformed row in an annotation or split file; the message names the file and line."""

  def __init__(self, path: str | os.PathLike, line: int, message: str):
    self.path = os.fspath(path)
    self.line = line
    super().__init__(f"{self.path}:{line}: {message}")


class TooManyBadInputsError(RuntimeError):
  """More than the allowed fraction of samples could not be read (see the bad-input log)."""
