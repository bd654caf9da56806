"""Rendering: a `Scene` -> `[T, H, W, 3] uint8` frames and the exact object / palm boxes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from egoexo_jax.demo_data.scene import SHAPES, Scene

__all__ = ["RenderedScene", "render_scene"]


@dataclasses.dataclass(frozen=True, eq=False)
class RenderedScene:
    """Output of `render_scene`.

    Attributes:
      frames: `[T, H, W, 3] uint8` RGB.
      obj_boxes: `[T, 4] float32` (x1, y1, x2, y2) inclusive pixel extent of the object.
      hand_boxes: `[T, 4] float32` extent of the palm; NaN rows where no palm pixel is visible.
    """

    frames: np.ndarray
    obj_boxes: np.ndarray
    hand_boxes: np.ndarray


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inside test in object coordinates (u along the long axis, half lengths a, b)."""
    name = SHAPES[shape]
    if name == "rectangle":
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if name == "ellipse":
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if name == "triangle":  # apex at +a, base at -a
        return (u >= -a) & (np.abs(v) <= b * (a - u) / (2 * a))
    if name == "diamond":
        return np.abs(u) / a + np.abs(v) / b <= 1.0
    return ((np.abs(u) <= a) & (np.abs(v) <= 0.35 * b)) | ((np.abs(u) <= 0.3 * a) & (np.abs(v) <= b))


def _window(x1: float, y1: float, x2: float, y2: float, height: int, width: int) -> tuple[slice, slice] | None:
    """Pixel rows / columns covering [x1, x2] x [y1, y2], clipped to the frame (None if empty)."""
    c1, c2 = max(int(math.floor(x1)), 0), min(int(math.ceil(x2)) + 1, width)
    r1, r2 = max(int(math.floor(y1)), 0), min(int(math.ceil(y2)) + 1, height)
    if c1 >= c2 or r1 >= r2:
        return None
    return slice(r1, r2), slice(c1, c2)


def _extent(mask: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
    """`[h, w] bool` mask of `window` -> `[4] float32` inclusive (x1, y1, x2, y2) in frame pixels,
    NaN if the mask is empty."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if not len(cols):
        return np.full(4, np.nan, np.float32)
    r0, c0 = window[0].start, window[1].start
    return np.array([c0 + cols[0], r0 + rows[0], c0 + cols[-1], r0 + rows[-1]], np.float32)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _draw_hand(image: np.ndarray, scene: Scene, k: int) -> np.ndarray:
    """Paints palm + forearm of frame k into `image` `[H, W, 3] uint8`; returns the palm box."""
    h, w = scene.height, scene.width
    cx, cy = scene.hand_center[k] + scene.shake[k]
    sx, sy = scene.shoulder[k] + scene.shake[k]
    r = scene.hand_radius
    window = _window(min(cx, sx) - 1.2 * r, min(cy, sy) - 1.2 * r, max(cx, sx) + 1.2 * r, max(cy, sy) + 1.2 * r, h, w)
    if window is None:
        return np.full(4, np.nan, np.float32)
    yy = np.arange(window[0].start, window[0].stop, dtype=np.float32)[:, None] - cy
    xx = np.arange(window[1].start, window[1].stop, dtype=np.float32)[None, :] - cx
    palm = (xx / r) ** 2 + (yy / (1.2 * r)) ** 2 <= 1.0
    ax, ay = sx - cx, sy - cy
    along = np.clip((xx * ax + yy * ay) / (ax * ax + ay * ay + 1e-6), 0.0, 1.0)
    arm = (xx - along * ax) ** 2 + (yy - along * ay) ** 2 <= (0.75 * r) ** 2
    limb = palm | arm
    shade = 0.85 + 0.15 * np.clip(1.0 - yy / (3 * r), 0.0, 1.0)
    patch = image[window]
    patch[limb] = np.broadcast_to(_to_uint8(scene.skin * shade[..., None]), patch.shape)[limb]
    return _extent(palm, window)


def _draw_object(image: np.ndarray, scene: Scene, k: int) -> np.ndarray:
    """Paints the object of frame k into `image` `[H, W, 3] uint8`; returns its box."""
    cx, cy = scene.obj_center[k] + scene.shake[k]
    a = float(scene.obj_size[k])
    b = a * scene.obj_aspect
    reach = math.hypot(a, b) + 1
    window = _window(cx - reach, cy - reach, cx + reach, cy + reach, scene.height, scene.width)
    if window is None:
        return np.full(4, np.nan, np.float32)
    yy = np.arange(window[0].start, window[0].stop, dtype=np.float32)[:, None] - cy
    xx = np.arange(window[1].start, window[1].stop, dtype=np.float32)[None, :] - cx
    cos, sin = math.cos(scene.obj_angle[k]), math.sin(scene.obj_angle[k])
    u, v = xx * cos + yy * sin, -xx * sin + yy * cos
    mask = _shape_mask(scene.shape, u, v, a, b)
    shade = 0.7 + 0.3 * np.clip((u / a + 1.0) / 2.0, 0.0, 1.0)
    patch = image[window]
    patch[mask] = np.broadcast_to(_to_uint8(scene.colour * shade[..., None]), patch.shape)[mask]
    return _extent(mask, window)


def render_scene(scene: Scene) -> RenderedScene:
    """Draws all frames of `scene`: background window, hand (if any), object on top.

    Drawing is vectorised over the pixels of a window around each shape (one small numpy
    computation per shape and frame).
    """
    h, w, t = scene.height, scene.width, scene.num_frames
    frames = np.empty((t, h, w, 3), np.uint8)
    obj_boxes = np.full((t, 4), np.nan, np.float32)
    hand_boxes = np.full((t, 4), np.nan, np.float32)
    for k in range(t):
        x, y = scene.camera[k]
        image = scene.background[y : y + h, x : x + w].copy()
        if scene.hand_present:
            hand_boxes[k] = _draw_hand(image, scene, k)
        obj_boxes[k] = _draw_object(image, scene, k)
        frames[k] = image
    return RenderedScene(frames, obj_boxes, hand_boxes)
