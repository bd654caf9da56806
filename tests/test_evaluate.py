"""Multi-view evaluation bookkeeping, metrics per dataset and the result files."""

import json
import pickle

import jax
import numpy as np
import pytest

from egoexo_jax import config_schema, evaluate, metrics, sharding

import fake_media


@pytest.fixture(scope="module")
def kin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kin_eval")
    fake_media.write_kinetics_dataset(root, [40] * 5, height=48, width=64)
    return str(root)


def _fake_eval_fn(num_classes):
    """Scores that encode (video, view): probs[c] = 1 if c == video % C, plus view / 100 on class 0."""

    def fn(variables, batch):
        del variables
        vid = np.asarray(jax.device_get(batch["video_index"]))
        view = np.asarray(jax.device_get(batch["view_index"]))
        probs = np.zeros((len(vid), num_classes), np.float32)
        probs[np.arange(len(vid)), vid % num_classes] = 1.0
        probs[:, 0] += view / 100.0
        return {
            "probs": probs,
            "video_index": vid,
            "view_index": view,
            "mask": np.asarray(jax.device_get(batch["mask"])),
        }

    return fn


@pytest.mark.parametrize("ensemble", ["sum", "max"])
def test_every_view_scored_once_and_ensembled(kin_root, ensemble):
    c = config_schema.base_config()
    c.data.update(
        path_to_data_dir=kin_root,
        path_prefix=kin_root,
        num_classes=5,
        num_frames=8,
        sampling_rate=2,
        test_crop_size=32,
        num_ensemble_views=2,
        num_spatial_crops=3,
        num_threads=1,
    )
    mesh = sharding.make_mesh(8)
    out = evaluate.collect_view_scores(_fake_eval_fn(5), {}, c.data, "test", 8, mesh, ensemble, progress=False)
    assert out["num_views"] == 6 and list(out["views_seen"]) == [6] * 5  # 30 views over 4 padded batches
    views = np.arange(6) / 100.0
    for v in range(5):
        s = out["scores"][0][v]
        if ensemble == "sum":
            assert s[v % 5] == pytest.approx(6.0 + (views.sum() if v % 5 == 0 else 0.0))
            assert s[0] == pytest.approx((6.0 if v == 0 else 0.0) + views.sum())
        else:
            assert s[0] == pytest.approx((1.0 if v == 0 else 0.0) + views.max())
    truth = evaluate.video_labels(c.data, "test")
    assert list(truth["label"]) == [0, 1, 2, 3, 4]
    assert evaluate.compute_metrics("kinetics", out["scores"], truth, c.evaluate)["top1"] == 100.0


def test_epic_metrics_and_result_files(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    verb, noun = rng.normal(size=(n, 97)).astype(np.float32), rng.normal(size=(n, 300)).astype(np.float32)
    truth = {
        "keys": np.asarray([f"P01_10{i % 3}_{i}" for i in range(n)], dtype=object),
        "verb": rng.integers(0, 97, n),
        "noun": rng.integers(0, 300, n),
        "participant": np.asarray(["P01"] * n, dtype=object),
    }
    cfg = config_schema.base_config().evaluate
    values = evaluate.compute_metrics("epic100", [verb, noun], truth, cfg)
    want = metrics.epic_accuracy(verb, noun, truth["verb"], truth["noun"])
    assert values == want
    table = evaluate.format_table("epic", values)
    evaluate.write_results(str(tmp_path), "test_step7", "epic100", [verb, noun], truth, table)
    with open(tmp_path / "test_step7_epic.pkl", "rb") as f:
        dumped = pickle.load(f)
    np.testing.assert_array_equal(dumped["verb_output"], verb)
    np.testing.assert_array_equal(dumped["noun_output"], noun)
    assert list(dumped["narration_id"]) == list(truth["keys"])
    sub = json.loads((tmp_path / "test_step7_submission.json").read_text())
    assert sub["challenge"] == "action_recognition" and len(sub["results"]) == n
    first = sub["results"][truth["keys"][0]]
    assert len(first["verb"]) == 97 and len(first["noun"]) == 300
    assert first["verb"]["5"] == pytest.approx(float(verb[0, 5]))
    assert "verb_top1" in (tmp_path / "test_step7.md").read_text()
    npz = np.load(tmp_path / "test_step7_scores.npz")
    np.testing.assert_array_equal(npz["scores_1"], noun)


def test_charades_map_skips_classes_without_positives():
    labels = np.zeros((4, 157), np.float32)
    labels[[0, 1], 3] = 1
    labels[2, 7] = 1
    scores = np.random.default_rng(1).normal(size=(4, 157)).astype(np.float32)
    scores[:, 3] = [0.9, 0.8, 0.1, 0.0]
    scores[:, 7] = [0.0, 0.1, 0.9, 0.2]
    cfg = config_schema.base_config().evaluate
    assert evaluate.compute_metrics("charades_ego", [scores], {"label": labels}, cfg)["mAP"] == pytest.approx(100.0)
