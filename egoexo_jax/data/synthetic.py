"""The bundled demo datasets: generated videos written in the official Ego-Exo on-disk formats.

`write_demo_data(root)` writes a small "Kinetics" pre-training set (H.264 mp4 videos, split lists,
the three offline teacher signals) and a small egocentric fine-tuning set in the Charades-Ego
frame-list layout (JPEG folders, per-frame multi-labels, hand-object detections).
`write_epic55_data(root)` writes an egocentric set in the EPIC-Kitchens-55 layout (flat
`{video_id}/frame_*.jpg` folders, verb / noun action segments in the annotation-table columns,
unlabelled S1 / S2 test lists, hand-object detections by absolute frame number). The real readers
(`kinetics.py`, `charades_ego.py`, `epic_kitchens.py`, `teacher_signals.py`, `pipeline.py`) read
them unchanged.

Generative story
----------------
Every video is one `Scene`: per-frame ground truth (object centre / size / angle, hand centre,
camera offset) that `render_scene` turns into frames and exact boxes. A frame is

* a background: a randomly coloured dark two-tone texture (smooth noise + faint stripes of random
  period and orientation) on a canvas larger than the view;
* a hand (optional): a skin-coloured palm ellipse with a forearm capsule towards a "shoulder"
  below the frame (egocentric look) or a short forearm (third-person look);
* an object drawn on top: one of `SHAPES` (all elongated, so rotation is visible) in one of
  `COLOURS` lightened towards white, shaded along its long axis. Objects are always lighter than
  the background (fixed contrast polarity, see `OBJECT_LIGHTEN`): a small student learns the
  motion classes within the demo's budget only then.

Pre-training ("Kinetics", `PRETRAIN_CLASSES`): the class is a motion of the object on screen:
move left / right / up / down, grow / shrink, rotate clockwise / counter-clockwise. Single frames
carry no class information: the start angle is uniform, and position and (log) size are
`mid + amplitude * (tau - 0.5)` where `tau` is the normalised time for the coordinate the class
moves (reversed for left / up / shrink) and a uniform random constant for the others, so the
marginal of every single-frame quantity is the same for all classes; shape, colour, background,
hand and camera are drawn independently of the class. About `ego_fraction` of the videos are
"egocentric-looking": the camera pans and shakes (background window moves, the foreground shakes)
and a large hand reaches in from the bottom; the others are static third-person views where a small
hand is present in some videos.

Teacher signals (as the official files, docs/formats.md#auxiliary-prediction-files):

* `k400_ego_predicts.pkl`: `{csv path: [2] float32 logits}`, index 1 = egocentric;
  logit margin `+-3` for ego / non-ego videos (+0.7 when a third-person video shows a hand) plus
  N(0, 1) noise.
* `k400_IN_predicts.pkl`: `{csv path: [1000] float32 logits}`: N(0, 1) noise with three peaks
  (+9, +6, +4) at ImageNet indices fixed per (shape, colour) pair (`object_teacher_classes`).
* `k400_handobj_predicts/{video}.npy`: per decoded frame `(objects, hands)`, each `None` or a
  float32 `[1, 10]` row in the 100DOH detector layout `[x1, y1, x2, y2, score, contact, offset
  magnitude, offset dx, offset dy, left/right]` (objects: extras 0) in pixels of the decoded
  frame: the true object / palm box with jitter, score U(0.7, 1); `None` hands where no hand is
  visible; about 3 % of the frames have no detections at all.

Fine-tuning (egocentric, `FINETUNE_CLASSES`, multi-label): every video has a moving camera and a
hand that rests under the object when idle, and 1 or 2 distinct hand-object interactions over parts
of the video: push the object left / right (hand at its right / left side), lift it (moves up and
grows: closer to the camera), put it down (moves down and shrinks), twist it (rotates), wave (the
hand moves away and oscillates; the object stays). The frames of an interaction carry its label.

File layout (`root/`, mirroring the official `data/` folder)::

  COMPLETE                            marker, written last: the generation parameters as JSON
  classes_pretrain.txt                one class name per line (index = label)
  classes_finetune.txt
  kinetics/{train,val,test}.csv       `class_name/synNNNNNNNN_000000_000002.mp4 label` lines
  kinetics/videos/class_name/*.mp4    H.264 yuv420p, `fps` fps, time base 1/fps (the official
                                      decoder's frames == duration assert holds)
  aux_predictions/k400_ego_predicts.pkl, k400_IN_predicts.pkl   keys = the csv paths (all splits)
  aux_predictions/k400_handobj_predicts/{video}.npy
  charades-ego/split/{train,test}_1st.csv   frame lists (`original_vido_id video_id frame_id path
                                      labels`; frame_id 0-based, video_id the video's index)
  charades-ego/rgb/{vid}/{vid}-%06d.jpg     vid = `SNNNNEGO`
  charades-ego/handobj_predicts/{vid}.npy   one (objects, hands) entry per listed frame

Splits: pre-training 70 / 15 / 15 % (train / val / test; class-interleaved, so near balanced;
val and test get at least one video), fine-tuning first 75 % of the videos train, the rest test.
Labels: pre-training video i has class i % 8.

Defaults: 320 pre-training videos (8 classes x 40; 224 / 48 / 48) of 48 frames at 30 fps, 200
egocentric videos (150 / 50) of 64 frames, 128 x 96 (W x H). Measured: 19-26 s for the default set
in one process on the shared 2-core development machine (about 10 s for the pre-training set,
9 s for the egocentric set with its 12,800 JPEGs), 44 MB on disk.

Determinism: everything is a function of the parameters. Video i draws its scene from
`np.random.default_rng([seed, dataset, i])` and its teacher noise from `[seed, dataset, i, 1]`
(dataset 0 = pre-training, 1 = egocentric), so any video can be re-created on its own
(`pretrain_video`, `finetune_video`). csv, pkl, npy and JPEG bytes are identical for the same
parameters, and so are the mp4 bytes: libx264 runs single-threaded with a fixed preset and crf, and
two generations of the full default set were byte-identical (all 13,650 files); the tests assert
it on a small set.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from typing import Sequence

import av
import numpy as np
from PIL import Image

from egoexo_jax.data import teacher_signals

__all__ = [
    "PRETRAIN_CLASSES", "FINETUNE_CLASSES", "SHAPES", "COLOURS", "DemoPaths", "Scene",
    "RenderedScene", "Action", "demo_paths", "write_demo_data", "pretrain_scene",
    "finetune_scene", "pretrain_video", "finetune_video", "teacher_rng", "render_scene",
    "detections_for", "object_teacher_classes", "ego_teacher_logits", "object_teacher_logits",
    "kinetics_key", "charades_video_id", "EPIC55_VERBS", "EPIC55_NOUNS", "Epic55Paths",
    "epic55_paths", "epic55_video_ids", "write_epic55_data",
]

FORMAT_VERSION = 1

PRETRAIN_CLASSES = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink",
                    "rotate_clockwise", "rotate_counterclockwise")
FINETUNE_CLASSES = ("push_left", "push_right", "lift", "put_down", "twist", "wave")
SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "cross")
COLOURS = (("red", (215, 35, 35)), ("green", (40, 180, 60)), ("blue", (40, 70, 220)),
           ("yellow", (235, 210, 40)), ("purple", (150, 50, 190)), ("cyan", (40, 200, 210)))
SKIN_TONES = ((241, 194, 160), (224, 172, 125), (198, 134, 96), (160, 105, 70), (112, 72, 48))

OBJECT_CLASSES = 1000  # ImageNet
DETECTION_COLUMNS = 10  # 100DOH: box (4), score, contact state, offset vector (3), left/right
CONTACT_PORTABLE = 3  # 100DOH contact state "portable object"
DROP_PROB = 0.03  # frames whose detections are all missing
MP4_CRF = 20
MP4_PRESET = "ultrafast"
JPEG_QUALITY = 90
PRETRAIN_SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
FINETUNE_TRAIN_FRACTION = 0.75

# Pre-training object: half size (fraction of the short side, at mid-video), log of the end/start
# size ratio of grow / shrink, and the travel of the move classes (fraction of the frame length).
PRETRAIN_OBJECT_SIZE = (0.15, 0.18)
PRETRAIN_LOG_GROWTH = (0.5, 0.7)
PRETRAIN_TRAVEL = (0.30, 0.38)
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

_MARKER = "COMPLETE"
_OWNED = ("kinetics", "aux_predictions", "charades-ego", "classes_pretrain.txt",
          "classes_finetune.txt")


# ----------------------------------------------------------------------------------------------
# Paths.


@dataclasses.dataclass(frozen=True)
class DemoPaths:
  """Where `write_demo_data` put everything (all paths absolute strings).

  Attributes:
    root: the folder given to `write_demo_data`.
    kinetics_dir: holds `train.csv`, `val.csv`, `test.csv` (`path_to_data_dir`).
    kinetics_prefix: folder the csv paths are relative to (`path_prefix`).
    ego_scores: `k400_ego_predicts.pkl`.
    object_scores: `k400_IN_predicts.pkl`.
    kinetics_detections: folder of `{video}.npy` (Kinetics naming, absolute frame indexing).
    charades_dir: holds `train_1st.csv`, `test_1st.csv`.
    charades_prefix: folder the frame paths are relative to.
    charades_detections: folder of `{video_id}.npy` (frame-list position indexing).
    num_pretrain_classes, num_finetune_classes: class counts.
    class_names_pretrain, class_names_finetune: names, index = label.
  """
  root: str
  kinetics_dir: str
  kinetics_prefix: str
  ego_scores: str
  object_scores: str
  kinetics_detections: str
  charades_dir: str
  charades_prefix: str
  charades_detections: str
  num_pretrain_classes: int = len(PRETRAIN_CLASSES)
  num_finetune_classes: int = len(FINETUNE_CLASSES)
  class_names_pretrain: tuple[str, ...] = PRETRAIN_CLASSES
  class_names_finetune: tuple[str, ...] = FINETUNE_CLASSES


def demo_paths(root: str | os.PathLike) -> DemoPaths:
  """The `DemoPaths` of a demo set under `root` (pure path arithmetic; nothing is checked)."""
  root = os.path.abspath(os.fspath(root))
  kinetics = os.path.join(root, "kinetics")
  aux = os.path.join(root, "aux_predictions")
  charades = os.path.join(root, "charades-ego")
  return DemoPaths(
      root=root, kinetics_dir=kinetics, kinetics_prefix=os.path.join(kinetics, "videos"),
      ego_scores=os.path.join(aux, "k400_ego_predicts.pkl"),
      object_scores=os.path.join(aux, "k400_IN_predicts.pkl"),
      kinetics_detections=os.path.join(aux, "k400_handobj_predicts"),
      charades_dir=os.path.join(charades, "split"),
      charades_prefix=os.path.join(charades, "rgb"),
      charades_detections=os.path.join(charades, "handobj_predicts"))


def kinetics_key(index: int, label: int, num_frames: int, fps: int) -> str:
  """Csv path of pre-training video `index`: `class_name/synNNNNNNNN_000000_{seconds:06d}.mp4`."""
  seconds = int(math.ceil(num_frames / fps))
  return f"{PRETRAIN_CLASSES[label]}/syn{index:08d}_000000_{seconds:06d}.mp4"


def charades_video_id(index: int) -> str:
  """Id of fine-tuning video `index` (5 characters + `EGO`, like `005BUEGO`)."""
  return f"S{index:04d}EGO"


# ----------------------------------------------------------------------------------------------
# Scenes.


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


@dataclasses.dataclass(frozen=True)
class Action:
  """One fine-tuning interaction: `FINETUNE_CLASSES[label]` over frames first..last (inclusive)."""
  label: int
  first: int
  last: int


def _smoothstep(x: np.ndarray) -> np.ndarray:
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def _background(rng: np.random.Generator, height: int, width: int, pad: int) -> np.ndarray:
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


def _camera(rng: np.random.Generator, num_frames: int, pad: int, ego: bool
            ) -> tuple[np.ndarray, np.ndarray]:
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


def _object_look(rng: np.random.Generator) -> tuple[int, int, np.ndarray, float]:
  """(shape, colour index, `[3] float32` colour with jitter, aspect)."""
  shape = int(rng.integers(len(SHAPES)))
  colour_index = int(rng.integers(len(COLOURS)))
  colour = np.clip(np.array(COLOURS[colour_index][1]) + rng.uniform(-20, 20, 3), 0, 255)
  colour = (1 - OBJECT_LIGHTEN) * colour + OBJECT_LIGHTEN * 255
  return shape, colour_index, colour.astype(np.float32), float(rng.uniform(0.45, 0.65))


def _skin(rng: np.random.Generator) -> np.ndarray:
  tone = np.array(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], np.float64)
  return np.clip(tone + rng.uniform(-10, 10, 3), 0, 255).astype(np.float32)


def _pad(height: int, width: int) -> int:
  return max(4, min(height, width) // 5)


def _tau(rng: np.random.Generator, t: np.ndarray, direction: int) -> np.ndarray:
  """`[T]` normalised time (direction +1), reversed time (-1), or a uniform constant (0)."""
  if direction > 0:
    return t
  if direction < 0:
    return 1.0 - t
  return np.full(len(t), rng.uniform())


# Pre-training class motions: (coordinate, direction); coordinate 0 = x, 1 = y, 2 = log size,
# 3 = angle.
_PRETRAIN_MOTION = {0: (0, -1), 1: (0, 1), 2: (1, -1), 3: (1, 1), 4: (2, 1), 5: (2, -1),
                    6: (3, 1), 7: (3, -1)}


def pretrain_scene(rng: np.random.Generator, label: int, *, height: int, width: int,
                   num_frames: int, ego: bool) -> Scene:
  """A pre-training scene whose object motion is class `label` (see `PRETRAIN_CLASSES`).

  Each coordinate c (x, y, log size) is `mid_c + amp_c * (tau_c - 0.5)` with `tau_c` the normalised
  time (reversed for negative directions) for the coordinate the class moves and a uniform random
  constant for the others, so single-frame marginals do not depend on the class.
  """
  moved, direction = _PRETRAIN_MOTION[label]
  short = min(height, width)
  t = np.linspace(0.0, 1.0, num_frames)
  taus = [_tau(rng, t, direction) if c == moved else _tau(rng, t, 0) for c in range(3)]
  shape, colour_index, colour, aspect = _object_look(rng)
  log_amp = rng.uniform(*PRETRAIN_LOG_GROWTH)
  mid_size = rng.uniform(*PRETRAIN_OBJECT_SIZE) * short
  size = mid_size * np.exp(log_amp * (taus[2] - 0.5))
  # The largest half-extent any class can reach.
  extent = PRETRAIN_OBJECT_SIZE[1] * short * np.exp(PRETRAIN_LOG_GROWTH[1] / 2) + 2
  centre = []
  for c, length in ((0, width), (1, height)):
    amp_max = PRETRAIN_TRAVEL[1] * length
    amp = rng.uniform(*PRETRAIN_TRAVEL) * length
    lo, hi = extent + amp_max / 2, length - 1 - extent - amp_max / 2
    if hi < lo:  # small frames: centred, the largest objects may touch the border
      lo = hi = (length - 1) / 2
    centre.append(rng.uniform(lo, hi) + amp * (taus[c] - 0.5))
  angle0 = rng.uniform(0, 2 * np.pi)
  turn = rng.uniform(0.8, 1.2) * np.pi * (direction if moved == 3 else 0)
  angle = angle0 + turn * t
  pad = _pad(height, width)
  background = _background(rng, height, width, pad)
  camera, shake = _camera(rng, num_frames, pad, ego)
  hand_present = bool(ego or rng.uniform() < 0.35)
  skin = _skin(rng)
  if ego:
    radius = 0.10 * short
    palm = np.array([rng.uniform(0.15, 0.85) * width, rng.uniform(0.72, 0.9) * height])
    far = np.array([palm[0] + rng.uniform(-0.3, 0.3) * width, 1.8 * height])
  else:
    radius = 0.06 * short
    palm = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.3, 0.85) * height])
    arm = rng.uniform(0.25, 0.75) * np.pi  # pointing downwards-ish
    far = palm + 3.0 * radius * np.array([np.cos(arm), np.sin(arm)])
  sway = rng.uniform(1.0, 3.0) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6))
  hand_center = palm[None, :] + np.stack([sway, 0.5 * sway], -1)
  return Scene(
      height=height, width=width, background=background, camera=camera, shake=shake, shape=shape,
      colour_index=colour_index, colour=colour,
      obj_center=np.stack(centre, -1).astype(np.float32), obj_size=size.astype(np.float32),
      obj_aspect=aspect, obj_angle=angle.astype(np.float32), hand_present=hand_present,
      hand_center=hand_center.astype(np.float32), hand_radius=float(radius), skin=skin,
      shoulder=np.repeat(far[None].astype(np.float32), num_frames, 0), ego=bool(ego))


def _sample_actions(rng: np.random.Generator, num_frames: int) -> tuple[Action, ...]:
  """1 or 2 distinct interactions over non-overlapping parts of the video."""
  count = 1 + int(rng.uniform() < 0.5)
  labels = rng.choice(len(FINETUNE_CLASSES), size=count, replace=False)
  if count == 1:
    length = int(rng.uniform(0.45, 0.8) * num_frames)
    first = int(rng.integers(0, num_frames - length + 1))
    return (Action(int(labels[0]), first, first + length - 1),)
  lengths = [int(rng.uniform(0.3, 0.42) * num_frames) for _ in range(2)]
  gap = max(2, num_frames // 16)
  slack = num_frames - sum(lengths) - gap
  first = int(rng.integers(0, slack + 1))
  second = first + lengths[0] + gap + int(rng.integers(0, slack - first + 1))
  return (Action(int(labels[0]), first, first + lengths[0] - 1),
          Action(int(labels[1]), second, second + lengths[1] - 1))


def _place(path: np.ndarray, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
  """Shifts (and if needed shrinks) a relative path so it stays within [lo, hi]."""
  if hi < lo:  # no room at all: centre it
    lo = hi = (lo + hi) / 2
  low, high = path.min(), path.max()
  if high - low > hi - lo:
    path = (path - low) * (hi - lo) / (high - low)
    low, high = path.min(), path.max()
  return path + rng.uniform(lo - low, hi - high)


def finetune_scene(rng: np.random.Generator, *, height: int, width: int,
                   num_frames: int) -> tuple[Scene, tuple[Action, ...]]:
  """An egocentric scene (moving camera, hand) with 1-2 interactions from `FINETUNE_CLASSES`."""
  short = min(height, width)
  actions = _sample_actions(rng, num_frames)
  shape, colour_index, colour, aspect = _object_look(rng)
  t = np.arange(num_frames, dtype=np.float64)
  dx, dy, dlog, dangle = (np.zeros(num_frames) for _ in range(4))
  for action in actions:
    name = FINETUNE_CLASSES[action.label]
    progress = _smoothstep((t - action.first) / max(action.last - action.first, 1))
    if name in ("push_left", "push_right"):
      dx += (1 if name == "push_right" else -1) * rng.uniform(0.18, 0.28) * width * progress
    elif name in ("lift", "put_down"):
      up = name == "lift"
      dy += (-1 if up else 1) * rng.uniform(0.12, 0.2) * height * progress
      dlog += (1 if up else -1) * np.log(1.5) * progress
    elif name == "twist":
      dangle += rng.choice([-1, 1]) * rng.uniform(0.5, 0.8) * np.pi * progress
  radius = 0.10 * short
  size = rng.uniform(0.10, 0.14) * short * np.exp(dlog)
  extent = size.max() + 2
  cx = _place(dx, extent, width - 1 - extent, rng)
  cy = _place(dy, extent, height - 1 - extent - 2.2 * radius, rng)
  angle = rng.uniform(0, 2 * np.pi) + dangle
  offset = _hand_offsets(rng, actions, cx, size, radius, width, num_frames)
  hand_center = np.stack([cx, cy], -1) + offset
  shoulder = np.array([rng.uniform(0.3, 0.8) * width, 1.7 * height])
  pad = _pad(height, width)
  background = _background(rng, height, width, pad)
  camera, shake = _camera(rng, num_frames, pad, True)
  scene = Scene(
      height=height, width=width, background=background, camera=camera, shake=shake, shape=shape,
      colour_index=colour_index, colour=colour,
      obj_center=np.stack([cx, cy], -1).astype(np.float32), obj_size=size.astype(np.float32),
      obj_aspect=aspect, obj_angle=angle.astype(np.float32), hand_present=True,
      hand_center=hand_center.astype(np.float32), hand_radius=float(radius), skin=_skin(rng),
      shoulder=np.repeat(shoulder[None].astype(np.float32), num_frames, 0), ego=True)
  return scene, actions


def _hand_offsets(rng: np.random.Generator, actions: Sequence[Action], cx: np.ndarray,
                  size: np.ndarray, radius: float, width: int, num_frames: int) -> np.ndarray:
  """`[T, 2]` palm position relative to the object centre: under it when idle, at the side that
  pushes, under it for lift / put down, lower right for twist, away and oscillating for wave."""
  t = np.arange(num_frames, dtype=np.float64)
  offset = np.stack([np.zeros(num_frames), size + 1.1 * radius], -1)
  wobble = np.zeros(num_frames)
  for action in actions:
    name = FINETUNE_CLASSES[action.label]
    inside = (t >= action.first - 3) & (t <= action.last)
    if name == "push_left":
      target = np.stack([size + 1.1 * radius, 0.3 * radius * np.ones(num_frames)], -1)
    elif name == "push_right":
      target = np.stack([-(size + 1.1 * radius), 0.3 * radius * np.ones(num_frames)], -1)
    elif name in ("lift", "put_down"):
      target = np.stack([np.zeros(num_frames), 0.6 * size + radius], -1)
    elif name == "twist":
      target = np.stack([0.5 * size + 0.8 * radius, 0.5 * size], -1)
    else:  # wave: away from the object towards the roomier side, oscillating
      side = 1.0 if cx[action.first] < width / 2 else -1.0
      target = np.stack([side * (size + 3 * radius), -(size + radius)], -1)
      cycles = rng.uniform(2.0, 3.0)
      phase = 2 * np.pi * cycles * (t - action.first) / max(action.last - action.first, 1)
      wobble = np.where(inside, 0.07 * width * np.sin(phase), wobble)
    offset = np.where(inside[:, None], target, offset)
  kernel = np.ones(5) / 5  # ease the hand between poses
  padded = np.concatenate([np.repeat(offset[:1], 2, 0), offset, np.repeat(offset[-1:], 2, 0)])
  smooth = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(2)], -1)
  smooth[:, 0] += wobble
  return smooth


# ----------------------------------------------------------------------------------------------
# Rendering.


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray
                ) -> np.ndarray:
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
  return (((np.abs(u) <= a) & (np.abs(v) <= 0.35 * b))
          | ((np.abs(u) <= 0.3 * a) & (np.abs(v) <= b)))


def _window(x1: float, y1: float, x2: float, y2: float, height: int, width: int
            ) -> tuple[slice, slice] | None:
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
  window = _window(min(cx, sx) - 1.2 * r, min(cy, sy) - 1.2 * r, max(cx, sx) + 1.2 * r,
                   max(cy, sy) + 1.2 * r, h, w)
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
    image = scene.background[y:y + h, x:x + w].copy()
    if scene.hand_present:
      hand_boxes[k] = _draw_hand(image, scene, k)
    obj_boxes[k] = _draw_object(image, scene, k)
    frames[k] = image
  return RenderedScene(frames, obj_boxes, hand_boxes)


# ----------------------------------------------------------------------------------------------
# Teacher signals.


def object_teacher_classes(shape: int, colour_index: int) -> tuple[int, int, int]:
  """The three ImageNet indices the Object-Score teacher favours for a (shape, colour) pair
  (fixed for all seeds; distinct for distinct pairs)."""
  table = np.random.default_rng(20210414).permutation(OBJECT_CLASSES)
  k = 3 * (shape * len(COLOURS) + colour_index)
  return tuple(int(i) for i in table[k:k + 3])


def ego_teacher_logits(rng: np.random.Generator, scene: Scene) -> np.ndarray:
  """`[2] float32` logits, index 1 = egocentric: margin +-3 (+0.7 for a visible hand in a
  third-person view) + N(0, 1)."""
  margin = (3.0 if scene.ego else -3.0) + (0.7 if scene.hand_present and not scene.ego else 0.0)
  margin += rng.standard_normal()
  return np.array([-margin / 2, margin / 2], np.float32)


def object_teacher_logits(rng: np.random.Generator, scene: Scene) -> np.ndarray:
  """`[1000] float32` logits: N(0, 1) + peaks 9, 6, 4 at `object_teacher_classes`."""
  logits = rng.standard_normal(OBJECT_CLASSES).astype(np.float32)
  peaks = object_teacher_classes(scene.shape, scene.colour_index)
  logits[list(peaks)] += np.array([9.0, 6.0, 4.0], np.float32)
  return logits


def _jitter_box(rng: np.random.Generator, box: np.ndarray, width: int, height: int) -> np.ndarray:
  side = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2, np.float64)
  noisy = box + rng.standard_normal(4) * (0.03 * side + 0.3)
  noisy[[0, 2]] = np.clip(noisy[[0, 2]], 0, width - 1)
  noisy[[1, 3]] = np.clip(noisy[[1, 3]], 0, height - 1)
  return np.array([min(noisy[0], noisy[2]), min(noisy[1], noisy[3]),
                   max(noisy[0], noisy[2]), max(noisy[1], noisy[3])])


def detections_for(rng: np.random.Generator, rendered: RenderedScene
                   ) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
  """Per frame `(objects, hands)`: `None` or `[1, 10] float32` 100DOH rows (see module doc).

  Boxes are the rendered extents with jitter N(0, 3 % of the side + 0.3 px), clipped to the
  frame; scores U(0.7, 1). Hands are `None` where no palm pixel is visible; with probability
  `DROP_PROB` a frame has no detections at all.
  """
  _, height, width, _ = rendered.frames.shape
  out = []
  for obj_box, hand_box in zip(rendered.obj_boxes, rendered.hand_boxes):
    draws = rng.uniform(size=3)
    if draws[0] < DROP_PROB:
      rng.standard_normal(8)  # keep the stream aligned whatever was dropped
      out.append((None, None))
      continue
    objects = hands = None
    if not np.isnan(obj_box[0]):
      row = np.zeros((1, DETECTION_COLUMNS), np.float32)
      row[0, :4] = _jitter_box(rng, obj_box, width, height)
      row[0, 4] = 0.7 + 0.3 * draws[1]
      objects = row
    else:
      rng.standard_normal(4)
    if not np.isnan(hand_box[0]):
      row = np.zeros((1, DETECTION_COLUMNS), np.float32)
      row[0, :4] = _jitter_box(rng, hand_box, width, height)
      row[0, 4] = 0.7 + 0.3 * draws[2]
      if objects is not None:
        touching = not (hand_box[0] > obj_box[2] + 2 or hand_box[2] < obj_box[0] - 2
                        or hand_box[1] > obj_box[3] + 2 or hand_box[3] < obj_box[1] - 2)
        hand_c = (hand_box[:2] + hand_box[2:]) / 2
        obj_c = (obj_box[:2] + obj_box[2:]) / 2
        vec = obj_c - hand_c
        norm = float(np.hypot(*vec)) + 1e-6
        row[0, 5] = CONTACT_PORTABLE if touching else 0
        row[0, 6:9] = [norm / max(width, height), vec[0] / norm, vec[1] / norm]
      row[0, 9] = 1.0  # right hand
      hands = row
    else:
      rng.standard_normal(4)
    out.append((objects, hands))
  return out


# ----------------------------------------------------------------------------------------------
# Per-video generation (each video has its own random streams, so any video can be re-created).


def pretrain_video(seed: int, index: int, *, height: int, width: int, num_frames: int,
                   ego_fraction: float = 0.5) -> tuple[int, Scene]:
  """(label, scene) of pre-training video `index`; label = index % len(PRETRAIN_CLASSES)."""
  label = index % len(PRETRAIN_CLASSES)
  rng = np.random.default_rng([seed, 0, index])
  ego = bool(rng.uniform() < ego_fraction)
  return label, pretrain_scene(rng, label, height=height, width=width, num_frames=num_frames,
                               ego=ego)


def finetune_video(seed: int, index: int, *, height: int, width: int,
                   num_frames: int) -> tuple[Scene, tuple[Action, ...]]:
  """(scene, interactions) of egocentric video `index`."""
  return finetune_scene(np.random.default_rng([seed, 1, index]), height=height, width=width,
                        num_frames=num_frames)


def teacher_rng(seed: int, dataset: int, index: int) -> np.random.Generator:
  """Stream of the teacher noise of a video (dataset 0 = pre-training, 1 = egocentric)."""
  return np.random.default_rng([seed, dataset, index, 1])


# ----------------------------------------------------------------------------------------------
# Writers.


def _write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
  """H.264 yuv420p mp4 with time base 1/fps (frame i has pts i)."""
  container = av.open(path, "w", options={"video_track_timescale": str(fps)})
  try:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    stream.time_base = Fraction(1, fps)
    stream.options = {"crf": str(MP4_CRF), "preset": MP4_PRESET, "threads": "1"}
    for i, image in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts, frame.time_base = i, Fraction(1, fps)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  finally:
    container.close()


def _write_jpegs(folder: str, vid: str, frames: np.ndarray) -> list[str]:
  """`folder/{vid}/{vid}-%06d.jpg` (1-based); returns the paths relative to `folder`."""
  os.makedirs(os.path.join(folder, vid), exist_ok=True)
  rel = [f"{vid}/{vid}-{j + 1:06d}.jpg" for j in range(len(frames))]
  for name, image in zip(rel, frames):
    Image.fromarray(image).save(os.path.join(folder, name), quality=JPEG_QUALITY)
  return rel


def _write_lines(path: str, lines: Sequence[str]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(line + "\n" for line in lines)


def _progress(enabled: bool, what: str, done: int, total: int, start: float) -> None:
  if enabled and (done == total or done % max(1, total // 10) == 0):
    print(f"[synthetic] {what}: {done}/{total} ({time.time() - start:.1f} s)", file=sys.stderr,
          flush=True)


def _pretrain_splits(seed: int, num_videos: int) -> list[str]:
  """Split name of each video, 70 / 15 / 15 % (val and test at least one video each).

  The videos of each class are shuffled (seeded) and interleaved class by class; the first 70 %
  of that order is train, so every split is close to class-balanced.
  """
  rng = np.random.default_rng([seed, 2])
  num_classes = len(PRETRAIN_CLASSES)
  per_class = [np.arange(c, num_videos, num_classes) for c in range(num_classes)]
  per_class = [m[rng.permutation(len(m))] for m in per_class]
  order = [int(m[r]) for r in range(max(len(m) for m in per_class)) for m in per_class
           if r < len(m)]
  n_val = max(1, int(round(PRETRAIN_SPLITS[1][1] * num_videos)))
  n_test = max(1, int(round(PRETRAIN_SPLITS[2][1] * num_videos)))
  n_train = num_videos - n_val - n_test
  splits = [""] * num_videos
  for rank, i in enumerate(order):
    splits[i] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
  return splits


def _write_pretrain(paths: DemoPaths, params: dict, progress: bool) -> None:
  seed, n, fps = params["seed"], params["num_pretrain_videos"], params["fps"]
  height, width, num_frames = params["height"], params["width"], params["num_frames"]
  splits = _pretrain_splits(seed, n)
  lines = {name: [] for name, _ in PRETRAIN_SPLITS}
  ego_scores, object_scores = {}, {}
  start = time.time()
  for i in range(n):
    label, scene = pretrain_video(seed, i, height=height, width=width, num_frames=num_frames,
                                  ego_fraction=params["ego_fraction"])
    rendered = render_scene(scene)
    rng = teacher_rng(seed, 0, i)
    key = kinetics_key(i, label, num_frames, fps)
    path = os.path.join(paths.kinetics_prefix, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_mp4(path, rendered.frames, fps)
    teacher_signals.write_detections(
        os.path.join(paths.kinetics_detections, teacher_signals.kinetics_video_name(key) + ".npy"),
        detections_for(rng, rendered))
    ego_scores[key] = ego_teacher_logits(rng, scene)
    object_scores[key] = object_teacher_logits(rng, scene)
    lines[splits[i]].append(f"{key} {label}")
    _progress(progress, "pre-training videos", i + 1, n, start)
  for name, _ in PRETRAIN_SPLITS:
    _write_lines(os.path.join(paths.kinetics_dir, f"{name}.csv"), lines[name])
  teacher_signals.write_score_pickle(paths.ego_scores, ego_scores)
  teacher_signals.write_score_pickle(paths.object_scores, object_scores)


def _frame_labels(actions: Sequence[Action], num_frames: int) -> list[list[int]]:
  labels = [[] for _ in range(num_frames)]
  for action in sorted(actions, key=lambda a: a.label):
    for j in range(action.first, action.last + 1):
      labels[j].append(action.label)
  return labels


def _write_finetune(paths: DemoPaths, params: dict, progress: bool) -> None:
  seed, n = params["seed"], params["num_finetune_videos"]
  height, width, num_frames = params["height"], params["width"], params["finetune_frames"]
  n_train = min(max(int(round(FINETUNE_TRAIN_FRACTION * n)), 1), n - 1)
  header = "original_vido_id video_id frame_id path labels"
  rows = {"train_1st.csv": [header], "test_1st.csv": [header]}
  start = time.time()
  for i in range(n):
    scene, actions = finetune_video(seed, i, height=height, width=width, num_frames=num_frames)
    rendered = render_scene(scene)
    rng = teacher_rng(seed, 1, i)
    vid = charades_video_id(i)
    rel = _write_jpegs(paths.charades_prefix, vid, rendered.frames)
    teacher_signals.write_detections(os.path.join(paths.charades_detections, f"{vid}.npy"),
                                     detections_for(rng, rendered))
    table = rows["train_1st.csv" if i < n_train else "test_1st.csv"]
    for j, (frame_path, classes) in enumerate(zip(rel, _frame_labels(actions, num_frames))):
      table.append(f'{vid} {i} {j} {frame_path} "{",".join(str(c) for c in classes)}"')
    _progress(progress, "egocentric videos", i + 1, n, start)
  for name, table in rows.items():
    _write_lines(os.path.join(paths.charades_dir, name), table)


def _read_marker(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.unlink(path)


def write_demo_data(root: str | os.PathLike, *, seed: int = 0, num_pretrain_videos: int = 320,
                    num_finetune_videos: int = 200, height: int = 96, width: int = 128,
                    num_frames: int = 48, fps: int = 30, finetune_frames: int = 64,
                    ego_fraction: float = 0.5, progress: bool = False) -> DemoPaths:
  """Writes (or finds) the demo datasets under `root`; returns their `DemoPaths`.

  Args:
    root: output folder (created). Only the names of the file layout (module docstring) and
      temporary `.partial-*` folders are touched; other content is left alone.
    seed: everything is a deterministic function of the parameters.
    num_pretrain_videos: pre-training videos (>= 3; class = index % 8; split 70 / 15 / 15 %).
    num_finetune_videos: egocentric videos (first 75 % train, the rest test).
    height, width: frame size of both sets (>= 32).
    num_frames, fps: length and rate of the pre-training videos.
    finetune_frames: frames per egocentric video.
    ego_fraction: probability that a pre-training video is egocentric-looking.
    progress: print progress to stderr.

  Idempotent: when `root/COMPLETE` holds the same parameters nothing is written. Otherwise the
  marker is removed, everything is generated into a temporary folder inside `root`, moved into
  place, and the marker is written last, so an interrupted run is never taken for a complete one
  (its leftovers are removed by the next call). Not safe for two processes writing the same root
  at once.
  """
  params = {"format": FORMAT_VERSION, "seed": int(seed),
            "num_pretrain_videos": int(num_pretrain_videos),
            "num_finetune_videos": int(num_finetune_videos), "height": int(height),
            "width": int(width), "num_frames": int(num_frames), "fps": int(fps),
            "finetune_frames": int(finetune_frames), "ego_fraction": float(ego_fraction)}
  if num_pretrain_videos < 3 or num_finetune_videos < 2 or min(height, width) < 32 or (
      num_frames < 2 or finetune_frames < 8 or fps < 1 or not 0 <= ego_fraction <= 1):
    raise ValueError(f"invalid demo data parameters {params}")
  paths = demo_paths(root)
  marker = os.path.join(paths.root, _MARKER)
  if _read_marker(marker) == params:
    return paths
  os.makedirs(paths.root, exist_ok=True)
  _remove(marker)
  for name in os.listdir(paths.root):  # left behind by an interrupted run
    if name.startswith(".partial-"):
      _remove(os.path.join(paths.root, name))
  partial = tempfile.mkdtemp(prefix=".partial-", dir=paths.root)
  try:
    staged = demo_paths(partial)
    _write_lines(os.path.join(partial, "classes_pretrain.txt"), PRETRAIN_CLASSES)
    _write_lines(os.path.join(partial, "classes_finetune.txt"), FINETUNE_CLASSES)
    _write_pretrain(staged, params, progress)
    _write_finetune(staged, params, progress)
    for name in _OWNED:
      _remove(os.path.join(paths.root, name))
      os.replace(os.path.join(partial, name), os.path.join(paths.root, name))
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  tmp = marker + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(params, f, sort_keys=True)
    f.write("\n")
  os.replace(tmp, marker)
  return paths


# ----------------------------------------------------------------------------------------------
# The EPIC-Kitchens-55 format (egocentric segments with verb and noun labels).

EPIC55_VERBS = FINETUNE_CLASSES  # verb class = the interaction
EPIC55_NOUNS = SHAPES  # noun class = the object's shape
EPIC55_SPLITS = ("train", "val", "s1", "s2")
EPIC55_LABEL_COLUMNS = ("uid", "participant_id", "video_id", "narration", "start_timestamp",
                        "stop_timestamp", "start_frame", "stop_frame", "verb", "verb_class",
                        "noun", "noun_class", "all_nouns", "all_noun_classes")
EPIC55_TIMESTAMP_COLUMNS = ("uid", "participant_id", "video_id", "start_timestamp",
                            "stop_timestamp", "start_frame", "stop_frame")


@dataclasses.dataclass(frozen=True)
class Epic55Paths:
  """Where `write_epic55_data` put the EPIC-55-format set (absolute paths).

  Attributes:
    root: `ROOT/epic55`.
    annotations: `path_to_data_dir`: `EPIC_{train,val}_action_labels.csv` (the tables of the
      Ego-Exo split pickles, as csv), `EPIC_test_s{1,2}_timestamps.csv` (unlabelled, as the
      official test lists) and `EPIC_test_s{1,2}_labels.csv` (the same segments with labels).
    frames: `path_prefix`: `{video_id}/frame_{n:010d}.jpg`, n from 1.
    detections: `{video_id}.npy` hand-object files indexed by absolute frame number (entry 0 is
      an empty placeholder, entry n belongs to `frame_{n:010d}.jpg`).
  """
  root: str
  annotations: str
  frames: str
  detections: str
  verbs: tuple[str, ...] = EPIC55_VERBS
  nouns: tuple[str, ...] = EPIC55_NOUNS


def epic55_paths(root: str | os.PathLike) -> Epic55Paths:
  """The `Epic55Paths` under `root` (pure path arithmetic)."""
  base = os.path.join(os.path.abspath(os.fspath(root)), "epic55")
  return Epic55Paths(root=base, annotations=os.path.join(base, "annotations"),
                     frames=os.path.join(base, "frames"),
                     detections=os.path.join(base, "handobj"))


def _timestamp(frame: int, fps: int) -> str:
  """`HH:MM:SS.ff` of 1-based frame `frame` (EPIC-55 timestamp format)."""
  seconds = (frame - 1) / fps
  return (f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:"
          f"{seconds % 60:05.2f}")


def epic55_video_ids(num_videos: dict[str, int], num_participants: int) -> list[tuple[str, str]]:
  """`(split, video_id)` of every video, in generation order: train, val and S1 videos cycle over
  participants `P01..P{num_participants}` (kitchens seen in training); S2 videos belong to new
  participants (unseen kitchens)."""
  out, per_participant = [], collections.Counter()
  for split in EPIC55_SPLITS:
    for j in range(num_videos[split]):
      p = num_participants + 1 + j if split == "s2" else (len(out) % num_participants) + 1
      per_participant[p] += 1
      out.append((split, f"P{p:02d}_{per_participant[p]:02d}"))
  return out


def write_epic55_data(root: str | os.PathLike, *, seed: int = 0, num_train_videos: int = 10,
                      num_val_videos: int = 3, num_s1_videos: int = 2, num_s2_videos: int = 2,
                      num_participants: int = 3, num_frames: int = 32, height: int = 48,
                      width: int = 64, fps: int = 30) -> Epic55Paths:
  """Writes (or finds) a small EPIC-Kitchens-55-format set under `root/epic55`.

  Each video is a `finetune_scene` (camera motion, hand, one object) whose 1-2 interactions are
  its action segments: verb = the interaction (`EPIC55_VERBS`), noun = the object's shape
  (`EPIC55_NOUNS`), `start_frame` / `stop_frame` = the interaction's frames (1-based). Segments
  are often shorter than a 32x2 clip span, so clip indices get clamped as in real EPIC data.
  Videos `i` draw from `np.random.default_rng([seed, 3, i])`, teacher noise from `[seed, 3, i, 1]`.

  Idempotent like `write_demo_data` (marker `epic55/COMPLETE` written last).
  """
  counts = {"train": int(num_train_videos), "val": int(num_val_videos), "s1": int(num_s1_videos),
            "s2": int(num_s2_videos)}
  params = {"format": FORMAT_VERSION, "seed": int(seed), "videos": counts,
            "num_participants": int(num_participants), "num_frames": int(num_frames),
            "height": int(height), "width": int(width), "fps": int(fps)}
  if counts["train"] < 1 or counts["val"] < 1 or min(height, width) < 32 or num_frames < 8 or (
      num_participants < 1 or min(counts.values()) < 0):
    raise ValueError(f"invalid EPIC-55 data parameters {params}")
  paths = epic55_paths(root)
  marker = os.path.join(paths.root, _MARKER)
  if _read_marker(marker) == params:
    return paths
  _remove(paths.root)
  partial = paths.root + ".partial"
  _remove(partial)
  staged = Epic55Paths(root=partial, annotations=os.path.join(partial, "annotations"),
                       frames=os.path.join(partial, "frames"),
                       detections=os.path.join(partial, "handobj"))
  rows = {split: [] for split in EPIC55_SPLITS}
  uid = 0
  for i, (split, video) in enumerate(epic55_video_ids(counts, num_participants)):
    scene, actions = finetune_scene(np.random.default_rng([seed, 3, i]), height=height,
                                    width=width, num_frames=num_frames)
    rendered = render_scene(scene)
    folder = os.path.join(staged.frames, video)
    os.makedirs(folder, exist_ok=True)
    for k, image in enumerate(rendered.frames):
      Image.fromarray(image).save(os.path.join(folder, f"frame_{k + 1:010d}.jpg"),
                                  quality=JPEG_QUALITY)
    dets = detections_for(np.random.default_rng([seed, 3, i, 1]), rendered)
    teacher_signals.write_detections(os.path.join(staged.detections, f"{video}.npy"),
                                     [(None, None)] + dets)  # entry n <-> frame n (1-based)
    for action in sorted(actions, key=lambda a: a.first):
      start, stop = action.first + 1, action.last + 1
      verb, noun = EPIC55_VERBS[action.label], EPIC55_NOUNS[scene.shape]
      rows[split].append({
          "uid": str(uid), "participant_id": video.split("_")[0], "video_id": video,
          "narration": f"{verb.replace('_', ' ')} {noun}",
          "start_timestamp": _timestamp(start, fps), "stop_timestamp": _timestamp(stop, fps),
          "start_frame": str(start), "stop_frame": str(stop), "verb": verb,
          "verb_class": str(action.label), "noun": noun, "noun_class": str(scene.shape),
          "all_nouns": f"['{noun}']", "all_noun_classes": f"[{scene.shape}]"})
      uid += 1
  tables = {"EPIC_train_action_labels.csv": (rows["train"], EPIC55_LABEL_COLUMNS),
            "EPIC_val_action_labels.csv": (rows["val"], EPIC55_LABEL_COLUMNS),
            "EPIC_test_s1_timestamps.csv": (rows["s1"], EPIC55_TIMESTAMP_COLUMNS),
            "EPIC_test_s2_timestamps.csv": (rows["s2"], EPIC55_TIMESTAMP_COLUMNS),
            "EPIC_test_s1_labels.csv": (rows["s1"], EPIC55_LABEL_COLUMNS),
            "EPIC_test_s2_labels.csv": (rows["s2"], EPIC55_LABEL_COLUMNS)}
  os.makedirs(staged.annotations, exist_ok=True)
  for name, (table, columns) in tables.items():
    with open(os.path.join(staged.annotations, name), "w", encoding="utf-8", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
      writer.writeheader()
      writer.writerows(table)
  os.replace(partial, paths.root)
  tmp = marker + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(params, f, sort_keys=True)
    f.write("\n")
  os.replace(tmp, marker)
  return paths
