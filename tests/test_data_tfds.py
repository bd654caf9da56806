"""TFDS ArrayRecord builds (egoexo_jax/data/tfds_builders.py) read back through the same pipeline
(`source='tfds'`) give the same samples as the raw files."""

import numpy as np

from egoexo_jax.data import eval_pipeline, tfds_builders, train_pipeline
from egoexo_jax.data.config import default_data_config

import fake_media as fm


def aux_key(meta):
    """Picklable aux_fn: the item key as 24 bytes, to match samples across sources."""
    return {
        "key": np.frombuffer(meta["key"].encode().ljust(24, b" ")[:24], np.uint8).copy(),
        "frame_indices": meta["frame_indices"].astype(np.int32),
    }


def by_key(batches):
    out = {}
    for b in batches:
        for i in range(len(b["mask"])):
            if b["mask"][i] == 1:
                key = (bytes(b["key"][i]).decode().strip(), int(b["view_index"][i]))
                out[key] = {k: v[i] for k, v in b.items() if k != "video_index"}
    return out


def small(cfg, root, prefix):
    cfg.path_to_data_dir, cfg.path_prefix = str(root), str(prefix)
    cfg.num_frames, cfg.sampling_rate = 4, 2
    cfg.train_jitter_scales, cfg.train_crop_size, cfg.test_crop_size = (48, 56), 40, 48
    cfg.num_ensemble_views, cfg.num_spatial_crops = 2, 3
    return cfg


def compare_sources(cfg, data_dir, split):
    files = by_key(
        eval_pipeline.make_eval_iterator(
            cfg, split=split, global_batch_size=4, process_index=0, process_count=1, aux_fn=aux_key
        )[0]
    )
    cfg.source, cfg.tfds_data_dir = "tfds", str(data_dir)
    it, n, v = eval_pipeline.make_eval_iterator(
        cfg, split=split, global_batch_size=4, process_index=0, process_count=1, aux_fn=aux_key
    )
    tfds_samples = by_key(it)
    assert sorted(files) == sorted(tfds_samples) and len(files) == n * v
    for key, sample in files.items():
        for field, value in sample.items():
            np.testing.assert_array_equal(tfds_samples[key][field], value, err_msg=f"{key} {field}")
    train = train_pipeline.make_train_iterator(cfg, global_batch_size=2, seed=0, process_index=0, process_count=1)
    assert next(train)["pathway1"].shape == (2, 4, 40, 40, 3)


def test_kinetics_tfds_matches_files(tmp_path):
    root = tmp_path / "kinetics"
    fm.write_kinetics_dataset(root, [40, 50, 60])
    (root / "v3.mp4").write_bytes(b"")  # left out of the build, and reported
    with open(root / "train.csv", "a") as f:
        f.write("v3.mp4 3\n")
    skipped = tfds_builders.build("kinetics", manual_dir=str(root), data_dir=str(tmp_path / "tfds"))
    assert [s[0].rsplit("/", 1)[-1] for s in skipped] == ["v3.mp4"]
    (root / "train.csv").write_text("".join(f"v{i}.mp4 {i}\n" for i in range(3)))
    compare_sources(small(default_data_config("kinetics"), root, root), tmp_path / "tfds", "test")


def test_charades_ego_and_epic_tfds_match_files(tmp_path):
    root = tmp_path / "charades"
    fm.write_charades_dataset(root, [12, 9], [[[1]] * 12, [[2, 7]] * 9])
    assert not tfds_builders.build(
        "charades_ego", manual_dir=str(root), data_dir=str(tmp_path / "tfds"), path_prefix=str(root / "rgb")
    )
    compare_sources(small(default_data_config("charades_ego"), root, root / "rgb"), tmp_path / "tfds", "test")
    root = tmp_path / "epic"
    fm.write_epic_dataset(root, {"P01_01": 30, "P02_02": 20}, [("P01_01", 3, 20, 5, 7), ("P02_02", 1, 20, 96, 299)])
    assert not tfds_builders.build(
        "epic100", manual_dir=str(root), data_dir=str(tmp_path / "tfds"), path_prefix=str(root / "frames")
    )
    cfg = small(default_data_config("epic100"), root, root / "frames")
    compare_sources(cfg, tmp_path / "tfds", "val")
