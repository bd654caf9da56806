"""The per-leaf rules of the experiment config: each leaf's type and range, choice, switch, string or
path, and the check of a config's leaves against them (relations between leaves: ``config_schema``)."""

from __future__ import annotations

import math
from typing import List

import ml_collections

from egoexo_jax import ops
from egoexo_jax.cli import UserError
from egoexo_jax.models import DTYPES

MODES = ("train", "evaluate", "demo")
SIGNAL_SOURCES = {
    "ego": ("none", "file", "online"),
    "object": ("none", "file", "online"),
    "interaction": ("none", "file"),
}


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

# Leaves with a fixed set of values (checked by check_leaves; the kernel / precision / remat
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
    "model.rewrites": ops.REWRITE_CHOICES,
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


def check_leaves(config: ml_collections.ConfigDict) -> None:
    """Every leaf that has a rule: its type and range / choice (a leaf without one is left alone)."""
    for key in leaves(config):
        value = lookup(config, key)
        if key in _RANGES:
            check_range(value, key, _RANGES[key])
        elif key in _CHOICES:
            _check_choice(value, _CHOICES[key], key)
        elif key in _BOOLS and not isinstance(value, bool):
            raise ConfigError(f"config.{key}={value!r}; expected True or False")
        elif (key in _STRINGS or key in PATH_KEYS) and not isinstance(value, str):
            raise ConfigError(f"config.{key}={value!r}; expected a string ({rule_of(key)})")
        elif key in _CUSTOM and not _CUSTOM[key][1](value):
            raise ConfigError(f"config.{key}={value!r}; expected {_CUSTOM[key][0]}")


def lookup(config, key: str):
    """The value at dotted ``key`` of ``config`` (None when a part of the path is absent)."""
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


def check_range(value, key: str, rule: str) -> None:
    """A :class:`ConfigError` naming ``key`` when ``value`` breaks its ``_RANGES``-style ``rule``."""
    if not _in_range(value, rule):
        kind = "an integer" if rule.startswith("int ") else "a finite number"
        bound = rule[4:] if rule.startswith("int ") else rule
        bound = f"in {bound}" if bound.startswith("[") else bound
        raise ConfigError(f"config.{key}={value!r}; expected {kind} {bound}")


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
