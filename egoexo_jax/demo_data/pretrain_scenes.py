"""Pre-training scenes ("Kinetics", `PRETRAIN_CLASSES`): the class is a motion of the object.

Move left / right / up / down, grow / shrink, rotate clockwise / counter-clockwise. Single frames
carry no class information: the start angle is uniform, and position and (log) size are
`mid + amplitude * (tau - 0.5)` where `tau` is the normalised time for the coordinate the class
moves (reversed for left / up / shrink) and a uniform random constant for the others, so the
marginal of every single-frame quantity is the same for all classes; shape, colour, background,
hand and camera are drawn independently of the class. About `ego_fraction` of the videos are
"egocentric-looking": the camera pans and shakes (background window moves, the foreground shakes)
and a large hand reaches in from the bottom; the others are static third-person views where a small
hand is present in some videos.
"""

from __future__ import annotations

import numpy as np

from egoexo_jax.demo_data.scene import Scene, background_texture, camera_motion, object_look, skin_colour, view_pad

__all__ = ["PRETRAIN_CLASSES", "pretrain_scene", "pretrain_video"]

PRETRAIN_CLASSES = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "grow",
    "shrink",
    "rotate_clockwise",
    "rotate_counterclockwise",
)

# Pre-training object: half size (fraction of the short side, at mid-video), log of the end/start
# size ratio of grow / shrink, and the travel of the move classes (fraction of the frame length).
PRETRAIN_OBJECT_SIZE = (0.15, 0.18)
PRETRAIN_LOG_GROWTH = (0.5, 0.7)
PRETRAIN_TRAVEL = (0.30, 0.38)


def _tau(rng: np.random.Generator, t: np.ndarray, direction: int) -> np.ndarray:
    """`[T]` normalised time (direction +1), reversed time (-1), or a uniform constant (0)."""
    if direction > 0:
        return t
    if direction < 0:
        return 1.0 - t
    return np.full(len(t), rng.uniform())


# Pre-training class motions: (coordinate, direction); coordinate 0 = x, 1 = y, 2 = log size,
# 3 = angle.
_PRETRAIN_MOTION = {0: (0, -1), 1: (0, 1), 2: (1, -1), 3: (1, 1), 4: (2, 1), 5: (2, -1), 6: (3, 1), 7: (3, -1)}


def pretrain_scene(
    rng: np.random.Generator, label: int, *, height: int, width: int, num_frames: int, ego: bool
) -> Scene:
    """A pre-training scene whose object motion is class `label` (see `PRETRAIN_CLASSES`).

    Each coordinate c (x, y, log size) is `mid_c + amp_c * (tau_c - 0.5)` with `tau_c` the normalised
    time (reversed for negative directions) for the coordinate the class moves and a uniform random
    constant for the others, so single-frame marginals do not depend on the class.
    """
    moved, direction = _PRETRAIN_MOTION[label]
    short = min(height, width)
    t = np.linspace(0.0, 1.0, num_frames)
    taus = [_tau(rng, t, direction) if c == moved else _tau(rng, t, 0) for c in range(3)]
    shape, colour_index, colour, aspect = object_look(rng)
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
    pad = view_pad(height, width)
    background = background_texture(rng, height, width, pad)
    camera, shake = camera_motion(rng, num_frames, pad, ego)
    hand_present = bool(ego or rng.uniform() < 0.35)
    skin = skin_colour(rng)
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
        height=height,
        width=width,
        background=background,
        camera=camera,
        shake=shake,
        shape=shape,
        colour_index=colour_index,
        colour=colour,
        obj_center=np.stack(centre, -1).astype(np.float32),
        obj_size=size.astype(np.float32),
        obj_aspect=aspect,
        obj_angle=angle.astype(np.float32),
        hand_present=hand_present,
        hand_center=hand_center.astype(np.float32),
        hand_radius=float(radius),
        skin=skin,
        shoulder=np.repeat(far[None].astype(np.float32), num_frames, 0),
        ego=bool(ego),
    )


def pretrain_video(
    seed: int, index: int, *, height: int, width: int, num_frames: int, ego_fraction: float = 0.5
) -> tuple[int, Scene]:
    """(label, scene) of pre-training video `index`; label = index % len(PRETRAIN_CLASSES)."""
    label = index % len(PRETRAIN_CLASSES)
    rng = np.random.default_rng([seed, 0, index])
    ego = bool(rng.uniform() < ego_fraction)
    return label, pretrain_scene(rng, label, height=height, width=width, num_frames=num_frames, ego=ego)
