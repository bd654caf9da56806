"""Learning-rate schedules (PySlowFast ``lr_policy``) and optimisers (optax).

The LR is a function of the fractional epoch ``e = step / steps_per_epoch``, recomputed every
step as PySlowFast does:

* ``cosine``: ``lr(e) = end + (base - end) * (1 + cos(pi * e / max_epoch)) / 2``.
* ``steps_with_relative_lrs``: ``lr(e) = lrs[i] * base`` with ``i`` the last index where
  ``steps[i] <= e``.
* warmup (``e < warmup_epochs``): linear from ``warmup_start_lr`` to the policy's value *at the
  warmup end*: ``start + e * (lr(W) - start) / W``.

SGD is PyTorch's: ``d = g + wd * p`` (coupled L2, masked), ``buf = m * buf + d``,
Nesterov ``d = d + m * buf``, ``p -= lr * d``. AdamW (MViT) decouples the decay.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from egoexo_jax.models.naming import flax_to_torch_key


def lr_at_epoch(
    epoch,
    optimizer_cfg: ml_collections.ConfigDict,
    schedule_cfg: ml_collections.ConfigDict,
    num_epochs: float,
    base_lr: float | None = None,
):
    """Learning rate at fractional ``epoch`` (python float or jnp scalar)."""
    base = optimizer_cfg.base_lr if base_lr is None else base_lr
    np_ = jnp if isinstance(epoch, jax.Array) else math

    def policy(e):
        if schedule_cfg.policy == "cosine":
            end = schedule_cfg.cosine_end_lr
            return end + (base - end) * 0.5 * (1.0 + np_.cos(math.pi * e / num_epochs))
        if schedule_cfg.policy == "steps_with_relative_lrs":
            rel = schedule_cfg.lrs[0]
            if np_ is math:
                for s, r in zip(schedule_cfg.steps, schedule_cfg.lrs):
                    rel = r if s <= e else rel
                return rel * base
            rel = jnp.asarray(schedule_cfg.lrs[0], jnp.float32)
            for s, r in zip(schedule_cfg.steps, schedule_cfg.lrs):
                rel = jnp.where(s <= e, r, rel)
            return rel * base
        return base  # constant

    warm = float(schedule_cfg.warmup_epochs)
    if warm <= 0:
        return policy(epoch)
    start = schedule_cfg.warmup_start_lr
    warm_lr = start + epoch * (policy(warm) - start) / warm
    if np_ is math:
        return warm_lr if epoch < warm else policy(epoch)
    return jnp.where(epoch < warm, warm_lr, policy(epoch))


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
    """optax schedule ``step -> lr`` from a full experiment config."""

    def schedule(step):
        epoch = jnp.asarray(step, jnp.float32) / steps_per_epoch
        return jnp.asarray(lr_at_epoch(epoch, config.optimizer, config.schedule, config.num_epochs), jnp.float32)

    return schedule


def decay_mask(params, rule: str):
    """Pytree of bools: which parameters get weight decay.

    ``"bn"``: every parameter whose PyTorch name does not contain ``bn`` (PySlowFast's rule: BN
    scale/bias excluded, conv and linear biases included). ``"1d"``: every parameter with more than
    one dimension (MViT recipe: no decay on biases, norms, position embeddings' 1-D parts).
    ``"none"``: decay everything.
    """
    flat = traverse_util.flatten_dict(params)
    if rule == "bn":
        mask = {k: "bn" not in flax_to_torch_key("params", k) for k in flat}
    elif rule == "1d":
        mask = {k: v.ndim > 1 for k, v in flat.items()}
    else:
        mask = {k: True for k in flat}
    return traverse_util.unflatten_dict(mask)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int, params) -> optax.GradientTransformation:
    """The recipe's optimiser, with the LR injected per step from :func:`make_schedule`."""
    o = config.optimizer
    schedule = make_schedule(config, steps_per_epoch)
    mask = decay_mask(params, o.no_decay)
    chain = []
    if o.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if o.name == "sgd":
        if o.weight_decay:
            chain.append(optax.add_decayed_weights(o.weight_decay, mask))
        chain.append(optax.trace(decay=o.momentum, nesterov=o.nesterov))
    elif o.name == "adamw":
        chain.append(optax.scale_by_adam(b1=o.beta1, b2=o.beta2, eps=o.eps))
        if o.weight_decay:
            chain.append(optax.add_decayed_weights(o.weight_decay, mask))
    else:
        raise ValueError(f"config.optimizer.name={o.name!r}; expected 'sgd' or 'adamw'")
    chain.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*chain)
