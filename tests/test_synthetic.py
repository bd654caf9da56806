"""The generated demo datasets (egoexo_jax/demo_data/) in the official formats: they load
through the real readers and pipelines, teachers and detections match the scenes, single frames
carry no class information, generation is deterministic and idempotent."""

import hashlib
import json
import os

import numpy as np
import pytest

from egoexo_jax.data import aux_targets, charades_ego, eval_pipeline, handobj, kinetics, teacher_scores, train_pipeline
from egoexo_jax.data.config import default_data_config
from egoexo_jax.data.video import VideoReader, read_jpeg_frames
from egoexo_jax.demo_data import demo_sets, fake_teachers, finetune_scenes, pretrain_scenes, render

SMALL = dict(
    seed=3, num_pretrain_videos=40, num_finetune_videos=12, height=48, width=64, num_frames=20, finetune_frames=24
)
GEOMETRY = dict(height=48, width=64)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return demo_sets.write_demo_data(root, **SMALL)


def kinetics_videos(paths, split):
    return kinetics.read_kinetics_list(
        os.path.join(paths.kinetics_dir, f"{split}.csv"),
        path_prefix=paths.kinetics_prefix,
        num_classes=paths.num_pretrain_classes,
    )


def index_of(key):
    """Video number from `class/synNNNNNNNN_000000_000001.mp4`."""
    return int(os.path.basename(key)[3:11])


def file_digests(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ----------------------------------------------------------------------------------------------
# Layout and indexes.


def test_layout_marker_and_class_files(demo):
    root = demo.root
    assert demo == demo_sets.demo_paths(root)
    with open(os.path.join(root, "COMPLETE"), encoding="utf-8") as f:
        marker = json.load(f)
    assert {k: marker[k] for k in SMALL} == SMALL and marker["fps"] == 30
    for name, classes in (
        ("classes_pretrain.txt", demo.class_names_pretrain),
        ("classes_finetune.txt", demo.class_names_finetune),
    ):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            assert tuple(f.read().split("\n")[:-1]) == classes
    assert demo.num_pretrain_classes == len(demo.class_names_pretrain) == 8
    assert demo.num_finetune_classes == len(demo.class_names_finetune) == 6
    assert not [n for n in os.listdir(root) if n.startswith(".partial")]
    with open(os.path.join(demo.kinetics_dir, "train.csv"), encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
    path, label = first.split(" ")  # `relative/path.mp4 label`, one space
    assert path.endswith(".mp4") and path.split("/")[0] == demo.class_names_pretrain[int(label)]
    assert os.path.isfile(os.path.join(demo.kinetics_prefix, path))
    assert os.path.commonpath([demo.kinetics_prefix, demo.kinetics_dir]) == demo.kinetics_dir


def test_kinetics_splits_cover_all_videos_once(demo):
    videos = {split: kinetics_videos(demo, split) for split in ("train", "val", "test")}
    keys = {split: [v.key for v in vs] for split, vs in videos.items()}
    for v in sum(videos.values(), []):
        assert v.key == demo_sets.kinetics_key(index_of(v.key), v.label, SMALL["num_frames"], 30)
        assert v.label == index_of(v.key) % 8 and os.path.isfile(v.path)
    counts = {s: len(k) for s, k in keys.items()}
    assert counts == {"train": 28, "val": 6, "test": 6}
    every = sorted(index_of(k) for ks in keys.values() for k in ks)
    assert every == list(range(SMALL["num_pretrain_videos"]))
    labels = [v.label for v in kinetics_videos(demo, "train")]
    assert np.bincount(labels, minlength=8).min() >= 3  # interleaved split: balanced


def test_teacher_scores_for_every_key_and_matching_the_scenes(demo):
    ego = teacher_scores.TeacherScores(demo.ego_scores, num_classes=2)
    obj = teacher_scores.TeacherScores(demo.object_scores, num_classes=1000)
    keys = [v.key for s in ("train", "val", "test") for v in kinetics_videos(demo, s)]
    assert sorted(ego.keys()) == sorted(keys) == sorted(obj.keys())
    ego_right = top1_in_peaks = 0
    for key in keys:
        _, scene = pretrain_scenes.pretrain_video(
            SMALL["seed"], index_of(key), num_frames=SMALL["num_frames"], **GEOMETRY
        )
        ego_right += int(np.argmax(ego[key]) == int(scene.ego))
        peaks = fake_teachers.object_teacher_classes(scene.shape, scene.colour_index)
        top1_in_peaks += int(np.argmax(obj[key]) in peaks)
    assert ego_right >= 0.9 * len(keys) and top1_in_peaks == len(keys)
    assert (
        0.2 < np.mean([pretrain_scenes.pretrain_video(3, i, num_frames=4, **GEOMETRY)[1].ego for i in range(40)]) < 0.8
    )


def test_kinetics_detections_follow_the_decoded_object(demo):
    dets = handobj.HandObjectDetections(demo.kinetics_detections)
    h, w = SMALL["height"], SMALL["width"]
    for video in kinetics_videos(demo, "train")[:10]:
        label, scene = pretrain_scenes.pretrain_video(
            SMALL["seed"], index_of(video.key), num_frames=SMALL["num_frames"], **GEOMETRY
        )
        rendered = render.render_scene(scene)
        with VideoReader(video.path) as reader:
            assert reader.num_frames == SMALL["num_frames"] and reader.fps == 30
            decoded = reader.read(np.arange(reader.num_frames))
        # Decoded frame k is rendered frame k (so detection index k describes it).
        err = np.abs(decoded.astype(np.int32) - rendered.frames).mean(axis=(1, 2, 3))
        assert err.max() < 10
        shifted = np.abs(decoded[1:].astype(np.int32) - rendered.frames[:-1]).mean(axis=(1, 2, 3))
        assert err[1:].mean() < shifted.mean()
        if scene.ego:  # moving camera: every frame is closest to its own rendering
            assert np.all(err[1:] < shifted)
        raw = handobj.load_detection_file(dets.path(handobj.kinetics_video_name(video.key)))
        assert raw.num_frames == SMALL["num_frames"]
        hands, objs = dets.boxes_for_frames(handobj.kinetics_video_name(video.key), np.arange(raw.num_frames))
        for rows in (hands, objs):
            assert rows.shape[1] == 6 and np.all(rows[:, 4] >= 0.7) and np.all(rows[:, 4] <= 1.0)
            assert np.all(rows[:, [0, 2]] >= 0) and np.all(rows[:, [0, 2]] <= w - 1)
            assert np.all(rows[:, [1, 3]] >= 0) and np.all(rows[:, [1, 3]] <= h - 1)
            assert np.all(rows[:, 2] >= rows[:, 0]) and np.all(rows[:, 3] >= rows[:, 1])
        assert len(objs) >= 0.85 * raw.num_frames  # a few frames dropped at most
        truth = rendered.obj_boxes[objs[:, 5].astype(int)]
        size = (truth[:, 2:] - truth[:, :2]).max(axis=1, keepdims=True) + 1
        assert np.all(np.abs(objs[:, :4] - truth) <= 0.2 * size + 2)
        if not scene.hand_present:
            assert len(hands) == 0
        else:
            hand_truth = rendered.hand_boxes[hands[:, 5].astype(int)]
            assert not np.isnan(hand_truth).any()
        # Boxes follow the class motion (x / y centre, area).
        centre = (objs[:, :2] + objs[:, 2:4]) / 2
        area = (objs[:, 2] - objs[:, 0] + 1) * (objs[:, 3] - objs[:, 1] + 1)
        name = pretrain_scenes.PRETRAIN_CLASSES[label]
        signal = {
            "move_left": -centre[:, 0],
            "move_right": centre[:, 0],
            "move_up": -centre[:, 1],
            "move_down": centre[:, 1],
            "grow": area,
            "shrink": -area,
        }.get(name)
        if signal is not None:
            assert signal[-3:].mean() > signal[:3].mean()


def test_charades_frame_lists_labels_and_detections(demo):
    train = charades_ego.read_charades_ego(
        os.path.join(demo.charades_dir, "train_1st.csv"), path_prefix=demo.charades_prefix
    )
    test = charades_ego.read_charades_ego(
        os.path.join(demo.charades_dir, "test_1st.csv"), path_prefix=demo.charades_prefix
    )
    assert len(train) == 9 and len(test) == 3
    assert not {v.key for v in train} & {v.key for v in test}
    with open(os.path.join(demo.charades_dir, "train_1st.csv"), encoding="utf-8") as f:
        assert f.readline().split() == list(charades_ego.FRAME_LIST_HEADER)
        assert f.readline().split()[3] == f"{train[0].key}/{train[0].key}-000001.jpg"
    dets = handobj.HandObjectDetections(demo.charades_detections)
    for video in train + test:
        index = int(video.key[1:5])
        assert video.key == demo_sets.charades_video_id(index) == video.video_id
        scene, actions = finetune_scenes.finetune_video(
            SMALL["seed"], index, num_frames=SMALL["finetune_frames"], **GEOMETRY
        )
        assert video.num_frames == SMALL["finetune_frames"] and 1 <= len(actions) <= 2
        want = sorted((j, a.label) for a in actions for j in range(a.first, a.last + 1))
        got = sorted(zip(video.label_frames.tolist(), video.label_classes.tolist()))
        assert got == want and 0 < len(set(video.label_frames.tolist())) < video.num_frames
        np.testing.assert_array_equal(video.video_labels()[:6], np.isin(np.arange(6), [a.label for a in actions]))
        hands, objs = dets.boxes_for_frames(
            video.video_id, np.arange(video.num_frames), expected_length=video.num_frames
        )
        assert len(hands) >= 0.7 * video.num_frames and len(objs) >= 0.85 * video.num_frames
        assert np.all(objs[:, [0, 2]] <= SMALL["width"] - 1) and np.all(objs[:, :4] >= 0)
        assert scene.ego and scene.hand_present
    frames = read_jpeg_frames(train[0].frames, np.arange(train[0].num_frames))
    rendered = render.render_scene(
        finetune_scenes.finetune_video(
            SMALL["seed"], int(train[0].key[1:5]), num_frames=SMALL["finetune_frames"], **GEOMETRY
        )[0]
    )
    assert np.abs(frames.astype(int) - rendered.frames).mean() < 6


# ----------------------------------------------------------------------------------------------
# Real pipelines.


def small_cfg(dataset, data_dir, prefix, **extra):
    cfg = default_data_config(dataset)
    cfg.path_to_data_dir = data_dir
    cfg.path_prefix = prefix
    cfg.num_frames = 8
    cfg.sampling_rate = 2
    cfg.train_jitter_scales = (32, 40)
    cfg.train_crop_size = 32
    cfg.test_crop_size = 32
    cfg.num_ensemble_views = 2
    cfg.num_spatial_crops = 1
    cfg.num_threads = 1
    for k, v in extra.items():
        cfg[k] = v
    return cfg


def test_kinetics_pipeline_with_teacher_scores(demo):
    cfg = small_cfg("kinetics", demo.kinetics_dir, demo.kinetics_prefix, num_classes=8)
    aux = aux_targets.OfflineTeacherTargets(ego_scores=demo.ego_scores, object_scores=demo.object_scores)
    with train_pipeline.make_train_iterator(
        cfg, global_batch_size=4, seed=0, process_index=0, process_count=1, aux_fn=aux
    ) as it:
        batches = [next(it) for _ in range(2)]
    batch = batches[0]
    assert batch["pathway1"].shape == (4, 8, 32, 32, 3) and batch["pathway0"].shape[1] == 2
    assert batch["ego_target"].shape == (4, 2) and batch["object_target"].shape == (4, 1000)
    for b in batches:
        assert b["label"].min() >= 0 and b["label"].max() < 8
        np.testing.assert_array_equal(b["ego_mask"], 1.0)
        np.testing.assert_array_equal(b["object_mask"], 1.0)
    it, num_videos, num_views = eval_pipeline.make_eval_iterator(
        cfg, split="test", global_batch_size=4, process_index=0, process_count=1, aux_fn=aux
    )
    batches = list(it)
    assert (num_videos, num_views) == (6, 2) and len(batches) == 3
    assert sum(b["mask"].sum() for b in batches) == 12
    assert all(b["ego_mask"].min() == 1 for b in batches)


def test_kinetics_pipeline_with_interaction_maps(demo):
    cfg = small_cfg("kinetics", demo.kinetics_dir, demo.kinetics_prefix, num_classes=8)
    aux = aux_targets.OfflineTeacherTargets(
        ego_scores=demo.ego_scores,
        object_scores=demo.object_scores,
        detections=demo.kinetics_detections,
        arch="slowfast",
        alpha=4,
        map_stride=8,
    )
    with train_pipeline.make_train_iterator(
        cfg, global_batch_size=4, seed=0, process_index=0, process_count=1, aux_fn=aux
    ) as it:
        batches = [next(it) for _ in range(3)]
    for batch in batches:
        assert batch["interaction_target"].shape == (4, 2, 4, 4, 2)
        np.testing.assert_array_equal(batch["interaction_mask"], 1.0)
        assert batch["interaction_target"][..., 1].max(axis=(1, 2, 3)).min() >= 0.7  # objects seen
    it, _, _ = eval_pipeline.make_eval_iterator(
        cfg, split="test", global_batch_size=4, process_index=0, process_count=1, aux_fn=aux
    )
    assert all(b["interaction_mask"].min() == 1 for b in it)


def test_charades_pipeline_with_interaction_targets(demo):
    cfg = small_cfg("charades_ego", demo.charades_dir, demo.charades_prefix)
    aux = aux_targets.OfflineTeacherTargets(detections=demo.charades_detections, arch="slowfast", alpha=4, map_stride=8)
    with train_pipeline.make_train_iterator(
        cfg, global_batch_size=3, seed=1, process_index=0, process_count=1, aux_fn=aux
    ) as it:
        batch = next(it)
    assert batch["label"].shape == (3, 157) and batch["label"][:, 6:].sum() == 0
    np.testing.assert_array_equal(batch["interaction_mask"], 1.0)
    assert batch["interaction_target"][..., 0].max() >= 0.7  # hands seen
    it, num_videos, _ = eval_pipeline.make_eval_iterator(
        cfg, split="test", global_batch_size=2, process_index=0, process_count=1, aux_fn=aux
    )
    labels = np.concatenate([b["label"] for b in it])
    assert num_videos == 3 and labels.shape == (6, 157)
    assert labels[:, :6].sum(axis=1).min() >= 1  # every video has at least one interaction


# ----------------------------------------------------------------------------------------------
# Content: class only from motion.


def nearest_class_mean_accuracy(x, y, num_classes):
    """Fit class means on a random half of the rows, classify the other half (standardised
    features)."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    order = np.random.default_rng(1).permutation(len(x))
    train, test = order[: len(x) // 2], order[len(x) // 2 :]
    means = np.stack([x[train][y[train] == c].mean(0) for c in range(num_classes)])
    dist = ((x[test][:, None] - means[None]) ** 2).sum(-1)
    return float(np.mean(np.argmin(dist, 1) == y[test]))


def test_single_frames_carry_no_class_information():
    rng = np.random.default_rng(0)
    single, motion, labels = [], [], []
    num_frames, lag = 24, 8
    for i in range(400):
        label, scene = pretrain_scenes.pretrain_video(11, i, num_frames=num_frames, **GEOMETRY)
        geometry = lambda k, scene=scene: np.concatenate([scene.obj_center[k], [np.log(scene.obj_size[k])]])
        t = int(rng.integers(0, num_frames))  # one frame, anywhere in the video
        colour = render.render_scene(scene).frames[t].reshape(-1, 3).mean(0)
        angle = scene.obj_angle[t]
        single.append(np.concatenate([geometry(t), [np.cos(angle), np.sin(angle)], colour]))
        t = int(rng.integers(0, num_frames - lag))  # two frames `lag` apart
        turn = np.angle(np.exp(1j * (scene.obj_angle[t + lag] - scene.obj_angle[t])))
        motion.append(np.concatenate([geometry(t + lag) - geometry(t), [turn]]))
        labels.append(label)
    single, motion, labels = np.array(single), np.array(motion), np.array(labels)
    chance = 1 / len(pretrain_scenes.PRETRAIN_CLASSES)
    assert nearest_class_mean_accuracy(single, labels, 8) < chance + 0.1
    assert nearest_class_mean_accuracy(single[:, -3:], labels, 8) < chance + 0.1  # colour alone
    assert nearest_class_mean_accuracy(motion, labels, 8) > 0.9
    # Same single-frame marginals: the per-class means of x, y, log size differ by no more than
    # sampling noise (the range of 8 means of n draws stays below 5 standard errors).
    n = len(labels) // 8
    for column in range(3):
        means = [single[labels == c, column].mean() for c in range(8)]
        assert np.ptp(means) < 5 * single[:, column].std() / np.sqrt(n)


# ----------------------------------------------------------------------------------------------
# Determinism and idempotence.


def test_deterministic_in_seed(tmp_path):
    params = dict(SMALL, num_pretrain_videos=8, num_finetune_videos=2)
    a = file_digests(demo_sets.write_demo_data(tmp_path / "a", **params).root)
    b = file_digests(demo_sets.write_demo_data(tmp_path / "b", **params).root)
    assert a == b and any(k.endswith(".mp4") for k in a) and any(k.endswith(".jpg") for k in a)
    c = file_digests(demo_sets.write_demo_data(tmp_path / "c", **dict(params, seed=4)).root)
    assert sorted(a) == sorted(c)  # same names
    changed = [k for k in a if a[k] != c[k]]
    assert any(k.endswith(".pkl") for k in changed) and any(k.endswith(".csv") for k in changed)


def test_idempotent_and_marker_checked(tmp_path):
    params = dict(SMALL, num_pretrain_videos=3, num_finetune_videos=2, num_frames=8, finetune_frames=10)
    root = tmp_path / "d"
    paths = demo_sets.write_demo_data(root, **params)
    train_csv = os.path.join(paths.kinetics_dir, "train.csv")
    marker = os.path.join(paths.root, "COMPLETE")
    stamps = (os.stat(train_csv).st_mtime_ns, os.stat(marker).st_mtime_ns)
    (root / "unrelated.txt").write_text("kept")
    assert demo_sets.write_demo_data(root, **params) == paths
    assert (os.stat(train_csv).st_mtime_ns, os.stat(marker).st_mtime_ns) == stamps
    # Other parameters: regenerated, marker updated, unrelated files kept.
    demo_sets.write_demo_data(root, **dict(params, seed=9))
    with open(marker, encoding="utf-8") as f:
        assert json.load(f)["seed"] == 9
    assert (root / "unrelated.txt").read_text() == "kept"
    # A set without its marker (interrupted run) is regenerated, leaving no temporary folders.
    os.unlink(marker)
    os.unlink(train_csv)
    (root / ".partial-left-behind").mkdir()
    demo_sets.write_demo_data(root, **params)
    assert os.path.isfile(train_csv) and os.path.isfile(marker)
    assert not [n for n in os.listdir(root) if n.startswith(".partial")]
    with pytest.raises(ValueError):
        demo_sets.write_demo_data(tmp_path / "e", **dict(params, num_pretrain_videos=2))
