"""Offline teacher targets as an aux_fn (egoexo_jax/data/aux_targets.py) on tiny generated datasets:
batch fields through the grain pipelines, hand-worked interaction maps, per-dataset frame indexing,
config validation, pickling."""

import logging
import math
import pickle
import re

import ml_collections
import numpy as np
import pytest

from egoexo_jax import models
from egoexo_jax.data import aux_targets as at
from egoexo_jax.data import eval_pipeline, handobj, samples, sources, teacher_scores, train_pipeline
from egoexo_jax.data.config import default_data_config
from egoexo_jax.data.errors import TeacherFileError
from egoexo_jax.offline_teachers import from_config

import fake_media as fm

LENGTHS = [40, 50, 60]  # Kinetics videos v0, v1, v2 (48 x 64, 30 fps)
LEFT_BOX = [0.0, 0.0, 12.0, 47.0]  # object box on the left edge of the 64 x 48 frame


def hand_score(i: int, f: int) -> float:
    """Score of the full-frame hand box of video i, list position f (identifies the frame)."""
    return (i + 1) / 10 + f / 1000


def frame_dets(i: int, f: int):
    """(objects, hands) of list position f: a left-edge object box and a full-frame hand box."""
    objects = np.array([LEFT_BOX + [0.9, 0.0]], np.float32)
    hands = np.array([[0.0, 0.0, 63.0, 47.0, hand_score(i, f), 0.0]], np.float32)
    return objects, hands


def write_video_dets(path, i: int, length: int, *, placeholder_first: bool = False):
    per_frame = [frame_dets(i, f) for f in range(length)]
    if placeholder_first:
        per_frame[0] = (None, None)
    handobj.write_detections(path, per_frame)


def ref_cells(box, transform, grid):
    """Hand computation of the official rule: (col0, row0, col1, row1) cells of one box."""
    h, w = transform["orig_h"], transform["orig_w"]
    rh, rw = transform["resized_h"], transform["resized_w"]
    factor = rh / h if w < h else rw / w  # one factor, new_long / long, for both axes
    crop = transform["crop_size"]
    x1, y1, x2, y2 = (v * factor for v in box)
    x1, x2 = x1 - transform["crop_x"], x2 - transform["crop_x"]
    y1, y2 = y1 - transform["crop_y"], y2 - transform["crop_y"]
    if transform["flip"]:
        x1, x2 = crop - x2 - 1, crop - x1 - 1
    cell = lambda v: min(max(math.floor(min(max(v, 0), crop - 1) / crop * grid), 0), grid - 1)
    return cell(x1), cell(y1), cell(x2), cell(y2)


def expected_target(i, frame_indices, transform, grid, keep):
    """[len(keep), grid, grid, 2] from the hand-worked cells of LEFT_BOX and the full-frame hand."""
    out = np.zeros((len(keep), grid, grid, 2), np.float32)
    c0, r0, c1, r1 = ref_cells(LEFT_BOX, transform, grid)
    for t, k in enumerate(keep):
        out[t, :, :, 0] = np.float32(hand_score(i, int(frame_indices[k])))
        out[t, r0 : r1 + 1, c0 : c1 + 1, 1] = np.float32(0.9)
    return out


class Recorder:
    """Picklable aux_fn wrapper that also returns what the clip's target depends on."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, meta):
        out = self.inner(meta)
        t = meta["transform"]
        out["vid"] = np.int32(int(re.search(r"\d+", meta["key"]).group()))
        out["frame_indices"] = meta["frame_indices"].astype(np.int32)
        out["xform"] = np.array(
            [
                t["orig_h"],
                t["orig_w"],
                t["resized_h"],
                t["resized_w"],
                t["crop_y"],
                t["crop_x"],
                t["crop_size"],
                int(t["flip"]),
            ],
            np.int32,
        )
        return out


def xform_dict(row):
    names = ["orig_h", "orig_w", "resized_h", "resized_w", "crop_y", "crop_x", "crop_size", "flip"]
    return {n: int(v) for n, v in zip(names, row)}


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    """Videos v0..v2, ego scores for v0, v1 only (v2 missing), object scores for all, detections
    for v0, v1 (v2 has no file)."""
    root = tmp_path_factory.mktemp("k400")
    names = fm.write_kinetics_dataset(root, LENGTHS)
    teacher_scores.write_score_pickle(root / "ego.pkl", {names[i]: [float(i), -float(i)] for i in (0, 1)})
    teacher_scores.write_score_pickle(
        root / "obj.pkl", {n: np.arange(1000, dtype=np.float32) + i for i, n in enumerate(names)}
    )
    (root / "dets").mkdir()
    for i in (0, 1):
        write_video_dets(root / "dets" / f"v{i}.npy", i, LENGTHS[i])
    return root


def kcfg(root, **kw):
    cfg = default_data_config("kinetics")
    cfg.path_to_data_dir = cfg.path_prefix = str(root)
    cfg.num_frames, cfg.sampling_rate = 8, 2
    cfg.train_jitter_scales = (64, 64)  # 48 x 64 -> 64 x 85
    cfg.train_crop_size = 64  # grid 64 // 32 = 2
    cfg.test_crop_size = 256  # grid 8
    cfg.num_ensemble_views, cfg.num_spatial_crops = 1, 3
    cfg.update(kw)
    return cfg


def kaux(root, **kw):
    """The teacher targets of the `kinetics` fixture, masking its missing entries."""
    return at.OfflineTeacherTargets(
        ego_scores=str(root / "ego.pkl"),
        object_scores=str(root / "obj.pkl"),
        detections=str(root / "dets"),
        allow_missing=True,
        **kw,
    )


# ---------------------------------------------------------------------------------- pipeline


def test_train_batch_fields_masks_and_maps(kinetics, caplog):
    cfg = kcfg(kinetics)
    it = train_pipeline.make_train_iterator(
        cfg, global_batch_size=3, seed=0, process_index=0, process_count=1, aux_fn=Recorder(kaux(kinetics))
    )
    with caplog.at_level(logging.WARNING, logger=at.__name__):
        batches = [next(it) for _ in range(3)]  # 9 samples: every video three times
    it.close()
    b = batches[0]
    assert b["ego_target"].shape == (3, 2) and b["ego_mask"].shape == (3,)
    assert b["object_target"].shape == (3, 1000) and b["object_mask"].shape == (3,)
    assert b["interaction_target"].shape == (3, 2, 2, 2, 2)  # [B, T_slow = 8 // 4, g, g, 2]
    for k in ("ego_target", "ego_mask", "object_target", "object_mask", "interaction_target", "interaction_mask"):
        assert b[k].dtype == np.float32, k
    flips = set()
    for b in batches:
        for j, i in enumerate(b["vid"]):
            np.testing.assert_array_equal(b["label"][j], i)
            assert b["ego_mask"][j] == (1.0 if i in (0, 1) else 0.0)
            np.testing.assert_array_equal(b["ego_target"][j], [i, -i] if i in (0, 1) else [0, 0])
            assert b["object_mask"][j] == 1.0
            np.testing.assert_array_equal(b["object_target"][j], np.arange(1000) + i)
            transform = xform_dict(b["xform"][j])
            flips.add(transform["flip"])
            if i == 2:  # no detection file
                assert b["interaction_mask"][j] == 0 and not b["interaction_target"][j].any()
                continue
            assert b["interaction_mask"][j] == 1
            want = expected_target(i, b["frame_indices"][j], transform, 2, keep=[0, 7])
            np.testing.assert_array_equal(b["interaction_target"][j], want)
    assert flips == {0, 1}  # both flip branches were checked
    # The missing detection file is logged once per video, naming the path.
    missing = [r for r in caplog.records if "v2.npy" in r.getMessage()]
    assert len(missing) == 1 and str(kinetics / "dets" / "v2.npy") in missing[0].getMessage()
    assert any("ego.pkl" in r.getMessage() and "'v2.mp4'" in r.getMessage() for r in caplog.records)


def test_eval_test_views_use_the_256_crop_grid(kinetics):
    cfg = kcfg(kinetics)
    it, n, v = eval_pipeline.make_eval_iterator(
        cfg, split="test", global_batch_size=3, process_index=0, process_count=1, aux_fn=Recorder(kaux(kinetics))
    )
    assert (n, v) == (3, 3)
    batches = list(it)
    assert len(batches) == 3
    for b in batches:
        assert b["interaction_target"].shape == (3, 2, 8, 8, 2)  # 256 // 32 = 8
        for j, i in enumerate(b["video_index"]):
            transform = xform_dict(b["xform"][j])
            assert transform["crop_size"] == 256 and transform["resized_w"] == 341
            if i == 2:
                assert b["interaction_mask"][j] == 0
                continue
            want = expected_target(i, b["frame_indices"][j], transform, 8, keep=[0, 7])
            np.testing.assert_array_equal(b["interaction_target"][j], want)
    # Left / centre / right crops put the left-edge box in different columns (0, 0, none -> 0).
    first = batches[0]["interaction_target"][:, 0, :, :, 1]  # video 0, views 0..2
    assert first[0, 0, 0] == np.float32(0.9) and first[0, 0, 2] == 0  # left crop: cols 0..1
    assert first[2, 0, 0] == np.float32(0.9) and first[2, 0, 1] == 0  # right crop: clipped border


# ------------------------------------------------------------------------------ hand-worked maps


def meta_for(dataset, key, video_id, frame_indices, transform, num_video_frames=100):
    return {
        "dataset": dataset,
        "split": "train",
        "key": key,
        "video_id": video_id,
        "frame_indices": np.asarray(frame_indices, np.int64),
        "num_video_frames": num_video_frames,
        "transform": transform,
    }


def known_transform(crop_x, flip):
    # 48 x 64 frame, short side 64 -> 64 x 85, boxes * 85 / 64; crop 64 at (crop_x, 0).
    return {
        "orig_h": 48,
        "orig_w": 64,
        "resized_h": 64,
        "resized_w": 85,
        "crop_y": 0,
        "crop_x": crop_x,
        "crop_size": 64,
        "flip": flip,
        "scale_y": 64 / 48,
        "scale_x": 85 / 64,
    }


def test_hand_worked_cells_with_a_known_transform(tmp_path):
    # Object box [20, 10, 40, 30] and LEFT_BOX [0, 0, 12, 47]; grid 64 // 16 = 4, crop at x = 10.
    #   box A: x 20*85/64 - 10 = 16.56 .. 40*85/64 - 10 = 43.13 -> /64*4: 1.04 .. 2.70 -> cols 1..2
    #          y 10*85/64 = 13.28 .. 30*85/64 = 39.84          -> 0.83 .. 2.49 -> rows 0..2
    #   LEFT:  x -10 .. 5.94 -> clipped 0 .. 5.94 -> cols 0..0; y 0 .. 62.42 -> rows 0..3
    #   flipped: LEFT x' = 64 - 5.94 - 1 = 57.06 .. 64 + 10 - 1 = 73 -> clipped 63: cols 3..3
    #            box A x' = 19.88 .. 46.44 -> 1.24 .. 2.90 -> cols 1..2
    obj = np.array([[20.0, 10.0, 40.0, 30.0, 0.6, 0], LEFT_BOX + [0.8, 0]], np.float32)
    hand = np.array([[20.0, 10.0, 40.0, 30.0, 0.5, 0]], np.float32)
    handobj.write_detections(tmp_path / "vid.npy", [(None, None), (obj, hand), (obj[:1], None)])
    aux = at.OfflineTeacherTargets(detections=str(tmp_path), arch="slow", map_stride=16)
    hard = at.OfflineTeacherTargets(detections=str(tmp_path), arch="slow", map_stride=16, map_mode="hard")
    for flip, left_col in ((False, 0), (True, 3)):
        meta = meta_for("kinetics", "cls/vid.mp4", "vid", [0, 1, 2], known_transform(10, flip))
        out = aux(meta)
        target = out["interaction_target"]
        assert target.shape == (3, 4, 4, 2) and out["interaction_mask"] == 1
        want = np.zeros((3, 4, 4, 2), np.float32)
        want[1, 0:3, 1:3, 0] = 0.5
        want[1, 0:4, left_col, 1] = 0.8
        want[1, 0:3, 1:3, 1] = 0.6  # box A (cols 1..2) does not overlap LEFT (col 0 or 3)
        want[2, 0:3, 1:3, 1] = 0.6
        np.testing.assert_array_equal(target, want)
        np.testing.assert_array_equal(hard(meta)["interaction_target"], (want > 0).astype(np.float32))
    # The detection file name comes from the csv key (basename without extension), not video_id.
    out = aux(meta_for("kinetics", "cls/vid.mp4", "other", [1, 1, 1], known_transform(10, False)))
    assert out["interaction_mask"] == 1


def test_slowfast_keeps_floor_linspace_frames_and_slow_keeps_all(kinetics):
    cfg = kcfg(kinetics)
    cfg.flip_prob = 0.0
    source = sources.build_source(cfg, "train")
    item = source.item(1)
    for arch, alpha, keep in (("slowfast", 4, [0, 7]), ("slowfast", 2, [0, 2, 4, 7]), ("slow", 8, list(range(8)))):
        cfg.arch, cfg.alpha = arch, alpha
        opts = samples.SampleOptions.from_config(cfg)
        aux = kaux(kinetics, arch=arch, alpha=alpha)
        sample = samples.make_sample(
            item,
            samples.View("train"),
            np.random.default_rng(7),
            opts,
            split="train",
            video_level_labels=False,
            aux_fn=Recorder(aux),
        )
        transform = xform_dict(sample["xform"])
        assert transform["flip"] == 0
        want = expected_target(1, sample["frame_indices"], transform, 2, keep=keep)
        np.testing.assert_array_equal(sample["interaction_target"], want)
        # The map frames are the slow pathway's frames (same frame-index -> score mapping).
        assert sample["interaction_target"].shape[0] == sample["pathway0"].shape[0]
    # MViT: T_map given explicitly (T // temporal patch stride 2), same selection rule.
    mvit = kaux(kinetics, arch="mvit", map_frames=4)
    out = mvit(meta_for("kinetics", "v1.mp4", "v1", np.arange(10, 18), known_transform(0, False)))
    want = expected_target(1, np.arange(10, 18), known_transform(0, False), 2, keep=[0, 2, 4, 7])
    np.testing.assert_array_equal(out["interaction_target"], want)
    with pytest.raises(ValueError, match="map_frames"):
        kaux(kinetics, arch="mvit")


# ---------------------------------------------------------------------------- frame conventions


def test_charades_ego_frame_list_positions_and_length_check(tmp_path):
    lengths = [20, 16]
    fm.write_charades_dataset(tmp_path, lengths, [[[1]] * n for n in lengths])
    cfg = default_data_config("charades_ego")
    cfg.path_to_data_dir, cfg.path_prefix = str(tmp_path), str(tmp_path / "rgb")
    cfg.num_frames, cfg.sampling_rate = 4, 2
    cfg.train_jitter_scales, cfg.train_crop_size, cfg.arch = (64, 64), 64, "slow"
    (tmp_path / "dets").mkdir()
    write_video_dets(tmp_path / "dets" / "C0EGO.npy", 0, 20)  # 0-based positions, length 20
    write_video_dets(tmp_path / "dets" / "C1EGO.npy", 1, 15)  # one entry short
    aux = Recorder(at.OfflineTeacherTargets(detections=str(tmp_path / "dets"), arch="slow"))
    opts = samples.SampleOptions.from_config(cfg)
    source = sources.build_source(cfg, "train")
    assert source.item(0).video_id == "C0EGO" == handobj.charades_ego_video_name(source.item(0).media[0])
    for seed in range(3):
        s = samples.make_sample(
            source.item(0),
            samples.View("train"),
            np.random.default_rng(seed),
            opts,
            split="train",
            video_level_labels=False,
            aux_fn=aux,
        )
        assert s["interaction_mask"] == 1
        np.testing.assert_array_equal(
            s["interaction_target"], expected_target(0, s["frame_indices"], xform_dict(s["xform"]), 2, keep=range(4))
        )
    with pytest.raises(TeacherFileError, match=r"C1EGO\.npy.*15 frames.*16"):
        samples.make_sample(
            source.item(1),
            samples.View("train"),
            np.random.default_rng(0),
            opts,
            split="train",
            video_level_labels=False,
            aux_fn=aux,
        )


def epic_video_with_detections(tmp_path, segments, num_frames):
    """One 30-frame EPIC-100 video `P01_01` with `segments`, a Slow `num_frames` x 2 clip config
    at 64 px, and its detection file (list position n <-> frame_{n:010d}.jpg; position 0 is a
    placeholder). Returns (recording aux_fn, sample options, train source)."""
    fm.write_epic_dataset(tmp_path, {"P01_01": 30}, segments)
    cfg = default_data_config("epic100")
    cfg.path_to_data_dir, cfg.path_prefix = str(tmp_path), str(tmp_path / "frames")
    cfg.num_frames, cfg.sampling_rate = num_frames, 2
    cfg.train_jitter_scales, cfg.train_crop_size, cfg.arch = (64, 64), 64, "slow"
    (tmp_path / "dets").mkdir()
    write_video_dets(tmp_path / "dets" / "P01_01.npy", 0, 31, placeholder_first=True)
    aux = Recorder(at.OfflineTeacherTargets(detections=str(tmp_path / "dets"), arch="slow"))
    return aux, samples.SampleOptions.from_config(cfg), sources.build_source(cfg, "train")


def test_epic_absolute_one_based_frame_numbers(tmp_path):
    segments = [("P01_01", 5, 20, 1, 2), ("P01_01", 22, 30, 3, 4)]  # the second ends on frame 30
    aux, opts, source = epic_video_with_detections(tmp_path, segments, num_frames=4)
    for k, (_, start, stop, _, _) in enumerate(segments):
        item = source.item(k)
        clip = samples.decode_clip(item, samples.View("train"), np.random.default_rng(k), opts)
        assert [fm.read_code(f) for f in clip.frames] == clip.frame_indices.tolist()  # frame n
        s = samples.make_sample(
            item,
            samples.View("train"),
            np.random.default_rng(k),
            opts,
            split="train",
            video_level_labels=False,
            aux_fn=aux,
            clip=clip,
        )
        assert start <= s["frame_indices"].min() and s["frame_indices"].max() <= stop
        np.testing.assert_array_equal(
            s["interaction_target"], expected_target(0, s["frame_indices"], xform_dict(s["xform"]), 2, keep=range(4))
        )
    # A list without the placeholder is too short for frame 30 (no silent off-by-one).
    write_video_dets(tmp_path / "dets" / "P01_01.npy", 0, 30)
    fresh = at.OfflineTeacherTargets(detections=str(tmp_path / "dets"), arch="slow")
    meta = meta_for("epic100", "P01_01_1", "P01_01", [24, 26, 28, 30], known_transform(0, False))
    with pytest.raises(TeacherFileError, match=r"P01_01\.npy.*30"):
        fresh(meta)


def test_clamped_clip_indices_follow_the_official_repeated_frame_rule(tmp_path):
    # An EPIC segment of frames 11..15 and a 4 x 2 clip (span 7) starting at its first frame:
    # positions min(0 + 2i, 4) = 0, 2, 4, 4 -> frames [11, 13, 15, 15]. Identity transform,
    # crop 64, map stride 16 -> 4 x 4 cells of 16 px; Slow (the map keeps all 4 frames).
    #   frame 11: object [0, 0, 15, 15] 0.9            -> cell row 0, col 0
    #   frame 13: object [16, 16, 31, 31] 0.8          -> cell row 1, col 1
    #   frame 15: object [32, 32, 63, 47] 0.7          -> row 2, cols 2..3 (47 / 16 = 2.9)
    #             hand [0, 48, 15, 63] 0.6             -> row 3, col 0
    per_frame = [(None, None)] * 16
    per_frame[11] = (np.array([[0, 0, 15, 15, 0.9, 0]], np.float32), None)
    per_frame[13] = (np.array([[16, 16, 31, 31, 0.8, 0]], np.float32), None)
    per_frame[15] = (np.array([[32, 32, 63, 47, 0.7, 0]], np.float32), np.array([[0, 48, 15, 63, 0.6, 0]], np.float32))
    handobj.write_detections(tmp_path / "P01_01.npy", per_frame)
    identity = {
        "orig_h": 64,
        "orig_w": 64,
        "resized_h": 64,
        "resized_w": 64,
        "crop_y": 0,
        "crop_x": 0,
        "crop_size": 64,
        "flip": False,
    }
    meta = meta_for("epic55", "7", "P01_01", [11, 13, 15, 15], identity)
    frame15 = np.zeros((4, 4, 2), np.float32)
    frame15[2, 2:4, 1] = 0.7
    frame15[3, 0, 0] = 0.6
    want = np.zeros((4, 4, 4, 2), np.float32)
    want[0, 0, 0, 1] = 0.9
    want[1, 1, 1, 1] = 0.8
    want[3] = frame15  # official: the repeated frame's boxes only at its last position (3) ...
    official = at.OfflineTeacherTargets(detections=str(tmp_path), arch="slow", map_stride=16)
    assert official.repeated_frames == "last"
    np.testing.assert_array_equal(official(meta)["interaction_target"], want)
    want[2] = frame15  # ... "all": at every position showing it (the former behaviour)
    every = at.OfflineTeacherTargets(detections=str(tmp_path), arch="slow", map_stride=16, repeated_frames="all")
    np.testing.assert_array_equal(every(meta)["interaction_target"], want)
    # "all" is the plain rasterisation of the rows as read (t = the clip index).
    hands, objs = handobj.HandObjectDetections(str(tmp_path)).boxes_for_frames("P01_01", [11, 13, 15, 15])
    plain = at.interaction_target(hands, objs, identity, num_frames=4, map_frames=4, map_stride=16, mode="soft")
    np.testing.assert_array_equal(every(meta)["interaction_target"], plain)
    # SlowFast (T_map = 4 // 2 = 2 of 4 fast frames: floor(linspace(0, 3, 2)) = [0, 3]).
    sf = at.OfflineTeacherTargets(detections=str(tmp_path), arch="slowfast", alpha=2, map_stride=16)
    meta = meta_for("epic55", "7", "P01_01", [13, 15, 15, 15], identity)
    np.testing.assert_array_equal(sf(meta)["interaction_target"][1], frame15)
    meta = meta_for("epic55", "7", "P01_01", [13, 13, 13, 15], identity)
    assert not sf(meta)["interaction_target"][0].any()  # frame 13 painted at position 2, not kept
    with pytest.raises(ValueError, match="repeated_frames"):
        at.OfflineTeacherTargets(detections=str(tmp_path), repeated_frames="first")


def test_short_segments_through_the_pipeline_paint_only_the_last_repeat(tmp_path):
    # Segments shorter than the 8 x 2 clip span (15 frames): indices clamp at the segment end.
    segments = [("P01_01", 3, 9, 1, 2), ("P01_01", 12, 17, 3, 4)]
    aux, opts, source = epic_video_with_detections(tmp_path, segments, num_frames=8)
    repeats = 0
    for k in range(2):
        for seed in range(3):
            s = samples.make_sample(
                source.item(k),
                samples.View("train"),
                np.random.default_rng(seed),
                opts,
                split="train",
                video_level_labels=False,
                aux_fn=aux,
            )
            frames = s["frame_indices"].tolist()
            keep = [t for t in range(8) if frames[t] not in frames[t + 1 :]]  # last occurrences
            repeats += 8 - len(keep)
            want = expected_target(0, frames, xform_dict(s["xform"]), 2, keep=range(8))
            for t in set(range(8)) - set(keep):
                want[t] = 0.0
            np.testing.assert_array_equal(s["interaction_target"], want)
    assert repeats >= 6  # the clamping really happened


def test_strict_by_default_and_counting_missing_entries(kinetics):
    strict = at.OfflineTeacherTargets(
        ego_scores=str(kinetics / "ego.pkl"), object_scores=str(kinetics / "obj.pkl"), detections=str(kinetics / "dets")
    )
    assert not strict.allow_missing
    with pytest.raises(at.MissingTeacherEntriesError, match=r"ego\.pkl.*'v2\.mp4'.*allow_missing"):
        strict(meta_for("kinetics", "v2.mp4", "v2", np.arange(8), known_transform(0, False)))
    detections_only = at.OfflineTeacherTargets(detections=str(kinetics / "dets"))
    with pytest.raises(at.MissingTeacherEntriesError, match=r"v2\.npy"):
        detections_only(meta_for("kinetics", "v2.mp4", "v2", np.arange(8), known_transform(0, False)))
    ids = sources.build_source(kcfg(kinetics), "train").ids()
    assert ids == [("v0.mp4", "v0"), ("v1.mp4", "v1"), ("v2.mp4", "v2")]
    missing = at.missing_entries(strict, "kinetics", ids)
    assert missing == {"ego": ["v2.mp4"], "object": [], "interaction": ["v2.mp4"]}
    message = at.missing_entries_message(strict, missing, len(ids))
    assert "1 of 3 training items have no Ego-Score entries in" in message and "'v2.mp4'" in message
    assert "hand-object detection files" in message and "Object-Score" not in message


# ------------------------------------------------------------------------------ config, pickling


def teachers(**signals):
    cfg = ml_collections.ConfigDict(
        dict(
            ego=dict(source="none", file="", checkpoint=""),
            object=dict(source="none", file="", weights="", depth=50, width=64, num_frames=8),
            interaction=dict(source="none", detections="", mode="soft"),
        )
    )
    for signal, values in signals.items():
        cfg[signal].update(values)
    return cfg


def test_from_config(kinetics, tmp_path):
    data_cfg = kcfg(kinetics)
    model_cfg = models.default_model_config()
    model_cfg.object_classes = 1000
    assert from_config(teachers(), data_cfg, model_cfg) is None
    assert from_config(teachers(ego=dict(source="online", checkpoint="x")), data_cfg, model_cfg) is None
    aux = from_config(
        teachers(
            ego=dict(source="file", file=str(kinetics / "ego.pkl")),
            interaction=dict(source="file", detections=str(kinetics / "dets"), mode="hard"),
            object=dict(source="online"),
        ),
        data_cfg,
        model_cfg,
    )
    assert aux == at.OfflineTeacherTargets(
        ego_scores=str(kinetics / "ego.pkl"),
        detections=str(kinetics / "dets"),
        map_mode="hard",
        arch="slowfast",
        alpha=4,
        object_classes=1000,
    )
    out = aux(meta_for("kinetics", "v0.mp4", "v0", np.arange(8), known_transform(0, False)))
    assert sorted(out) == ["ego_mask", "ego_target", "interaction_mask", "interaction_target"]
    missing = str(tmp_path / "nope.pkl")
    with pytest.raises(FileNotFoundError, match=r"teachers\.ego\.file.*nope\.pkl"):
        from_config(teachers(ego=dict(source="file", file=missing)), data_cfg, model_cfg)
    with pytest.raises(FileNotFoundError, match=r"teachers\.object\.file.*nope\.pkl"):
        from_config(teachers(object=dict(source="file", file=missing)), data_cfg, model_cfg)
    with pytest.raises(FileNotFoundError, match=r"teachers\.interaction\.detections.*nodir"):
        from_config(teachers(interaction=dict(source="file", detections=str(tmp_path / "nodir"))), data_cfg, model_cfg)
    with pytest.raises(ValueError, match=r"teachers\.ego\.file.*empty"):
        from_config(teachers(ego=dict(source="file")), data_cfg, model_cfg)
    # MViT: T_map = T // temporal patch stride.
    model_cfg.arch = "mvit"
    model_cfg.mvit = ml_collections.ConfigDict({"patch_stride": (2, 4, 4)})
    aux = from_config(teachers(interaction=dict(source="file", detections=str(kinetics / "dets"))), data_cfg, model_cfg)
    assert aux.map_frames == 4 and aux.arch == "mvit"


def test_pickle_round_trip_drops_the_readers(kinetics):
    aux = kaux(kinetics)
    meta = meta_for("kinetics", "v1.mp4", "v1", np.arange(3, 11), known_transform(5, True))
    first = aux(meta)
    assert aux._readers  # opened lazily by the call
    blob = pickle.dumps(aux)
    assert len(blob) < 1000  # configuration only: no score matrix, no detections
    back = pickle.loads(blob)
    assert back == aux and not back._readers
    again = back(meta)
    assert sorted(again) == sorted(first)
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])
        assert again[k].dtype == np.float32


def test_worker_processes_give_the_in_process_batches(kinetics):
    """The aux_fn travels to grain worker processes and opens its files there."""
    cfg = kcfg(kinetics)
    make = lambda: train_pipeline.make_train_iterator(
        cfg, global_batch_size=3, seed=4, process_index=0, process_count=1, aux_fn=kaux(kinetics)
    )
    with make() as it:
        reference = next(it)
    cfg.num_workers = 1
    with make() as it:
        got = next(it)
    assert sorted(got) == sorted(reference)
    for k in reference:
        np.testing.assert_array_equal(got[k], reference[k], err_msg=k)
