"""The demo's pre-training and fine-tuning sets, in the Kinetics and Charades-Ego layouts.

`write_demo_data(root)` writes a small "Kinetics" pre-training set (`pretrain_scenes`: H.264 mp4
videos, split lists, the three offline teacher signals of `fake_teachers`) and a small egocentric
fine-tuning set (`finetune_scenes`) in the Charades-Ego frame-list layout (JPEG folders, per-frame
multi-labels, hand-object detections).

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
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time

import numpy as np

from egoexo_jax.data import handobj, teacher_scores
from egoexo_jax.demo_data import media, output
from egoexo_jax.demo_data.fake_teachers import detections_for, ego_teacher_logits, object_teacher_logits, teacher_rng
from egoexo_jax.demo_data.finetune_scenes import FINETUNE_CLASSES, finetune_video, frame_labels
from egoexo_jax.demo_data.pretrain_scenes import PRETRAIN_CLASSES, pretrain_video
from egoexo_jax.demo_data.render import render_scene

__all__ = ["DemoPaths", "demo_paths", "write_demo_data", "kinetics_key", "charades_video_id"]

MP4_CRF = 20
MP4_PRESET = "ultrafast"
JPEG_QUALITY = 90
PRETRAIN_SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
FINETUNE_TRAIN_FRACTION = 0.75

_OWNED = ("kinetics", "aux_predictions", "charades-ego", "classes_pretrain.txt", "classes_finetune.txt")


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
        root=root,
        kinetics_dir=kinetics,
        kinetics_prefix=os.path.join(kinetics, "videos"),
        ego_scores=os.path.join(aux, "k400_ego_predicts.pkl"),
        object_scores=os.path.join(aux, "k400_IN_predicts.pkl"),
        kinetics_detections=os.path.join(aux, "k400_handobj_predicts"),
        charades_dir=os.path.join(charades, "split"),
        charades_prefix=os.path.join(charades, "rgb"),
        charades_detections=os.path.join(charades, "handobj_predicts"),
    )


def kinetics_key(index: int, label: int, num_frames: int, fps: int) -> str:
    """Csv path of pre-training video `index`: `class_name/synNNNNNNNN_000000_{seconds:06d}.mp4`."""
    seconds = int(math.ceil(num_frames / fps))
    return f"{PRETRAIN_CLASSES[label]}/syn{index:08d}_000000_{seconds:06d}.mp4"


def charades_video_id(index: int) -> str:
    """Id of fine-tuning video `index` (5 characters + `EGO`, like `005BUEGO`)."""
    return f"S{index:04d}EGO"


def _pretrain_splits(seed: int, num_videos: int) -> list[str]:
    """Split name of each video, 70 / 15 / 15 % (val and test at least one video each).

    The videos of each class are shuffled (seeded) and interleaved class by class; the first 70 %
    of that order is train, so every split is close to class-balanced.
    """
    rng = np.random.default_rng([seed, 2])
    num_classes = len(PRETRAIN_CLASSES)
    per_class = [np.arange(c, num_videos, num_classes) for c in range(num_classes)]
    per_class = [m[rng.permutation(len(m))] for m in per_class]
    order = [int(m[r]) for r in range(max(len(m) for m in per_class)) for m in per_class if r < len(m)]
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
        label, scene = pretrain_video(
            seed, i, height=height, width=width, num_frames=num_frames, ego_fraction=params["ego_fraction"]
        )
        rendered = render_scene(scene)
        rng = teacher_rng(seed, 0, i)
        key = kinetics_key(i, label, num_frames, fps)
        path = os.path.join(paths.kinetics_prefix, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        media.write_mp4(path, rendered.frames, fps=fps, crf=MP4_CRF, preset=MP4_PRESET, threads=1, fps_time_base=True)
        handobj.write_detections(
            os.path.join(paths.kinetics_detections, handobj.kinetics_video_name(key) + ".npy"),
            detections_for(rng, rendered),
        )
        ego_scores[key] = ego_teacher_logits(rng, scene)
        object_scores[key] = object_teacher_logits(rng, scene)
        lines[splits[i]].append(f"{key} {label}")
        output.progress(progress, "pre-training videos", i + 1, n, start)
    for name, _ in PRETRAIN_SPLITS:
        output.write_lines(os.path.join(paths.kinetics_dir, f"{name}.csv"), lines[name])
    teacher_scores.write_score_pickle(paths.ego_scores, ego_scores)
    teacher_scores.write_score_pickle(paths.object_scores, object_scores)


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
        rel = [f"{vid}/{vid}-{j + 1:06d}.jpg" for j in range(len(rendered.frames))]  # 1-based
        media.write_jpegs([os.path.join(paths.charades_prefix, r) for r in rel], rendered.frames, quality=JPEG_QUALITY)
        handobj.write_detections(os.path.join(paths.charades_detections, f"{vid}.npy"), detections_for(rng, rendered))
        table = rows["train_1st.csv" if i < n_train else "test_1st.csv"]
        for j, (frame_path, classes) in enumerate(zip(rel, frame_labels(actions, num_frames))):
            table.append(f'{vid} {i} {j} {frame_path} "{",".join(str(c) for c in classes)}"')
        output.progress(progress, "egocentric videos", i + 1, n, start)
    for name, table in rows.items():
        output.write_lines(os.path.join(paths.charades_dir, name), table)


def write_demo_data(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    num_pretrain_videos: int = 320,
    num_finetune_videos: int = 200,
    height: int = 96,
    width: int = 128,
    num_frames: int = 48,
    fps: int = 30,
    finetune_frames: int = 64,
    ego_fraction: float = 0.5,
    progress: bool = False,
) -> DemoPaths:
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
    params = {
        "format": output.FORMAT_VERSION,
        "seed": int(seed),
        "num_pretrain_videos": int(num_pretrain_videos),
        "num_finetune_videos": int(num_finetune_videos),
        "height": int(height),
        "width": int(width),
        "num_frames": int(num_frames),
        "fps": int(fps),
        "finetune_frames": int(finetune_frames),
        "ego_fraction": float(ego_fraction),
    }
    if (
        num_pretrain_videos < 3
        or num_finetune_videos < 2
        or min(height, width) < 32
        or (num_frames < 2 or finetune_frames < 8 or fps < 1 or not 0 <= ego_fraction <= 1)
    ):
        raise ValueError(f"invalid demo data parameters {params}")
    paths = demo_paths(root)
    marker = os.path.join(paths.root, output.MARKER)
    if output.read_marker(marker) == params:
        return paths
    os.makedirs(paths.root, exist_ok=True)
    output.remove(marker)
    for name in os.listdir(paths.root):  # left behind by an interrupted run
        if name.startswith(".partial-"):
            output.remove(os.path.join(paths.root, name))
    partial = tempfile.mkdtemp(prefix=".partial-", dir=paths.root)
    try:
        staged = demo_paths(partial)
        output.write_lines(os.path.join(partial, "classes_pretrain.txt"), PRETRAIN_CLASSES)
        output.write_lines(os.path.join(partial, "classes_finetune.txt"), FINETUNE_CLASSES)
        _write_pretrain(staged, params, progress)
        _write_finetune(staged, params, progress)
        for name in _OWNED:
            output.remove(os.path.join(paths.root, name))
            os.replace(os.path.join(partial, name), os.path.join(paths.root, name))
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    output.write_marker(marker, params)
    return paths
