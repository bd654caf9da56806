"""What the recipes in this folder share (loaded by path: ``recipe.load_module``).

- :func:`kinetics_recipe`: the PySlowFast Kinetics-400 recipe of the baseline and the Ego-Exo
  pre-training (SGD, base LR 0.8 at a global batch of 512, 34 warm-up epochs from 0.08, cosine
  over 200 epochs, validation and a checkpoint every 10 epochs, summed softmax test views).
- :func:`finetune_recipe`: the fine-tuning recipes' frame (dataset, heads, SGD with weight decay
  1e-4, head dropout 0.5, validation every 2 epochs, ``init_from`` to be set by the user);
  :func:`star` adds Ego-Exo*'s interaction-map targets.
- :func:`global_batch`: the original run's devices and clips per device, which give the batch
  (training, evaluation, and the reference batch of the linear LR rule).
- :func:`mvit_clips`, :func:`mvit_adamw`: our MViTv2-S 16x4 student and its AdamW recipe.
- :func:`variant`: the entry of a recipe's variant table that ``file.py:variant`` names.
"""

import ml_collections

from egoexo_jax import config_schema
from egoexo_jax.data.config import default_data_config

SGD_WEIGHT_DECAY = 1e-4  # SOLVER.WEIGHT_DECAY of every Ego-Exo / PySlowFast ResNet recipe


def global_batch(c: ml_collections.ConfigDict, *, per_device: int, devices: int) -> None:
    """Batch of a run on ``devices`` devices with ``per_device`` clips each: the training and
    evaluation batch, and the batch the base LR is tuned for."""
    c.per_device_batch_size = per_device
    c.batch_size = c.eval_batch_size = c.optimizer.reference_batch_size = per_device * devices


def sgd(c: ml_collections.ConfigDict, base_lr: float) -> None:
    """PySlowFast's SGD (Nesterov, momentum 0.9, coupled L2 without BN parameters) at ``base_lr``."""
    c.optimizer.update(name="sgd", base_lr=base_lr, weight_decay=SGD_WEIGHT_DECAY)


def student_clips(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict, sampling_rate: int) -> None:
    """The clips ``model`` takes: its pathways, frames, and the frame stride of the recipe."""
    c.data.update(arch=model.arch, alpha=model.alpha, num_frames=model.num_frames, sampling_rate=sampling_rate)


def kinetics_sampling(model: ml_collections.ConfigDict) -> int:
    """Frame stride of the 8x8 recipes: SlowFast 32 frames x 2, Slow 8 frames x 8."""
    return 2 if model.arch == "slowfast" else 8


def kinetics_recipe(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The K400 recipe of ``configs/ego-exo/k400/*_8x8_R50.yaml`` for ``model``."""
    c = config_schema.base_config()
    c.model = model
    c.data.update(path_to_data_dir="data/kinetics", path_prefix="data/kinetics/videos")
    student_clips(c, model, kinetics_sampling(model))
    global_batch(c, per_device=8, devices=64)  # 8 nodes x 8 GPUs
    c.num_epochs = 200.0
    sgd(c, base_lr=0.8)
    c.schedule.update(policy="cosine", warmup_epochs=34.0, warmup_start_lr=0.08, cosine_end_lr=0.0)
    c.eval_every_epochs = 10.0
    c.checkpoint.every_epochs = 10.0
    c.evaluate.ensemble = "sum"
    c.evaluate.labels = "kinetics400"
    return c


def finetune_recipe(
    model: ml_collections.ConfigDict,
    dataset: str,
    *,
    data_dir: str,
    frames_dir: str,
    sampling_rate: int,
    devices: int,
    num_epochs: float,
    base_lr: float,
    checkpoint_every: float,
    ensemble: str,
) -> ml_collections.ConfigDict:
    """A fine-tuning recipe for ``model`` (with its dataset heads) on ``dataset``: 8 clips per
    device on ``devices`` devices, SGD at ``base_lr`` (the schedule is the caller's), head dropout
    0.5, validation every 2 epochs, precise BN off (the caller turns it on)."""
    c = config_schema.base_config()
    c.model = model
    c.data = default_data_config(dataset)
    c.data.update(path_to_data_dir=data_dir, path_prefix=frames_dir)
    student_clips(c, model, sampling_rate)
    global_batch(c, per_device=8, devices=devices)
    c.num_epochs = num_epochs
    sgd(c, base_lr)
    c.model.dropout_rate = 0.5
    c.precise_bn.enabled = False
    c.eval_every_epochs = 2.0
    c.checkpoint.every_epochs = checkpoint_every
    c.evaluate.ensemble = ensemble
    c.init_from = ""  # the converted K400 (Ego-Exo) checkpoint; see the recipe's docstring
    return c


def star(c: ml_collections.ConfigDict, weight: float, detections: str) -> None:
    """Ego-Exo*: the interaction-map losses (hand and object maps, weight ``weight`` each) on the
    dataset's hand-object detections (soft targets)."""
    c.loss.update(hand=weight, object_map=weight)
    c.teachers.interaction.update(source="file", detections=detections, mode="soft")


def mvit_clips(c: ml_collections.ConfigDict) -> None:
    """MViTv2-S 16x4 inputs: 16 frames at stride 4, 224 px training and test crops."""
    c.data.update(arch="mvit", num_frames=16, sampling_rate=4, train_crop_size=224, test_crop_size=224)


def mvit_adamw(c: ml_collections.ConfigDict, base_lr: float, warmup_epochs: float) -> None:
    """The MViT recipe: AdamW at ``base_lr``, weight decay 0.05 without decay on 1-D parameters,
    gradient clipping at L2 norm 1.0, ``warmup_epochs`` from 1e-6, cosine to 1e-6."""
    c.optimizer.update(name="adamw", base_lr=base_lr, weight_decay=0.05, no_decay="1d", grad_clip_norm=1.0)
    c.schedule.update(
        policy="cosine", warmup_epochs=warmup_epochs, warmup_start_lr=1e-6, cosine_end_lr=1e-6, steps=(0,), lrs=(1.0,)
    )


def variant(table: dict, arg, default: str, recipe_file: str):
    """``table[arg or default]``; an unknown name is an error naming ``recipe_file`` and the choices."""
    name = arg or default
    if name not in table:
        raise ValueError(f"unknown variant {name!r} of {recipe_file}; expected one of {sorted(table)}")
    return table[name]
