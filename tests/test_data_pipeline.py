"""grain pipelines (egoexo_jax/data/train_pipeline.py, eval_pipeline.py) on tiny generated Kinetics /
Charades-Ego / EPIC datasets: batch contents, resume, multi-host sharding, evaluation coverage, bad inputs."""

import json
import math
import re

import numpy as np
import pytest

from egoexo_jax.data import eval_pipeline, samples, sources, train_pipeline, transforms
from egoexo_jax.data.bad_inputs import read_bad_input_log
from egoexo_jax.data.config import default_data_config
from egoexo_jax.data.errors import TooManyBadInputsError

import fake_media as fm

LENGTHS = [60, 70, 80, 90, 100, 110]


def aux_ids(meta):
    """Picklable aux_fn: the item number from its key and the clip's absolute frame indices."""
    return {
        "vid": np.int32(int(re.search(r"\d+", meta["key"]).group())),
        "frame_indices": meta["frame_indices"].astype(np.int32),
        "crop_xy": np.array([meta["transform"]["crop_x"], meta["transform"]["crop_y"]], np.int32),
    }


def small(cfg, root):
    cfg.path_to_data_dir = str(root)
    cfg.path_prefix = str(root)
    cfg.num_frames = 8
    cfg.sampling_rate = 2
    cfg.train_jitter_scales = (48, 64)
    cfg.train_crop_size = 40
    cfg.test_crop_size = 48
    return cfg


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    fm.write_kinetics_dataset(root, LENGTHS)
    return root


@pytest.fixture
def kcfg(kinetics_root):
    return small(default_data_config("kinetics"), kinetics_root)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_train_batches_shapes_labels_and_epoch_reshuffle(kcfg):
    it = train_pipeline.make_train_iterator(
        kcfg, global_batch_size=4, seed=3, process_index=0, process_count=1, aux_fn=aux_ids
    )
    batches = take(it, 3)  # 12 samples = 2 epochs of 6
    b = batches[0]
    assert b["pathway0"].shape == (4, 2, 40, 40, 3) and b["pathway0"].dtype == np.float32
    assert b["pathway1"].shape == (4, 8, 40, 40, 3)
    assert b["label"].dtype == np.int32 and b["bad_inputs"].tolist() == [0] * 4
    assert all(v.flags.c_contiguous for v in b.values())  # grain moves these via shared memory
    vids = np.concatenate([x["vid"] for x in batches])
    labels = np.concatenate([x["label"] for x in batches])
    np.testing.assert_array_equal(vids, labels)  # v{i}.mp4 has label i
    assert sorted(vids[:6]) == list(range(6)) and sorted(vids[6:]) == list(range(6))
    assert vids[:6].tolist() != vids[6:].tolist()  # reshuffled
    offsets = np.linspace(0, 15, 8).astype(int)  # span 8 * 2 at 30 fps = 16 frames
    for x in batches:
        for fi in x["frame_indices"]:
            np.testing.assert_array_equal(fi - fi[0], offsets)
    # Slow pathway = fast frames floor(linspace(0, 7, 2)) = 0, 7.
    np.testing.assert_array_equal(b["pathway0"], b["pathway1"][:, [0, 7]])
    it.close()


def test_decode_clip_reads_the_sampled_frames(kcfg, tmp_path):
    opts = samples.SampleOptions.from_config(kcfg)
    source = sources.build_source(kcfg, "test")
    item = source.item(4)  # 100 frames
    for k in range(3):
        clip = samples.decode_clip(item, samples.View("test", k, 1), None, opts)
        want = transforms.kinetics_clip_indices(100, num_frames=8, sampling_rate=2, fps=30, clip_idx=k, num_clips=10)
        assert [fm.read_code(f) for f in clip.frames] == want.tolist()
        np.testing.assert_array_equal(clip.frame_indices, want)


def test_resume_in_process_gives_the_uninterrupted_batches(kcfg):
    make = lambda: train_pipeline.make_train_iterator(
        kcfg, global_batch_size=4, seed=0, process_index=0, process_count=1, aux_fn=aux_ids
    )
    full = take(make(), 5)
    first = make()
    take(first, 2)
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    resumed = make()
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 3), full[2:])
    assert resumed.get_state()["batches"] == 5


def test_resume_with_worker_processes(kcfg):
    """Worker processes give the in-process batches (aux_fn travels to them), and resume."""
    reference = take(
        train_pipeline.make_train_iterator(
            kcfg, global_batch_size=4, seed=5, process_index=0, process_count=1, aux_fn=aux_ids
        ),
        4,
    )
    kcfg.num_workers = 2
    with train_pipeline.make_train_iterator(
        kcfg, global_batch_size=4, seed=5, process_index=0, process_count=1, aux_fn=aux_ids
    ) as it:
        got = take(it, 2)
        state = json.loads(json.dumps(it.get_state()))
    with train_pipeline.make_train_iterator(
        kcfg, global_batch_size=4, seed=5, process_index=0, process_count=1, aux_fn=aux_ids
    ) as it:
        it.set_state(state)
        got += take(it, 2)
    assert_batches_equal(got, reference)


def test_two_hosts_read_disjoint_halves_of_each_global_batch(kcfg):
    single = take(
        train_pipeline.make_train_iterator(
            kcfg, global_batch_size=4, seed=1, process_index=0, process_count=1, aux_fn=aux_ids
        ),
        3,
    )
    iterators = [
        train_pipeline.make_train_iterator(
            kcfg, global_batch_size=4, seed=1, process_index=p, process_count=2, aux_fn=aux_ids
        )
        for p in (0, 1)
    ]
    hosts = [take(it, 3) for it in iterators]
    for step in range(3):
        for p in (0, 1):
            rows = [2 * p, 2 * p + 1]  # host p holds the p-th contiguous half of each global batch
            for k in single[step]:
                np.testing.assert_array_equal(hosts[p][step][k], single[step][k][rows])
    # Within an epoch (first 6 positions) the hosts' items are disjoint and cover the dataset.
    # Epoch 1 = stream positions 0..5: host 0 holds 0, 1, 4, 5 and host 1 holds 2, 3.
    seen = [np.concatenate([b["vid"] for b in hosts[p]])[:n] for p, n in ((0, 4), (1, 2))]
    assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) == set(range(6))
    # A state saved on 2 hosts resumes on 1 host (same global batch).
    state = iterators[0].get_state()
    state["batches"] = 2
    it = train_pipeline.make_train_iterator(
        kcfg, global_batch_size=4, seed=1, process_index=0, process_count=1, aux_fn=aux_ids
    )
    it.set_state(state)
    assert_batches_equal(take(it, 1), single[2:])


def test_eval_covers_every_video_and_view_once_across_hosts(kcfg):
    kcfg.num_ensemble_views = 2  # 2 temporal x 3 spatial = 6 views, 36 pairs, padded to 40
    results = []
    for p in (0, 1):
        it, num_videos, num_views = eval_pipeline.make_eval_iterator(
            kcfg, split="test", global_batch_size=8, process_index=p, process_count=2, aux_fn=aux_ids
        )
        assert (num_videos, num_views, len(it)) == (6, 6, 5)
        batches = list(it)
        assert len(batches) == 5 and all(b["mask"].shape == (4,) for b in batches)
        results += batches
    real = [
        (int(v), int(w)) for b in results for v, w, m in zip(b["video_index"], b["view_index"], b["mask"]) if m == 1
    ]
    assert sorted(real) == [(v, w) for v in range(6) for w in range(6)]
    assert sum(int((b["mask"] == 0).sum()) for b in results) == 4
    b0 = results[0]
    assert b0["pathway1"].shape == (4, 8, 48, 48, 3) and b0["mask"].dtype == np.float32
    for b in results:
        for v, w, fi, xy in zip(b["video_index"], b["view_index"], b["frame_indices"], b["crop_xy"]):
            np.testing.assert_array_equal(
                fi,
                transforms.kinetics_clip_indices(
                    LENGTHS[v], num_frames=8, sampling_rate=2, fps=30, clip_idx=w // 3, num_clips=2
                ),
            )
            assert xy.tolist() == [[0, 8, 16][w % 3], 0]  # 64x48 at scale 48: left, centre, right
        np.testing.assert_array_equal(b["label"], b["video_index"])


def test_val_split_is_one_deterministic_random_view(kcfg):
    it, n, v = eval_pipeline.make_eval_iterator(
        kcfg, split="val", global_batch_size=4, process_index=0, process_count=1
    )
    first, second = list(it), list(it)
    assert (n, v, len(first)) == (6, 1, 2)
    assert first[0]["pathway0"].shape[2] == 40  # training crop
    assert_batches_equal(first, second)


@pytest.mark.parametrize("crop", [40, 39])
def test_rewritten_runs_get_the_host_fold_of_the_same_batches(kcfg, crop):
    """A run whose stems fold (model.rewrites=on, kernels=xla: train.folds_input) gets training and
    evaluation batches whose pathways are the space-to-depth fold of the plain run's, everything
    else equal; an odd crop is zero-padded to even before folding."""
    from egoexo_jax import config_schema, train
    from egoexo_jax.ops import space_to_depth

    kcfg.train_crop_size = crop
    config = config_schema.base_config()
    config.data = kcfg
    config.model.update(kernels="xla", num_frames=kcfg.num_frames)
    batches = {}
    for rewrites in ("off", "on"):
        config.model.rewrites = rewrites
        fold = train.folds_input(config)
        assert fold == (rewrites == "on")
        with train_pipeline.make_train_iterator(
            kcfg, global_batch_size=4, seed=3, process_index=0, process_count=1, space_to_depth=fold
        ) as it:
            train_batch = next(it)
        it, _, _ = eval_pipeline.make_eval_iterator(
            kcfg, split="test", global_batch_size=4, process_index=0, process_count=1, space_to_depth=fold
        )
        batches[rewrites] = (train_batch, next(iter(it)))
        it.close()
        shapes = train.input_shapes(config, 4, crop)
        assert [train_batch[f"pathway{i}"].shape for i in range(2)] == [tuple(s) for s in shapes]
    half = (crop + 1) // 2
    for plain, folded in zip(batches["off"], batches["on"]):
        assert sorted(plain) == sorted(folded)
        for k in plain:
            if k.startswith("pathway"):
                assert folded[k].shape[-3:] in ((half, half, 12), (24, 24, 12)) and folded[k].dtype == np.float32
                assert folded[k].flags.c_contiguous
                np.testing.assert_array_equal(folded[k], space_to_depth.fold(plain[k]), err_msg=k)
            else:
                np.testing.assert_array_equal(folded[k], plain[k], err_msg=k)


@pytest.fixture
def bad_root(tmp_path):
    fm.write_kinetics_dataset(tmp_path, LENGTHS)
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    (tmp_path / "empty.mp4").write_bytes(b"")
    fm.write_video(tmp_path / "whole.mp4", 90, faststart=True)  # index first, then cut mid-stream
    whole = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[: whole.find(b"mdat") + 1500])  # two frames survive
    with open(tmp_path / "train.csv", "a") as f:
        f.write("junk.mp4 6\nempty.mp4 7\nmissing.mp4 8\ncut.mp4 9\n")
    with open(tmp_path / "test.csv", "a") as f:
        f.write("junk.mp4 6\n")
    return tmp_path


def test_bad_inputs_are_replaced_logged_and_counted(bad_root):
    cfg = small(default_data_config("kinetics"), bad_root)
    cfg.max_bad_fraction = 0.6
    log = bad_root / "workdir" / "bad_inputs.txt"
    it = train_pipeline.make_train_iterator(
        cfg, global_batch_size=4, seed=0, process_index=0, process_count=1, bad_input_log=str(log)
    )
    batches = take(it, 6)
    labels = np.concatenate([b["label"] for b in batches])
    assert set(labels.tolist()) <= set(range(6))  # never a sample from a bad file
    assert sum(int(b["bad_inputs"].sum()) for b in batches) > 0
    assert it.get_state()["bad_inputs"] == sum(int(b["bad_inputs"].sum()) for b in batches)
    logged = dict(read_bad_input_log(log))
    assert {k.rsplit("/", 1)[-1] for k in logged} == {"junk.mp4", "empty.mp4", "missing.mp4", "cut.mp4"}
    assert any("zero-length" in r for r in logged.values())
    assert any("missing" in r for r in logged.values())
    assert "truncated" in next(r for k, r in logged.items() if k.endswith("cut.mp4"))
    # A resumed run (a new iterator, same log) hits the same files again: each is listed once.
    it = train_pipeline.make_train_iterator(
        cfg, global_batch_size=4, seed=0, process_index=0, process_count=1, bad_input_log=str(log)
    )
    take(it, 6)
    lines = log.read_text().splitlines()
    assert len(lines) == len(set(lines)) == 4
    # Above the allowed fraction the iterator stops with a clear error.
    cfg.max_bad_fraction = 0.0
    cfg.bad_input_allowance = 1
    it = train_pipeline.make_train_iterator(
        cfg, global_batch_size=4, seed=0, process_index=0, process_count=1, bad_input_log=str(log)
    )
    with pytest.raises(TooManyBadInputsError, match="bad_inputs.txt"):
        take(it, 6)


def test_eval_masks_an_unreadable_video(bad_root):
    cfg = small(default_data_config("kinetics"), bad_root)
    cfg.num_ensemble_views = 1
    cfg.num_spatial_crops = 1
    cfg.bad_input_log = str(bad_root / "eval_bad.txt")
    it, n, v = eval_pipeline.make_eval_iterator(
        cfg, split="test", global_batch_size=4, process_index=0, process_count=1
    )
    batches = list(it)
    mask = np.concatenate([b["mask"] for b in batches])
    video = np.concatenate([b["video_index"] for b in batches])
    assert (n, v) == (7, 1)
    assert mask[:7].tolist() == [1] * 6 + [0] and mask[7:].tolist() == [0]  # junk + 1 padding
    assert video[:7].tolist() == list(range(7))
    assert [p.rsplit("/", 1)[-1] for p, _ in read_bad_input_log(cfg.bad_input_log)] == ["junk.mp4"]


# --- JPEG datasets --------------------------------------------------------------------------

CHARADES_LENGTHS = [30, 24, 40]


def charades_labels():
    # video i, frame j: class 3 on frames < 10, class 100 + i on frames >= 10
    return [[[3] if j < 10 else [100 + i] for j in range(n)] for i, n in enumerate(CHARADES_LENGTHS)]


def test_charades_ego_train_span_labels_eval_video_labels_and_bgr(tmp_path):
    fm.write_charades_dataset(tmp_path, CHARADES_LENGTHS, charades_labels())
    cfg = small(default_data_config("charades_ego"), tmp_path)
    cfg.path_prefix = str(tmp_path / "rgb")
    cfg.num_frames, cfg.sampling_rate = 4, 2  # span 7 frames
    it = train_pipeline.make_train_iterator(
        cfg, global_batch_size=3, seed=0, process_index=0, process_count=1, aux_fn=aux_ids
    )
    for b in take(it, 4):
        assert b["label"].shape == (3, 157) and b["label"].dtype == np.float32
        for vid, fi, label in zip(b["vid"], b["frame_indices"], b["label"]):
            want = set()
            for j in range(fi[0], fi[-1] + 1):  # union over the sampled span of frame positions
                want |= set(charades_labels()[vid][j])
            assert set(np.nonzero(label)[0].tolist()) == want
    ev, n, v = eval_pipeline.make_eval_iterator(
        cfg, split="test", global_batch_size=6, process_index=0, process_count=1, aux_fn=aux_ids
    )
    assert (n, v) == (3, 30)
    batches = list(ev)
    for b in batches:
        for vid, label in zip(b["vid"], b["label"]):
            assert np.nonzero(label)[0].tolist() == [3, 100 + vid]  # video level
    for b in batches[:2]:
        for vid, w, fi in zip(b["vid"], b["view_index"], b["frame_indices"]):
            np.testing.assert_array_equal(
                fi,
                transforms.segment_clip_positions(
                    CHARADES_LENGTHS[vid], num_frames=4, sampling_rate=2, clip_idx=w // 3, num_clips=10
                ),
            )
    # Default channel order for Charades-Ego is BGR (OpenCV); bgr=False gives RGB.
    cfg.bgr = False
    rgb = next(
        eval_pipeline.make_eval_iterator(cfg, split="test", global_batch_size=6, process_index=0, process_count=1)[0]
    )
    np.testing.assert_allclose(rgb["pathway1"][..., ::-1], batches[0]["pathway1"], atol=1e-6)


def test_epic100_verb_noun_centre_val_clip_and_absolute_frames(tmp_path):
    segments = [("P01_01", 5, 60, 3, 40), ("P01_01", 50, 58, 96, 299), ("P02_03", 1, 30, 0, 0)]
    fm.write_epic_dataset(tmp_path, {"P01_01": 70, "P02_03": 30}, segments)
    cfg = small(default_data_config("epic100"), tmp_path)
    cfg.path_prefix = str(tmp_path / "frames")
    cfg.bgr = False
    ev, n, v = eval_pipeline.make_eval_iterator(
        cfg, split="val", global_batch_size=3, process_index=0, process_count=1, aux_fn=aux_ids
    )
    (b,) = list(ev)
    assert (n, v) == (3, 1)
    assert b["verb"].tolist() == [3, 96, 0] and b["noun"].tolist() == [40, 299, 0]
    for (_video, start, stop, _, _), fi, xy in zip(segments, b["frame_indices"], b["crop_xy"]):
        pos = transforms.segment_clip_positions(
            stop - start + 1, num_frames=8, sampling_rate=2, clip_idx=5, num_clips=10
        )
        np.testing.assert_array_equal(fi, start + pos)  # absolute 1-based frame numbers
        assert xy.tolist() == [8, 0]  # centre crop
    it = train_pipeline.make_train_iterator(cfg, global_batch_size=3, seed=0, process_index=0, process_count=1)
    batch = next(it)
    assert batch["verb"].dtype == np.int32 and batch["pathway1"].shape == (3, 8, 40, 40, 3)


def test_default_config_fields():
    cfg = default_data_config()
    for field in [
        "dataset",
        "path_to_data_dir",
        "path_prefix",
        "train_list",
        "val_list",
        "test_list",
        "num_frames",
        "sampling_rate",
        "target_fps",
        "train_jitter_scales",
        "train_crop_size",
        "test_crop_size",
        "num_ensemble_views",
        "num_spatial_crops",
        "mean",
        "std",
        "bgr",
        "arch",
        "alpha",
        "num_workers",
        "prefetch",
        "max_bad_fraction",
        "max_retries",
        "source",
        "tfds_data_dir",
    ]:
        assert field in cfg, field
    assert cfg.target_fps == 30 and tuple(cfg.train_jitter_scales) == (256, 320)
    assert default_data_config("charades_ego").val_list == "test_1st.csv"
    with pytest.raises(ValueError):
        train_pipeline.make_train_iterator(cfg, global_batch_size=6, seed=0, process_index=0, process_count=4)
    assert math.isclose(cfg.max_bad_fraction, 0.01)
