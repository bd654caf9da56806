r"""Kinetics-400 baseline: supervised pre-training without any Ego-Exo signal.

The plain PySlowFast K400 recipes the Ego-Exo paper compares against (official
``configs/ego-exo/k400/{SLOWFAST,SLOW}_8x8_R50.yaml``; docs/method.md#recipes): SGD (Nesterov, momentum 0.9,
wd 1e-4 except BN affine), base LR 0.8 at a global batch of 512, 34 warm-up epochs from 0.08,
cosine over 200 epochs, head dropout 0.5, precise BN (200 batches), validation and a checkpoint
every 10 epochs, then the 10 x 3-view test at 256 crops with summed softmax scores.

Command::

    python -m egoexo_jax.main --config=configs/pretrain_baseline.py[:variant] --workdir=WORKDIR

Variants: ``slowfast_r50`` (default; SlowFast 8x8 R50, 32 frames at stride 2, alpha 4),
``slow_r50`` (Slow 8x8 R50, 8 frames at stride 8), ``slowfast_r101`` (Ego-Exo's R101 layout).

Where this differs from the original on purpose (one line): the official repository released the
R101 Kinetics baseline as weights only (no YAML); ``slowfast_r101`` is the R50 recipe on Ego-Exo's
R101 backbone (depth 101, fusion kernel 5).

Data (``data/kinetics/README.md``): ``train.csv`` / ``val.csv`` / ``test.csv`` in
``--config.data.path_to_data_dir`` (default ``data/kinetics``) and the videos under
``--config.data.path_prefix`` (default ``data/kinetics/videos``).

Run time (an estimate, not a measurement): the original ran on 8 nodes x 8 GPUs (64 V100-class
GPUs). 200 epochs of ~240k videos at batch 512 are ~94k steps; expect roughly 1-2 days for R50
(video decoding usually dominates) and about twice that for R101.

Other batch sizes: ``optimizer.base_lr`` is the LR for ``optimizer.reference_batch_size`` (512)
clips. With another ``--config.batch_size=B`` the trainer scales the base LR and the warm-up start
LR by B/512 and prints them, e.g. B=64 (one 8-GPU node): 0.1 from 0.01;
``--config.batch_from_devices=True`` (the launchers' default) sets B to 8 clips per device.
BatchNorm statistics stay per 8 clips (``model.bn_group_size``) whatever B is.
"""

import os

from egoexo_jax import recipe
from egoexo_jax.models import presets

common = recipe.load_module(os.path.join(os.path.dirname(__file__), "common.py"))
DEFAULT = "slowfast_r50"
MODELS = {
    "slowfast_r50": lambda: presets.slowfast(50),
    "slow_r50": lambda: presets.slow(50),
    "slowfast_r101": lambda: presets.slowfast(101),
}


def get_config(arg=None):
    c = common.kinetics_recipe(common.variant(MODELS, arg, DEFAULT, "configs/pretrain_baseline.py")())
    c.model.dropout_rate = 0.5
    c.precise_bn.update(enabled=True, num_batches=200)
    return c
