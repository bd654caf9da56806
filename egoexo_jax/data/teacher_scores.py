"""Ego-Score and Object-Score teacher files: the official score pickles, read and written.

``k400_ego_predicts.pkl`` (2 values per video, class 1 = egocentric) and ``k400_IN_predicts.pkl``
(1000 ImageNet values per video), see docs/formats.md#teacher-score-pickles: a pickled ``dict``
mapping the *relative video path exactly as written in the Kinetics csv* (first field of a
``train.csv`` line) to a 1-D numeric array.  The values are used as teacher **logits** (the loss
applies ``softmax(t / T)``).  :class:`TeacherScores` reads them (through the restricted unpickler of
:mod:`egoexo_jax.data.restricted_pickle`, never the plain one) into one contiguous
``[num_videos, C] float32`` matrix plus a key -> row table.

Any malformed file or entry (not a flat numeric vector, not finite, a logit beyond
``MAX_TEACHER_LOGIT``, the wrong length) raises :class:`~egoexo_jax.data.errors.TeacherFileError`
naming the file and the entry.
"""

from __future__ import annotations

import numbers
import os
import pickle
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from egoexo_jax import storage
from egoexo_jax.data import restricted_pickle
from egoexo_jax.data.errors import TeacherFileError

__all__ = ["MAX_TEACHER_LOGIT", "TeacherScores", "write_score_pickle"]

# Teacher scores are logits (docs/formats.md#teacher-score-pickles); a classifier's logits are
# tens at most, so a value beyond this is a damaged file, not a confident teacher.
MAX_TEACHER_LOGIT = 1e4


def _score_vector(value: Any, *, where: str, length: Optional[int] = None) -> np.ndarray:
    """One teacher entry as a ``[C] float32`` vector: flat, numeric, finite logits within
    ``MAX_TEACHER_LOGIT`` (``where`` names the file and entry in the error)."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):  # before np.asarray: a ragged / nested list is its unnamed ValueError
            if not isinstance(item, (numbers.Real, np.number, np.bool_)):
                of = f"{length} numbers" if length else "numbers"
                what = type(item).__name__
                raise TeacherFileError(f"{where}: element {i} is a {what}; expected a flat vector of {of}")
        array = np.asarray(value)
    elif isinstance(value, np.ndarray):
        array = value
    elif np.isscalar(value):
        array = np.asarray(value)
    else:
        raise TeacherFileError(f"{where}: value of type {type(value).__name__} is not a numeric array")
    if array.dtype.kind not in "fiub":
        raise TeacherFileError(f"{where}: dtype {array.dtype} is not numeric")
    if array.ndim != 1:
        raise TeacherFileError(f"{where}: expected a 1-D vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise TeacherFileError(f"{where}: contains NaN or infinite values")
    large = np.abs(array.astype(np.float64)) > MAX_TEACHER_LOGIT
    if np.any(large):
        raise TeacherFileError(
            f"{where} has the value {float(array[np.argmax(large)]):g}; "
            f"expected teacher logits within +-{MAX_TEACHER_LOGIT:g}"
        )
    return array.astype(np.float32)


class TeacherScores:
    """Per-video teacher vectors (Ego-Score ``[2]`` or Object-Score ``[1000]``), read-only.

    Args:
      source: path (or ``gs://`` URL) of an official score pickle, or an in-memory mapping
        ``key -> [C] array``.
      num_classes: expected vector length (2 for the ego file, 1000 for the ImageNet one); if
        ``None`` every vector must have the length of the first one.
      name: label used in error messages (defaults to the path).

    Attributes:
      values: ``[num_videos, C] float32`` matrix, one row per key (teacher logits).
      num_classes: ``C``.
    """

    def __init__(
        self,
        source: str | os.PathLike | Mapping[str, Any],
        num_classes: Optional[int] = None,
        name: Optional[str] = None,
    ):
        if isinstance(source, (str, os.PathLike)):
            self.name = name or os.fspath(source)
            try:
                # Streamed: the Object-Score file is about 1 GB; an object is read in 32 MiB ranges.
                with storage.open_read(os.fspath(source), block_size=32 * 2**20) as fp:
                    data = restricted_pickle.load(fp)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RecursionError) as err:
                raise TeacherFileError(f"{self.name}: not a readable teacher score pickle ({err})") from err
        else:
            self.name = name or "<teacher scores>"
            data = source
        if not isinstance(data, Mapping):
            raise TeacherFileError(f"{self.name}: expected a dict of video -> scores, got {type(data).__name__}")
        keys = []
        values = None
        for row, (key, value) in enumerate(data.items()):
            if isinstance(key, bytes):
                try:
                    key = key.decode("utf-8")
                except UnicodeDecodeError:
                    raise TeacherFileError(f"{self.name}: key {key!r} is not UTF-8 text") from None
            if not isinstance(key, str):
                raise TeacherFileError(f"{self.name}: key {key!r} is not a string")
            vector = _score_vector(value, where=f"{self.name}: entry {key!r}", length=num_classes)
            if values is None:  # one preallocated matrix: the ImageNet file is ~1 GB as float32
                if num_classes is None:
                    num_classes = len(vector)
                values = np.empty((len(data), num_classes), np.float32)
            if len(vector) != num_classes:
                raise TeacherFileError(f"{self.name}: entry {key!r} has {len(vector)} values, expected {num_classes}")
            values[row] = vector
            keys.append(key)
        self.num_classes = int(num_classes or 0)
        self.values = values if values is not None else np.zeros((0, self.num_classes), np.float32)
        self.values.setflags(write=False)
        self._index = {key: i for i, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> Iterable[str]:
        return self._index.keys()

    def __getitem__(self, key: str) -> np.ndarray:
        """``[C] float32`` teacher vector of ``key``; ``KeyError`` naming the file if absent."""
        try:
            return self.values[self._index[key]]
        except KeyError:
            raise KeyError(
                f"{self.name}: no teacher scores for video {key!r} (keys are the relative paths of the "
                "csv lines, e.g. 'abseiling/xyz_000010_000020.mp4')"
            ) from None

    def get(self, key: str, default: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Like ``__getitem__`` but returns ``default`` (``None``) for a missing video."""
        row = self._index.get(key)
        return default if row is None else self.values[row]

    def lookup(self, keys: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Batch lookup.

        Returns:
          values: ``[B, C] float32``; zero rows for videos without a teacher entry.
          mask: ``[B] float32``, 1.0 where the entry exists, 0.0 where it is missing (use it as the
            ``ego_mask`` / ``object_mask`` of the batch so missing clips contribute nothing).
        """
        out = np.zeros((len(keys), self.num_classes), np.float32)
        mask = np.zeros((len(keys),), np.float32)
        for i, key in enumerate(keys):
            row = self._index.get(key)
            if row is not None:
                out[i] = self.values[row]
                mask[i] = 1.0
        return out, mask


def write_score_pickle(path: str | os.PathLike, scores: Mapping[str, Any]) -> None:
    """Write ``{relative video path: [C] vector}`` in the official score-pickle format.

    Values are validated (1-D, numeric, finite, one common length) and stored as ``float32``
    numpy arrays in a plain ``dict``; pickle protocol 4 (numpy arrays pickle through
    ``_reconstruct``, readable by old and new numpy).  The file is written atomically.
    """
    out = {}
    length = None
    for key, value in scores.items():
        if not isinstance(key, str):
            raise TeacherFileError(f"{path}: key {key!r} is not a string")
        vector = _score_vector(value, where=f"{path}: entry {key!r}", length=length)
        if length is None:
            length = len(vector)
        elif len(vector) != length:
            raise TeacherFileError(f"{path}: entry {key!r} has {len(vector)} values, expected {length}")
        out[key] = vector
    storage.atomic_write(path, lambda fp: pickle.dump(out, fp, protocol=4))
