"""Ego-Exo distillation targets from the official offline teacher files, as a picklable ``aux_fn``.

The grain pipelines (:mod:`egoexo_jax.data.train_pipeline`, :mod:`egoexo_jax.data.eval_pipeline`)
call ``aux_fn(meta)`` for every sample in their data workers; :class:`OfflineTeacherTargets` is
such a function.  ``meta`` is
:func:`egoexo_jax.data.samples.sample_meta`: ``dataset``, ``split``, ``key``, ``video_id``,
``frame_indices [T] int64``, ``num_video_frames`` and ``transform`` (the sample's
:class:`~egoexo_jax.data.transforms.SpatialParams` as a dict: ``orig_h/orig_w``,
``resized_h/resized_w``, ``crop_y/crop_x``, ``crop_size``, ``flip``).

It adds, for every signal that comes from a file (docs/formats.md#batch-fields):

=======================  ===============================  ====================================
field                    shape / dtype                    content
=======================  ===============================  ====================================
``ego_target``           ``[2] float32``                  ``k400_ego_predicts.pkl`` entry of
                                                          ``meta['key']`` (teacher logits)
``ego_mask``             ``[] float32``                   1 entry present, 0 missing (zeros)
``object_target``        ``[object_classes] float32``     ``k400_IN_predicts.pkl`` entry
``object_mask``          ``[] float32``                   as ``ego_mask``
``interaction_target``   ``[T_map, g, g, 2] float32``     hand (channel 0) / object (1) maps
``interaction_mask``     ``[] float32``                   0 when the video has no ``.npy``
=======================  ===============================  ====================================

Signals that are not configured are left out of the sample (the loss skips absent targets).

Interaction map, exactly as the official ``kinetics_aux`` / ``handobj_models`` code: the
detections of the clip's ``T`` frames (the fast pathway for SlowFast) become rows
``[x1, y1, x2, y2, score, t]``, the boxes follow the sample's own short-side rescale, crop and
flip (:func:`egoexo_jax.data.interaction_maps.transform_rows`), and are rasterised on a
``g x g`` grid with ``g = crop_size // map_stride`` of *this* sample (7 for 224 training crops,
8 for 256 test crops), soft (max score) or hard.  ``T_map`` frames are kept with
``floor(linspace(0, T - 1, T_map))``: SlowFast ``T_map = T // alpha`` (the slow frames), Slow
``T_map = T``; MViT has no official map head, its ``T_map`` (``T //`` temporal patch stride) is
given explicitly and picked the same way.

Which detection-list position a clip frame reads (docs/formats.md#detection-list-positions) is
what ``meta['frame_indices']`` already holds, per :mod:`egoexo_jax.data.samples`:

=============  =======================================  ============================================
dataset        detection file ``{video}.npy``           ``frame_indices``
=============  =======================================  ============================================
kinetics       :func:`kinetics_video_name` of the key   absolute decoded-frame index
charades_ego   ``meta['video_id']`` (text between the   0-based frame-list position; the detection
               last ``/`` and last ``-`` of the first   list length must equal ``num_video_frames``
               frame path)                              (the frame-list length), else an error
epic100,       ``meta['video_id']``                     absolute 1-based frame number
epic55                                                  (``start_frame + offset``)
=============  =======================================  ============================================

A video frame that the clip uses at several positions (indices clamped at the end of a short
segment or video) keeps its detections at the last of those positions only, as the official
loader's in-place write of the clip index leaves them (``repeated_frames='last'``, see
:func:`egoexo_jax.data.interaction_maps.assign_repeated_frames`); ``'all'`` paints every position.

Missing entries (a video without a score or without a detection file) are an error naming the key
unless ``allow_missing`` is set; then the sample's ``*_mask`` is 0 and the loss leaves it out of
that term. :func:`missing_entries` counts them over a whole split before training starts.

Readers are opened lazily on first use and cached on the instance, i.e. once per worker
process; pickling keeps only the configuration, so the object is cheap to send to workers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import numpy as np

from egoexo_jax import storage
from egoexo_jax.data import handobj, interaction_maps, teacher_scores
from egoexo_jax.data.errors import TeacherFileError

__all__ = [
    "OfflineTeacherTargets",
    "MissingTeacherEntriesError",
    "MAP_MODES",
    "detection_video_name",
    "map_frame_count",
    "interaction_target",
    "missing_entries",
    "missing_entries_message",
]

_LOG = logging.getLogger(__name__)

ARCHS = ("slowfast", "slow", "mvit")
MAP_MODES = ("soft", "hard")
EGO_CLASSES = 2


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


class MissingTeacherEntriesError(TeacherFileError):
    """Training items without an Ego-Score / Object-Score entry or a detection file."""


def detection_video_name(meta: dict) -> str:
    """Stem of the sample's detection file ``{stem}.npy`` (dataset convention, see module doc)."""
    return _video_name(meta["dataset"], meta["key"], meta["video_id"])


def _video_name(dataset: str, key: str, video_id: str) -> str:
    if dataset == "kinetics":
        return handobj.kinetics_video_name(key)
    return str(video_id)


def map_frame_count(num_frames: int, *, arch: str, alpha: int, map_frames: int = 0) -> int:
    """``T_map``: ``map_frames`` if given, else SlowFast ``num_frames // alpha``, else ``num_frames``."""
    if map_frames:
        return int(map_frames)
    if arch == "mvit":
        raise ValueError("arch='mvit' needs map_frames (T // temporal patch stride) explicitly")
    return int(num_frames) // int(alpha) if arch == "slowfast" else int(num_frames)


def interaction_target(
    hand_rows: np.ndarray,
    obj_rows: np.ndarray,
    transform: dict,
    *,
    num_frames: int,
    map_frames: int,
    map_stride: int,
    mode: str,
) -> np.ndarray:
    """One clip's Interaction-Map target.

    Args:
      hand_rows, obj_rows: ``[K, 6]`` ``[x1, y1, x2, y2, score, t]`` in pixels of the decoded frame
        (``t`` = clip-frame index, 0..num_frames-1), from
        :meth:`~egoexo_jax.data.handobj.HandObjectDetections.boxes_for_frames`.
      transform: the sample's ``SpatialParams.as_dict()``.
      num_frames: clip frames ``T`` the rows index.
      map_frames: ``T_map``; frames ``floor(linspace(0, T - 1, T_map))`` are kept.
      map_stride: ``g = crop_size // map_stride``.
      mode: ``'soft'`` or ``'hard'``.

    Returns:
      ``[T_map, g, g, 2] float32`` (channel 0 hand, 1 object).
    """
    crop = int(transform["crop_size"])
    grid = crop // int(map_stride)
    if grid < 1:
        raise ValueError(f"crop {crop} is smaller than the map stride {map_stride}")
    spatial = dict(
        crop_size=crop,
        crop_offset=(int(transform["crop_x"]), int(transform["crop_y"])),
        flip=bool(transform["flip"]),
        orig_size=(int(transform["orig_h"]), int(transform["orig_w"])),
        resized_size=(int(transform["resized_h"]), int(transform["resized_w"])),
    )
    hands = interaction_maps.transform_rows(hand_rows, **spatial)
    objs = interaction_maps.transform_rows(obj_rows, **spatial)
    slow = None if map_frames == num_frames else int(map_frames)
    return interaction_maps.build_targets(hands, objs, num_frames, grid, slow_frames=slow, mode=mode).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The aux_fn
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OfflineTeacherTargets:
    """Picklable ``aux_fn``: ``meta -> {ego,object,interaction}_{target,mask}`` from offline files.

    Attributes:
      ego_scores: path of ``k400_ego_predicts.pkl`` ('' = no Ego-Score fields).
      object_scores: path of ``k400_IN_predicts.pkl`` ('' = no Object-Score fields).
      detections: folder of per-video ``{video}.npy`` hand-object files ('' = no map fields).
        Each may be a ``gs://`` URL.
      map_mode: ``'soft'`` (cell = max score) or ``'hard'`` (cell = 1).
      arch: ``'slowfast'`` | ``'slow'`` | ``'mvit'`` (decides ``T_map`` when ``map_frames`` is 0).
      alpha: SlowFast frame-rate ratio.
      map_frames: student map length ``T_map``; 0 = SlowFast ``T // alpha``, Slow ``T``
        (required for MViT).
      map_stride: ``g = crop_size // map_stride`` (32 for the ResNet res5 map).
      object_classes: length of the Object-Score vectors (1000).
      repeated_frames: ``'last'`` (official: a frame used at several clip positions keeps its
        detections at the last one) or ``'all'`` (every position).
      allow_missing: ``False``: a missing score entry or detection file raises
        :class:`~egoexo_jax.data.errors.TeacherFileError` naming it; ``True``: the
        sample gets zeros and ``*_mask`` 0.
    """

    ego_scores: str = ""
    object_scores: str = ""
    detections: str = ""
    map_mode: str = "soft"
    arch: str = "slowfast"
    alpha: int = 4
    map_frames: int = 0
    map_stride: int = 32
    object_classes: int = 1000
    repeated_frames: str = "last"
    allow_missing: bool = False

    def __post_init__(self):
        if self.map_mode not in MAP_MODES:
            raise ValueError(f"map_mode={self.map_mode!r}; expected one of {list(MAP_MODES)}")
        if self.repeated_frames not in interaction_maps.REPEATED_FRAME_RULES:
            raise ValueError(
                f"repeated_frames={self.repeated_frames!r}; expected one of "
                f"{list(interaction_maps.REPEATED_FRAME_RULES)}"
            )
        if self.arch not in ARCHS:
            raise ValueError(f"arch={self.arch!r}; expected one of {list(ARCHS)}")
        if self.detections and self.arch == "mvit" and not self.map_frames:
            raise ValueError("arch='mvit' needs map_frames (T // temporal patch stride) explicitly")
        if self.map_stride <= 0 or self.alpha <= 0 or self.map_frames < 0 or self.object_classes <= 0:
            raise ValueError(
                f"invalid sizes: alpha={self.alpha}, map_frames={self.map_frames}, "
                f"map_stride={self.map_stride}, object_classes={self.object_classes}"
            )
        self._reset_state()

    # Per-process state (readers, warned videos) lives outside the dataclass fields: it is not
    # pickled, not compared, and rebuilt empty in every process.
    def _reset_state(self) -> None:
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_readers", {})
        object.__setattr__(self, "_warned", set())

    def __getstate__(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self._reset_state()

    # ---------------------------------------------------------------- lazily opened readers

    def _reader(self, name: str) -> Any:
        """``'ego'`` / ``'object'`` -> :class:`TeacherScores`; ``'detections'`` ->
        :class:`HandObjectDetections`; opened once per process."""
        with self._lock:
            reader = self._readers.get(name)
            if reader is None:
                if name == "ego":
                    reader = teacher_scores.TeacherScores(self.ego_scores, EGO_CLASSES)
                elif name == "object":
                    reader = teacher_scores.TeacherScores(self.object_scores, self.object_classes)
                else:
                    reader = handobj.HandObjectDetections(self.detections)
                self._readers[name] = reader
            return reader

    def _warn_once(self, token: tuple, message: str, *args) -> None:
        with self._lock:
            if token in self._warned:
                return
            self._warned.add(token)
        _LOG.warning(message, *args)

    # ---------------------------------------------------------------- the three signals

    def _scores(self, name: str, path: str, num_classes: int, key: str) -> dict[str, np.ndarray]:
        vector = self._reader(name).get(key)
        if vector is None and not self.allow_missing:
            raise MissingTeacherEntriesError(
                f"{path}: no teacher scores for video {key!r} (config.teachers.allow_missing=True "
                f"masks such videos out of the {name} term)"
            )
        if vector is None:
            self._warn_once(
                (name,),
                "%s: no teacher scores for video %r; its %s_mask is 0 (further "
                "missing videos of this file are not logged)",
                path,
                key,
                name,
            )
            return {f"{name}_target": np.zeros((num_classes,), np.float32), f"{name}_mask": np.float32(0.0)}
        return {f"{name}_target": np.array(vector, np.float32), f"{name}_mask": np.float32(1.0)}

    def _interaction(self, meta: dict) -> dict[str, np.ndarray]:
        positions = np.asarray(meta["frame_indices"], np.int64).reshape(-1)
        num_frames = len(positions)
        t_map = map_frame_count(num_frames, arch=self.arch, alpha=self.alpha, map_frames=self.map_frames)
        if t_map > num_frames or t_map < 1:
            raise ValueError(f"map_frames={t_map} does not fit a clip of {num_frames} frames")
        transform = meta["transform"]
        grid = int(transform["crop_size"]) // self.map_stride
        dets = self._reader("detections")
        video = detection_video_name(meta)
        present = dets.has_video(video)
        if not present and not self.allow_missing:
            raise MissingTeacherEntriesError(
                f"no hand-object detection file for video {video!r}: {dets.path(video)} "
                f"(config.teachers.allow_missing=True masks such videos out of the map terms)"
            )
        if not present:
            self._warn_once(
                ("video", video),
                "no hand-object detection file for video %r: %s; its interaction_mask is 0",
                video,
                dets.path(video),
            )
            return {
                "interaction_target": np.zeros((t_map, grid, grid, 2), np.float32),
                "interaction_mask": np.float32(0.0),
            }
        expected = int(meta["num_video_frames"]) if meta["dataset"] == "charades_ego" else None
        try:
            hands, objs = dets.boxes_for_frames(video, positions, expected_length=expected)
        except IndexError as err:
            raise TeacherFileError(
                f"{err} ({meta['dataset']} sample {meta['key']!r}, frame indices {positions.tolist()})"
            ) from None
        hands = interaction_maps.assign_repeated_frames(hands, positions, self.repeated_frames)
        objs = interaction_maps.assign_repeated_frames(objs, positions, self.repeated_frames)
        target = interaction_target(
            hands,
            objs,
            transform,
            num_frames=num_frames,
            map_frames=t_map,
            map_stride=self.map_stride,
            mode=self.map_mode,
        )
        return {"interaction_target": target, "interaction_mask": np.float32(1.0)}

    def __call__(self, meta: dict) -> dict[str, np.ndarray]:
        """Teacher fields of one sample (see the module docstring for names, shapes, dtypes)."""
        out: dict[str, np.ndarray] = {}
        if self.ego_scores:
            out.update(self._scores("ego", self.ego_scores, EGO_CLASSES, meta["key"]))
        if self.object_scores:
            out.update(self._scores("object", self.object_scores, self.object_classes, meta["key"]))
        if self.detections:
            out.update(self._interaction(meta))
        return out

    # ---------------------------------------------------------------- coverage of a split

    def signal_files(self) -> dict[str, str]:
        """``{signal: file or folder}`` of the configured signals (``ego``, ``object``,
        ``interaction``)."""
        files = {"ego": self.ego_scores, "object": self.object_scores, "interaction": self.detections}
        return {k: v for k, v in files.items() if v}


def missing_entries(aux: OfflineTeacherTargets, dataset: str, ids: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Items of a split that a configured teacher file does not cover.

    Args:
      aux: the ``aux_fn``.
      dataset: the data config's dataset (decides the detection-file name, see the module doc).
      ids: ``(key, video_id)`` of every item (:meth:`~egoexo_jax.data.sources.FileSource.ids`).

    Returns:
      ``{signal: [item keys without an entry, in split order]}`` for every configured signal
      (``ego`` / ``object``: no score entry for the key; ``interaction``: no ``{video}.npy``).
    """
    out: dict[str, list[str]] = {}
    for name in ("ego", "object"):
        if name in aux.signal_files():
            reader = aux._reader(name)  # pylint: disable=protected-access
            out[name] = [key for key, _ in ids if key not in reader]
    if aux.detections:
        present = {n[:-4] for n in storage.listdir(aux.detections) if n.endswith(".npy")}
        out["interaction"] = [key for key, video in ids if _video_name(dataset, key, video) not in present]
    return out


_SIGNAL_WHAT = {
    "ego": "Ego-Score entries",
    "object": "Object-Score entries",
    "interaction": "hand-object detection files",
}


def missing_entries_message(
    aux: OfflineTeacherTargets, missing: dict[str, list[str]], num_items: int, show: int = 5
) -> str:
    """One line per signal with missing entries: how many of ``num_items``, the file, the first
    ``show`` keys."""
    files = aux.signal_files()
    lines = []
    for signal, keys in missing.items():
        if keys:
            first = ", ".join(repr(k) for k in keys[:show])
            more = f", ... (+{len(keys) - show})" if len(keys) > show else ""
            lines.append(
                f"{len(keys)} of {num_items} training items have no "
                f"{_SIGNAL_WHAT[signal]} in {files[signal]}: {first}{more}"
            )
    return "; ".join(lines)
