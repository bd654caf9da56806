"""Fine-tuning scenes (egocentric, `FINETUNE_CLASSES`, multi-label): hand-object interactions.

Every video has a moving camera and a hand that rests under the object when idle, and 1 or 2
distinct hand-object interactions over parts of the video: push the object left / right (hand at
its right / left side), lift it (moves up and grows: closer to the camera), put it down (moves down
and shrinks), twist it (rotates), wave (the hand moves away and oscillates; the object stays). The
frames of an interaction carry its label.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from egoexo_jax.demo_data.scene import (
    Action,
    Scene,
    background_texture,
    camera_motion,
    object_look,
    skin_colour,
    smoothstep,
    view_pad,
)

__all__ = ["FINETUNE_CLASSES", "finetune_scene", "finetune_video", "frame_labels"]

FINETUNE_CLASSES = ("push_left", "push_right", "lift", "put_down", "twist", "wave")


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
    return (
        Action(int(labels[0]), first, first + lengths[0] - 1),
        Action(int(labels[1]), second, second + lengths[1] - 1),
    )


def _place(path: np.ndarray, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """Shifts (and if needed shrinks) a relative path so it stays within [lo, hi]."""
    if hi < lo:  # no room at all: centre it
        lo = hi = (lo + hi) / 2
    low, high = path.min(), path.max()
    if high - low > hi - lo:
        path = (path - low) * (hi - lo) / (high - low)
        low, high = path.min(), path.max()
    return path + rng.uniform(lo - low, hi - high)


def finetune_scene(
    rng: np.random.Generator, *, height: int, width: int, num_frames: int
) -> tuple[Scene, tuple[Action, ...]]:
    """An egocentric scene (moving camera, hand) with 1-2 interactions from `FINETUNE_CLASSES`."""
    short = min(height, width)
    actions = _sample_actions(rng, num_frames)
    shape, colour_index, colour, aspect = object_look(rng)
    t = np.arange(num_frames, dtype=np.float64)
    dx, dy, dlog, dangle = (np.zeros(num_frames) for _ in range(4))
    for action in actions:
        name = FINETUNE_CLASSES[action.label]
        progress = smoothstep((t - action.first) / max(action.last - action.first, 1))
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
    pad = view_pad(height, width)
    background = background_texture(rng, height, width, pad)
    camera, shake = camera_motion(rng, num_frames, pad, True)
    scene = Scene(
        height=height,
        width=width,
        background=background,
        camera=camera,
        shake=shake,
        shape=shape,
        colour_index=colour_index,
        colour=colour,
        obj_center=np.stack([cx, cy], -1).astype(np.float32),
        obj_size=size.astype(np.float32),
        obj_aspect=aspect,
        obj_angle=angle.astype(np.float32),
        hand_present=True,
        hand_center=hand_center.astype(np.float32),
        hand_radius=float(radius),
        skin=skin_colour(rng),
        shoulder=np.repeat(shoulder[None].astype(np.float32), num_frames, 0),
        ego=True,
    )
    return scene, actions


def _hand_offsets(
    rng: np.random.Generator,
    actions: Sequence[Action],
    cx: np.ndarray,
    size: np.ndarray,
    radius: float,
    width: int,
    num_frames: int,
) -> np.ndarray:
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


def finetune_video(
    seed: int, index: int, *, height: int, width: int, num_frames: int
) -> tuple[Scene, tuple[Action, ...]]:
    """(scene, interactions) of egocentric video `index`."""
    return finetune_scene(np.random.default_rng([seed, 1, index]), height=height, width=width, num_frames=num_frames)


def frame_labels(actions: Sequence[Action], num_frames: int) -> list[list[int]]:
    """Per frame, the sorted labels of the interactions covering it (the frame-list labels)."""
    labels = [[] for _ in range(num_frames)]
    for action in sorted(actions, key=lambda a: a.label):
        for j in range(action.first, action.last + 1):
            labels[j].append(action.label)
    return labels
