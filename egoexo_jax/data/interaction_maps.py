"""Interaction-Map targets: hand and object boxes -> per-frame heat maps (numpy, data loader).

Follows docs/method.md#interaction-map-targets steps 1–4, i.e. the official
``kinetics_aux.spatial_sampling_with_boxes`` + ``handobj_models.gen_targets`` +
``cal_handobj_loss`` slow-frame selection:

1. Detections of each clip frame ``i`` become rows ``[x1, y1, x2, y2, score, i]`` in pixels of
   the decoded frame (:mod:`egoexo_jax.data.handobj` produces them).
2. The box corners follow the frames' augmentation: short-side rescale, crop offset, horizontal
   flip (``x1' = W - x2 - 1``, ``x2' = W - x1 - 1`` with ``W`` the crop width), clipping to
   ``[0, crop - 1]``, division by the crop size (:func:`transform_boxes`).
3. Rasterisation on a ``grid x grid`` map per clip frame: ``floor(coord * grid)`` clamped to
   ``[0, grid - 1]``, rows ``y1..y2`` and columns ``x1..x2`` inclusive take
   ``max(current, score)`` (``'soft'``) or ``1`` (``'hard'``) (:func:`rasterise`).
4. SlowFast students predict maps for the slow frames only: the maps are built for all fast
   frames and the frames ``floor(linspace(0, T_fast - 1, T_slow))`` are kept
   (:func:`egoexo_jax.slow_frames.slow_indices`, :func:`build_targets`).

Quirks kept on purpose: boxes lying completely outside the crop are clipped onto the border and
still paint border cells; the box rescale uses the official single factor ``new_long / long``
for both axes (see :func:`short_side_resize`); a video frame that a clip uses at several
positions (indices clamped at the end of a short segment or video) keeps its detections at the
last of those positions only (:func:`assign_repeated_frames`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from egoexo_jax.slow_frames import slow_indices

__all__ = [
    "short_side_resize",
    "uniform_crop_offset",
    "transform_boxes",
    "transform_rows",
    "rasterise",
    "build_targets",
    "REPEATED_FRAME_RULES",
    "last_positions",
    "assign_repeated_frames",
]

# How detections of a video frame used at several clip positions are placed: "last" = the
# official loader's result, "all" = at every position that shows the frame.
REPEATED_FRAME_RULES = ("last", "all")

Size = Union[int, Tuple[int, int]]


def short_side_resize(height: int, width: int, size: int) -> Tuple[int, int, Tuple[int, int]]:
    """Frame size after PySlowFast's short-side resize to ``size`` and the box scale it implies.

    PySlowFast (``transform.random_short_side_scale_jitter``) resizes the short side to ``size``
    and the long side to ``floor(long / short * size)``, and scales the boxes by
    ``new_long / long`` on **both** axes (not by ``size / short``); if the short side already
    equals ``size`` nothing changes.

    Returns:
      ``(new_height, new_width, (numerator, denominator))``; the boxes are scaled as
      ``boxes * numerator / denominator`` (that evaluation order, as the official code does).
    """
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width, (1, 1)
    if width < height:
        new_h = int(math.floor(float(height) / width * size))
        return new_h, size, (new_h, height)
    new_w = int(math.floor(float(width) / height * size))
    return size, new_w, (new_w, width)


def uniform_crop_offset(height: int, width: int, size: int, spatial_idx: int) -> Tuple[int, int]:
    """``(x0, y0)`` of PySlowFast's test-time crop ``spatial_idx`` (0 left/top, 1 centre, 2 right/bottom)."""
    y0 = int(math.ceil((height - size) / 2))
    x0 = int(math.ceil((width - size) / 2))
    if height > width:
        y0 = 0 if spatial_idx == 0 else (height - size if spatial_idx == 2 else y0)
    else:
        x0 = 0 if spatial_idx == 0 else (width - size if spatial_idx == 2 else x0)
    return x0, y0


def _float_dtype(array: np.ndarray) -> np.dtype:
    return array.dtype if array.dtype.kind == "f" else np.dtype(np.float32)


def transform_boxes(
    boxes: np.ndarray,
    *,
    crop_size: Size,
    crop_offset: Tuple[int, int] = (0, 0),
    flip: bool = False,
    scale: Union[None, float, Tuple[float, float]] = None,
    orig_size: Optional[Tuple[int, int]] = None,
    resized_size: Optional[Tuple[int, int]] = None,
    normalize: bool = True,
) -> np.ndarray:
    """Apply a clip's spatial augmentation to boxes.

    Args:
      boxes: ``[N, 4]`` ``x1, y1, x2, y2`` in pixels of the decoded frame (float32 or float64;
        arithmetic stays in that dtype, ints become float32).
      crop_size: crop side ``S`` (or ``(crop_h, crop_w)``).
      crop_offset: ``(x0, y0)`` of the crop in the resized frame.
      flip: whether the clip was flipped horizontally (after cropping).
      scale: resize factor, one number or ``(sx, sy)``; alternatively give ``orig_size`` and
        ``resized_size`` (both ``(H, W)``) to use the official PySlowFast rule (single factor
        ``new_long / long``, see :func:`short_side_resize`).  Neither: no rescale.
      normalize: divide by the crop size (the official ``meta`` format) — default; ``False``
        returns crop pixels.

    Returns:
      ``[N, 4]`` boxes in the crop, clipped to ``[0, S - 1]`` and (by default) divided by ``S``.
    """
    boxes = np.asarray(boxes)
    dtype = _float_dtype(boxes)
    out = boxes.reshape(-1, 4).astype(dtype, copy=True)
    crop_h, crop_w = (crop_size, crop_size) if np.isscalar(crop_size) else crop_size
    if scale is not None and (orig_size is not None or resized_size is not None):
        raise ValueError("give either scale or orig_size/resized_size, not both")
    if orig_size is not None or resized_size is not None:
        (h, w), (new_h, new_w) = orig_size, resized_size
        if (new_h, new_w) != (h, w):
            num, den = (new_h, h) if w < h else (new_w, w)
            out = out * dtype.type(num) / dtype.type(den)
    elif scale is not None:
        sx, sy = (scale, scale) if np.isscalar(scale) else scale
        out[:, [0, 2]] *= dtype.type(sx)
        out[:, [1, 3]] *= dtype.type(sy)
    x0, y0 = crop_offset
    out[:, [0, 2]] -= dtype.type(x0)
    out[:, [1, 3]] -= dtype.type(y0)
    if flip:
        out[:, [0, 2]] = dtype.type(crop_w) - out[:, [2, 0]] - dtype.type(1)
    out[:, [0, 2]] = np.minimum(dtype.type(crop_w - 1.0), np.maximum(dtype.type(0.0), out[:, [0, 2]]))
    out[:, [1, 3]] = np.minimum(dtype.type(crop_h - 1.0), np.maximum(dtype.type(0.0), out[:, [1, 3]]))
    if normalize:
        out[:, [0, 2]] /= dtype.type(crop_w)
        out[:, [1, 3]] /= dtype.type(crop_h)
    return out


def transform_rows(rows: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`transform_boxes` on detection rows ``[K, >=4]``; other columns are kept.

    Typically ``[K, 6]`` ``[x1, y1, x2, y2, score, t]`` in frame pixels -> the official
    ``meta['hands']`` / ``meta['objs']`` rows, returned as ``float32``.
    """
    rows = np.asarray(rows)
    if rows.ndim == 1:  # a single row, or no rows at all
        rows = rows.reshape(1 if rows.size else 0, -1 if rows.size else 4)
    out = rows.astype(_float_dtype(rows), copy=True)  # [K, >=4], K may be 0 (no detections)
    out[:, :4] = transform_boxes(out[:, :4], **kwargs)
    return out.astype(np.float32)


def rasterise(
    boxes_norm: np.ndarray, scores: np.ndarray, frame_idx: np.ndarray, num_frames: int, grid: int, mode: str = "soft"
) -> np.ndarray:
    """Paint normalised boxes onto ``[T, grid, grid]`` maps.

    Args:
      boxes_norm: ``[N, 4]`` ``x1, y1, x2, y2`` normalised to the crop (roughly ``[0, 1)``).
      scores: ``[N]`` detection scores (used by ``'soft'``).
      frame_idx: ``[N]`` clip-frame index of each box, ``0 <= t < num_frames``.
      num_frames: ``T``.
      grid: map side (7 at 224 crops, 8 at 256).
      mode: ``'soft'`` (cell = max(cell, score)) or ``'hard'`` (cell = 1).

    Returns:
      ``[T, grid, grid] float32``, row index = y, column index = x; zeros where no box falls.
    """
    if mode not in ("soft", "hard"):
        raise ValueError(f"mode must be 'soft' or 'hard', got {mode!r}")
    maps = np.zeros((num_frames, grid, grid), np.float32)
    boxes_norm = np.asarray(boxes_norm).reshape(-1, 4)
    if len(boxes_norm) == 0:
        return maps
    # float32 arithmetic as in the official torch code (the meta tensors are float32).
    cells = np.floor(boxes_norm.astype(np.float32) * np.float32(grid)).astype(np.int64)
    cells = np.clip(cells, 0, grid - 1)
    scores = np.asarray(scores, np.float32).reshape(-1)
    frames = np.asarray(frame_idx).reshape(-1).astype(np.int64)
    if np.any((frames < 0) | (frames >= num_frames)):
        raise ValueError(f"frame index outside [0, {num_frames}): {frames}")
    for (x1, y1, x2, y2), s, t in zip(cells, scores, frames):
        window = maps[t, y1 : y2 + 1, x1 : x2 + 1]
        if mode == "soft":
            np.maximum(window, s, out=window)
        else:
            window[...] = 1.0
    return maps


def last_positions(frame_positions: Sequence[int]) -> np.ndarray:
    """``[T] int64``: for clip frame ``i``, the last clip index ``j`` with
    ``frame_positions[j] == frame_positions[i]`` (``i`` itself when the frame is not repeated)."""
    positions = np.asarray(frame_positions).reshape(-1)
    last = {}
    for j, p in enumerate(positions.tolist()):
        last[p] = j
    return np.asarray([last[p] for p in positions.tolist()], np.int64)


def assign_repeated_frames(rows: np.ndarray, frame_positions: Sequence[int], rule: str = "last") -> np.ndarray:
    """Clip-frame column of detection rows under a rule for repeated video frames.

    The official loader (``kinetics_aux.parse_handobj``) writes the clip index into column 5 of a
    *view* of the video's cached detection array, so when one video frame appears at clip
    positions ``i1 < i2 < ... < ik`` every copy ends up carrying ``ik``: the frame's boxes are
    painted at its last position only and the other positions get empty maps.

    Args:
      rows: ``[K, 6]`` ``[x1, y1, x2, y2, score, t]`` with ``t`` the clip index each row was read
        for (as :meth:`~egoexo_jax.data.handobj.VideoDetections.rows` returns them).
      frame_positions: ``[T]`` the clip's frame positions in the detection list.
      rule: ``'last'`` (official) or ``'all'`` (rows stay at every position that shows the frame).

    Returns:
      ``[K, 6]`` copy of ``rows`` with column 5 remapped (unchanged for ``'all'``).
    """
    if rule not in REPEATED_FRAME_RULES:
        raise ValueError(f"repeated-frame rule must be one of {list(REPEATED_FRAME_RULES)}, got {rule!r}")
    rows = np.array(rows, copy=True)
    if rule == "all" or rows.size == 0:
        return rows
    last = last_positions(frame_positions)
    rows[:, 5] = last[rows[:, 5].astype(np.int64)]
    return rows


def build_targets(
    hand_rows: np.ndarray,
    obj_rows: np.ndarray,
    num_frames: int,
    grid: int,
    slow_frames: Optional[int] = None,
    mode: str = "soft",
) -> np.ndarray:
    """Interaction-Map target of one clip.

    Args:
      hand_rows, obj_rows: ``[K, 6]`` ``[x1, y1, x2, y2, score, t]`` with corners already
        normalised to the crop (output of :func:`transform_rows`; the official ``meta`` rows).
      num_frames: ``T`` clip frames the rows index (32 for SlowFast 8x8, 8 for Slow).
      grid: map side.
      slow_frames: if given, keep only frames ``slow_indices(num_frames, slow_frames)``
        (SlowFast: maps on the slow pathway); ``None`` keeps all ``T``.
      mode: ``'soft'`` or ``'hard'``.

    Returns:
      ``[T', grid, grid, 2] float32``; channel 0 = hand, channel 1 = object.
    """
    maps = []
    for rows in (hand_rows, obj_rows):
        rows = np.asarray(rows)
        if rows.size == 0:
            rows = np.zeros((0, 6), np.float32)
        if rows.ndim != 2 or rows.shape[1] < 6:
            raise ValueError(f"expected rows [K, 6] (x1, y1, x2, y2, score, t), got shape {rows.shape}")
        maps.append(rasterise(rows[:, :4], rows[:, 4], rows[:, 5], num_frames, grid, mode))
    target = np.stack(maps, axis=-1)
    if slow_frames is not None:
        target = target[slow_indices(num_frames, slow_frames)]
    return target
