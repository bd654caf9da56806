"""Clip sampling and spatial transforms (numpy, pure: randomness comes in as a `np.random.Generator`).

Temporal sampling (which frames make a clip):
  * `kinetics_clip_indices`: span NUM_FRAMES*SAMPLING_RATE*fps/TARGET_FPS source frames; train start
    uniform (float) in [0, max(N - span, 0)], test clip k of K at `max(N - span, 0) * k / K`; frames
    `int(start) + floor(linspace(0, span - 1, NUM_FRAMES))`, clamped to [0, N - 1].
  * `segment_clip_positions` (Charades-Ego, EPIC): span `(F - 1) * rate + 1` raw frames; train start a
    uniform integer in [0, L - span] (or [L - span, 0] when the video is shorter), test clip k of K at
    `round(k * max(L - span, 0) / (K - 1))`; positions `start + i * rate`, clamped to [0, L - 1].

Spatial transforms work on `[T, H, W, 3] uint8` frames and produce `[T, S, S, 3] float32`:
short-side resize (bilinear, align_corners=False) + crop + optional horizontal flip are done in one
step (only the output crop is interpolated), then `(x / 255 - mean) / std`; with `space_to_depth` the
result comes as its 2x2 space-to-depth fold `[T, S/2, S/2, 12]` (what the space-to-depth ResNet
stems read, `egoexo_jax.ops.space_to_depth`), written in that order directly. The parameters of a
transform are a `SpatialParams`, which is also what boxes need to follow the same transform: a point
(x, y) in original-frame pixel coordinates (pixel edges, continuous) lands at
`x' = x * scale_x - crop_x`, `y' = y * scale_y - crop_y` in the crop, then `x' -> crop_size - x'`
when `flip`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from egoexo_jax.slow_frames import slow_indices

# ----------------------------------------------------------------------------------------------
# Temporal sampling.


def kinetics_clip_indices(
    num_video_frames: int,
    *,
    num_frames: int,
    sampling_rate: int,
    fps: float,
    target_fps: float = 30.0,
    clip_idx: int = -1,
    num_clips: int = 10,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Absolute frame indices of one Kinetics clip.

    Args:
      num_video_frames: N, frames in the video.
      num_frames: frames in the clip (e.g. 32 for SlowFast 8x8 R50).
      sampling_rate: stride at `target_fps` (e.g. 2).
      fps: the video's frame rate.
      target_fps: the rate the stride refers to (30).
      clip_idx: -1 = random start (train/val), else k in [0, num_clips) (test).
      num_clips: number of test clips K (start = free * k / K).
      rng: needed when clip_idx == -1.

    Returns:
      `[num_frames] int64` frame indices in [0, N - 1].
    """
    span = num_frames * sampling_rate * fps / target_fps
    free = max(num_video_frames - span, 0.0)
    if clip_idx == -1:
        start = rng.uniform(0.0, free)
    else:
        start = free * clip_idx / num_clips
    offsets = np.linspace(0.0, span - 1.0, num_frames).astype(np.int64)
    return np.clip(int(start) + offsets, 0, max(num_video_frames - 1, 0))


def segment_clip_positions(
    length: int,
    *,
    num_frames: int,
    sampling_rate: int,
    clip_idx: int = -1,
    num_clips: int = 10,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """0-based positions of one clip inside a frame sequence of `length` frames (Charades-Ego, EPIC).

    Args:
      length: L, frames in the video (Charades-Ego frame list) or segment (EPIC: stop - start + 1).
      num_frames: F.
      sampling_rate: stride in raw frames.
      clip_idx: -1 = random start, else k in [0, num_clips).
      num_clips: K; test starts are spread with step free / (K - 1).
      rng: needed when clip_idx == -1.

    Returns:
      `[F] int64` positions in [0, L - 1].
    """
    span = (num_frames - 1) * sampling_rate + 1
    if clip_idx == -1:
        if span > length:
            start = int(rng.integers(length - span, 1))
        else:
            start = int(rng.integers(0, length - span + 1))
    else:
        gap = max(length - span, 0) / max(num_clips - 1, 1)
        start = int(round(gap * clip_idx))
    positions = start + sampling_rate * np.arange(num_frames, dtype=np.int64)
    return np.clip(positions, 0, max(length - 1, 0))


# ----------------------------------------------------------------------------------------------
# Spatial parameters.


@dataclasses.dataclass(frozen=True)
class SpatialParams:
    """One spatial transform: resize (orig -> resized), crop, flip.

    Attributes:
      orig_h, orig_w: input frame size.
      resized_h, resized_w: size after the short-side resize.
      crop_y, crop_x: top-left corner of the crop in the resized frame.
      crop_size: side of the square crop.
      flip: horizontal flip after cropping.
    """

    orig_h: int
    orig_w: int
    resized_h: int
    resized_w: int
    crop_y: int
    crop_x: int
    crop_size: int
    flip: bool

    @property
    def scale_y(self) -> float:
        return self.resized_h / self.orig_h

    @property
    def scale_x(self) -> float:
        return self.resized_w / self.orig_w

    def as_dict(self) -> dict:
        """Plain python scalars (picklable, JSON-able), with the scales included."""
        d = dataclasses.asdict(self)
        d["scale_y"] = self.scale_y
        d["scale_x"] = self.scale_x
        return d


def short_side_resize_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side `size` and the long side floor(long / short * size)."""
    if width < height:
        return int(math.floor(height / width * size)), size
    if height < width:
        return size, int(math.floor(width / height * size))
    return size, size


def sample_train_spatial(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    jitter_scales: Sequence[int] = (256, 320),
    crop_size: int = 224,
    flip_prob: float = 0.5,
) -> SpatialParams:
    """Training augmentation: short side s = round(U[min, max]), random crop, random flip.

    Crop offsets are `randint(0, resized - crop)` with an exclusive upper bound (0 when equal).
    """
    size = int(round(rng.uniform(jitter_scales[0], jitter_scales[1])))
    new_h, new_w = short_side_resize_shape(height, width, size)
    crop_y = int(rng.integers(0, new_h - crop_size)) if new_h > crop_size else 0
    crop_x = int(rng.integers(0, new_w - crop_size)) if new_w > crop_size else 0
    flip = bool(rng.uniform() < flip_prob)
    return SpatialParams(height, width, new_h, new_w, crop_y, crop_x, crop_size, flip)


def test_spatial(height: int, width: int, *, spatial_idx: int, scale: int = 256, crop_size: int = 256) -> SpatialParams:
    """Test view: short side `scale`, crop `spatial_idx` of 3 along the long side.

    0 = top/left (offset 0), 1 = centre (ceil((L - S) / 2), also used on the short side),
    2 = bottom/right (offset L - S). No flip.
    """
    new_h, new_w = short_side_resize_shape(height, width, scale)
    crop_y = int(math.ceil((new_h - crop_size) / 2))
    crop_x = int(math.ceil((new_w - crop_size) / 2))
    if new_h > new_w:
        if spatial_idx == 0:
            crop_y = 0
        elif spatial_idx == 2:
            crop_y = new_h - crop_size
    else:
        if spatial_idx == 0:
            crop_x = 0
        elif spatial_idx == 2:
            crop_x = new_w - crop_size
    return SpatialParams(height, width, new_h, new_w, crop_y, crop_x, crop_size, False)


# ----------------------------------------------------------------------------------------------
# Applying a spatial transform.


def _bilinear_taps(
    out_size: int, in_size: int, resized: int, offset: int, reverse: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps for output pixels `offset .. offset + out_size - 1` of an `in_size -> resized` resize.

    align_corners=False: src = (dst + 0.5) * in / resized - 0.5, clamped below at 0.
    Returns (i0 [n] int64, i1 [n] int64, w1 [n] float32) with value = (1 - w1) * x[i0] + w1 * x[i1].
    """
    dst = np.arange(offset, offset + out_size, dtype=np.float64)
    if reverse:
        dst = dst[::-1]
    src = (dst + 0.5) * (in_size / resized) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def resize_crop_flip(
    frames: np.ndarray,
    params: SpatialParams,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    reverse_channels: bool = False,
    space_to_depth: bool = False,
) -> np.ndarray:
    """Applies `params` to `[T, H, W, C] uint8` frames; returns `[T, S, S, C] float32`.

    Equal to resizing the whole frame to (resized_h, resized_w) with bilinear interpolation
    (align_corners=False, as torch.nn.functional.interpolate), cropping, then flipping, but only the
    crop's pixels are computed. The result is `value * scale - offset` (default: pixel values in
    [0, 255]), with the channel order reversed when `reverse_channels`.

    `space_to_depth`: the same values as their 2x2 space-to-depth fold `[T, S2, S2, 4C]`
    (`S2 = ceil(S / 2)`; channel `(2p + q) * C + c` = pixel `(2i + p, 2j + q)`, zero past an odd edge;
    `egoexo_jax.ops.space_to_depth.fold`), written straight in that order by the column gather, so
    the fold costs no extra pass over the clip.
    """
    t, h, w, c = frames.shape
    if (h, w) != (params.orig_h, params.orig_w):
        raise ValueError(f"frames are {h}x{w}, params expect {params.orig_h}x{params.orig_w}")
    s = params.crop_size
    if s > params.resized_h or s > params.resized_w:
        raise ValueError(f"crop {s} larger than the resized frame {params.resized_h}x{params.resized_w}")
    y0, y1, wy = _bilinear_taps(s, h, params.resized_h, params.crop_y, False)
    x0, x1, wx = _bilinear_taps(s, w, params.resized_w, params.crop_x, params.flip)
    # Work frame by frame on [rows, W * C] views (cache friendly): rows first, then columns, with the
    # channel order folded into the column gather.
    channels = np.arange(c)[::-1] if reverse_channels else np.arange(c)
    cols0 = (x0[:, None] * c + channels).ravel()
    cols1 = (x1[:, None] * c + channels).ravel()
    wx_flat = np.repeat(wx, c)
    if space_to_depth:
        gather, wx_flat, out = _fold_gather(cols0, cols1, wx_flat, t, s, w * c, c)
    else:
        gather = lambda top: (top[:, cols0], top[:, cols1])  # noqa: E731
        out = np.empty((t, s, s * c), np.float32)
    wy_col = wy[:, None]
    scale = np.float32(scale)
    offset = np.float32(offset)
    rows_of = np.ascontiguousarray(frames).reshape(t, h, w * c)
    for k in range(t):
        top = rows_of[k][y0].astype(np.float32)
        bottom = rows_of[k][y1].astype(np.float32)
        bottom -= top
        bottom *= wy_col
        top += bottom  # [S, W * C]
        left, right = gather(top)
        right -= left
        right *= wx_flat
        left += right  # [S, S * C], or folded [S2, S2, 2, 2C]
        if scale != 1.0:
            left *= scale
        if offset != 0.0:
            left -= offset
        out[k] = left
    if space_to_depth:
        return zero_fold_padding(out, s).reshape(t, -(-s // 2), -(-s // 2), 4 * c)
    return out.reshape(t, s, s, c)


def _fold_gather(cols0, cols1, wx_flat, t: int, s: int, row_len: int, c: int):
    """The column gather of :func:`resize_crop_flip` in space-to-depth order: ``gather(top [S, W*C])
    -> (left, right)`` each ``[S2, S2, 2, 2C]`` (``[i, j, p, (q, c)]`` = crop row ``2i + p``, crop
    column ``2j + q``; a row / column past an odd edge reads the last one, zeroed afterwards), the
    column weights in that order ``[1, S2, 2, 2C]``, and the output ``[T, S2, S2, 2, 2C]``."""
    s2 = -(-s // 2)
    pos = np.minimum(2 * np.arange(s2)[:, None] + np.arange(2), s - 1)  # [i or j, parity] -> crop row/column
    rows = pos[:, None, :, None] * row_len  # [S2, 1, 2, 1]

    def order(per_column):  # [S * C] in (column, channel) order -> [1, S2, 1, 2C]
        return per_column.reshape(s, c)[pos].reshape(1, s2, 1, 2 * c)

    index0, index1 = rows + order(cols0), rows + order(cols1)

    def gather(top):
        flat = top.reshape(-1)
        return np.take(flat, index0), np.take(flat, index1)

    # The weights repeated over the row parity: [1, S2, 2, 2C] multiplies [S2, S2, 2, 2C] as one
    # contiguous run per row pair (a [1, S2, 1, 2C] broadcast would loop over runs of 2C values).
    weights = np.ascontiguousarray(np.broadcast_to(order(wx_flat), (1, s2, 2, 2 * c)))
    return gather, weights, np.empty((t, s2, s2, 2, 2 * c), np.float32)


def zero_fold_padding(folded: np.ndarray, s: int) -> np.ndarray:
    """Zeroes, in place, the slots of a space-to-depth fold ``[T, S2, S2, 2, 2C]`` of an odd ``S x S``
    crop that lie past its edge (last row parity 1, last column parity 1); returns ``folded``."""
    if s % 2:
        c = folded.shape[-1] // 2
        folded[:, -1, :, 1, :] = 0.0
        folded[:, :, -1, :, c:] = 0.0
    return folded


def normalize(
    frames: np.ndarray, mean: float | Sequence[float] = 0.45, std: float | Sequence[float] = 0.225
) -> np.ndarray:
    """`[..., C]` pixel values in [0, 255] -> `(x / 255 - mean) / std`, float32."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    return np.asarray(frames, dtype=np.float32) * scale - (mean / std).astype(np.float32)


def reverse_channels(frames: np.ndarray) -> np.ndarray:
    """RGB <-> BGR on the last axis."""
    return np.ascontiguousarray(frames[..., ::-1])


def spatial_transform(
    frames: np.ndarray, params: SpatialParams, *, mean=0.45, std=0.225, bgr: bool = False, space_to_depth: bool = False
) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> normalised float32 `[T, S, S, 3]` (resize, crop, flip, channel order),
    or with `space_to_depth` its 2x2 space-to-depth fold `[T, ceil(S/2), ceil(S/2), 12]` (see
    :func:`resize_crop_flip`; zero past an odd edge).

    `bgr=True` reverses the channels of the RGB input (the mean/std apply to the output order).
    """
    if np.ndim(mean) == 0 and np.ndim(std) == 0:
        # (x / 255 - mean) / std folded into the interpolation's last step.
        return resize_crop_flip(
            frames,
            params,
            scale=1.0 / (255.0 * float(std)),
            offset=float(mean) / float(std),
            reverse_channels=bgr,
            space_to_depth=space_to_depth,
        )
    out = resize_crop_flip(frames, params, reverse_channels=bgr, space_to_depth=space_to_depth)
    if not space_to_depth:
        return normalize(out, mean, std)
    c = frames.shape[-1]
    per_slot = lambda v: np.tile(np.broadcast_to(np.asarray(v, np.float32), (c,)), 4)  # noqa: E731  (p, q, c)
    out = normalize(out, per_slot(mean), per_slot(std))
    s2 = out.shape[1]
    return zero_fold_padding(out.reshape(out.shape[0], s2, s2, 2, 2 * c), params.crop_size).reshape(out.shape)


# ----------------------------------------------------------------------------------------------
# Pathways.


def pack_pathways(frames: np.ndarray, *, arch: str, alpha: int = 4) -> list[np.ndarray]:
    """`[T, H, W, C]` clip -> the model's input list.

    'slowfast': [slow `[T // alpha, H, W, C]`, fast `[T, H, W, C]`] with the slow frames at
    `slow_indices(T, T // alpha)`; any other arch: [frames].
    """
    if arch == "slowfast":
        return [frames[slow_indices(frames.shape[0], frames.shape[0] // alpha)], frames]
    return [frames]
