r"""Fine-tuning on EPIC-KITCHENS-55 (verb 125 + noun 352 classes; docs/method.md#recipes).

The recipe of ``configs/ego-exo/epic-kitchen-55/Ego_Exo_{,star_}SLOWFAST_8x8_R50.yaml``: two
softmax heads (``headepic``) trained with CE(verb) + CE(noun), SGD (Nesterov, wd 1e-4) with base
LR 0.01 at a global batch of 64, LR x1 for epochs 0-20, x0.1 for 20-25, x0.01 for 25-30, no
warm-up, head dropout 0.5, precise BN (200 batches of 8 clips), validation every 2 epochs (one
centre clip and crop), a checkpoint every 5 and the best-validation state kept, then the 10 x 3-view
test at 256 crops with summed softmax scores (verb / noun / action top-1 and top-5).

Command::

    python -m egoexo_jax.main --config=configs/finetune_epic55.py[:variant] \
        --workdir=WORKDIR --config.init_from=CONVERTED_K400_CHECKPOINT

``init_from`` is empty by default: pass the K400 Ego-Exo checkpoint (converted with
``python -m egoexo_jax.convert``, or the workdir of ``configs/pretrain.py``).

Variants: ``slowfast_r50`` (default, Ego-Exo); ``star`` (Ego-Exo*: the Interaction-Map head kept,
3.0 BCE_hand + 3.0 BCE_object_map on EPIC-55 hand-object detections, precise BN off, and
training-style random validation views as the hand-object trainer had); ``slowfast_r101``,
``star_r101`` (the same recipes on Ego-Exo's R101 backbone: depth 101, fusion kernel 5);
``mvit_v2_s`` (MViTv2-S 16x4: AdamW, base LR 4e-4 at batch 64 (1e-4 per 16 clips), weight decay
0.05 without decay on 1-D parameters, 3 warm-up epochs from 1e-6, cosine to 1e-6 over 30 epochs,
clipping at 1.0, 224 crops).

Where this differs from the original on purpose (one line each):

- The official repository has EPIC-55 YAMLs for R50 only; the R101 variants are ours.
- Validation action top-5 ranks (verb, noun) pairs as the EPIC scorer does; the original's
  per-epoch meter counted verb-in-top-5 and noun-in-top-5 (action top-1, the best-checkpoint
  metric, agrees).
- The original has no MViT Ego-Exo student; ``mvit_v2_s`` is our recipe.

Data (``data/epic55/README.md``): the Ego-Exo release's ``EPIC_train_action_labels.pkl`` /
``EPIC_val_action_labels.pkl`` (the temporal-binding-network train/val split; pandas pickles, or
csv copies named with ``--config.data.train_list`` / ``val_list`` / ``test_list``) in
``--config.data.path_to_data_dir`` (default ``data/epic55/annotations``), frames
``{video_id}/frame_XXXXXXXXXX.jpg`` under ``--config.data.path_prefix`` (default
``data/epic55/frames``); Ego-Exo* also needs ``{video_id}.npy`` detection files
(``epic-55_handobj_predicts``) in ``--config.teachers.interaction.detections`` (default
``data/epic55/handobj``). The final test runs on the val split, as the original; with
``--config.evaluate.epic55_s1=EPIC_test_s1_timestamps.csv`` and/or
``--config.evaluate.epic55_s2=EPIC_test_s2_timestamps.csv`` it runs on the seen / unseen test
sets instead (metrics when the lists carry labels, challenge json files always).

Run time (an estimate, not a measurement): the original used one node of 8 GPUs; the 28,472
segments of the EPIC-55 training set, most of them in the train part of the split, give about 400
steps per epoch at batch 64, ~12k steps in all: roughly 6-10 hours for R50 including validation,
precise BN and the 30-view test of the val part, about twice that for R101.

Other batch sizes: ``optimizer.base_lr`` is the LR for ``optimizer.reference_batch_size`` (64)
clips. With another ``--config.batch_size=B`` the trainer scales it by B/64 (and prints it), e.g.
B=16: 0.0025; ``--config.batch_from_devices=True`` (the launchers' default) sets B to 8 clips per
device. BatchNorm statistics stay per 8 clips (``model.bn_group_size``) whatever B is.
"""

import os

from egoexo_jax import recipe
from egoexo_jax.models import mvit_config, presets

common = recipe.load_module(os.path.join(os.path.dirname(__file__), "common.py"))
DEFAULT = "slowfast_r50"


def epic55(model, star=False):
    c = common.finetune_recipe(
        presets.epic55_heads(model, star=star),
        "epic55",
        data_dir="data/epic55/annotations",
        frames_dir="data/epic55/frames",
        sampling_rate=2,  # 32x2 raw frames
        devices=8,
        num_epochs=30.0,
        base_lr=0.01,
        checkpoint_every=5.0,
        ensemble="sum",
    )
    # path_label_separator: DATA.PATH_LABEL_SEPARATOR of the YAML (unused by EPIC lists).
    c.data.update(epic_val_random=star, path_label_separator="\t")
    c.schedule.update(policy="steps_with_relative_lrs", steps=(0, 20, 25), lrs=(1.0, 0.1, 0.01), warmup_epochs=0.0)
    c.precise_bn.update(enabled=not star, num_batches=200)
    if star:
        common.star(c, 3.0, "data/epic55/handobj")
    return c


def mvit_v2_s():
    c = epic55(mvit_config.model_config_from_mvit_config(mvit_config.mvitv2_s_16x4(num_classes=125)))
    common.mvit_clips(c)
    c.precise_bn.enabled = False  # no BatchNorm
    common.mvit_adamw(c, base_lr=4e-4, warmup_epochs=3.0)
    return c


VARIANTS = {
    "slowfast_r50": lambda: epic55(presets.slowfast(50)),
    "slowfast_r101": lambda: epic55(presets.slowfast(101)),
    "star": lambda: epic55(presets.slowfast(50), star=True),
    "star_r101": lambda: epic55(presets.slowfast(101), star=True),
    "mvit_v2_s": mvit_v2_s,
}


def get_config(arg=None):
    return common.variant(VARIANTS, arg, DEFAULT, "configs/finetune_epic55.py")()
