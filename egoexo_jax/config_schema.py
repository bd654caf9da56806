"""The experiment config every recipe in ``configs/`` starts from, and its validation.

A recipe is a Python file with ``get_config(arg=None) -> ml_collections.ConfigDict`` that begins
with :func:`base_config` and changes what its recipe changes. ``main.py`` loads it through
``ml_collections.config_flags`` (``--config=configs/x.py:variant``), applies ``--config.a.b=v``
overrides and calls :func:`validate`. Field meanings are documented inline below; times are in
epochs (as PySlowFast counts them) and converted to steps with the training set's size. Each
leaf's rule lives in :mod:`egoexo_jax.config_rules`; the relations between leaves are checked here.
"""

from __future__ import annotations

import difflib
from typing import Iterable, List, Optional

import ml_collections
from ml_collections import config_dict

from egoexo_jax import config_rules, storage
from egoexo_jax.config_rules import PATH_KEYS, ConfigError, leaves, rule_of  # noqa: F401 (public here too)
from egoexo_jax.data import charades_ego, epic_kitchens
from egoexo_jax.data.config import default_data_config
from egoexo_jax.models import default_model_config


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
        near = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in siblings], n=1, cutoff=0.5)
        match = [f"{parent}.{near[0]}" if parent else near[0]] if near else []
    return match[0] if match else ""


def unknown_key_message(name: str, config: ml_collections.ConfigDict) -> str:
    guess = closest_key(name, all_keys(config))
    hint = f"; did you mean '{guess}'?" if guess else ""
    return f"unknown config key '{name}'{hint}"


def _check_ranges(config: ml_collections.ConfigDict) -> None:
    """Each leaf against its rule, then what a rule of one leaf cannot say: each LR, the epochs'
    order, the training crop inside the smallest scale."""
    config_rules.check_leaves(config)
    for i, rel in enumerate(config.schedule.lrs):
        config_rules.check_range(rel, f"schedule.lrs[{i}]", ">= 0")
    starts = list(config.schedule.steps)
    if any(not isinstance(e, (int, float)) or e < 0 for e in starts) or starts != sorted(starts):
        raise ConfigError(f"config.schedule.steps={tuple(starts)}; expected non-negative epochs in increasing order")
    scales = tuple(config.data.train_jitter_scales)  # (min, max), checked by its leaf rule
    if config.data.train_crop_size > scales[0]:
        raise ConfigError(
            f"config.data.train_crop_size={config.data.train_crop_size} is larger than the "
            f"smallest training scale config.data.train_jitter_scales[0]={scales[0]}; "
            "expected a crop that fits inside the rescaled frame"
        )


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
    from egoexo_jax.models import mvit_checks, mvit_config  # pylint: disable=import-outside-toplevel

    try:
        mcfg = mvit_config.mvit_config_from_model_config(m)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"config.model.mvit is incomplete or malformed ({e}); expected an MViT preset's fields"
        ) from None
    problems = mvit_checks.config_problems(mcfg)
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


def _check_paths(config: ml_collections.ConfigDict) -> None:
    """A path of another URL scheme than gs:// is a one-line error naming its key."""
    for key in PATH_KEYS:
        value = config_rules.lookup(config, key)
        for part in str(value or "").split(",") if key == "evaluate.epic_tail_classes" else [value]:
            if part and part != "best":
                storage.check(str(part), f"config.{key}")
