r"""Ego-Exo pre-training on Kinetics-400 (docs/method.md#total-loss, docs/method.md#recipes).

The K400 recipe of ``configs/ego-exo/k400/Ego_Exo_{SLOWFAST,SLOW}_8x8_R50.yaml``: the baseline
recipe (``pretrain_baseline.py``: SGD, LR 0.8 at batch 512, 34 warm-up epochs from 0.08, cosine,
200 epochs) plus the three auxiliary heads and losses

    L = 0.5 CE + 0.1 KL_ego + 0.5 KL_object + 1.0 BCE_hand + 1.0 BCE_object_map

with head dropout 0 and precise BN off (as the hand-object trainer ran it).

Command::

    python -m egoexo_jax.main --config=configs/pretrain.py[:variant] --workdir=WORKDIR

Variants:

- ``slowfast_r50`` (default), ``slowfast_r101``, ``slow_r50``: all signals from the official
  files (below).
- ``online``: SlowFast R50 with the Ego-Score and Object-Score teachers run inside the training
  step instead of read from files (the interaction map still comes from the detection files).
  Set ``--config.teachers.ego.checkpoint`` to a 2-way ego/exo classifier (a training workdir of
  ``configs/ego_teacher.py``, a converted checkpoint directory or a PySlowFast ``.pyth``; default
  ``workdirs/ego_teacher``) and ``--config.teachers.object.weights`` to torchvision's ImageNet
  ResNet-50 ``.pth`` (default ``data/aux_predictions/resnet50-0676ba61.pth``, i.e.
  ``IMAGENET1K_V1``); the object teacher sees 8 frames of each clip.
  ``python -m egoexo_jax.precompute_teachers --config=configs/pretrain.py:online --output=DIR`` runs
  the same two teachers once over ``train.csv`` instead and writes the two score files (official
  format) for the file-based variants.
- ``mvit_v2_s``: an MViTv2-S 16x4 student (16 frames at stride 4, 224 crops, 1 x 5 test views)
  with the Ego-Exo loss, trained with the MViT K400 AdamW recipe (docs/method.md#mvit-recipes): base LR 1e-4
  per 8-GPU node of 16 clips, here for 8 nodes (reference batch 128, base LR 8e-4), weight decay
  0.05 without decay on 1-D parameters, 30 warm-up epochs from 1e-6, cosine to 1e-6 over 200
  epochs, gradient clipping at L2 norm 1.0, head dropout 0.5. Not implemented, so not part of
  this recipe: mixup, cutmix, RandAugment, random erasing, label smoothing, 2 augmented samples per
  clip, random-resized crops (the clips use the 256-320 short-side jitter) and the newer
  PySlowFast's cosine that starts after warm-up (here the cosine spans all 200 epochs, so the
  warm-up ends at 0.95 x base LR). The Ego-Score / Object-Score projections sit on the cls
  feature and the Interaction-Map head on the final (normalised) token grid.

Where this differs from the original on purpose (one line each):

- The official repository released the R101 Kinetics models as weights only (no YAML);
  ``slowfast_r101`` is the R50 recipe on Ego-Exo's R101 backbone (depth 101, fusion kernel 5).
- ``online`` runs teachers inside the step; the original only reads the precomputed files.
- The original has no MViT Ego-Exo student; ``mvit_v2_s`` is our recipe.
- The hand-object trainer kept no best checkpoint; here the best top-1 state is kept too
  (``checkpoint.keep_best``).

Data: Kinetics as in ``data/kinetics/README.md`` (``--config.data.path_to_data_dir``, default
``data/kinetics``; ``--config.data.path_prefix``, default ``data/kinetics/videos``) and the
official teacher outputs as in ``data/aux_predictions/README.md``:
``--config.teachers.ego.file`` (``data/aux_predictions/k400_ego_predicts.pkl``),
``--config.teachers.object.file`` (``data/aux_predictions/k400_IN_predicts.pkl``) and
``--config.teachers.interaction.detections`` (``data/aux_predictions/k400_handobj_predicts``).
Their keys must match the ``train.csv`` paths.

Run time (an estimate, not a measurement): the original ran on 8 nodes x 8 GPUs (64 V100-class
GPUs); ~94k steps of 512 clips, roughly 1-2 days for SlowFast R50 (the extra heads cost ~10%),
about twice that for R101; MViTv2-S 16x4 (64 GFLOPs per view) is in the same range per epoch.

Other batch sizes: ``optimizer.base_lr`` is the LR for ``optimizer.reference_batch_size`` clips
(512; MViT 128). With another ``--config.batch_size=B`` the trainer scales the base LR and the
warm-up start LR by B / reference and prints the rates it uses, e.g. SlowFast on one 8-GPU node,
B=64: base LR 0.8 x 64/512 = 0.1 from 0.01; ``--config.batch_from_devices=True`` (what the
launchers in ``launch/`` pass) sets B to the original's clips per device (8; MViT 2) times the
devices of the run. ``--config.optimizer.scale_lr_with_batch=False`` keeps the recipe's rates.
"""

import os

from egoexo_jax import recipe
from egoexo_jax.models import mvit_config, presets

common = recipe.load_module(os.path.join(os.path.dirname(__file__), "common.py"))
DEFAULT = "slowfast_r50"
AUX = "data/aux_predictions"


def egoexo(model):
    """Ego-Exo heads, loss weights and the official teacher files (docs/method.md#total-loss)."""
    c = common.kinetics_recipe(presets.egoexo_pretrain_heads(model))
    c.loss.update(ce=0.5, ego=0.1, object=0.5, hand=1.0, object_map=1.0)
    c.teachers.ego.update(source="file", file=f"{AUX}/k400_ego_predicts.pkl")
    c.teachers.object.update(source="file", file=f"{AUX}/k400_IN_predicts.pkl")
    c.teachers.interaction.update(source="file", detections=f"{AUX}/k400_handobj_predicts", mode="soft")
    c.precise_bn.enabled = False
    return c


def online():
    c = egoexo(presets.slowfast(50))
    c.teachers.ego.update(source="online", file="", checkpoint="workdirs/ego_teacher")
    c.teachers.object.update(source="online", file="", weights=f"{AUX}/resnet50-0676ba61.pth", depth=50, num_frames=8)
    return c


def mvit_v2_s():
    model = mvit_config.model_config_from_mvit_config(mvit_config.mvitv2_s_16x4(num_classes=400))
    c = egoexo(model)
    c.model.dropout_rate = 0.5  # the MViT recipe's head dropout
    common.mvit_clips(c)
    c.data.update(num_spatial_crops=1, num_ensemble_views=5)
    common.global_batch(c, per_device=2, devices=64)  # 16 clips per 8-GPU node x 8 nodes
    common.mvit_adamw(c, base_lr=8e-4, warmup_epochs=30.0)
    return c


VARIANTS = {
    "slowfast_r50": lambda: egoexo(presets.slowfast(50)),
    "slowfast_r101": lambda: egoexo(presets.slowfast(101)),
    "slow_r50": lambda: egoexo(presets.slow(50)),
    "online": online,
    "mvit_v2_s": mvit_v2_s,
}


def get_config(arg=None):
    return common.variant(VARIANTS, arg, DEFAULT, "configs/pretrain.py")()
