"""The recipe files in configs/: every variant loads, validates and builds a model whose outputs
have the right shapes (jax.eval_shape only), key values match docs/method.md#recipes, typos are caught."""

import importlib.util
import os
import subprocess
import sys

import jax
import pytest
from absl import flags
from ml_collections import config_flags

from egoexo_jax import config_schema, models, train, train_loop_utils
from egoexo_jax.data import kinetics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "pretrain_baseline": ("slowfast_r50", "slow_r50", "slowfast_r101"),
    "pretrain": ("slowfast_r50", "slowfast_r101", "slow_r50", "online", "mvit_v2_s"),
    "finetune_charades_ego": ("slowfast_r50", "slowfast_r101", "slow_r50", "star", "star_r101", "mvit_v2_s"),
    "finetune_epic100": ("slowfast_r50", "slowfast_r101", "star", "star_r101", "mvit_v2_s"),
    "finetune_epic55": ("slowfast_r50", "slowfast_r101", "star", "star_r101", "mvit_v2_s"),
    "ego_teacher": ("slow_r50", "slowfast_r50"),
}
DEFAULTS = {
    "pretrain_baseline": "slowfast_r50",
    "pretrain": "slowfast_r50",
    "finetune_charades_ego": "slowfast_r50",
    "finetune_epic100": "slowfast_r50",
    "finetune_epic55": "slowfast_r50",
    "ego_teacher": "slow_r50",
}
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
        lambda xs: model.init_with_output({"params": jax.random.key(0), "dropout": jax.random.key(1)}, xs, train=False),
        xs,
    )
    got = {
        k: ([tuple(o.shape) for o in out[k]] if isinstance(out[k], (tuple, list)) else tuple(out[k].shape))
        for k in out
        if k in ("logits", "ego_logits", "object_logits", "interaction_logits")
    }
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
    w = c.loss
    assert (w.ce, w.ego, w.object, w.hand, w.object_map) == (0.5, 0.1, 0.5, 1.0, 1.0)
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


# configs/ego-exo/epic-kitchen-55/Ego_Exo_SLOWFAST_8x8_R50.yaml (official repository), as
# (YAML key, config value getter, YAML value); Ego_Exo_star_SLOWFAST_8x8_R50.yaml overrides below.
EPIC55_YAML = (
    ("TRAIN.BATCH_SIZE", lambda c: c.batch_size, 64),
    ("TRAIN.EVAL_PERIOD", lambda c: c.eval_every_epochs, 2),
    ("TRAIN.CHECKPOINT_PERIOD", lambda c: c.checkpoint.every_epochs, 5),
    ("TRAIN.TRAIN_DATA_LIST", lambda c: c.data.train_list, "EPIC_train_action_labels.pkl"),
    ("TRAIN.VAL_DATA_LIST", lambda c: c.data.val_list, "EPIC_val_action_labels.pkl"),
    ("TEST.DATA_LIST", lambda c: c.data.test_list, "EPIC_val_action_labels.pkl"),
    ("TEST.BATCH_SIZE", lambda c: c.eval_batch_size, 64),
    ("DATA.NUM_FRAMES", lambda c: c.data.num_frames, 32),
    ("DATA.SAMPLING_RATE", lambda c: c.data.sampling_rate, 2),
    ("DATA.TRAIN_JITTER_SCALES", lambda c: tuple(c.data.train_jitter_scales), (256, 320)),
    ("DATA.TRAIN_CROP_SIZE", lambda c: c.data.train_crop_size, 224),
    ("DATA.TEST_CROP_SIZE", lambda c: c.data.test_crop_size, 256),
    ("DATA.PATH_LABEL_SEPARATOR", lambda c: c.data.path_label_separator, "\t"),
    ("SLOWFAST.ALPHA", lambda c: (c.model.alpha, c.data.alpha), (4, 4)),
    ("SLOWFAST.BETA_INV", lambda c: c.model.beta_inv, 8),
    ("SLOWFAST.FUSION_CONV_CHANNEL_RATIO", lambda c: c.model.fusion_conv_channel_ratio, 2),
    ("SLOWFAST.FUSION_KERNEL_SZ", lambda c: c.model.fusion_kernel_size, 7),
    ("RESNET.DEPTH", lambda c: c.model.depth, 50),
    ("RESNET.WIDTH_PER_GROUP", lambda c: c.model.width_per_group, 64),
    ("RESNET.NUM_GROUPS", lambda c: c.model.num_groups, 1),
    (
        "RESNET.NUM_BLOCK_TEMP_KERNEL",
        lambda c: tuple(map(tuple, c.model.num_block_temp_kernel)),
        ((3, 3), (4, 4), (6, 6), (3, 3)),
    ),
    ("RESNET.SPATIAL_STRIDES", lambda c: tuple(c.model.spatial_strides), (1, 2, 2, 2)),
    ("BN.USE_PRECISE_STATS", lambda c: c.precise_bn.enabled, True),
    ("BN.NUM_BATCHES_PRECISE", lambda c: c.precise_bn.num_batches, 200),
    ("SOLVER.BASE_LR", lambda c: (c.optimizer.base_lr, c.optimizer.reference_batch_size), (0.01, 64)),
    ("SOLVER.LR_POLICY", lambda c: c.schedule.policy, "steps_with_relative_lrs"),
    ("SOLVER.STEPS", lambda c: tuple(c.schedule.steps), (0, 20, 25)),
    ("SOLVER.LRS", lambda c: tuple(c.schedule.lrs), (1, 0.1, 0.01)),
    ("SOLVER.MAX_EPOCH", lambda c: c.num_epochs, 30),
    ("SOLVER.MOMENTUM", lambda c: c.optimizer.momentum, 0.9),
    ("SOLVER.WEIGHT_DECAY", lambda c: c.optimizer.weight_decay, 1e-4),
    ("SOLVER.OPTIMIZING_METHOD", lambda c: (c.optimizer.name, c.optimizer.nesterov), ("sgd", True)),
    ("MODEL.NUM_CLASSES_LIST", lambda c: tuple(c.model.num_classes), (125, 352)),
    ("MODEL.MULTI_CLASS", lambda c: (c.model.multi_task, c.loss.multi_label), (True, False)),
    ("MODEL.DROPOUT_RATE", lambda c: c.model.dropout_rate, 0.5),
    ("TASK", lambda c: c.model.head_name, "headepic"),
    ("(plain loader) val view", lambda c: c.data.epic_val_random, False),
    ("MODEL_NAME MultiTaskSlowFast", lambda c: (c.model.arch, c.model.interaction_head), ("slowfast", False)),
    (
        "(defaults) test views, ensemble",
        lambda c: (c.data.num_ensemble_views, c.data.num_spatial_crops, c.evaluate.ensemble),
        (10, 3, "sum"),
    ),
    ("(no warm-up)", lambda c: c.schedule.warmup_epochs, 0.0),
)
EPIC55_STAR_YAML = (
    ("BN.USE_PRECISE_STATS", lambda c: c.precise_bn.enabled, False),
    ("TRAIN.DATASET epickitchenhandobj (random val views)", lambda c: c.data.epic_val_random, True),
    ("MODEL_NAME HandObjMultiTaskSlowFastHSlow", lambda c: c.model.interaction_head, True),
    ("HANDOBJ.HEAD_CONV_DIM", lambda c: c.model.interaction_conv_dim, 512),
    ("HANDOBJ.HAND_LOSS_WEIGHT", lambda c: c.loss.hand, 3.0),
    ("HANDOBJ.OBJ_LOSS_WEIGHT", lambda c: c.loss.object_map, 3.0),
    ("HANDOBJ.LOSS_MODE", lambda c: (c.teachers.interaction.source, c.teachers.interaction.mode), ("file", "soft")),
)


def test_epic55_values_match_the_official_yamls():
    c = config("finetune_epic55")
    for key, get, want in EPIC55_YAML:
        assert get(c) == want, key
    assert (c.loss.ce, c.loss.hand, c.loss.object_map, c.data.dataset) == (1.0, 0.0, 0.0, "epic55")
    star = config("finetune_epic55", "star")
    overridden = {key for key, _, _ in EPIC55_STAR_YAML}
    for key, get, want in EPIC55_STAR_YAML + tuple(
        e
        for e in EPIC55_YAML
        if e[0] not in overridden and e[0] not in ("(plain loader) val view", "MODEL_NAME MultiTaskSlowFast")
    ):
        assert get(star) == want, f"star: {key}"
    assert star.teachers.interaction.detections == "data/epic55/handobj"
    assert star.teachers.interaction.repeated_frames == "last" and not star.teachers.allow_missing
    # The R101 variants (no official EPIC-55 YAML): Ego-Exo's R101 backbone, the EPIC-55 recipe.
    for variant in ("slowfast_r101", "star_r101"):
        r101 = config("finetune_epic55", variant)
        assert (r101.model.depth, r101.model.fusion_kernel_size) == (101, 5)
        assert tuple(map(tuple, r101.model.num_block_temp_kernel)) == ((3, 3), (4, 4), (23, 23), (3, 3))
        assert (r101.optimizer.base_lr, r101.batch_size, tuple(r101.model.num_classes)) == (0.01, 64, (125, 352))
    # Best checkpoint by the joint action top-1 (the original's EPIC validation meter).
    assert (c.checkpoint.keep_best, train_loop_utils.best_metric_name(c)) == (True, "action_top1")
    assert train_loop_utils.best_metric_name(config("finetune_charades_ego")) == "mAP"
    assert train_loop_utils.best_metric_name(config("pretrain")) == "top1"


def test_ego_teacher_lists(tmp_path):
    header = "id,subject,scene,actions,length,egocentric\n"
    for split in ("train", "test"):
        (tmp_path / f"CharadesEgo_v1_{split}.csv").write_text(
            header + "005BU,A,Kitchen,c092 1.0 2.0,30,No\n005BUEGO,A,Kitchen,,30,Yes\n"
        )
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
        [
            sys.executable,
            "-m",
            "egoexo_jax.main",
            "--config=configs/pretrain.py",
            "--config.optimizer.base_rl=1",
            f"--workdir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "did you mean 'optimizer.base_lr'" in proc.stderr
