"""The per-frame ground truth of one generated video, and the ingredients all scenes share.

Every video is one `Scene`: per-frame ground truth (object centre / size / angle, hand centre,
camera offset) that `render.render_scene` turns into frames and exact boxes. A frame is

* a background: a randomly coloured dark two-tone texture (smooth noise + faint stripes of random
  period and orientation) on a canvas larger than the view;
* a hand (optional): a skin-coloured palm ellipse with a forearm capsule towards a "shoulder"
  below the frame (egocentric look) or a short forearm (third-person look);
* an object drawn on top: one of `SHAPES` (all elongated, so rotation is visible) in one of
  `COLOURS` lightened towards white, shaded along its long axis. Objects are always lighter than
  the background (fixed contrast polarity, see `OBJECT_LIGHTEN`): a small student learns the
  motion classes within the demo's budget only then.

What moves, and how, is the class: `pretrain_scenes` (object motions) and `finetune_scenes`
(hand-object interactions).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

__all__ = [
    "SHAPES",
    "COLOURS",
    "SKIN_TONES",
    "Scene",
    "Action",
    "smoothstep",
    "background_texture",
    "camera_motion",
    "object_look",
    "skin_colour",
    "view_pad",
]

SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "cross")
COLOURS = (
    ("red", (215, 35, 35)),
    ("green", (40, 180, 60)),
    ("blue", (40, 70, 220)),
    ("yellow", (235, 210, 40)),
    ("purple", (150, 50, 190)),
    ("cyan", (40, 200, 210)),
)
SKIN_TONES = ((241, 194, 160), (224, 172, 125), (198, 134, 96), (160, 105, 70), (112, 72, 48))

# Contrast polarity: backgrounds are dark (base tone per channel in BACKGROUND_BASE, the second tone
# within +-BACKGROUND_CONTRAST of it, faint stripes) and object colours are mixed with white by
# OBJECT_LIGHTEN, so an object is lighter than its background in every video and a moving edge has
# the same sign everywhere. With random polarity (bright backgrounds, dark objects allowed) the demo
# student needs far more steps than the demo's budget: measured on 320 videos, 168 Adam steps, a
# width-8 SlowFast stayed at chance (test top-1 12.5 %); with fixed polarity it reached 58 %.
BACKGROUND_BASE = (40.0, 90.0)
BACKGROUND_CONTRAST = 30.0
BACKGROUND_STRIPES = 0.1
OBJECT_LIGHTEN = 0.5


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
    """Per-frame ground truth of one video; pixels, x to the right, y down, T frames.

    Attributes:
      height, width: frame size.
      background: `[H + 2p, W + 2p, 3] uint8` texture canvas.
      camera: `[T, 2] int64` (x, y) top-left corner of the view window in the canvas.
      shake: `[T, 2] float32` (x, y) camera shake added to the foreground (zeros when static).
      shape, colour_index: indices into `SHAPES`, `COLOURS`.
      colour: `[3] float32` RGB of the object.
      obj_center: `[T, 2] float32` (x, y) object centre (before shake).
      obj_size: `[T] float32` half length of the object's long axis.
      obj_aspect: short / long axis ratio.
      obj_angle: `[T] float32` radians of the long axis; increasing = clockwise on screen.
      hand_present: whether a hand is drawn.
      hand_center: `[T, 2] float32` palm centre (before shake).
      hand_radius: palm half width (the palm is 1.2x as tall).
      skin: `[3] float32` RGB.
      shoulder: `[T, 2] float32` far end of the forearm (the arm is a capsule palm -> shoulder).
      ego: camera moving (egocentric look).
    """

    height: int
    width: int
    background: np.ndarray
    camera: np.ndarray
    shake: np.ndarray
    shape: int
    colour_index: int
    colour: np.ndarray
    obj_center: np.ndarray
    obj_size: np.ndarray
    obj_aspect: float
    obj_angle: np.ndarray
    hand_present: bool
    hand_center: np.ndarray
    hand_radius: float
    skin: np.ndarray
    shoulder: np.ndarray
    ego: bool

    @property
    def num_frames(self) -> int:
        return len(self.obj_center)


@dataclasses.dataclass(frozen=True)
class Action:
    """One fine-tuning interaction: class `label` (`finetune_scenes.FINETUNE_CLASSES`) over frames
    first..last (inclusive)."""

    label: int
    first: int
    last: int


def smoothstep(x: np.ndarray) -> np.ndarray:
    """`3x^2 - 2x^3` of `x` clipped to [0, 1]: an eased 0 -> 1 progress."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def background_texture(rng: np.random.Generator, height: int, width: int, pad: int) -> np.ndarray:
    """`[H + 2 pad, W + 2 pad, 3] uint8` dark two-tone texture: smooth noise + faint stripes."""
    h, w = height + 2 * pad, width + 2 * pad
    base = rng.uniform(*BACKGROUND_BASE, size=3)
    other = np.clip(base + rng.uniform(-BACKGROUND_CONTRAST, BACKGROUND_CONTRAST, size=3), 0, 255)
    cell = max(4, min(height, width) // 8)
    coarse = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    noise = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))
    noise = noise / (np.abs(noise).max() + 1e-6)
    period = rng.uniform(8, 20) * min(height, width) / 96
    phi = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = np.sin(2 * np.pi * (x * np.cos(phi) + y * np.sin(phi)) / period)
    mix = np.clip(0.5 + 0.45 * noise + BACKGROUND_STRIPES * stripes, 0, 1)[..., None]
    return np.rint(base * (1 - mix) + other * mix).astype(np.uint8)


def camera_motion(rng: np.random.Generator, num_frames: int, pad: int, ego: bool) -> tuple[np.ndarray, np.ndarray]:
    """(`[T, 2] int64` window corner, `[T, 2] float32` shake): pan + shake if ego, else fixed."""
    if not ego:
        return np.full((num_frames, 2), pad, np.int64), np.zeros((num_frames, 2), np.float32)
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    direction = rng.uniform(0, 2 * np.pi)
    pan = rng.uniform(0.5, 1.0) * pad * np.array([np.cos(direction), np.sin(direction)])
    amplitude = rng.uniform(1.0, 2.5, size=(2, 2)) * max(1.0, pad / 20)
    freq = rng.uniform(1.5, 5.0, size=(2, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(2, 2))
    shake = sum(amplitude[k] * np.sin(2 * np.pi * freq[k] * t + phase[k]) for k in range(2))
    corner = np.clip(np.round(pad + (t - 0.5) * pan + shake), 0, 2 * pad).astype(np.int64)
    return corner, shake.astype(np.float32)


def object_look(rng: np.random.Generator) -> tuple[int, int, np.ndarray, float]:
    """(shape, colour index, `[3] float32` colour with jitter, aspect)."""
    shape = int(rng.integers(len(SHAPES)))
    colour_index = int(rng.integers(len(COLOURS)))
    colour = np.clip(np.array(COLOURS[colour_index][1]) + rng.uniform(-20, 20, 3), 0, 255)
    colour = (1 - OBJECT_LIGHTEN) * colour + OBJECT_LIGHTEN * 255
    return shape, colour_index, colour.astype(np.float32), float(rng.uniform(0.45, 0.65))


def skin_colour(rng: np.random.Generator) -> np.ndarray:
    """`[3] float32` RGB: one of `SKIN_TONES` with jitter."""
    tone = np.array(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], np.float64)
    return np.clip(tone + rng.uniform(-10, 10, 3), 0, 255).astype(np.float32)


def view_pad(height: int, width: int) -> int:
    """Margin of the background canvas around the view (room for the camera to pan)."""
    return max(4, min(height, width) // 5)
