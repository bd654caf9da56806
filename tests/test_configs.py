"""The recipe files in configs/: every variant loads, validates and builds a model whose outputs
have the right shapes (jax.eval_shape only), key values match the method doc, typos are caught."""
import importlib.util
import os
import subprocess
import sys

import jax
import pytest
from absl import flags
from ml_collections import config_flags

from egoexo_jax import config_schema, models, train
from egoexo_jax.data import kinetics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "pretrain_baseline": ("slowfast_r50", "slow_r50", "slowfast_r101"),
    "pretrain": ("slowfast_r50", "slowfast_r101", "slow_r50", "online", "mvit_v2_s"),
    "finetune_charades_ego": ("slowfast_r50", "slowfast_r101", "slow_r50", "star", "star_r101",
                              "mvit_v2_s"),
    "finetune_epic100": ("slowfast_r50", "slowfast_r101", "star", "star_r101", "mvit_v2_s"),
    "ego_teacher": ("slow_r50", "slowfast_r50"),
}
DEFAULTS = {"pretrain_baseline": "slowfast_r50", "pretrain": "slowfast_r50",
            "finetune_charades_ego": "slowfast_r50", "finetune_epic100": "slowfast_r50",
            "ego_teacher": "slow_r50"}
# What the models cannot build yet (strict xfail: these start failing once the support lands).
MISSING = {}


def load(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(name, variant=None):
    return load(name).get_config(variant)


def _cases():
    for name, variants in VARIANTS.items():
        for v in variants:
            marks = [pytest.mark.xfail(reason=MISSING[name, v], strict=True)] if (name, v) in MISSING else []
            yield pytest.param(name, v, marks=marks, id=f"{name}:{v}")


def expected_outputs(c):
    m, crop = c.model, c.data.train_crop_size
    classes = tuple(m.num_classes)
    out = {"logits": [(1, n) for n in classes] if len(classes) > 1 else (1, classes[0])}
    if m.ego_classes:
        out["ego_logits"] = (1, m.ego_classes)
    if m.object_classes:
        out["object_logits"] = (1, m.object_classes)
    if m.interaction_head:
        t = {"slowfast": m.num_frames // m.alpha, "slow": m.num_frames, "mvit": m.num_frames // 2}[m.arch]
        out["interaction_logits"] = (1, t, crop // 32, crop // 32, 2)
    return out


@pytest.mark.parametrize("name,variant", list(_cases()))
def test_variant_validates_and_builds(name, variant):
    c = config(name, variant)
    config_schema.validate(c)
    assert c.data.num_frames == c.model.num_frames
    assert c.data.arch == c.model.arch
    assert c.batch_size == c.optimizer.reference_batch_size
    model = models.build(train.model_config(c))
    shapes = train.input_shapes(c, 1, c.data.train_crop_size)
    xs = [jax.ShapeDtypeStruct(s, jax.numpy.float32) for s in shapes]
    out, _ = jax.eval_shape(
        lambda xs: model.init_with_output({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                          xs, train=False), xs)
    got = {k: ([tuple(o.shape) for o in out[k]] if isinstance(out[k], (tuple, list)) else tuple(out[k].shape))
           for k in out if k in ("logits", "ego_logits", "object_logits", "interaction_logits")}
    assert got == expected_outputs(c)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_default_and_unknown_variant(name):
    assert config(name).to_dict() == config(name, DEFAULTS[name]).to_dict()
    assert config(name, "").to_dict() == config(name, DEFAULTS[name]).to_dict()
    with pytest.raises(ValueError) as err:
        config(name, "no_such_variant")
    for v in VARIANTS[name]:
        assert v in str(err.value)


def test_pretrain_values():
    base = config("pretrain_baseline")
    assert (base.batch_size, base.optimizer.base_lr, base.num_epochs) == (512, 0.8, 200.0)
    assert (base.schedule.policy, base.schedule.warmup_epochs, base.schedule.warmup_start_lr) == ("cosine", 34.0, 0.08)
    assert (base.model.dropout_rate, base.precise_bn.enabled, base.precise_bn.num_batches) == (0.5, True, 200)
    assert (base.loss.ego, base.loss.object, base.loss.hand) == (0.0, 0.0, 0.0)
    assert (base.data.test_crop_size, base.data.num_ensemble_views, base.data.num_spatial_crops) == (256, 10, 3)
    assert (base.eval_every_epochs, base.checkpoint.every_epochs, base.evaluate.ensemble) == (10.0, 10.0, "sum")
    slow = config("pretrain_baseline", "slow_r50")
    assert (slow.data.num_frames, slow.data.sampling_rate, slow.data.arch) == (8, 8, "slow")
    sf = config("pretrain_baseline")
    assert (sf.data.num_frames, sf.data.sampling_rate, sf.data.alpha) == (32, 2, 4)

    c = config("pretrain")
    l = c.loss
    assert (l.ce, l.ego, l.object, l.hand, l.object_map) == (0.5, 0.1, 0.5, 1.0, 1.0)
    assert (c.model.dropout_rate, c.precise_bn.enabled) == (0.0, False)
    assert (c.model.ego_classes, c.model.object_classes, c.model.interaction_head) == (2, 1000, True)
    assert (c.optimizer.base_lr, c.optimizer.reference_batch_size, c.batch_size) == (0.8, 512, 512)
    assert c.teachers.ego.file == "data/aux_predictions/k400_ego_predicts.pkl"
    assert c.teachers.object.file == "data/aux_predictions/k400_IN_predicts.pkl"
    assert c.teachers.interaction.detections == "data/aux_predictions/k400_handobj_predicts"
    assert c.teachers.interaction.mode == "soft"
    # only the model/heads differ from the baseline's schedule
    for key in ("batch_size", "num_epochs", "optimizer", "schedule", "eval_every_epochs", "checkpoint"):
        assert c[key] == base[key], key

    on = config("pretrain", "online")
    assert (on.teachers.ego.source, on.teachers.object.source) == ("online", "online")
    assert on.teachers.ego.checkpoint and on.teachers.object.weights.endswith(".pth")
    assert (on.teachers.object.depth, on.teachers.object.num_frames) == (50, 8)

    mv = config("pretrain", "mvit_v2_s")
    assert (mv.optimizer.name, mv.optimizer.weight_decay, mv.optimizer.no_decay) == ("adamw", 0.05, "1d")
    assert mv.optimizer.base_lr == pytest.approx(1e-4 * mv.optimizer.reference_batch_size / 16)
    assert (mv.optimizer.grad_clip_norm, mv.num_epochs) == (1.0, 200.0)
    assert (mv.schedule.warmup_epochs, mv.schedule.warmup_start_lr, mv.schedule.cosine_end_lr) == (30.0, 1e-6, 1e-6)
    assert (mv.data.arch, mv.data.num_frames, mv.data.sampling_rate) == ("mvit", 16, 4)
    assert (mv.data.train_crop_size, mv.data.test_crop_size) == (224, 224)
    assert (mv.data.num_spatial_crops, mv.data.num_ensemble_views) == (1, 5)


def test_finetune_values():
    c = config("finetune_charades_ego")
    assert (c.batch_size, c.optimizer.base_lr, c.num_epochs, c.schedule.warmup_epochs) == (64, 0.25, 60.0, 0.0)
    assert (c.loss.multi_label, c.evaluate.ensemble, c.model.dropout_rate) == (True, "max", 0.5)
    assert (c.eval_every_epochs, c.checkpoint.every_epochs, c.init_from) == (2.0, 10.0, "")
    assert c.model.num_classes == (157,) and not c.model.interaction_head
    star = config("finetune_charades_ego", "star")
    assert (star.loss.hand, star.loss.object_map, star.model.interaction_head) == (0.1, 0.1, True)
    assert star.teachers.interaction.source == "file" and star.teachers.interaction.detections
    assert config("finetune_charades_ego", "star_r101").model.depth == 101

    e = config("finetune_epic100")
    assert (e.batch_size, e.optimizer.base_lr, e.num_epochs) == (128, 0.02, 30.0)
    assert e.schedule.policy == "steps_with_relative_lrs"
    assert (tuple(e.schedule.steps), tuple(e.schedule.lrs)) == ((0, 20, 25), (1.0, 0.1, 0.01))
    assert (e.precise_bn.enabled, e.precise_bn.num_batches, e.data.epic_val_random) == (True, 200, False)
    assert (e.eval_every_epochs, e.checkpoint.every_epochs, e.evaluate.ensemble) == (2.0, 5.0, "sum")
    assert e.model.num_classes == (97, 300) and (e.loss.ce, e.loss.multi_label) == (1.0, False)
    es = config("finetune_epic100", "star")
    assert (es.loss.hand, es.loss.object_map, es.precise_bn.enabled) == (3.0, 3.0, False)
    assert es.data.epic_val_random and es.teachers.interaction.source == "file"

    t = config("ego_teacher")
    assert t.model.num_classes == (2,) and t.data.num_classes == 2 and not t.loss.multi_label


def test_ego_teacher_lists(tmp_path):
    header = "id,subject,scene,actions,length,egocentric\n"
    for split in ("train", "test"):
        (tmp_path / f"CharadesEgo_v1_{split}.csv").write_text(
            header + "005BU,A,Kitchen,c092 1.0 2.0,30,No\n005BUEGO,A,Kitchen,,30,Yes\n")
    load("ego_teacher").make_lists(str(tmp_path), str(tmp_path / "lists"))
    videos = kinetics.read_kinetics_list(tmp_path / "lists" / "train.csv", num_classes=2)
    assert [(v.key, v.label) for v in videos] == [("005BU.mp4", 0), ("005BUEGO.mp4", 1)]


def test_config_flags_variant_and_override():
    argv = ["prog", f"--config={REPO}/configs/finetune_epic100.py:star", "--config.batch_size=16"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    assert fv.config.batch_size == 16 and fv.config.loss.hand == 3.0


def test_main_suggests_key_for_typo(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run(
        [sys.executable, "-m", "egoexo_jax.main", "--config=configs/pretrain.py",
         "--config.optimizer.base_rl=1", f"--workdir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "did you mean 'optimizer.base_lr'" in proc.stderr
