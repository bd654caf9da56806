"""Running a recipe at another batch size: the global batch from the devices at hand, and the
linear learning-rate scaling rule.

A recipe states the global batch its learning rates were tuned for
(``optimizer.reference_batch_size``, the original run's batch) and how many clips one device of
that run processed (``per_device_batch_size``). With ``batch_from_devices=True`` (what the
launchers in ``launch/`` ask for unless given ``--batch``) the training and evaluation batches
become ``per_device_batch_size`` x the devices of this run (:func:`resolve_batch`).

When the training batch ``B`` differs from the reference batch ``R``, the trainer multiplies
``optimizer.base_lr`` and ``schedule.warmup_start_lr`` by ``B / R`` (the linear scaling rule that
PySlowFast's configs apply by hand; :func:`scaled_learning_rates`), so the warm-up keeps its shape;
``schedule.cosine_end_lr`` is an absolute floor and stays. ``optimizer.scale_lr_with_batch=False``
keeps the recipe's rates as they are.
"""

from __future__ import annotations

import jax
import ml_collections
from absl import logging


def resolve_batch(config: ml_collections.ConfigDict, num_devices: int) -> ml_collections.ConfigDict:
    """``config`` itself, or with ``batch_from_devices`` a copy whose ``batch_size`` and
    ``eval_batch_size`` are ``per_device_batch_size * num_devices``."""
    if not config.batch_from_devices:
        return config
    out = config.copy_and_resolve_references()
    out.batch_size = out.eval_batch_size = int(config.per_device_batch_size) * int(num_devices)
    return out


def lr_scale(config: ml_collections.ConfigDict) -> float:
    """``batch_size / optimizer.reference_batch_size``, or 1 when the rule is switched off."""
    if not config.optimizer.scale_lr_with_batch:
        return 1.0
    return config.batch_size / config.optimizer.reference_batch_size


def scaled_learning_rates(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config the optimiser and schedule are built from: ``config`` itself at the reference
    batch, else a copy with the base and warm-up start LRs scaled by :func:`lr_scale`. Logs (and
    prints, on process 0) one line saying so."""
    scale = lr_scale(config)
    if scale == 1.0:
        return config
    out = config.copy_and_resolve_references()
    out.optimizer.base_lr = config.optimizer.base_lr * scale
    out.schedule.warmup_start_lr = config.schedule.warmup_start_lr * scale
    line = (
        f"linear LR scaling (batch {config.batch_size} vs the recipe's reference batch "
        f"{config.optimizer.reference_batch_size}): base_lr {config.optimizer.base_lr:g} -> "
        f"{out.optimizer.base_lr:g}, warmup_start_lr {config.schedule.warmup_start_lr:g} -> "
        f"{out.schedule.warmup_start_lr:g} (config.optimizer.scale_lr_with_batch=False keeps the "
        "recipe's)"
    )
    logging.info("%s", line)
    if jax.process_index() == 0:
        print(line, flush=True)
    return out
