"""Datasets, teacher files and TFDS builds read from ``gs://`` (the local Cloud Storage server of
``tests/gcs_server.py``) give what the same files give from local disk, and fail the same way."""

import ml_collections
import numpy as np
import pytest

from egoexo_jax import models, storage
from egoexo_jax.cli import MissingFileError
from egoexo_jax.data import (
    aux_targets,
    build_tfds,
    charades_ego,
    handobj,
    samples,
    sources,
    teacher_scores,
    tfds_builders,
    video,
)
from egoexo_jax.data.config import default_data_config
from egoexo_jax.data.errors import AnnotationError
from egoexo_jax.data.video import DecodeError, VideoReader, read_jpeg_frames
from egoexo_jax.offline_teachers import from_config

import fake_media as fm


def upload(local, bucket: str) -> str:
    """Copies the local folder to ``{bucket}/data``; returns that URL."""
    storage.copy_tree(str(local), bucket + "/data")
    return bucket + "/data"


def data_cfg(dataset: str, lists: str, prefix: str):
    cfg = default_data_config(dataset)
    cfg.path_to_data_dir, cfg.path_prefix = lists, prefix
    cfg.num_frames, cfg.sampling_rate = 4, 2
    cfg.train_jitter_scales, cfg.train_crop_size, cfg.test_crop_size = (48, 56), 40, 48
    return cfg


def decoded_samples(source, cfg, aux_fn=None) -> list[dict]:
    """One seeded training sample per item (decode, crop, flip, labels, aux fields)."""
    opts = samples.SampleOptions.from_config(cfg)
    rng = np.random.default_rng(0)
    return [
        samples.make_sample(
            source.item(i), samples.View("train"), rng, opts, split="train", video_level_labels=False, aux_fn=aux_fn
        )
        for i in range(len(source))
    ]


def assert_same_samples(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert sorted(g) == sorted(w)
        for field in w:
            np.testing.assert_array_equal(g[field], w[field], err_msg=field)


class Calls:
    """Wraps a storage function and counts its calls on gs:// URLs (local files go through the
    layer too)."""

    def __init__(self, fn):
        self.fn, self.count = fn, 0

    def __call__(self, path, *args, **kwargs):
        self.count += str(path).startswith("gs://")
        return self.fn(path, *args, **kwargs)


@pytest.mark.parametrize("whole", [True, False], ids=["whole_object", "ranged_reads"])
def test_kinetics_list_and_videos_on_gs_decode_like_local(tmp_path, bucket, monkeypatch, whole):
    root = tmp_path / "kinetics"
    fm.write_kinetics_dataset(root, [40, 75])
    url = upload(root, bucket)
    local = sources.FileSource(data_cfg("kinetics", str(root), str(root)), "train")
    remote = sources.FileSource(data_cfg("kinetics", url, url), "train")
    assert [(r.key, r.video_id, r.label) for r in map(remote.item, range(2))] == [
        ("v0.mp4", "v0", 0),
        ("v1.mp4", "v1", 1),
    ]
    assert [remote.item(i).media for i in range(2)] == [f"{url}/v0.mp4", f"{url}/v1.mp4"]
    assert remote.item(1).describe() == f"{url}/v1.mp4"
    if not whole:  # every video is over the bound: the head request, then ranged reads
        monkeypatch.setattr(video, "WHOLE_OBJECT_LIMIT", min(storage.size(f"{url}/v{i}.mp4") for i in range(2)) // 3)
    open_read = Calls(storage.open_read)
    monkeypatch.setattr(storage, "open_read", open_read)
    cfg = data_cfg("kinetics", url, url)
    assert_same_samples(decoded_samples(remote, cfg), decoded_samples(local, cfg))
    with VideoReader(f"{url}/v1.mp4") as r, VideoReader(str(root / "v1.mp4")) as want:
        assert (r.num_frames, r.fps) == (want.num_frames, want.fps)
        for got, expected in zip(r.read_clips([[70, 3, 3], [40, 41]]), want.read_clips([[70, 3, 3], [40, 41]])):
            np.testing.assert_array_equal(got, expected)
    assert [fm.read_code(f) for f in video.read_video_clip(f"{url}/v1.mp4", [74, 0, 37])] == [74, 0, 37]
    assert (open_read.count > 0) == (not whole)


def test_missing_video_and_frame_objects_name_the_url(bucket):
    with pytest.raises(DecodeError, match=f"^missing file {bucket}/k/nope.mp4$"):
        VideoReader(f"{bucket}/k/nope.mp4")
    storage.write_bytes(f"{bucket}/k/empty.mp4", b"")
    with pytest.raises(DecodeError, match=f"^zero-length file {bucket}/k/empty.mp4$"):
        VideoReader(f"{bucket}/k/empty.mp4")
    storage.write_bytes(f"{bucket}/k/junk.mp4", b"not a video at all")
    with pytest.raises(DecodeError, match=f"^cannot open {bucket}/k/junk.mp4: "):
        VideoReader(f"{bucket}/k/junk.mp4")
    storage.write_bytes(f"{bucket}/f/1.jpg", fm.encode_jpeg(fm.coded_frame(1)))
    storage.write_bytes(f"{bucket}/f/3.jpg", b"junk")
    frames = [f"{bucket}/f/{i}.jpg" for i in (1, 2, 3)]
    assert [fm.read_code(f) for f in read_jpeg_frames(frames, [0, 0])] == [1, 1]
    with pytest.raises(DecodeError, match=f"^missing frame {bucket}/f/2.jpg$"):
        read_jpeg_frames(frames, [0, 1])
    with pytest.raises(DecodeError, match=f"^cannot decode frame {bucket}/f/3.jpg: "):
        read_jpeg_frames(frames, [2])
    with pytest.raises(DecodeError, match=f"^missing frame {bucket}/f/2.jpg$"):
        video.decode_jpeg(frames[1])


def test_missing_list_on_gs_is_the_local_one_line_error(tmp_path, bucket):
    root = tmp_path / "kinetics"
    fm.write_kinetics_dataset(root, [20], lists=("train.csv",))
    url = upload(root, bucket)
    errors = []
    for lists in (str(root), url):
        with pytest.raises(MissingFileError) as err:
            sources.FileSource(data_cfg("kinetics", lists, lists), "val")
        errors.append(str(err.value))
    assert errors[1] == errors[0].replace(str(root), url)
    assert errors[1].startswith(f"val list not found, {url}/val.csv, expected") and "\n" not in errors[1]
    with pytest.raises(MissingFileError, match=f"data folder not found, config.data.path_to_data_dir='{bucket}/nope'"):
        sources.FileSource(data_cfg("kinetics", f"{bucket}/nope", url), "train")
    storage.write_bytes(f"{url}/val.csv", b"v0.mp4 0\n\xff\xfe.mp4 1\n")
    with pytest.raises(AnnotationError, match=f"^{url}/val.csv:2: byte 0xff at column 1 is not UTF-8"):
        sources.FileSource(data_cfg("kinetics", url, url), "val")


def test_charades_ego_frame_list_and_official_csv_on_gs(tmp_path, bucket):
    root = tmp_path / "charades"
    fm.write_charades_dataset(root, [12, 9], [[[1]] * 12, [[2, 7]] * 9])
    (root / "CharadesEgo_v1_test.csv").write_text(
        "id,actions,length,egocentric\nC0EGO,c005 0.0 0.2;c009 0.3 1.0,0.5,Yes\nC1EGO,,0.4,Yes\n"
        "C7EGO,c003 0.0 0.1,0.25,Yes\nC9EGO,,1.0,No\n"
    )
    url = upload(root, bucket)
    # Frame list: the same items, frame URLs and decoded samples.
    local = sources.FileSource(data_cfg("charades_ego", str(root), str(root / "rgb")), "train")
    remote = sources.FileSource(data_cfg("charades_ego", url, f"{url}/rgb"), "train")
    assert remote.ids() == local.ids() == [("C0EGO", "C0EGO"), ("C1EGO", "C1EGO")]
    assert remote.item(1).media[8] == f"{url}/rgb/C1EGO/C1EGO-000009.jpg"
    assert remote.item(1).describe() == f"{url}/rgb/C1EGO"
    cfg = data_cfg("charades_ego", url, f"{url}/rgb")
    assert_same_samples(decoded_samples(remote, cfg), decoded_samples(local, cfg))
    # Official csv: frames found by listing each video's folder (C7EGO has none: its length counts).
    got = charades_ego.read_charades_ego(f"{url}/CharadesEgo_v1_test.csv", path_prefix=f"{url}/rgb", fps=24)
    want = charades_ego.read_charades_ego(str(root / "CharadesEgo_v1_test.csv"), path_prefix=str(root / "rgb"), fps=24)
    assert [v.key for v in got] == [v.key for v in want] == ["C0EGO", "C1EGO", "C7EGO"]
    assert [v.num_frames for v in got] == [12, 9, 6]
    for g, w in zip(got, want):
        assert [g.frames[i] for i in range(g.num_frames)] == [
            w.frames[i].replace(str(root), url) for i in range(w.num_frames)
        ]
        np.testing.assert_array_equal(g.label_frames, w.label_frames)
        np.testing.assert_array_equal(g.label_classes, w.label_classes)
    assert got[2].frames[0] == f"{url}/rgb/C7EGO/C7EGO-000001.jpg"
    assert [fm.read_code(f) for f in read_jpeg_frames(got[0].frames, [11, 0, 5])] == [11, 0, 5]


def test_epic_frames_on_gs(tmp_path, bucket):
    root = tmp_path / "epic"
    fm.write_epic_dataset(root, {"P01_01": 30, "P02_02": 20}, [("P01_01", 3, 20, 5, 7), ("P02_02", 1, 20, 96, 299)])
    url = upload(root, bucket)
    local = sources.FileSource(data_cfg("epic100", str(root), str(root / "frames")), "val")
    remote = sources.FileSource(data_cfg("epic100", url, f"{url}/frames"), "val")
    assert remote.ids() == local.ids()
    item = remote.item(0)
    assert (item.frame_offset, item.verb, item.noun) == (3, 5, 7)
    assert item.media[0] == video.epic_frame_path(f"{url}/frames", "P01", "P01_01", 3)
    assert item.media[0] == f"{url}/frames/P01/rgb_frames/P01_01/frame_0000000003.jpg"
    assert item.describe() == f"{url}/frames/P01/rgb_frames/P01_01"
    assert [fm.read_code(f) for f in read_jpeg_frames(item.media, [0, 17, 4, 4])] == [3, 20, 7, 7]
    cfg = data_cfg("epic100", url, f"{url}/frames")
    assert_same_samples(decoded_samples(remote, cfg), decoded_samples(local, cfg))


def teachers_config():
    return ml_collections.ConfigDict(
        dict(
            ego=dict(source="none", file="", checkpoint=""),
            object=dict(source="none", file="", weights="", depth=50, width=64, num_frames=8),
            interaction=dict(source="none", detections="", mode="soft"),
            allow_missing=True,
        )
    )


def test_offline_teacher_files_on_gs_give_the_local_targets(tmp_path, bucket):
    root = tmp_path / "kinetics"
    names = fm.write_kinetics_dataset(root, [20, 30, 25])
    teacher_scores.write_score_pickle(root / "ego.pkl", {n: [float(i), -float(i)] for i, n in enumerate(names[:2])})
    teacher_scores.write_score_pickle(root / "obj.pkl", {n: np.arange(1000.0) * i for i, n in enumerate(names)})
    rng = np.random.default_rng(0)
    for i, length in ((0, 20), (1, 30)):  # v2 has no detection file
        boxes = lambda: np.c_[rng.uniform(0, 20, (2, 2)), rng.uniform(25, 47, (2, 2)), rng.uniform(0, 1, (2, 2))]
        handobj.write_detections(root / "dets" / f"v{i}.npy", [(boxes(), boxes()) for _ in range(length)])
    url = upload(root, bucket)
    teachers = teachers_config()
    model_cfg = models.default_model_config()
    model_cfg.arch, model_cfg.object_classes = "slow", 1000
    auxes = []
    for base in (str(root), url):
        teachers.ego.update(source="file", file=storage.join(base, "ego.pkl"))
        teachers.object.update(source="file", file=storage.join(base, "obj.pkl"))
        teachers.interaction.update(source="file", detections=storage.join(base, "dets"))
        auxes.append(from_config(teachers, data_cfg("kinetics", base, base), model_cfg))
    assert auxes[1].detections == f"{url}/dets" and auxes[1].ego_scores == f"{url}/ego.pkl"
    cfg = data_cfg("kinetics", url, url)
    cfg.arch = "slow"
    source = sources.FileSource(cfg, "train")
    remote, local = (decoded_samples(source, cfg, aux_fn=aux) for aux in reversed(auxes))
    assert_same_samples(remote, local)
    assert [float(s["interaction_mask"]) for s in remote] == [1.0, 1.0, 0.0]
    assert [float(s["ego_mask"]) for s in remote] == [1.0, 1.0, 0.0]
    assert remote[1]["interaction_target"].any()
    missing = aux_targets.missing_entries(auxes[1], "kinetics", source.ids())
    assert missing == aux_targets.missing_entries(auxes[0], "kinetics", source.ids())
    assert missing == {"ego": ["v2.mp4"], "object": [], "interaction": ["v2.mp4"]}
    teachers.ego.file = f"{url}/nope.pkl"
    with pytest.raises(MissingFileError, match=f"^file not found, config.teachers.ego.file={url}/nope.pkl, expected"):
        from_config(teachers, cfg, model_cfg)
    with pytest.raises(FileNotFoundError, match="no hand-object detection file for video 'v2'"):
        handobj.HandObjectDetections(f"{url}/dets").video("v2")


def tfds_items(cfg, split: str) -> list[tuple]:
    source = sources.TfdsSource(cfg, split)
    return [(it.key, it.video_id, it.label, bytes(it.media)) for it in map(source.item, range(len(source)))]


def test_tfds_build_to_gs_reads_back_like_a_local_build(tmp_path, bucket, gcs, capsys):
    root = tmp_path / "kinetics"
    fm.write_kinetics_dataset(root, [20, 30, 25])
    url = upload(root, bucket)
    build_tfds.main(["--dataset", "kinetics", "--manual_dir", url, "--data_dir", f"{bucket}/tfds"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"done: {bucket}/tfds; built in a local temporary folder and copied to the bucket; 0 items left out"
    objects = gcs.objects(bucket)
    assert "tfds/egoexo_kinetics/1.0.0/dataset_info.json" in objects
    assert not [o for o in objects if "incomplete" in o or "downloads" in o]
    build_tfds.main(["--dataset", "kinetics", "--manual_dir", str(root), "--data_dir", str(tmp_path / "tfds")])
    cfg = default_data_config("kinetics")
    cfg.source, cfg.tfds_data_dir = "tfds", f"{bucket}/tfds"
    remote = tfds_items(cfg, "train")
    cfg.tfds_data_dir = str(tmp_path / "tfds")
    assert remote == tfds_items(cfg, "train")
    assert sorted(r[0] for r in remote) == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert {r[3] for r in remote} == {(root / n).read_bytes() for n in ("v0.mp4", "v1.mp4", "v2.mp4")}


def test_tfds_build_of_frames_with_a_gs_path_prefix(tmp_path, bucket):
    root = tmp_path / "charades"
    fm.write_charades_dataset(root, [12, 9], [[[1]] * 12, [[2, 7]] * 9])
    url = upload(root, bucket)
    (root / "train_1st.csv").unlink()  # lists from the local copy, frames from the bucket
    storage.remove(f"{url}/rgb/C1EGO/C1EGO-000004.jpg")
    skipped = tfds_builders.build(
        "charades_ego", manual_dir=str(root), data_dir=f"{bucket}/tfds", path_prefix=f"{url}/rgb"
    )
    assert skipped == [("C1EGO", f"1 missing frames, first {url}/rgb/C1EGO/C1EGO-000004.jpg")]
    cfg = data_cfg("charades_ego", "", "")
    cfg.source, cfg.tfds_data_dir = "tfds", f"{bucket}/tfds"
    source = sources.TfdsSource(cfg, "test")
    assert len(source) == 1
    item = source.item(0)
    assert item.key == "C0EGO" and [bytes(f) for f in item.media] == [
        (root / "rgb" / "C0EGO" / f"C0EGO-{j:06d}.jpg").read_bytes() for j in range(1, 13)
    ]


def test_data_pipeline_benchmark_storage_mode(bucket, capsys):
    import data_pipeline  # noqa: PLC0415  (benchmarks/data_pipeline.py)

    result = data_pipeline.run_storage(2, 1, None, frames=70, bucket=bucket)
    assert result["benchmark"] == "data_pipeline_storage" and result["clips_each"] == 2
    for mode in ("local", "gs_whole_object", "gs_ranged"):
        assert result[f"{mode}_clips_per_s_per_core"] > 0 and result[f"{mode}_clips_per_s_wall"] > 0
    assert 0 < result["ranged_whole_object_limit"] < result["video"]["min_kb"] * 1024
    assert "ours gs:// ranged:" in capsys.readouterr().out
