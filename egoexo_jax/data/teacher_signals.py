"""Readers and writers for the official pre-computed Ego-Exo teacher files.

Two kinds of files (see docs/formats.md#auxiliary-prediction-files):

* **Score pickles** ``k400_ego_predicts.pkl`` (2 values per video, class 1 = egocentric) and
  ``k400_IN_predicts.pkl`` (1000 ImageNet values per video): a pickled ``dict`` mapping the
  *relative video path exactly as written in the Kinetics csv* (first field of a ``train.csv``
  line) to a 1-D numeric array.  The values are used as teacher **logits** (the loss applies
  ``softmax(t / T)``).  :class:`TeacherScores` reads them into one contiguous
  ``[num_videos, C] float32`` matrix plus a key -> row table.

* **Hand-object detections** ``{video}.npy``, one file per video: a sequence with one entry per
  frame, each a pair ``(objects, hands)`` — objects first — where each element is ``None`` or a
  float array ``[N, >=6]`` whose columns start ``x1, y1, x2, y2, score`` in pixels of the
  decoded frame (the remaining columns are detector extras; column 5 is overwritten by the
  clip-frame index).  :class:`HandObjectDetections` loads a video's file on first use (through
  the restricted unpickler of :mod:`egoexo_jax.data.restricted_pickle`, never the plain one),
  keeps a small LRU cache, and returns rows in the official ``meta`` format
  ``[x1, y1, x2, y2, score, t]`` where ``t`` is the index of the frame *within the clip*.

Which list position a clip frame reads depends on the dataset (docs/formats.md#detection-list-positions):

=============  ===============================================  =================================
dataset        file name ``{video}``                            list position of a clip frame
=============  ===============================================  =================================
Kinetics       basename of the video path without extension     absolute decoded frame index
               (:func:`kinetics_video_name`)                    (``int(start) + index_i``)
Charades-Ego   text between the last ``/`` and the last ``-``   0-based position in the video's
               of the first frame path                          frame list; the detection list
               (:func:`charades_ego_video_name`)                length must equal the frame-list
                                                                length (pass ``expected_length``)
EPIC-Kitchens  ``video_id``                                     absolute 1-based frame number,
                                                                ``start_frame + offset``
                                                                (:func:`epic_frame_positions`)
=============  ===============================================  =================================

Any malformed file or entry raises :class:`TeacherFileError` naming the file and the entry.
"""
from __future__ import annotations

import collections
import os
import pickle
import tempfile
import threading
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from egoexo_jax.cli import UserError
from egoexo_jax.data import restricted_pickle

__all__ = [
    "TeacherFileError",
    "TeacherScores",
    "VideoDetections",
    "HandObjectDetections",
    "write_score_pickle",
    "write_detections",
    "load_detection_file",
    "kinetics_video_name",
    "charades_ego_video_name",
    "epic_frame_positions",
]


class TeacherFileError(UserError, ValueError):
    """A teacher file (or one of its entries) does not have the official format."""


def _atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fp:
            write_fn(fp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# Ego-Score / Object-Score pickles
# --------------------------------------------------------------------------------------------


def _score_vector(value: Any, *, where: str) -> np.ndarray:
    """Validate one teacher entry and return it as a ``[C] float32`` vector."""
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (list, tuple)) or np.isscalar(value):
        array = np.asarray(value)
    else:
        raise TeacherFileError(f"{where}: value of type {type(value).__name__} is not a numeric array")
    if array.dtype.kind not in "fiub":
        raise TeacherFileError(f"{where}: dtype {array.dtype} is not numeric")
    if array.ndim != 1:
        raise TeacherFileError(f"{where}: expected a 1-D vector, got shape {array.shape}")
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise TeacherFileError(f"{where}: contains NaN or infinite values")
    return array


class TeacherScores:
    """Per-video teacher vectors (Ego-Score ``[2]`` or Object-Score ``[1000]``), read-only.

    Args:
      source: path of an official score pickle, or an in-memory mapping ``key -> [C] array``.
      num_classes: expected vector length (2 for the ego file, 1000 for the ImageNet one); if
        ``None`` every vector must have the length of the first one.
      name: label used in error messages (defaults to the path).

    Attributes:
      values: ``[num_videos, C] float32`` matrix, one row per key (teacher logits).
      num_classes: ``C``.
    """

    def __init__(self, source: str | os.PathLike | Mapping[str, Any], num_classes: Optional[int] = None,
                 name: Optional[str] = None):
        if isinstance(source, (str, os.PathLike)):
            self.name = name or os.fspath(source)
            try:
                with open(source, "rb") as fp:
                    data = restricted_pickle.load(fp)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
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
                key = key.decode("utf-8")
            if not isinstance(key, str):
                raise TeacherFileError(f"{self.name}: key {key!r} is not a string")
            vector = _score_vector(value, where=f"{self.name}: entry {key!r}")
            if values is None:  # one preallocated matrix: the ImageNet file is ~1 GB as float32
                if num_classes is None:
                    num_classes = len(vector)
                values = np.empty((len(data), num_classes), np.float32)
            if len(vector) != num_classes:
                raise TeacherFileError(
                    f"{self.name}: entry {key!r} has {len(vector)} values, expected {num_classes}")
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
                "csv lines, e.g. 'abseiling/xyz_000010_000020.mp4')") from None

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
        vector = _score_vector(value, where=f"{path}: entry {key!r}")
        if length is None:
            length = len(vector)
        elif len(vector) != length:
            raise TeacherFileError(f"{path}: entry {key!r} has {len(vector)} values, expected {length}")
        out[key] = vector
    _atomic_write(path, lambda fp: pickle.dump(out, fp, protocol=4))


# --------------------------------------------------------------------------------------------
# Hand-object detections
# --------------------------------------------------------------------------------------------


def kinetics_video_name(video_path: str) -> str:
    """Kinetics detection-file stem: basename of the video path without its extension."""
    base = os.path.basename(video_path)
    dot = base.rfind(".")
    return base[:dot] if dot >= 0 else base


def charades_ego_video_name(first_frame_path: str) -> str:
    """Charades-Ego detection-file stem: text between the last ``/`` and the last ``-``.

    ``'rgb/ABCDEFGEGO/ABCDEFGEGO-000001.jpg'`` -> ``'ABCDEFGEGO'`` (the official rule; a path
    without ``-`` gives the text up to the last character, as the official slicing does).
    """
    return first_frame_path[first_frame_path.rfind("/") + 1:first_frame_path.rfind("-")]


def epic_frame_positions(start_frame: int, offsets: Sequence[int]) -> np.ndarray:
    """EPIC list positions: ``start_frame + offset`` (absolute 1-based frame numbers)."""
    return int(start_frame) + np.asarray(offsets, dtype=np.int64)


def _check_dets(value: Any, *, where: str) -> Optional[np.ndarray]:
    """Validate one ``objects`` / ``hands`` element; returns ``[N, 5]`` or ``None``."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise TeacherFileError(f"{where}: expected None or an array, got {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        raise TeacherFileError(f"{where}: dtype {value.dtype} is not numeric")
    if value.ndim != 2 or value.shape[1] < 5:
        raise TeacherFileError(
            f"{where}: expected shape [N, >=6] ([x1, y1, x2, y2, score, ...]), got {value.shape}")
    boxes = value[:, :5]
    if not np.all(np.isfinite(boxes)):
        raise TeacherFileError(f"{where}: boxes or scores contain NaN or infinite values")
    return boxes


class VideoDetections:
    """One video's detections in compact form.

    Attributes:
      num_frames: length of the per-frame list ``F``.
      hand_boxes, obj_boxes: ``[M, 5]`` ``[x1, y1, x2, y2, score]`` of all frames, concatenated,
        float32 (float64 if the file stored float64).
      hand_splits, obj_splits: ``[F + 1] int64``; frame ``f`` owns rows ``splits[f]:splits[f+1]``.
    """

    def __init__(self, name: str, entries: Any):
        self.name = name
        try:
            num_frames = len(entries)
        except TypeError:
            raise TeacherFileError(f"{name}: expected a per-frame sequence, got {type(entries).__name__}") from None
        per_kind = {"obj": [], "hand": []}
        dtype = np.float32
        for f in range(num_frames):
            entry = entries[f]
            try:
                if isinstance(entry, (str, bytes, dict)):
                    raise TypeError
                pair = tuple(entry)
            except TypeError:
                raise TeacherFileError(
                    f"{name}: frame entry {f} is {type(entry).__name__}, expected a pair (objects, hands)") from None
            if len(pair) != 2:
                raise TeacherFileError(f"{name}: frame entry {f} has {len(pair)} elements, expected (objects, hands)")
            for kind, value in zip(("obj", "hand"), pair):
                boxes = _check_dets(value, where=f"{name}: frame entry {f} ({'objects' if kind == 'obj' else 'hands'})")
                per_kind[kind].append(boxes)
                if boxes is not None and boxes.dtype == np.float64:
                    dtype = np.float64
        self.num_frames = num_frames
        self.dtype = np.dtype(dtype)
        for kind, items in per_kind.items():
            counts = np.array([0 if b is None else len(b) for b in items], dtype=np.int64)
            splits = np.zeros(num_frames + 1, np.int64)
            np.cumsum(counts, out=splits[1:])
            present = [b for b in items if b is not None and len(b)]
            boxes = (np.concatenate(present).astype(self.dtype) if present
                     else np.zeros((0, 5), self.dtype))
            setattr(self, f"{kind}_boxes", boxes)
            setattr(self, f"{kind}_splits", splits)

    def rows(self, frame_positions: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Detections of the clip frames, in the official ``meta`` layout.

        Args:
          frame_positions: ``[T]`` ints, the list position of each clip frame (dataset
            convention, see the module docstring).

        Returns:
          ``(hand_rows, obj_rows)``, each ``[K, 6]`` ``[x1, y1, x2, y2, score, t]`` in pixels of
          the decoded frame, ``t`` = clip-frame index (0..T-1), rows grouped by clip frame in
          clip order.  ``K`` may be 0 (shape ``[0, 6]``).
        """
        positions = np.asarray(frame_positions, dtype=np.int64).reshape(-1)
        bad = (positions < 0) | (positions >= self.num_frames)
        if np.any(bad):
            raise IndexError(
                f"{self.name}: frame position {int(positions[bad][0])} outside the detection list "
                f"(length {self.num_frames})")
        out = []
        for kind in ("hand", "obj"):
            boxes = getattr(self, f"{kind}_boxes")
            splits = getattr(self, f"{kind}_splits")
            starts, stops = splits[positions], splits[positions + 1]
            counts = stops - starts
            total = int(counts.sum())
            if total == 0:
                out.append(np.zeros((0, 6), self.dtype))
                continue
            # Row indices of every selected frame, concatenated in clip order.
            offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            index = np.arange(total) + offsets
            rows = np.empty((total, 6), self.dtype)
            rows[:, :5] = boxes[index]
            rows[:, 5] = np.repeat(np.arange(len(positions)), counts)
            out.append(rows)
        return out[0], out[1]


def load_detection_file(path: str | os.PathLike) -> VideoDetections:
    """Read and validate one ``{video}.npy`` detection file (restricted unpickling)."""
    path = os.fspath(path)
    try:
        data = restricted_pickle.load_npy(path)
    except restricted_pickle.UnsafePickleError as err:
        raise TeacherFileError(f"{path}: {err}") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise TeacherFileError(f"{path}: not a readable hand-object detection file ({err})") from err
    if isinstance(data, np.ndarray) and data.ndim == 0:
        data = data.item()
    return VideoDetections(path, data)


class HandObjectDetections:
    """Per-video hand-object detection files in one folder, loaded lazily with an LRU cache.

    Args:
      folder: the unzipped ``*_handobj_predicts`` folder holding ``{video}.npy`` files.
      cache_size: number of videos kept in memory (per process; the official loader keeps 64).
    """

    def __init__(self, folder: str | os.PathLike, cache_size: int = 64):
        self.folder = os.fspath(folder)
        self.cache_size = int(cache_size)
        self._cache: "collections.OrderedDict[str, VideoDetections]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self):
        # Picklable for data-loader worker processes: the cache and the lock stay behind.
        return {"folder": self.folder, "cache_size": self.cache_size}

    def __setstate__(self, state):
        self.__init__(state["folder"], state["cache_size"])

    def path(self, video: str) -> str:
        return os.path.join(self.folder, f"{video}.npy")

    def has_video(self, video: str) -> bool:
        return os.path.exists(self.path(video))

    def video(self, video: str) -> VideoDetections:
        """The (cached) detections of ``video``; ``FileNotFoundError`` naming the path if absent."""
        with self._lock:
            hit = self._cache.get(video)
            if hit is not None:
                self._cache.move_to_end(video)
                return hit
        path = self.path(video)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no hand-object detection file for video {video!r}: {path}")
        dets = load_detection_file(path)
        with self._lock:
            self._cache[video] = dets
            self._cache.move_to_end(video)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return dets

    def boxes_for_frames(self, video: str, frame_positions: Sequence[int],
                         expected_length: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(hand_rows, obj_rows)`` ``[K, 6]`` ``[x1, y1, x2, y2, score, t]`` for a clip.

        Args:
          video: file stem (see :func:`kinetics_video_name`, :func:`charades_ego_video_name`, EPIC
            ``video_id``).
          frame_positions: ``[T]`` list positions of the clip frames (dataset convention).
          expected_length: if given (Charades-Ego: the number of frames in the frame list), the
            detection list must have exactly this length.
        """
        dets = self.video(video)
        if expected_length is not None and dets.num_frames != int(expected_length):
            raise TeacherFileError(
                f"{dets.name}: detection list has {dets.num_frames} frames but the frame list has "
                f"{int(expected_length)}")
        return dets.rows(frame_positions)


def write_detections(path: str | os.PathLike, per_frame: Sequence[Tuple[Any, Any]]) -> None:
    """Write one video's detections in the official ``{video}.npy`` format.

    Args:
      path: output ``.npy`` path.
      per_frame: one ``(objects, hands)`` pair per list position, each ``None`` or an array
        ``[N, >=5]`` (``[x1, y1, x2, y2, score, ...]``; 5-column arrays get a zero 6th column so
        the file matches the official ``[N, >=6]`` layout).

    Stored as an object array of shape ``[F, 2]`` (``numpy.save(allow_pickle=True)``), which the
    official loader (``for o, h in np.load(...)``) and :func:`load_detection_file` both read.
    """
    frames = np.empty((len(per_frame), 2), dtype=object)
    for f, entry in enumerate(per_frame):
        pair = tuple(entry)
        if len(pair) != 2:
            raise TeacherFileError(f"{path}: frame entry {f} has {len(pair)} elements, expected (objects, hands)")
        for j, value in enumerate(pair):
            if value is not None:
                value = np.asarray(value)
                _check_dets(value, where=f"{path}: frame entry {f}")
                if value.shape[1] == 5:
                    value = np.concatenate([value, np.zeros((len(value), 1), value.dtype)], axis=1)
            frames[f, j] = value
    _atomic_write(path, lambda fp: np.save(fp, frames, allow_pickle=True))
