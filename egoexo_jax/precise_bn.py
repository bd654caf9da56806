"""PySlowFast's precise BN: BatchNorm running statistics recomputed from training clips after
each epoch, as the plain mean over BN groups of each group's own statistics.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from egoexo_jax import sharding
from egoexo_jax.data import train_pipeline
from egoexo_jax.train import folds_input, pathways_of


def make_precise_bn_step(model, arch: str, group_size: int, mesh) -> Callable:
    """Jitted ``(variables, global batch, weights [G]) -> sum_g weights[g] * BN statistics of
    group g``, the groups being the batch's consecutive ``group_size`` clips."""
    probe = model.clone(bn_momentum=1.0)  # running <- this group's statistics (unbiased var)

    @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
    def stats(v, batch, weights):
        def one_group(pathways):
            _, mutated = probe.apply(
                v, pathways, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)}
            )
            return mutated["batch_stats"]

        pathways = [p.reshape((-1, group_size) + p.shape[1:]) for p in pathways_of(batch, arch)]
        per_group = jax.vmap(one_group)(pathways)  # leaves [G, C]
        return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1), per_group)

    return stats


def precise_bn_stats(
    model,
    variables: dict,
    batches,
    arch: str,
    num_groups: int,
    group_size: int,
    mesh,
    stats_fn: Optional[Callable] = None,
) -> dict:
    """PySlowFast's precise BN (fvcore ``update_bn_stats``): running statistics = the plain mean,
    over ``num_groups`` BN groups of ``group_size`` consecutive training clips, of each group's
    mean and unbiased variance (one PySlowFast per-GPU batch = one group).

    Host batches come from ``batches`` (``[B, ...]`` pathways, ``B`` a multiple of the group
    size); each is split into its ``B / group_size`` groups, whose statistics are computed
    independently (``vmap``), so the result depends on the clips and the group size only, not on
    the number of devices; groups beyond ``num_groups`` in the last batch get weight 0.
    ``stats_fn``: a :func:`make_precise_bn_step` to reuse (compiled once per run).
    """
    stats_fn = stats_fn or make_precise_bn_step(model, arch, group_size, mesh)
    total, done = None, 0
    while done < num_groups:
        host = next(batches)
        batch = sharding.global_batch({k: v for k, v in host.items() if k.startswith("pathway")}, mesh)
        groups = int(batch["pathway0"].shape[0]) // group_size
        weights = (np.arange(groups) < num_groups - done).astype(np.float32) / np.float32(num_groups)
        s = stats_fn(variables, batch, jnp.asarray(weights))
        total = s if total is None else jax.tree.map(jnp.add, total, s)
        done += groups
    return total


class PreciseBN:
    """Precise BN after the epochs of one run; the statistics step compiles once per run.

    After the epoch ending at ``step``: ``min(precise_bn.num_batches, steps per epoch)`` groups
    of ``model.bn_group_size`` training clips (the original's per-GPU batches and loader length)
    from a stream of its own (seed + 1) that continues from epoch to epoch, so each epoch sees new
    clips and a resumed run the same ones.
    """

    def __init__(self, config, model, mesh, steps_per_epoch: int):
        self.config, self.model, self.mesh = config, model, mesh
        self.steps_per_epoch = steps_per_epoch
        group = int(config.model.bn_group_size)
        self.group = min(group, config.batch_size) if group > 0 else config.batch_size
        self.num_groups = min(int(config.precise_bn.num_batches), steps_per_epoch)
        self._stats_fn: Optional[Callable] = None

    def __call__(self, state, step: int):
        """``state`` (a :class:`egoexo_jax.train.TrainState`) with the recomputed statistics."""
        if not state.batch_stats:
            return state
        config = self.config
        batches_per_epoch = -(-self.num_groups * self.group // config.batch_size)
        epoch = (step - 1) // self.steps_per_epoch
        batches = train_pipeline.make_train_iterator(
            config.data,
            global_batch_size=config.batch_size,
            seed=config.seed + 1,
            aux_fn=None,
            space_to_depth=folds_input(config),
        )
        position = batches.get_state()
        position["batches"] = epoch * batches_per_epoch
        batches.set_state(position)
        if self._stats_fn is None:
            self._stats_fn = make_precise_bn_step(self.model, config.model.arch, self.group, self.mesh)
        try:
            stats = precise_bn_stats(
                self.model,
                state.variables,
                batches,
                config.model.arch,
                self.num_groups,
                self.group,
                self.mesh,
                stats_fn=self._stats_fn,
            )
        finally:
            batches.close()
        logging.info(
            "precise BN after epoch %d: running statistics = mean of %d groups of %d clips",
            epoch + 1,
            self.num_groups,
            self.group,
        )
        return state.replace(batch_stats=stats)
