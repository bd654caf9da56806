"""Hand-object detection files (``{video}.npy``, the 100DOH detector's output), read and written.

One file per video (see docs/formats.md#hand-object-detection-files): a sequence with one entry
per frame, each a pair ``(objects, hands)`` — objects first — where each element is ``None`` or a
float array ``[N, >=6]`` whose columns start ``x1, y1, x2, y2, score`` in pixels of the decoded
frame (the remaining columns are detector extras; column 5 is overwritten by the clip-frame
index). :class:`HandObjectDetections` loads a video's file on first use (through the restricted
unpickler of :mod:`egoexo_jax.data.restricted_pickle`, never the plain one), keeps a small LRU
cache, and returns rows in the official ``meta`` format ``[x1, y1, x2, y2, score, t]`` where
``t`` is the index of the frame *within the clip*.

Which list position a clip frame reads depends on the dataset
(docs/formats.md#detection-list-positions):

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

Any malformed file or entry raises :class:`~egoexo_jax.data.errors.TeacherFileError` naming the
file and the entry.
"""

from __future__ import annotations

import collections
import errno
import os
import pickle
import threading
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from egoexo_jax import storage
from egoexo_jax.data import restricted_pickle
from egoexo_jax.data.errors import TeacherFileError

__all__ = [
    "VideoDetections",
    "HandObjectDetections",
    "write_detections",
    "load_detection_file",
    "kinetics_video_name",
    "charades_ego_video_name",
    "epic_frame_positions",
]


def kinetics_video_name(video_path: str) -> str:
    """Kinetics detection-file stem: basename of the video path without its extension."""
    base = storage.basename(video_path)
    dot = base.rfind(".")
    return base[:dot] if dot >= 0 else base


def charades_ego_video_name(first_frame_path: str) -> str:
    """Charades-Ego detection-file stem: text between the last ``/`` and the last ``-``.

    ``'rgb/ABCDEFGEGO/ABCDEFGEGO-000001.jpg'`` -> ``'ABCDEFGEGO'`` (the official rule; a path
    without ``-`` gives the text up to the last character, as the official slicing does).
    """
    return first_frame_path[first_frame_path.rfind("/") + 1 : first_frame_path.rfind("-")]


def epic_frame_positions(start_frame: int, offsets: Sequence[int]) -> np.ndarray:
    """EPIC list positions: ``start_frame + offset`` (absolute 1-based frame numbers)."""
    return int(start_frame) + np.asarray(offsets, dtype=np.int64)


# Box corners beyond this many pixels from the origin are not a frame's detections (frames are at
# most 8192 pixels a side, see egoexo_jax.data.frames.MAX_FRAME_PIXELS); scores are detector
# confidences in [0, 1]. A value outside either is a damaged file, named with its entry and row.
MAX_BOX_PIXELS = 65536.0


def _check_dets(value: Any, *, where: str) -> Optional[np.ndarray]:
    """Validate one ``objects`` / ``hands`` element (numeric ``[N, >=5]``, finite, corners within
    ``MAX_BOX_PIXELS``, scores in [0, 1]); returns ``[N, 5]`` or ``None``."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise TeacherFileError(f"{where}: expected None or an array, got {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        raise TeacherFileError(f"{where}: dtype {value.dtype} is not numeric")
    if value.ndim != 2 or value.shape[1] < 5:
        raise TeacherFileError(f"{where}: expected shape [N, >=6] ([x1, y1, x2, y2, score, ...]), got {value.shape}")
    boxes = value[:, :5]
    if not np.all(np.isfinite(boxes)):
        row = int(np.argmax(~np.all(np.isfinite(boxes), axis=1)))
        raise TeacherFileError(f"{where}: row {row} {boxes[row].tolist()} has NaN or infinite values")
    bad_box = np.any(np.abs(boxes[:, :4]) > MAX_BOX_PIXELS, axis=1)
    if np.any(bad_box):
        row = int(np.argmax(bad_box))
        raise TeacherFileError(
            f"{where}: row {row} has box corners {boxes[row, :4].tolist()}; expected pixel "
            f"coordinates of the frame (within +-{MAX_BOX_PIXELS:g})"
        )
    bad_score = (boxes[:, 4] < 0) | (boxes[:, 4] > 1)
    if np.any(bad_score):
        row = int(np.argmax(bad_score))
        raise TeacherFileError(
            f"{where}: row {row} has score {boxes[row, 4].item()!r}; expected a detector confidence in [0, 1]"
        )
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
                    f"{name}: frame entry {f} is {type(entry).__name__}, expected a pair (objects, hands)"
                ) from None
            if len(pair) != 2:
                raise TeacherFileError(f"{name}: frame entry {f} has {len(pair)} elements, expected (objects, hands)")
            for kind, value in zip(("obj", "hand"), pair):
                what = "objects" if kind == "obj" else "hands"
                boxes = _check_dets(value, where=f"{name}: frame entry {f} ({what})")
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
            boxes = np.concatenate(present).astype(self.dtype) if present else np.zeros((0, 5), self.dtype)
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
                f"(length {self.num_frames})"
            )
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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RecursionError) as err:
        raise TeacherFileError(f"{path}: not a readable hand-object detection file ({err})") from err
    if isinstance(data, np.ndarray) and data.ndim == 0:
        data = data.item()
    return VideoDetections(path, data)


class HandObjectDetections:
    """Per-video hand-object detection files in one folder, loaded lazily with an LRU cache.

    Args:
      folder: the unzipped ``*_handobj_predicts`` folder holding ``{video}.npy`` files (a local
        folder or a ``gs://`` prefix).
      cache_size: number of videos kept in memory (per process; the official loader keeps 64).

    Whether a video has a file is asked of storage once per video and process (one request for an
    object), then remembered: the teacher files do not change during a run.
    """

    def __init__(self, folder: str | os.PathLike, cache_size: int = 64):
        self.folder = os.fspath(folder)
        self.cache_size = int(cache_size)
        self._cache: "collections.OrderedDict[str, VideoDetections]" = collections.OrderedDict()
        self._present: dict[str, bool] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        # Picklable for data-loader worker processes: the caches and the lock stay behind.
        return {"folder": self.folder, "cache_size": self.cache_size}

    def __setstate__(self, state):
        self.__init__(state["folder"], state["cache_size"])

    def path(self, video: str) -> str:
        return storage.join(self.folder, f"{video}.npy")

    def has_video(self, video: str) -> bool:
        with self._lock:
            known = self._present.get(video)
        if known is None:
            known = storage.exists(self.path(video))
            with self._lock:
                self._present[video] = known
        return known

    def video(self, video: str) -> VideoDetections:
        """The (cached) detections of ``video``; ``FileNotFoundError`` naming the path if absent."""
        with self._lock:
            hit = self._cache.get(video)
            if hit is not None:
                self._cache.move_to_end(video)
                return hit
        path = self.path(video)
        try:
            dets = load_detection_file(path)
        except FileNotFoundError:
            with self._lock:
                self._present[video] = False
            raise FileNotFoundError(errno.ENOENT, f"no hand-object detection file for video {video!r}", path) from None
        with self._lock:
            self._present[video] = True
            self._cache[video] = dets
            self._cache.move_to_end(video)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return dets

    def boxes_for_frames(
        self, video: str, frame_positions: Sequence[int], expected_length: Optional[int] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
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
                f"{int(expected_length)}"
            )
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
    storage.atomic_write(path, lambda fp: np.save(fp, frames, allow_pickle=True))
