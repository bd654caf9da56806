"""A small egocentric set in the EPIC-Kitchens-55 layout (action segments with verb and noun labels).

`write_epic55_data(root)` writes flat `{video_id}/frame_*.jpg` folders, verb / noun action
segments in the annotation-table columns (train / val as the Ego-Exo release's split tables,
unlabelled S1 / S2 test lists) and hand-object detections by absolute frame number; the real
reader (`data/epic_kitchens.py`) and the pipelines read it unchanged.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os

import numpy as np

from egoexo_jax.data import handobj
from egoexo_jax.demo_data import media, output
from egoexo_jax.demo_data.demo_sets import JPEG_QUALITY
from egoexo_jax.demo_data.fake_teachers import detections_for
from egoexo_jax.demo_data.finetune_scenes import FINETUNE_CLASSES, finetune_scene
from egoexo_jax.demo_data.render import render_scene
from egoexo_jax.demo_data.scene import SHAPES

__all__ = [
    "EPIC55_VERBS",
    "EPIC55_NOUNS",
    "EPIC55_LABEL_COLUMNS",
    "Epic55Paths",
    "epic55_paths",
    "epic55_video_ids",
    "write_epic55_data",
]

EPIC55_VERBS = FINETUNE_CLASSES  # verb class = the interaction
EPIC55_NOUNS = SHAPES  # noun class = the object's shape
EPIC55_SPLITS = ("train", "val", "s1", "s2")
EPIC55_LABEL_COLUMNS = (
    "uid",
    "participant_id",
    "video_id",
    "narration",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
)
EPIC55_TIMESTAMP_COLUMNS = (
    "uid",
    "participant_id",
    "video_id",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
)


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
    return Epic55Paths(
        root=base,
        annotations=os.path.join(base, "annotations"),
        frames=os.path.join(base, "frames"),
        detections=os.path.join(base, "handobj"),
    )


def _timestamp(frame: int, fps: int) -> str:
    """`HH:MM:SS.ff` of 1-based frame `frame` (EPIC-55 timestamp format)."""
    seconds = (frame - 1) / fps
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:{seconds % 60:05.2f}"


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


def write_epic55_data(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    num_train_videos: int = 10,
    num_val_videos: int = 3,
    num_s1_videos: int = 2,
    num_s2_videos: int = 2,
    num_participants: int = 3,
    num_frames: int = 32,
    height: int = 48,
    width: int = 64,
    fps: int = 30,
) -> Epic55Paths:
    """Writes (or finds) a small EPIC-Kitchens-55-format set under `root/epic55`.

    Each video is a `finetune_scene` (camera motion, hand, one object) whose 1-2 interactions are
    its action segments: verb = the interaction (`EPIC55_VERBS`), noun = the object's shape
    (`EPIC55_NOUNS`), `start_frame` / `stop_frame` = the interaction's frames (1-based). Segments
    are often shorter than a 32x2 clip span, so clip indices get clamped as in real EPIC data.
    Videos `i` draw from `np.random.default_rng([seed, 3, i])`, teacher noise from `[seed, 3, i, 1]`.

    Idempotent like `write_demo_data` (marker `epic55/COMPLETE` written last).
    """
    counts = {
        "train": int(num_train_videos),
        "val": int(num_val_videos),
        "s1": int(num_s1_videos),
        "s2": int(num_s2_videos),
    }
    params = {
        "format": output.FORMAT_VERSION,
        "seed": int(seed),
        "videos": counts,
        "num_participants": int(num_participants),
        "num_frames": int(num_frames),
        "height": int(height),
        "width": int(width),
        "fps": int(fps),
    }
    if (
        counts["train"] < 1
        or counts["val"] < 1
        or min(height, width) < 32
        or num_frames < 8
        or (num_participants < 1 or min(counts.values()) < 0)
    ):
        raise ValueError(f"invalid EPIC-55 data parameters {params}")
    paths = epic55_paths(root)
    marker = os.path.join(paths.root, output.MARKER)
    if output.read_marker(marker) == params:
        return paths
    output.remove(paths.root)
    partial = paths.root + ".partial"
    output.remove(partial)
    staged = Epic55Paths(
        root=partial,
        annotations=os.path.join(partial, "annotations"),
        frames=os.path.join(partial, "frames"),
        detections=os.path.join(partial, "handobj"),
    )
    rows = {split: [] for split in EPIC55_SPLITS}
    uid = 0
    for i, (split, video) in enumerate(epic55_video_ids(counts, num_participants)):
        scene, actions = finetune_scene(
            np.random.default_rng([seed, 3, i]), height=height, width=width, num_frames=num_frames
        )
        rendered = render_scene(scene)
        folder = os.path.join(staged.frames, video)
        media.write_jpegs(
            [os.path.join(folder, f"frame_{k + 1:010d}.jpg") for k in range(len(rendered.frames))],
            rendered.frames,
            quality=JPEG_QUALITY,
        )
        dets = detections_for(np.random.default_rng([seed, 3, i, 1]), rendered)
        handobj.write_detections(
            os.path.join(staged.detections, f"{video}.npy"), [(None, None)] + dets
        )  # entry n <-> frame n (1-based)
        for action in sorted(actions, key=lambda a: a.first):
            start, stop = action.first + 1, action.last + 1
            verb, noun = EPIC55_VERBS[action.label], EPIC55_NOUNS[scene.shape]
            rows[split].append(
                {
                    "uid": str(uid),
                    "participant_id": video.split("_")[0],
                    "video_id": video,
                    "narration": f"{verb.replace('_', ' ')} {noun}",
                    "start_timestamp": _timestamp(start, fps),
                    "stop_timestamp": _timestamp(stop, fps),
                    "start_frame": str(start),
                    "stop_frame": str(stop),
                    "verb": verb,
                    "verb_class": str(action.label),
                    "noun": noun,
                    "noun_class": str(scene.shape),
                    "all_nouns": f"['{noun}']",
                    "all_noun_classes": f"[{scene.shape}]",
                }
            )
            uid += 1
    tables = {
        "EPIC_train_action_labels.csv": (rows["train"], EPIC55_LABEL_COLUMNS),
        "EPIC_val_action_labels.csv": (rows["val"], EPIC55_LABEL_COLUMNS),
        "EPIC_test_s1_timestamps.csv": (rows["s1"], EPIC55_TIMESTAMP_COLUMNS),
        "EPIC_test_s2_timestamps.csv": (rows["s2"], EPIC55_TIMESTAMP_COLUMNS),
        "EPIC_test_s1_labels.csv": (rows["s1"], EPIC55_LABEL_COLUMNS),
        "EPIC_test_s2_labels.csv": (rows["s2"], EPIC55_LABEL_COLUMNS),
    }
    os.makedirs(staged.annotations, exist_ok=True)
    for name, (table, columns) in tables.items():
        with open(os.path.join(staged.annotations, name), "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(table)
    os.replace(partial, paths.root)
    output.write_marker(marker, params)
    return paths
