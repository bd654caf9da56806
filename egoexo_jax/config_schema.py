"""The experiment config every recipe in ``configs/`` starts from, and its validation.

A recipe is a Python file with ``get_config(arg=None) -> ml_collections.ConfigDict`` that begins
with :func:`base_config` and changes what its recipe changes. ``main.py`` loads it through
``ml_collections.config_flags`` (``--config=configs/x.py:variant``), applies ``--config.a.b=v``
overrides and calls :func:`validate`. Field meanings are documented inline below; times are in
epochs (as PySlowFast counts them) and converted to steps with the training set's size.
"""

from __future__ import annotations

import difflib
import math
from typing import Iterable, List, Optional

import ml_collections
from ml_collections import config_dict

from egoexo_jax import ops, storage
from egoexo_jax.cli import UserError
from egoexo_jax.data import charades_ego, epic_kitchens
from egoexo_jax.data.config import default_data_config
from egoexo_jax.models import DTYPES, default_model_config

MODES = ("train", "evaluate", "demo")
SIGNAL_SOURCES = {
    "ego": ("none", "file", "online"),
    "object": ("none", "file", "online"),
    "interaction": ("none", "file"),
}


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by all recipes (SlowFast R50 on Kinetics-400, no distillation)."""
    c = ml_collections.ConfigDict()
    c.mode = "train"  # train | evaluate | demo
    c.seed = 0  # parameter init, dropout and data order
    c.dtype = "float32"  # compute dtype (bfloat16 on TPU/GPU); parameters stay float32
    c.model = default_model_config()
    c.data = default_data_config("kinetics")

    c.batch_size = 64  # global training clips per step (all hosts); PySlowFast TRAIN.BATCH_SIZE x shards
    c.eval_batch_size = 64  # global evaluation views per step
    c.per_device_batch_size = 8  # clips per device in the recipe's original run (TRAIN.BATCH_SIZE / NUM_GPUS)
    c.batch_from_devices = False  # True: both batches = per_device_batch_size x this run's devices
    c.num_epochs = 200.0  # SOLVER.MAX_EPOCH; steps = num_epochs * (train videos // batch_size)
    c.total_steps = 0  # > 0: stop after this many steps (the LR schedule still follows num_epochs)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"  # sgd (PySlowFast: momentum, Nesterov, coupled L2) | adamw (MViT)
    c.optimizer.base_lr = 0.1  # SOLVER.BASE_LR at reference_batch_size
    c.optimizer.reference_batch_size = 64  # batch the base LR was tuned for (linear scaling rule)
    # True: base_lr and schedule.warmup_start_lr are scaled by batch_size / reference_batch_size
    # when the two differ (egoexo_jax.batch_scaling); False: used as they are.
    c.optimizer.scale_lr_with_batch = True
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4  # sgd: coupled L2 added to the gradient; adamw: decoupled
    c.optimizer.no_decay = "bn"  # "bn": names with "bn" (BN affine, PySlowFast) | "1d": every 1-D param
    c.optimizer.beta1 = 0.9
    c.optimizer.beta2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.grad_clip_norm = 0.0  # > 0: clip the global gradient L2 norm (MViT: 1.0)

    c.schedule = ml_collections.ConfigDict()
    c.schedule.policy = "cosine"  # cosine | steps_with_relative_lrs
    c.schedule.warmup_epochs = 0.0  # linear warmup to the policy's value at warmup_epochs
    c.schedule.warmup_start_lr = 0.0
    c.schedule.cosine_end_lr = 0.0  # newer PySlowFast floor (Ego-Exo's version decays to 0)
    c.schedule.steps = (0,)  # steps_with_relative_lrs: epochs where each LR starts
    c.schedule.lrs = (1.0,)  # ... and the LR there relative to base_lr

    c.loss = ml_collections.ConfigDict()
    c.loss.ce = 1.0  # LOSS.CE_LOSS_WEIGHT (task loss)
    c.loss.ego = 0.0  # KD.ALPHA_LIST[0]: Ego-Score KL
    c.loss.object = 0.0  # KD.ALPHA_LIST[1]: Object-Score KL
    c.loss.hand = 0.0  # HAND_LOSS_WEIGHT * HANDOBJ.ALPHA
    c.loss.object_map = 0.0  # OBJ_LOSS_WEIGHT * HANDOBJ.ALPHA
    c.loss.ego_temperature = 1.0
    c.loss.object_temperature = 1.0
    c.loss.pos_weight = 1.0  # HANDOBJ.POS_WEIGHT
    c.loss.multi_label = False  # BCE task loss (Charades-Ego)

    c.teachers = ml_collections.ConfigDict()
    # Each signal: "file" = the official pre-computed files, "online" = a frozen teacher in the step.
    # ego.file: k400_ego_predicts.pkl; ego.checkpoint: a 2-way video classifier (converted dir, .pyth
    # or training workdir); ego.input_*: its input normalisation when it differs from the student's
    # (e.g. a Charades-Ego teacher trained on BGR frames); None = the student's.
    c.teachers.ego = ml_collections.ConfigDict(
        {
            "source": "none",
            "file": "",
            "checkpoint": "",
            "input_mean": config_dict.placeholder(float),
            "input_std": config_dict.placeholder(float),
            "input_bgr": config_dict.placeholder(bool),
        }
    )
    c.teachers.object = ml_collections.ConfigDict(
        {"source": "none", "file": "", "weights": "", "depth": 50, "width": 64, "num_frames": 8}
    )
    # interaction.detections: hand-object detection folder; repeated_frames: "last" (official: a
    # video frame used at several clip positions keeps its boxes at the last one) | "all".
    c.teachers.interaction = ml_collections.ConfigDict(
        {"source": "none", "detections": "", "mode": "soft", "repeated_frames": "last"}
    )
    # False: a run whose training items lack a score entry or detection file stops before the
    # first step (as the official loaders fail); True: mask them out of that term (count logged).
    c.teachers.allow_missing = False

    c.init_from = ""  # converted checkpoint dir, .pyth file or training workdir (fine-tune semantics)
    c.reinit_heads = True  # fine-tune: re-initialise task heads whose name/shape differ

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_epochs = 10.0  # CHECKPOINT_PERIOD (0 = off); also saved at the end and on SIGTERM
    c.checkpoint.every_steps = 0  # > 0: additionally every N steps
    c.checkpoint.keep = 3  # newest checkpoints kept
    c.checkpoint.async_save = True
    # Keep the state with the best periodic validation metric in workdir/checkpoints_best (outside
    # keep-N pruning); best_metric "" = the dataset's (val top1 | mAP | EPIC action_top1).
    c.checkpoint.keep_best = True
    c.checkpoint.best_metric = ""

    c.log_every_steps = 20  # training metrics: mean over the steps since the last write
    c.eval_every_epochs = 10.0  # EVAL_PERIOD; 0 = no periodic validation
    c.eval_split = "val"  # periodic validation split (single view)
    c.test_at_end = True  # multi-view test after training

    c.precise_bn = ml_collections.ConfigDict()
    # After every epoch (and at the end) the BN running statistics become the plain mean of the
    # statistics of min(num_batches, steps per epoch) training batches of model.bn_group_size
    # clips each (PySlowFast BN.NUM_BATCHES_PRECISE per-GPU batches).
    c.precise_bn.enabled = False
    c.precise_bn.num_batches = 200

    c.evaluate = ml_collections.ConfigDict()
    c.evaluate.split = "test"  # split for mode=evaluate
    c.evaluate.ensemble = "sum"  # sum (Kinetics, EPIC softmax) | max (Charades-Ego sigmoid)
    # mode=evaluate: weights (default: newest in workdir, else init_from); "best" = the workdir's
    # best-validation checkpoint (also what test_at_end tests when set to "best").
    c.evaluate.checkpoint = ""
    c.evaluate.epic_tail_classes = ""  # EPIC: tail verb/noun class csv for the tail-class variant
    c.evaluate.epic_unseen_participants = ""  # EPIC: unseen-participant csv
    # EPIC-55: seen (S1) / unseen (S2) test lists (relative to data.path_to_data_dir or absolute);
    # when set, the final test runs on them instead of data.test_list (the val split).
    c.evaluate.epic55_s1 = ""
    c.evaluate.epic55_s2 = ""
    c.evaluate.labels = ""  # class-name list for result tables (kinetics400, epic100_verb ..., a file)

    c.demo = ml_collections.ConfigDict()  # only for mode=demo (see configs/demo.py)
    return c


def all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> List[str]:
    """Dotted names of every leaf (and sub-dict) of a config."""
    keys = []
    for k in config.keys():
        v = config[k]
        name = f"{prefix}{k}"
        keys.append(name)
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(all_keys(v, name + "."))
    return keys


def closest_key(name: str, keys: Iterable[str]) -> str:
    """Best guess for a mistyped dotted key ('' when nothing is close)."""
    keys = list(keys)
    match = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
    if not match:  # compare the last component inside the same parent
        parent, _, leaf = name.rpartition(".")
        siblings = [k for k in keys if k.rpartition(".")[0] == parent]
        leaves = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in siblings], n=1, cutoff=0.5)
        match = [f"{parent}.{leaves[0]}" if parent else leaves[0]] if leaves else []
    return match[0] if match else ""


def unknown_key_message(name: str, config: ml_collections.ConfigDict) -> str:
    guess = closest_key(name, all_keys(config))
    hint = f"; did you mean '{guess}'?" if guess else ""
    return f"unknown config key '{name}'{hint}"


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key, the value and what is expected."""


def _check_choice(value, allowed, key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"config.{key}={value!r}; expected one of {list(allowed)}")


# Numeric fields and their allowed ranges, checked before anything is built (a negative
# learning rate or epoch count must never start a run). "int" = an integer; "> 0", ">= 0": a
# bound; "[0, 1)" / "[0, 1]": an interval.
_RANGES = {
    "batch_size": "int >= 1",
    "eval_batch_size": "int >= 1",
    "per_device_batch_size": "int >= 1",
    "num_epochs": "> 0",
    "total_steps": "int >= 0",
    "optimizer.base_lr": "> 0",
    "optimizer.reference_batch_size": "int >= 1",
    "optimizer.momentum": "[0, 1)",
    "optimizer.weight_decay": ">= 0",
    "optimizer.beta1": "[0, 1)",
    "optimizer.beta2": "[0, 1)",
    "optimizer.eps": "> 0",
    "optimizer.grad_clip_norm": ">= 0",
    "schedule.warmup_epochs": ">= 0",
    "schedule.warmup_start_lr": ">= 0",
    "schedule.cosine_end_lr": ">= 0",
    "loss.ce": ">= 0",
    "loss.ego": ">= 0",
    "loss.object": ">= 0",
    "loss.hand": ">= 0",
    "loss.object_map": ">= 0",
    "loss.ego_temperature": "> 0",
    "loss.object_temperature": "> 0",
    "loss.pos_weight": "> 0",
    "data.train_crop_size": "int >= 1",
    "data.test_crop_size": "int >= 1",
    "data.num_frames": "int >= 1",
    "data.sampling_rate": "int >= 1",
    "data.target_fps": "> 0",
    "data.flip_prob": "[0, 1]",
    "data.num_ensemble_views": "int >= 1",
    "data.num_spatial_crops": "int >= 1",
    "data.max_bad_fraction": "[0, 1]",
    "data.bad_input_allowance": ">= 0",
    "data.max_retries": "int >= 0",
    "model.bn_group_size": "int >= 0",
    "checkpoint.every_epochs": ">= 0",
    "checkpoint.every_steps": "int >= 0",
    "checkpoint.keep": "int >= 1",
    "log_every_steps": "int >= 1",
    "eval_every_epochs": ">= 0",
    "precise_bn.num_batches": "int >= 1",
    "seed": "int [0, 4294967296)",  # numpy / jax seeds are unsigned 32-bit
    "model.dropout_rate": "[0, 1)",  # 1 drops everything: zero gradients
    "model.depth": "int >= 1",
    "model.width_per_group": "int >= 1",
    "model.num_groups": "int >= 1",
    "model.alpha": "int >= 1",
    "model.beta_inv": "int >= 1",
    "model.fusion_conv_channel_ratio": "int >= 1",
    "model.fusion_kernel_size": "int >= 1",
    "model.num_frames": "int >= 1",
    "model.crop_size": "int >= 1",
    "model.ego_classes": "int >= 0",
    "model.object_classes": "int >= 0",
    "model.interaction_conv_dim": "int >= 1",
    "model.interaction_num_convs": "int >= 1",
    "model.bn_momentum": "[0, 1]",
    "model.bn_epsilon": "> 0",
    "model.mvit.depth": "int >= 1",
    "model.mvit.embed_dim": "int >= 1",
    "model.mvit.num_heads": "int >= 1",
    "model.mvit.in_chans": "int >= 1",
    "model.mvit.mlp_ratio": "> 0",
    "model.mvit.droppath_rate": "[0, 1)",
    "model.mvit.dropout_rate": "[0, 1)",
    "model.mvit.layer_scale_init_value": ">= 0",
    "model.mvit.head_init_scale": "> 0",
    "data.num_classes": "int >= 1",
    "data.charades_fps": "> 0",
    "data.alpha": "int >= 1",
    "data.num_workers": "int >= 0",
    "data.num_threads": "int >= 0",
    "data.prefetch": "int >= 0",
    "data.eval_seed": "int [0, 4294967296)",
    "teachers.object.width": "int >= 1",
    "teachers.object.num_frames": "int >= 1",
    "demo.seed": "int [0, 4294967296)",
    "demo.pretrain_videos": "int >= 1",
    "demo.finetune_videos": "int >= 1",
    "demo.height": "int >= 1",
    "demo.width_px": "int >= 1",
    "demo.video_frames": "int >= 1",
    "demo.finetune_video_frames": "int >= 1",
    "demo.width": "int >= 1",
    "demo.num_frames": "int >= 1",
    "demo.sampling_rate": "int >= 1",
    "demo.finetune_sampling_rate": "int >= 1",
    "demo.crop": "int >= 1",
    "demo.bn_group_size": "int >= 0",
    "demo.temporal_views": "int >= 1",
    "demo.spatial_crops": "int >= 1",
    "demo.batch_size": "int >= 1",
    "demo.eval_batch_size": "int >= 1",
    "demo.pretrain_epochs": "> 0",
    "demo.finetune_epochs": "> 0",
    "demo.pretrain_lr": "> 0",
    "demo.finetune_lr": "> 0",
}

# Leaves with a fixed set of values (checked by _check_leaves; the kernel / precision / remat
# choices come from egoexo_jax.ops).
_CHOICES = {
    "mode": MODES,
    "dtype": tuple(DTYPES),
    "eval_split": ("val", "test"),
    "model.arch": ("slowfast", "slow", "mvit"),
    "model.head_act": ("softmax", "sigmoid", "none"),
    "model.dtype": tuple(DTYPES),
    "model.kernels": ops.KERNEL_CHOICES,
    "model.precision": ops.PRECISION_CHOICES,
    "model.remat": ops.REMAT_CHOICES,
    "optimizer.name": ("sgd", "adamw"),
    "optimizer.no_decay": ("bn", "1d", "none"),
    "schedule.policy": ("cosine", "steps_with_relative_lrs", "constant"),
    "evaluate.split": ("val", "test"),
    "evaluate.ensemble": ("sum", "max"),
    "data.dataset": ("kinetics", "charades_ego", "epic100", "epic55"),
    "data.source": ("files", "tfds"),
    "data.arch": ("slowfast", "slow", "mvit"),
    "data.decode_threads": ("AUTO", "FRAME", "SLICE", "NONE"),
    "teachers.ego.source": SIGNAL_SOURCES["ego"],
    "teachers.object.source": SIGNAL_SOURCES["object"],
    "teachers.interaction.source": SIGNAL_SOURCES["interaction"],
    "teachers.interaction.mode": ("soft", "hard"),
    "teachers.interaction.repeated_frames": ("last", "all"),
    "teachers.object.depth": (18, 34, 50, 101, 152),  # torchvision ResNet depths (models.resnet2d)
    "demo.dtype": tuple(DTYPES),
    "demo.pretrain_optimizer": ("sgd", "adamw"),
}

# True / False switches.
_BOOLS = (
    "batch_from_devices",
    "reinit_heads",
    "test_at_end",
    "optimizer.scale_lr_with_batch",
    "optimizer.nesterov",
    "loss.multi_label",
    "teachers.allow_missing",
    "checkpoint.async_save",
    "checkpoint.keep_best",
    "precise_bn.enabled",
    "model.multi_task",
    "model.interaction_head",
    "model.zero_init_final_bn",
    "model.mvit.qkv_bias",
    "model.mvit.cls_embed_on",
    "model.mvit.use_abs_pos",
    "model.mvit.sep_pos_embed",
    "model.mvit.rel_pos_spatial",
    "model.mvit.rel_pos_temporal",
    "model.mvit.rel_pos_zero_init",
    "model.mvit.residual_pooling",
    "model.mvit.dim_mul_in_att",
    "model.mvit.norm_stem",
    "model.mvit.use_mean_pooling",
    "data.epic_val_random",
    "demo.xla_cache",
)

# Free-form strings: any value is accepted here; the value's meaning is checked where it is used.
_STRINGS = {
    "model.head_name": "module name of the task head (decides fine-tune transfer)",
    "checkpoint.best_metric": "a metric name of the validation results ('' = the dataset's)",
    "data.train_list": "file name inside data.path_to_data_dir",
    "data.val_list": "file name inside data.path_to_data_dir",
    "data.test_list": "file name inside data.path_to_data_dir",
    "data.path_label_separator": "Kinetics list separator",
    "data.tfds_name": "TFDS dataset name",
    "data.tfds_train_split": "TFDS split name",
    "data.tfds_val_split": "TFDS split name",
    "data.tfds_test_split": "TFDS split name",
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(value, n: int, low: int) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == n and all(_is_int(v) and v >= low for v in value)


def _norm_values(value, positive: bool) -> bool:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return len(values) in (1, 3) and all(_is_num(v) and (v > 0 if positive else True) for v in values)


def _index_list(value, width: int) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(e, (tuple, list)) and len(e) == width and all(_is_num(x) for x in e) for e in value
    )


# Leaves whose values are tuples or optional: (what is expected, test of a value).
_CUSTOM = {
    "schedule.steps": ("non-negative epochs in increasing order", lambda v: isinstance(v, (tuple, list))),
    "schedule.lrs": ("LRs relative to base_lr, each >= 0", lambda v: isinstance(v, (tuple, list))),
    "data.train_jitter_scales": (
        "(min, max) short sides, positive integers with min <= max",
        lambda v: _ints(v, 2, 1) and v[0] <= v[1],
    ),
    "data.mean": ("a number or 3 numbers (per channel)", lambda v: _norm_values(v, False)),
    "data.std": ("a positive number or 3 positive numbers (per channel)", lambda v: _norm_values(v, True)),
    "data.bgr": ("None (the dataset's order), True or False", lambda v: v is None or isinstance(v, bool)),
    "teachers.ego.input_mean": ("None or a number or 3 numbers", lambda v: v is None or _norm_values(v, False)),
    "teachers.ego.input_std": ("None or a positive number or 3", lambda v: v is None or _norm_values(v, True)),
    "teachers.ego.input_bgr": ("None, True or False", lambda v: v is None or isinstance(v, bool)),
    "model.num_classes": (
        "a non-empty tuple of class counts >= 1 (one per task)",
        lambda v: (
            (_is_int(v) and v >= 1)
            or (isinstance(v, (tuple, list)) and len(v) > 0 and all(_is_int(n) and n >= 1 for n in v))
        ),
    ),
    "model.num_block_temp_kernel": (
        "4 stages of per-pathway block counts >= 1",
        lambda v: (
            isinstance(v, (tuple, list))
            and len(v) == 4
            and all(isinstance(r, (tuple, list)) and len(r) >= 1 and all(_is_int(n) and n >= 1 for n in r) for r in v)
        ),
    ),
    "model.spatial_strides": ("4 stage strides >= 1", lambda v: _ints(v, 4, 1)),
    "model.mvit.patch_kernel": ("3 integers >= 1 (t, h, w)", lambda v: _ints(v, 3, 1)),
    "model.mvit.patch_stride": ("3 integers >= 1 (t, h, w)", lambda v: _ints(v, 3, 1)),
    "model.mvit.patch_padding": ("3 integers >= 0 (t, h, w)", lambda v: _ints(v, 3, 0)),
    "model.mvit.dim_mul": ("(block, multiplier) pairs", lambda v: _index_list(v, 2)),
    "model.mvit.head_mul": ("(block, multiplier) pairs", lambda v: _index_list(v, 2)),
    "model.mvit.pool_q_stride": ("(block, t, h, w) entries", lambda v: _index_list(v, 4)),
    "model.mvit.pool_kv_stride": ("(block, t, h, w) entries", lambda v: _index_list(v, 4)),
    "model.mvit.pool_kv_stride_adaptive": ("None or 3 integers >= 1", lambda v: v is None or _ints(v, 3, 1)),
    "model.mvit.pool_kvq_kernel": ("None or 3 integers >= 1", lambda v: v is None or _ints(v, 3, 1)),
}


def rule_of(key: str) -> str:
    """What :func:`validate` requires of the leaf ``key`` ('' when no rule covers it)."""
    if key in _RANGES:
        return _RANGES[key]
    if key in _CHOICES:
        return f"one of {list(_CHOICES[key])}"
    if key in _BOOLS:
        return "True or False"
    if key in _STRINGS:
        return f"any string: {_STRINGS[key]}"
    if key in PATH_KEYS:
        return "a path (local or gs://)"
    if key in _CUSTOM:
        return _CUSTOM[key][0]
    return ""


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> List[str]:
    """Dotted names of every leaf (not sub-dict) of a config."""
    out = []
    for k in config.keys():
        v = config[k]
        if isinstance(v, ml_collections.ConfigDict):
            out.extend(leaves(v, f"{prefix}{k}."))
        else:
            out.append(f"{prefix}{k}")
    return out


def _check_leaves(config: ml_collections.ConfigDict) -> None:
    """Every leaf that has a rule: its type and range / choice (a leaf without one is left alone)."""
    for key in leaves(config):
        value = _lookup(config, key)
        if key in _RANGES:
            _check_range(value, key, _RANGES[key])
        elif key in _CHOICES:
            _check_choice(value, _CHOICES[key], key)
        elif key in _BOOLS and not isinstance(value, bool):
            raise ConfigError(f"config.{key}={value!r}; expected True or False")
        elif (key in _STRINGS or key in PATH_KEYS) and not isinstance(value, str):
            raise ConfigError(f"config.{key}={value!r}; expected a string ({rule_of(key)})")
        elif key in _CUSTOM and not _CUSTOM[key][1](value):
            raise ConfigError(f"config.{key}={value!r}; expected {_CUSTOM[key][0]}")


def _lookup(config, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node[part]
    return node


def _in_range(value, rule: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if rule.startswith("int "):
        if float(value) != int(value):
            return False
        rule = rule[4:]
    if rule.startswith("["):
        low, high = (float(x) for x in rule[1:-1].split(","))
        return low <= value and (value <= high if rule.endswith("]") else value < high)
    op, bound = rule.split()
    return value >= float(bound) if op == ">=" else value > float(bound)


def _check_range(value, key: str, rule: str) -> None:
    if not _in_range(value, rule):
        kind = "an integer" if rule.startswith("int ") else "a finite number"
        bound = rule[4:] if rule.startswith("int ") else rule
        bound = f"in {bound}" if bound.startswith("[") else bound
        raise ConfigError(f"config.{key}={value!r}; expected {kind} {bound}")


def _check_ranges(config: ml_collections.ConfigDict) -> None:
    _check_leaves(config)
    for i, rel in enumerate(config.schedule.lrs):
        _check_range(rel, f"schedule.lrs[{i}]", ">= 0")
    starts = list(config.schedule.steps)
    if any(not isinstance(e, (int, float)) or e < 0 for e in starts) or starts != sorted(starts):
        raise ConfigError(f"config.schedule.steps={tuple(starts)}; expected non-negative epochs in increasing order")
    scales = tuple(config.data.train_jitter_scales)
    if len(scales) != 2 or not all(isinstance(x, int) and x > 0 for x in scales) or scales[0] > scales[1]:
        raise ConfigError(
            f"config.data.train_jitter_scales={scales}; expected (min, max) short sides, "
            "positive integers with min <= max"
        )
    if config.data.train_crop_size > scales[0]:
        raise ConfigError(
            f"config.data.train_crop_size={config.data.train_crop_size} is larger than the "
            f"smallest training scale config.data.train_jitter_scales[0]={scales[0]}; "
            "expected a crop that fits inside the rescaled frame"
        )
    stds = config.data.std if isinstance(config.data.std, (list, tuple)) else (config.data.std,)
    if any(not isinstance(x, (int, float)) or not x > 0 for x in stds):
        raise ConfigError(f"config.data.std={config.data.std!r}; expected positive numbers")


def check_batch_layout(
    config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1, *, training: bool = True
) -> None:
    """The global batches split evenly over ``num_devices`` devices and ``num_processes`` hosts,
    and the training batch into whole BatchNorm groups of ``model.bn_group_size`` clips (a batch
    smaller than the group is one group). ``training=False``: only ``eval_batch_size``."""
    keys = ("batch_size", "eval_batch_size") if training else ("eval_batch_size",)
    for key in keys:
        batch = int(config[key])
        for count, what in ((num_devices, "devices"), (num_processes, "processes")):
            if batch % count:
                raise ConfigError(
                    f"config.{key}={batch} does not split over the {count} {what}; expected a multiple of {count}"
                )
    group = int(config.model.bn_group_size)
    if training and config.model.arch != "mvit" and 0 < group < config.batch_size and config.batch_size % group:
        raise ConfigError(
            f"config.batch_size={config.batch_size} does not split into BatchNorm groups of "
            f"config.model.bn_group_size={group} clips; expected a multiple of {group}"
        )


def validate(config: ml_collections.ConfigDict, num_devices: Optional[int] = None, num_processes: int = 1) -> None:
    """Raises :class:`ConfigError` (a ``ValueError``) naming the key for values that cannot work:
    each leaf against its rule (:func:`rule_of`), then the relations between leaves (heads = the
    dataset's classes, MViT one crop, pathways, teachers, batch memory, paths).

    With ``num_devices``, also checks that the batches split over the devices, processes and
    BatchNorm groups (:func:`check_batch_layout`).
    """
    _check_ranges(config)
    if len(config.schedule.steps) != len(config.schedule.lrs):
        raise ConfigError(
            f"config.schedule.steps {tuple(config.schedule.steps)} and schedule.lrs "
            f"{tuple(config.schedule.lrs)} must have the same length"
        )
    if (config.evaluate.epic55_s1 or config.evaluate.epic55_s2) and config.data.dataset != "epic55":
        raise ConfigError(
            f"config.evaluate.epic55_s1 / epic55_s2 name EPIC-55 test lists but "
            f"config.data.dataset is {config.data.dataset!r}; expected 'epic55' or empty lists"
        )
    if config.data.arch != config.model.arch and config.model.arch != "mvit":
        raise ConfigError(
            f"config.data.arch={config.data.arch!r} but config.model.arch="
            f"{config.model.arch!r}: the pathways the data packs must match the model"
        )
    if config.model.arch == "slowfast" and config.data.alpha != config.model.alpha:
        raise ConfigError(f"config.data.alpha={config.data.alpha} != config.model.alpha={config.model.alpha}")
    if config.model.arch != "mvit" and config.data.num_frames != config.model.num_frames:
        raise ConfigError(
            f"config.data.num_frames={config.data.num_frames} != config.model.num_frames={config.model.num_frames}"
        )
    needs = {
        "ego": config.loss.ego,
        "object": config.loss.object,
        "interaction": config.loss.hand or config.loss.object_map,
    }
    heads = {
        "ego": config.model.ego_classes,
        "object": config.model.object_classes,
        "interaction": config.model.interaction_head,
    }
    for signal, weight in needs.items():
        source = config.teachers[signal].source
        if weight and source == "none":
            raise ConfigError(
                f"config.loss weight for the {signal} signal is {weight} but config.teachers.{signal}.source is 'none'"
            )
        if weight and not heads[signal]:
            raise ConfigError(
                f"config.loss uses the {signal} signal but the model has no {signal} head "
                f"(config.model.{'interaction_head' if signal == 'interaction' else signal + '_classes'})"
            )
    _check_heads(config)
    _check_model(config)
    _check_batch_memory(config, num_processes)
    _check_paths(config)
    if num_devices is not None and config.mode != "demo":
        check_batch_layout(config, num_devices, num_processes, training=config.mode == "train")


def dataset_classes(data: ml_collections.ConfigDict) -> tuple:
    """Class counts per task the dataset's labels have (Kinetics-format lists: data.num_classes)."""
    if data.dataset == "charades_ego":
        return (charades_ego.NUM_CLASSES,)
    if data.dataset in epic_kitchens.CLASS_COUNTS:
        return tuple(epic_kitchens.CLASS_COUNTS[data.dataset])
    return (int(data.num_classes),)


def _check_heads(config: ml_collections.ConfigDict) -> None:
    """The task heads have the dataset's classes (a mismatch fails inside the loss, or trains on
    labels the head cannot output)."""
    heads = config.model.num_classes
    heads = tuple(heads) if isinstance(heads, (tuple, list)) else (heads,)
    want = dataset_classes(config.data)
    if heads != want:
        source = "config.data.num_classes" if config.data.dataset == "kinetics" else "its label files"
        raise ConfigError(
            f"config.model.num_classes={heads} does not match config.data.dataset={config.data.dataset!r}; "
            f"expected {want} (the classes of {source})"
        )


def _check_model(config: ml_collections.ConfigDict) -> None:
    """Architecture relations: ResNet depths the model builds; MViT blocks, crops and pooling lists."""
    m, data = config.model, config.data
    if m.arch in ("slowfast", "slow") and m.depth not in (18, 50, 101, 152):
        raise ConfigError(f"config.model.depth={m.depth}; expected 18, 50, 101 or 152 for a ResNet")
    if m.arch != "mvit":
        return
    if data.test_crop_size != data.train_crop_size or m.crop_size != data.train_crop_size:
        raise ConfigError(
            f"config.data.test_crop_size={data.test_crop_size}, data.train_crop_size={data.train_crop_size}, "
            f"model.crop_size={m.crop_size}; expected one crop for MViT (its position tables are sized for it)"
        )
    from egoexo_jax.models import mvit_config  # pylint: disable=import-outside-toplevel

    try:
        mcfg = mvit_config.mvit_config_from_model_config(m)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"config.model.mvit is incomplete or malformed ({e}); expected an MViT preset's fields"
        ) from None
    problems = mvit_config.config_problems(mcfg)
    if problems:
        field, what = problems[0]
        key = mvit_config.model_config_key(field)
        raise ConfigError(f"config.{key}={what}")


# Largest batch of float32 clips one process may hold (a larger one exhausts the host's memory
# while it is assembled, before anything fails cleanly).
MAX_BATCH_BYTES = 64 * 2**30


def _check_batch_memory(config: ml_collections.ConfigDict, num_processes: int) -> None:
    data = config.data
    for key, crop in (("batch_size", data.train_crop_size), ("eval_batch_size", data.test_crop_size)):
        per_clip = int(data.num_frames) * int(crop) ** 2 * 3 * 4
        size = int(config[key]) // max(int(num_processes), 1) * per_clip
        if size > MAX_BATCH_BYTES:
            most = MAX_BATCH_BYTES // per_clip * max(int(num_processes), 1)
            raise ConfigError(
                f"config.{key}={config[key]} clips of {data.num_frames} x {crop}^2 need {size / 2**30:.0f} GiB per "
                f"process; expected at most {most} ({MAX_BATCH_BYTES // 2**30} GiB of float32 clips per process)"
            )


# Config keys that hold a path (local or gs://); evaluate.checkpoint may also say "best".
PATH_KEYS = (
    "init_from",
    "evaluate.checkpoint",
    "evaluate.labels",
    "evaluate.epic_tail_classes",  # two paths, "verbs.csv,nouns.csv"
    "evaluate.epic_unseen_participants",
    "evaluate.epic55_s1",
    "evaluate.epic55_s2",
    "data.path_to_data_dir",
    "data.path_prefix",
    "data.bad_input_log",
    "data.tfds_data_dir",
    "teachers.ego.file",
    "teachers.ego.checkpoint",
    "teachers.object.file",
    "teachers.object.weights",
    "teachers.interaction.detections",
    "demo.data_root",
)


def _check_paths(config: ml_collections.ConfigDict) -> None:
    """A path of another URL scheme than gs:// is a one-line error naming its key."""
    for key in PATH_KEYS:
        value = _lookup(config, key)
        for part in str(value or "").split(",") if key == "evaluate.epic_tail_classes" else [value]:
            if part and part != "best":
                storage.check(str(part), f"config.{key}")
