"""Fake teacher signals: what the three offline teacher files hold for a generated video.

As the official files (docs/formats.md#auxiliary-prediction-files), derived from the video's scene:

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
"""

from __future__ import annotations

import numpy as np

from egoexo_jax.demo_data.render import RenderedScene
from egoexo_jax.demo_data.scene import COLOURS, Scene

__all__ = ["object_teacher_classes", "ego_teacher_logits", "object_teacher_logits", "detections_for", "teacher_rng"]

OBJECT_CLASSES = 1000  # ImageNet
DETECTION_COLUMNS = 10  # 100DOH: box (4), score, contact state, offset vector (3), left/right
CONTACT_PORTABLE = 3  # 100DOH contact state "portable object"
DROP_PROB = 0.03  # frames whose detections are all missing


def object_teacher_classes(shape: int, colour_index: int) -> tuple[int, int, int]:
    """The three ImageNet indices the Object-Score teacher favours for a (shape, colour) pair
    (fixed for all seeds; distinct for distinct pairs)."""
    table = np.random.default_rng(20210414).permutation(OBJECT_CLASSES)
    k = 3 * (shape * len(COLOURS) + colour_index)
    return tuple(int(i) for i in table[k : k + 3])


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
    return np.array(
        [min(noisy[0], noisy[2]), min(noisy[1], noisy[3]), max(noisy[0], noisy[2]), max(noisy[1], noisy[3])]
    )


def detections_for(
    rng: np.random.Generator, rendered: RenderedScene
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
                touching = not (
                    hand_box[0] > obj_box[2] + 2
                    or hand_box[2] < obj_box[0] - 2
                    or hand_box[1] > obj_box[3] + 2
                    or hand_box[3] < obj_box[1] - 2
                )
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


def teacher_rng(seed: int, dataset: int, index: int) -> np.random.Generator:
    """Stream of the teacher noise of a video (dataset 0 = pre-training, 1 = egocentric)."""
    return np.random.default_rng([seed, dataset, index, 1])
