"""EPIC-Kitchens-55: the generated set in the official layout (egoexo_jax/demo_data/epic55.py) read by
the real readers, Ego-Exo* targets from its detection files, and a fine-tune of the
configs/finetune_epic55.py recipe that trains, validates, keeps the best state, tests on the S1 /
S2 lists and writes the result files."""

import importlib.util
import json
import os
import pathlib
import sys

import jax
import numpy as np
import pytest

from egoexo_jax import config_schema, evaluate, precise_bn, train_loop, train_setup
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.data import epic_kitchens, sources, train_pipeline
from egoexo_jax.demo_data.epic55 import EPIC55_LABEL_COLUMNS, EPIC55_NOUNS, EPIC55_VERBS, write_epic55_data
from egoexo_jax.models import presets

REPO = pathlib.Path(__file__).resolve().parents[1]


def recipe(variant=None):
    spec = importlib.util.spec_from_file_location("recipe_epic55", REPO / "configs" / "finetune_epic55.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.fixture(scope="module")
def epic55(tmp_path_factory):
    return write_epic55_data(tmp_path_factory.mktemp("data"))


def tiny(paths, variant=None, arch="slowfast"):
    """The recipe with a tiny SlowFast (or Slow, which compiles in half the time), 8-frame clips at
    32 px and csv copies of the split tables."""
    c = recipe(variant)
    star = c.model.interaction_head
    size = dict(
        width_per_group=8, num_frames=8, crop_size=32, spatial_strides=(1, 2, 2, 1), bn_group_size=4, dropout_rate=0.5
    )
    model = presets.slowfast(18, interaction_conv_dim=16, **size) if arch == "slowfast" else presets.slow(18, **size)
    c.model = presets.epic55_heads(model, star=star)
    c.data.update(arch=arch, alpha=model.alpha)
    c.data.update(
        path_to_data_dir=paths.annotations,
        path_prefix=paths.frames,
        train_list="EPIC_train_action_labels.csv",
        val_list="EPIC_val_action_labels.csv",
        test_list="EPIC_val_action_labels.csv",
        num_frames=8,
        sampling_rate=2,
        train_jitter_scales=(32, 36),
        train_crop_size=32,
        test_crop_size=32,
        num_ensemble_views=2,
        num_spatial_crops=1,
        num_threads=1,
        prefetch=1,
    )
    if star:
        c.teachers.interaction.detections = paths.detections
    c.batch_size = c.eval_batch_size = 8
    c.optimizer.reference_batch_size = 8
    c.num_epochs = 2.0
    c.eval_every_epochs = 1.0
    c.checkpoint.every_epochs = 1.0
    c.checkpoint.keep = 1
    c.precise_bn.num_batches = 3
    c.log_every_steps = 1
    config_schema.validate(c)
    return c


def test_generated_set_reads_in_the_official_layout(epic55):
    annotations = pathlib.Path(epic55.annotations)
    header = (annotations / "EPIC_train_action_labels.csv").read_text().split("\n")[0]
    assert header.split(",") == list(EPIC55_LABEL_COLUMNS)
    c = tiny(epic55)
    train_source = sources.build_source(c.data, "train")
    segments = epic_kitchens.read_epic_annotations(annotations / "EPIC_train_action_labels.csv", "epic55")
    assert len(train_source) == len(segments) >= 8
    for i, seg in enumerate(segments):
        item = train_source.item(i)
        assert item.dataset == "epic55" and item.key == seg.key and item.video_id == seg.video_id
        assert 0 <= item.verb < len(EPIC55_VERBS) and 0 <= item.noun < len(EPIC55_NOUNS)
        # Flat layout {video_id}/frame_{n:010d}.jpg, n = start_frame.. (1-based).
        assert item.media[0] == os.path.join(epic55.frames, seg.video_id, f"frame_{seg.start_frame:010d}.jpg")
        assert os.path.isfile(item.media[len(item.media) - 1]) and item.frame_offset == seg.start_frame
    assert train_source.ids() == [(s.key, s.video_id) for s in segments]
    # The S1 / S2 timestamps lists carry no labels; S2 participants never appear in training.
    c.data.test_list = "EPIC_test_s2_timestamps.csv"
    s2 = sources.build_source(c.data, "test")
    assert {s2.item(i).verb for i in range(len(s2))} == {-1}
    train_participants = {s.participant_id for s in segments}
    assert not {s2.item(i).video_id.split("_")[0] for i in range(len(s2))} & train_participants
    # Class ids beyond EPIC-55's 125 verbs are rejected with file and line.
    bad = annotations.parent / "bad.csv"
    lines = (annotations / "EPIC_val_action_labels.csv").read_text().split("\n")
    fields = lines[1].split(",")
    fields[EPIC55_LABEL_COLUMNS.index("verb_class")] = "125"
    bad.write_text("\n".join([lines[0], ",".join(fields)]) + "\n")
    with pytest.raises(Exception, match=r"bad\.csv:2:.*verb_class 125 outside \[0, 125\)"):
        epic_kitchens.read_epic_annotations(bad, "epic55")
    bad.unlink()


def test_pickle_split_files_without_pandas_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match=r"pip install pandas.*EPIC_train_action_labels\.csv.*to_csv"):
        epic_kitchens.read_epic_annotations(tmp_path / "EPIC_train_action_labels.pkl", "epic55")


def test_star_batches_carry_interaction_targets(epic55):
    c = tiny(epic55, "star")
    aux = train_setup.offline_aux_fn(c)
    assert aux.repeated_frames == "last" and not aux.allow_missing
    assert train_setup.check_teacher_files(c, aux) == {"interaction": 0}
    with train_pipeline.make_train_iterator(
        c.data, global_batch_size=8, seed=0, process_index=0, process_count=1, aux_fn=aux
    ) as it:
        batch = next(it)
    assert batch["interaction_target"].shape == (8, 2, 2, 2, 2)  # [B, T_slow, 32 // 16, .., 2]
    assert np.all(batch["interaction_mask"] == 1) and batch["interaction_target"].max() > 0
    # A video without a detection file stops the run before the first step, naming it.
    os.rename(os.path.join(epic55.detections, "P01_01.npy"), os.path.join(epic55.detections, "x.npy"))
    try:
        with pytest.raises(Exception, match=r"training items have no hand-object detection files.*'0'"):
            train_setup.check_teacher_files(c, aux)
    finally:
        os.rename(os.path.join(epic55.detections, "x.npy"), os.path.join(epic55.detections, "P01_01.npy"))


@pytest.mark.slow
def test_finetune_trains_validates_keeps_best_and_tests_s1_s2(epic55, tmp_path, monkeypatch):
    c = tiny(epic55, arch="slow")
    c.evaluate.epic55_s1 = "EPIC_test_s1_labels.csv"  # labelled copy: metrics + json
    c.evaluate.epic55_s2 = "EPIC_test_s2_timestamps.csv"  # official, unlabelled: json only
    c.evaluate.checkpoint = "best"  # the final test loads the best-validation state
    # A tiny student's EPIC accuracies are mostly 0 after 4 steps; a scripted validation value
    # (best after epoch 1, worse after epoch 2) makes the best state differ from the last one.
    c.checkpoint.best_metric = "scripted"
    scripted = iter([30.0, 20.0])
    real_eval = train_loop.eval_lib.evaluate_split

    def eval_with_script(config, run, variables, split, step, logger=None, **kw):
        values = real_eval(config, run, variables, split, step, logger, **kw)
        return {**values, "scripted": next(scripted)} if split == "val" else values

    monkeypatch.setattr(train_loop.eval_lib, "evaluate_split", eval_with_script)
    calls = []
    real_bn = precise_bn.precise_bn_stats

    def spy(model, variables, batches, arch, num_groups, group_size, mesh, **kw):
        calls.append((num_groups, group_size, batches.get_state()["batches"], kw["stats_fn"]))
        return real_bn(model, variables, batches, arch, num_groups, group_size, mesh, **kw)

    monkeypatch.setattr(precise_bn, "precise_bn_stats", spy)
    workdir = tmp_path / "run"
    final = train_loop.train_and_evaluate(c, str(workdir))
    assert len(sources.build_source(c.data, "train")) // 8 == 2  # steps per epoch
    # Precise BN after each epoch: min(3, 2 steps per epoch) groups of 4 clips, new clips each time.
    assert [call[:3] for call in calls] == [(2, 4, 0), (2, 4, 1)]
    assert calls[0][3] is calls[1][3]  # compiled once
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    vals = {r["step"]: r for r in records if "val/action_top1" in r}
    assert sorted(vals) == [2, 4]  # every epoch, the last one included
    for r in vals.values():
        assert {"val/verb_top1", "val/verb_top5", "val/noun_top1", "val/noun_top5", "val/action_top5"} <= set(r)
    # The best state (step 2) survives keep=1 pruning of the periodic checkpoints (step 4 only).
    step, meta = ckpt_lib.read_meta(str(workdir), best=True)
    assert (step, meta["best"]) == (2, {"metric": "scripted", "value": 30.0, "step": 2})
    assert ckpt_lib.BestCheckpoints(str(workdir)).steps() == [2]
    assert ckpt_lib.read_meta(str(workdir))[0] == 4
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4"]
    _, best_vars, _ = ckpt_lib.load_workdir_variables(str(workdir), best=True)
    _, last_vars, _ = ckpt_lib.load_workdir_variables(str(workdir))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best_vars), jax.tree.leaves(last_vars)))
    # Final test on S1 (labelled) and S2 (unlabelled): metrics for S1, submission json for both.
    test = {k: v for r in records for k, v in r.items() if k.startswith("test_")}
    assert {
        "test_s1/verb_top1",
        "test_s1/verb_top5",
        "test_s1/noun_top1",
        "test_s1/noun_top5",
        "test_s1/action_top1",
        "test_s1/action_top5",
    } <= set(test)
    assert not [k for k in test if k.startswith("test_s2/") and "top" in k]
    assert final["test_s1_verb_top5"] == test["test_s1/verb_top5"]
    results = workdir / "results"
    for tag, listed in (("test_s1", "EPIC_test_s1_labels.csv"), ("test_s2", "EPIC_test_s2_timestamps.csv")):
        sub = json.loads((results / f"{tag}_step4_submission.json").read_text())
        assert (sub["version"], sub["challenge"]) == ("0.1", "action_recognition")
        listed = pathlib.Path(epic55.annotations) / listed
        uids = [s.key for s in epic_kitchens.read_epic_annotations(listed, "epic55")]
        assert list(sub["results"]) == uids
        first = sub["results"][uids[0]]
        assert sorted(map(int, first["verb"])) == list(range(125))
        assert sorted(map(int, first["noun"])) == list(range(352))
        scores = np.load(results / f"{tag}_step4_scores.npz")
        assert scores["scores_0"].shape == (len(uids), 125) and scores["scores_1"].shape == (len(uids), 352)
        np.testing.assert_allclose(scores["scores_0"].sum(1), 2.0, rtol=1e-5)  # 2 views of softmax
        np.testing.assert_allclose([sum(first["verb"].values())], [2.0], rtol=1e-5)
        assert (results / f"{tag}_step4.md").is_file()
    assert (results / "val_step2.md").is_file() and (results / "val_step4_scores.npz").is_file()
    # The final test saw the best state: mode=evaluate of checkpoint=best gives the same numbers,
    # and of the last state (the workdir's newest checkpoint) other ones.
    again = evaluate.evaluate_only(c, str(workdir))
    assert {k: again[k] for k in final} == final
    c.evaluate.checkpoint = ""
    last = evaluate.evaluate_only(c, str(workdir))
    s1 = np.load(results / "test_s1_step4_scores.npz")["scores_0"]
    s1_best = np.load(results / "test_s1_step2_scores.npz")["scores_0"]
    assert not np.allclose(s1, s1_best) and set(last) == set(final)
