"""Ego-Exo distillation inside the training system: official loss on the converted fixture,
zero aux weights = baseline, frozen online teachers, offline and online pre-training end to end."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from egoexo_jax import config_schema, losses, models, optim, sharding, teacher_loading, train, train_loop
from egoexo_jax.convert import load_pyslowfast
from egoexo_jax.data import aux_targets, handobj, teacher_scores
from egoexo_jax.demo_data import demo_sets
from egoexo_jax.models import presets
from egoexo_jax.models import teachers as teachers_lib


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _bce(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def test_total_loss_on_egoexo_fixture_matches_official_formulas(fixtures_dir, tmp_path):
    """Converted Ego-Exo SlowFast + fixture inputs; targets from a small synthetic detection file;
    our total loss vs the official formulas evaluated on the PyTorch reference outputs."""
    folder = fixtures_dir / "pyslowfast" / "egoexo_slowfast_r50"
    module, variables = load_pyslowfast(str(folder / "checkpoint.pyth"))
    inputs = np.load(folder / "inputs.npz")
    ref = np.load(folder / "outputs.npz")
    pathways = [jnp.asarray(inputs[k].transpose(0, 2, 3, 4, 1)) for k in ("pathway0", "pathway1")]
    ours = module.apply(variables, pathways, train=False)

    # Targets: labels, teacher logits, and interaction maps from a detection file (64 x 64 frames,
    # 16 clip frames, crop = the whole frame, second clip flipped).
    rng = np.random.default_rng(0)
    b, t_fast = 2, 16
    dets = []
    for f in range(t_fast):
        obj = np.array([[4 + f, 10, 30 + f, 40, 0.9]], np.float32)
        hand = None if f % 5 == 4 else np.array([[40, 30 + f, 60, 63, 0.6 + 0.02 * f]], np.float32)
        dets.append((obj, hand))
    det_dir = tmp_path / "dets"
    det_dir.mkdir()
    handobj.write_detections(det_dir / "vid.npy", dets)
    store = handobj.HandObjectDetections(str(det_dir))
    maps = []
    for i in range(b):
        hands, objs = store.boxes_for_frames("vid", np.arange(t_fast))
        transform = dict(
            orig_h=64,
            orig_w=64,
            resized_h=64,
            resized_w=64,
            crop_y=0,
            crop_x=0,
            crop_size=64,
            flip=bool(i),
            scale_y=1.0,
            scale_x=1.0,
        )
        maps.append(
            aux_targets.interaction_target(
                hands, objs, transform, num_frames=t_fast, map_frames=4, map_stride=32, mode="soft"
            )
        )
    batch = {
        "label": rng.integers(0, 10, b),
        "ego_target": rng.normal(size=(b, 2)).astype(np.float32) * 2,
        "object_target": rng.normal(size=(b, 1000)).astype(np.float32) * 3,
        "interaction_target": np.stack(maps),
    }
    assert batch["interaction_target"].shape == (2, 4, 2, 2, 2) and batch["interaction_target"].max() > 0
    weights = {"ce": 0.5, "ego": 0.1, "object": 0.5, "hand": 1.0, "object_map": 1.0}
    total, terms = losses.total(ours, jax.tree.map(jnp.asarray, batch), weights)

    # Official formulas on the PyTorch outputs (numpy, float64).
    logits = ref["logits"].astype(np.float64)
    ce = -_log_softmax(logits)[np.arange(b), batch["label"]].mean()

    def kl(s, t):
        p = np.exp(_log_softmax(t))
        return (p * (np.log(p) - _log_softmax(s))).sum() / b

    ego = kl(ref["ego_logits"].astype(np.float64), batch["ego_target"].astype(np.float64))
    obj = kl(ref["object_logits"].astype(np.float64), batch["object_target"].astype(np.float64))
    imap = ref["interaction_logits"].astype(np.float64).transpose(0, 2, 3, 4, 1)
    hand = _bce(imap[..., 0], batch["interaction_target"][..., 0]).mean()
    omap = _bce(imap[..., 1], batch["interaction_target"][..., 1]).mean()
    want = 0.5 * ce + 0.1 * ego + 0.5 * obj + hand + omap
    assert float(total) == pytest.approx(want, rel=1e-5)
    for name, value in (
        ("loss_ce", ce),
        ("loss_ego", ego),
        ("loss_object", obj),
        ("loss_hand", hand),
        ("loss_object_map", omap),
    ):
        assert float(terms[name]) == pytest.approx(value, rel=1e-5), name


# ---------------------------------------------------------------------------------------------
# Train steps with a tiny Ego-Exo student.


def _tiny_config(egoexo=True):
    c = config_schema.base_config()
    c.model = presets.slowfast(
        18,
        width_per_group=8,
        num_frames=8,
        crop_size=32,
        num_classes=(4,),
        spatial_strides=(1, 2, 2, 1),
        bn_group_size=2,
        dropout_rate=0.0,
        interaction_conv_dim=16,
    )
    if egoexo:
        presets.egoexo_pretrain_heads(c.model)
    c.data.update(
        num_frames=8,
        train_crop_size=32,
        test_crop_size=32,
        train_jitter_scales=(32, 40),
        sampling_rate=2,
        num_threads=1,
    )
    c.batch_size = 4
    c.num_epochs = 1.0
    return c


def _batch(rng, b=4, with_targets=True):
    out = {
        "pathway0": rng.normal(size=(b, 2, 32, 32, 3)).astype(np.float32),
        "pathway1": rng.normal(size=(b, 8, 32, 32, 3)).astype(np.float32),
        "label": rng.integers(0, 4, b).astype(np.int32),
    }
    if with_targets:
        out.update(
            ego_target=rng.normal(size=(b, 2)).astype(np.float32),
            object_target=rng.normal(size=(b, 1000)).astype(np.float32),
            interaction_target=rng.uniform(size=(b, 2, 2, 2, 2)).astype(np.float32),
        )
    return out


def _state_and_tx(c, mesh):
    model = models.build(train.model_config(c))
    params = jax.eval_shape(lambda: train.init_variables(model, c, 0))["params"]
    tx = optim.make_optimizer(c, 10, params)
    state, _ = train.create_train_state(c, model, tx, mesh)
    return model, tx, state


@pytest.mark.slow
def test_zero_aux_weights_equal_the_baseline_step_exactly():
    c = _tiny_config()
    mesh = sharding.make_mesh(1)
    model, tx, state0 = _state_and_tx(c, mesh)
    rng = np.random.default_rng(0)
    full, plain = _batch(rng), None
    plain = {k: v for k, v in full.items() if not k.endswith("_target")}
    common = dict(model=model, tx=tx, schedule=optim.make_schedule(c, 10), arch="slowfast")
    zero = {"ce": 1.0, "ego": 0.0, "object": 0.0, "hand": 0.0, "object_map": 0.0}
    step_zero = train.make_train_step(mesh, loss_weights=zero, **common)
    step_base = train.make_train_step(mesh, loss_weights={"ce": 1.0}, **common)
    copy = lambda s: jax.tree.map(jnp.copy, s)  # noqa: E731  (steps donate their state)
    a, ma = step_zero(copy(state0), sharding.global_batch(full, mesh), {})
    b, mb = step_base(copy(state0), sharding.global_batch(plain, mesh), {})
    for x, y in zip(
        jax.tree.leaves((a.params, a.batch_stats, a.opt_state)), jax.tree.leaves((b.params, b.batch_stats, b.opt_state))
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(ma["loss"]) == float(mb["loss"])
    # With the weights on, every student head receives gradient.
    step_on = train.make_train_step(
        mesh, loss_weights={"ce": 0.5, "ego": 0.1, "object": 0.5, "hand": 1.0, "object_map": 1.0}, **common
    )
    on, _ = step_on(copy(state0), sharding.global_batch(full, mesh), {})
    head = lambda s: s.params["head"]  # noqa: E731
    for name in ("projections_1", "projections_2"):  # ego, object projections
        assert not np.array_equal(head(on)[name]["kernel"], head(a)[name]["kernel"]), name
    assert not np.array_equal(
        on.params["handobjhead"]["score_projection"]["kernel"], a.params["handobjhead"]["score_projection"]["kernel"]
    )


@pytest.mark.slow
def test_online_teachers_stay_frozen_and_have_no_optimizer_state():
    c = _tiny_config()
    mesh = sharding.make_mesh(1)
    model, tx, state = _state_and_tx(c, mesh)
    ego_cfg = _tiny_config(egoexo=False)
    ego_cfg.model.num_classes = (2,)
    ego_module = models.build(ego_cfg.model)
    ego_vars = train.init_variables(ego_module, ego_cfg, 7)
    obj_module, obj_vars = teacher_loading.load_object_teacher("", depth=18, width=8, num_classes=1000, seed=3)
    online = teachers_lib.OnlineTeachers(
        ego=teachers_lib.EgoTeacher.from_module(ego_module), object=teachers_lib.ObjectTeacher(obj_module, num_frames=4)
    )
    teacher_vars = sharding.replicate({"ego": ego_vars, "object": obj_vars}, mesh)
    before = jax.tree.map(np.array, teacher_vars)
    teacher_fn = functools.partial(teachers_lib.online_teacher_targets, online)
    step = train.make_train_step(
        mesh,
        model=model,
        tx=tx,
        schedule=optim.make_schedule(c, 10),
        loss_weights={"ce": 0.5, "ego": 0.1, "object": 0.5},
        arch="slowfast",
        teacher_fn=teacher_fn,
    )
    rng = np.random.default_rng(1)
    first = None
    for _ in range(5):
        batch = {k: v for k, v in _batch(rng).items() if k in ("pathway0", "pathway1", "label")}
        state, m = step(state, sharding.global_batch(batch, mesh), teacher_vars)
        first = first if first is not None else float(m["loss_ego"])
        assert np.isfinite(float(m["loss_ego"])) and np.isfinite(float(m["loss_object"]))
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(teacher_vars)):
        np.testing.assert_array_equal(x, np.asarray(y))
    # Optimiser state mirrors the student's parameters only.
    n_params = len(jax.tree.leaves(state.params))
    trace = [s for s in jax.tree.leaves(state.opt_state) if np.ndim(s) > 0]
    assert len(trace) == n_params
    assert "ego" not in state.params and "object" not in state.params


@pytest.mark.slow
def test_pretraining_from_offline_files_and_online_teachers_end_to_end(tmp_path):
    paths = demo_sets.write_demo_data(
        tmp_path / "data",
        num_pretrain_videos=24,
        num_finetune_videos=8,
        height=32,
        width=40,
        num_frames=20,
        finetune_frames=20,
    )
    c = _tiny_config()
    c.model.num_classes = (paths.num_pretrain_classes,)
    c.data.update(
        path_to_data_dir=paths.kinetics_dir,
        path_prefix=paths.kinetics_prefix,
        num_classes=paths.num_pretrain_classes,
        num_ensemble_views=1,
        num_spatial_crops=1,
    )
    c.loss.update(ce=0.5, ego=0.1, object=0.5, hand=1.0, object_map=1.0)
    c.teachers.ego.update(source="file", file=paths.ego_scores)
    c.teachers.object.update(source="file", file=paths.object_scores)
    c.teachers.interaction.update(source="file", detections=paths.kinetics_detections)
    c.batch_size = 8
    c.total_steps, c.log_every_steps, c.test_at_end, c.eval_every_epochs = 3, 1, False, 0.0
    config_schema.validate(c)
    offline = str(tmp_path / "offline")
    train_loop.train_and_evaluate(c, offline)
    import json  # pylint: disable=import-outside-toplevel

    rows = [json.loads(line) for line in open(os.path.join(offline, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("loss_ego", "loss_object", "loss_hand", "loss_object_map", "count_interaction"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[0]["count_ego"] == c.batch_size
    assert not [k for r in rows for k in r if k.startswith("teachers/")]  # complete files

    # One training video without an Ego-Score entry: the run stops before its first step, naming
    # the video; with teachers.allow_missing it trains, masks that video out of the ego term and
    # logs the count every epoch.
    scores = teacher_scores.TeacherScores(paths.ego_scores)
    train_keys = [line.split()[0] for line in open(os.path.join(paths.kinetics_dir, "train.csv"))]
    dropped = train_keys[5]
    partial = str(tmp_path / "ego_partial.pkl")
    teacher_scores.write_score_pickle(partial, {k: scores[k] for k in scores.keys() if k != dropped})
    c.teachers.ego.file = partial
    strict = str(tmp_path / "strict")
    with pytest.raises(aux_targets.MissingTeacherEntriesError) as err:
        train_loop.train_and_evaluate(c, strict)
    assert f"1 of {len(train_keys)} training items have no Ego-Score entries" in str(err.value)
    assert repr(dropped) in str(err.value) and "allow_missing" in str(err.value)
    assert not os.path.exists(os.path.join(strict, "checkpoints"))
    assert not os.path.exists(os.path.join(strict, "metrics.jsonl"))
    c.teachers.allow_missing = True
    masked = str(tmp_path / "masked")
    train_loop.train_and_evaluate(c, masked)
    rows = [json.loads(line) for line in open(os.path.join(masked, "metrics.jsonl"))]
    spe = len(train_keys) // c.batch_size
    assert [r["step"] for r in rows if "teachers/missing_ego" in r] == [spe]  # epoch 1 of 3 steps
    assert [r for r in rows if "teachers/missing_ego" in r][0] == {"step": spe, "teachers/missing_ego": 1.0}
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3] and all(np.isfinite(r["loss_ego"]) for r in losses)
    assert min(r["count_ego"] for r in losses) < c.batch_size  # the video was seen and masked
    c.teachers.ego.file, c.teachers.allow_missing = paths.ego_scores, False

    # The same run with the ego and object teachers online (the ego teacher: a 2-way video
    # classifier from a training workdir; the object teacher: a randomly initialised 2D ResNet).
    ego_cfg = _tiny_config(egoexo=False)
    ego_cfg.model.num_classes = (2,)
    ego_cfg.data.update(
        path_to_data_dir=paths.kinetics_dir, path_prefix=paths.kinetics_prefix, num_classes=paths.num_pretrain_classes
    )
    ego_cfg.batch_size, ego_cfg.total_steps, ego_cfg.test_at_end = 8, 1, False
    ego_cfg.data.num_classes = 2
    _write_two_class_lists(paths.kinetics_dir, tmp_path / "ego_lists")
    ego_cfg.data.path_to_data_dir = str(tmp_path / "ego_lists")
    train_loop.train_and_evaluate(ego_cfg, str(tmp_path / "ego_teacher"))
    c.teachers.ego.update(source="online", checkpoint=str(tmp_path / "ego_teacher"))
    c.teachers.object.update(source="online", weights="", depth=18, width=8, num_frames=2)
    config_schema.validate(c)
    online = str(tmp_path / "online")
    train_loop.train_and_evaluate(c, online)
    rows = [json.loads(line) for line in open(os.path.join(online, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss_ego"]) and np.isfinite(r["loss_object"]) for r in rows)


def _write_two_class_lists(src, dst):
    """Kinetics lists of the demo set relabelled ego (1) / exo (0) by the ego teacher file's sign."""
    os.makedirs(dst, exist_ok=True)
    for name in ("train.csv", "val.csv", "test.csv"):
        with open(os.path.join(src, name)) as f, open(os.path.join(dst, name), "w") as g:
            for i, line in enumerate(f):
                g.write(f"{line.split()[0]} {i % 2}\n")
