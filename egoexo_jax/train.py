"""Train state and the jitted train step.

One batch, end to end: the grain pipeline yields a host batch (``pathway0``, ``pathway1``,
labels, offline teacher targets) -> :func:`egoexo_jax.sharding.global_batch` places it on the
``data`` mesh axis -> :func:`train_step` (one ``jax.jit``): online teachers (frozen) add their
targets -> student forward in ``config.dtype`` -> :func:`egoexo_jax.losses.total` -> gradients ->
optax update -> metrics. Parameters are replicated; BatchNorm statistics are computed in groups
of ``model.bn_group_size`` clips, so results do not depend on the device count.

The loop around the step is :mod:`egoexo_jax.train_loop`; the eval step is in
:mod:`egoexo_jax.evaluate`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from egoexo_jax import losses, models, ops, sharding
from egoexo_jax.checkpoint import pretrained
from egoexo_jax.checkpoint import workdir as ckpt_lib


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data-iterator state.

    ``rng`` is a raw ``uint32[2]`` key; the step's dropout key is ``fold_in(rng, step)``.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
            "rng": self.rng,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(d["step"], d["params"], d["batch_stats"], d["opt_state"], d["rng"])

    @property
    def variables(self) -> dict:
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


def model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The model config with the experiment's compute dtype."""
    m = ml_collections.ConfigDict(config.model.to_dict())
    m.dtype = config.dtype
    if m.arch == "mvit" and "dtype" in m.mvit:
        m.mvit.dtype = config.dtype
    return m


def pathways_of(batch: Dict[str, Any], arch: str) -> list:
    """Model inputs from a batch: ``[pathway0, pathway1]`` for SlowFast, ``[pathway0]`` otherwise."""
    return [batch["pathway0"], batch["pathway1"]] if arch == "slowfast" else [batch["pathway0"]]


def folds_input(config: ml_collections.ConfigDict) -> bool:
    """Whether the run's host pipelines (training, evaluation, precise BN) deliver ``pathway*`` as
    the 2x2 space-to-depth fold ``[B, T, ceil(H/2), ceil(W/2), 12]`` instead of the frames: when
    the ResNet stems run space-to-depth (``model.rewrites`` on with the ``xla`` kernels; never
    MViT), so the fold is a host copy instead of a device transpose, unless an online teacher
    reads the frames inside the train step (the stems then fold on device, with the same result)."""
    m = config.model
    if m.arch not in ("slowfast", "slow"):
        return False
    if not ops.select(m.get("kernels", "auto"), m.get("precision", "auto"), m.get("rewrites", "auto")).space_to_depth:
        return False
    teachers = config.get("teachers")
    return not (teachers and any(teachers[s].get("source") == "online" for s in ("ego", "object") if s in teachers))


def input_shapes(config: ml_collections.ConfigDict, batch: int, crop: int) -> list:
    """Shapes of the pathways the run's steps receive (:func:`folds_input` decides frames or fold)."""
    if config.model.arch == "mvit":
        return [(batch, config.data.num_frames, crop, crop, 3)]
    return models.input_shapes(config.model, batch, crop, folded=folds_input(config))


def init_variables(model, config: ml_collections.ConfigDict, seed: int) -> dict:
    """PySlowFast-style initialisation of the model's variables (jitted).

    The init key uses the "rbg" generator: one fused op per parameter instead of unrolled
    threefry hashes, which cuts the compile time of a full SlowFast init from minutes to seconds
    on CPU (the values differ from threefry's, the distributions do not).
    """
    shapes = input_shapes(config, 1, config.data.train_crop_size)
    dummies = [jnp.zeros(s, jnp.float32) for s in shapes]

    def init(seed_array):
        key = jax.random.key(seed_array, impl="rbg")
        return model.init({"params": key, "dropout": key}, dummies, train=False)

    return flax.core.unfreeze(jax.jit(init)(jnp.asarray(seed, jnp.uint32)))


def create_train_state(config, model, tx, mesh) -> Tuple[TrainState, Optional[pretrained.TransferReport]]:
    """Fresh state, replicated over ``mesh``: PySlowFast init, then ``config.init_from``
    (fine-tune transfer) if set; the report says what the transfer kept (None without one)."""
    state_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    report = None
    if config.init_from:  # read and checked before the (slow) initialisation
        src_cfg, src_vars, what = pretrained.load_pretrained(config.init_from)
        logging.info("init_from: %s (arch %s)", what, src_cfg.arch)
        if src_cfg.arch != config.model.arch:
            raise ckpt_lib.CheckpointMismatchError(
                f"config.init_from={config.init_from} holds a {src_cfg.arch} model but config.model.arch is "
                f"{config.model.arch}; expected a checkpoint of the same architecture"
            )
    variables = init_variables(model, config, config.seed)
    if config.init_from:
        target = {k: jax.tree.map(np.asarray, v) for k, v in variables.items()}
        variables, report = pretrained.transfer(target, src_vars, allow_reinit=config.reinit_heads)
        print(f"init_from {what}:\n{report.summary()}", flush=True)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params), rng=state_rng
    )
    return sharding.replicate(state, mesh), report


def loss_weights(config) -> Dict[str, float]:
    """Python-number loss weights (``losses.total`` skips a zero-weighted term at trace time)."""
    return {k: (bool(v) if k == "multi_label" else float(v)) for k, v in config.loss.items()}


# ----------------------------------------------------------------------------------------------
# Steps.


def _top1(logits, labels, mask=None) -> jax.Array:
    hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if mask is None:
        return jnp.mean(hit)
    return jnp.sum(hit * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def task_accuracy(outputs: Dict[str, Any], batch: Dict[str, Any], multi_label: bool) -> Dict[str, jax.Array]:
    """Training top-1 accuracies (percent) of the task heads (none for multi-label)."""
    logits = outputs["logits"]
    if isinstance(logits, (tuple, list)):
        return {"verb_top1": 100 * _top1(logits[0], batch["verb"]), "noun_top1": 100 * _top1(logits[1], batch["noun"])}
    if multi_label:
        return {}
    return {"top1": 100 * _top1(logits, batch["label"])}


def loss_and_grads(
    state: TrainState, batch: Dict[str, Any], *, model, loss_weights: Dict[str, float], arch: str, remat: str = "none"
):
    """The training loss of ``batch`` at ``state`` and its gradient with respect to the parameters;
    ``remat`` (``model.remat``) picks what the forward keeps for the backward (``ops.remat_policy``).

    Returns ``(grads, terms, new_batch_stats, outputs)``: ``terms`` as :func:`egoexo_jax.losses.total`,
    the BatchNorm running statistics after this batch, the train-mode model outputs.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def forward(variables, pathways):
        return model.apply(variables, pathways, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_rng})

    policy = ops.remat_policy(remat)
    if policy is not None:
        forward = jax.checkpoint(forward, policy=policy)

    def loss_fn(params):
        variables = {"params": params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        outputs, mutated = forward(variables, pathways_of(batch, arch))
        loss, terms = losses.total(outputs, batch, loss_weights)
        return loss, (terms, mutated.get("batch_stats", {}), outputs)

    (_, (terms, new_stats, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return grads, terms, new_stats, outputs


def train_step(
    state: TrainState,
    batch: Dict[str, Any],
    teacher_variables: Any,
    *,
    model,
    tx,
    schedule: Callable,
    loss_weights: Dict[str, float],
    arch: str,
    teacher_fn: Optional[Callable] = None,
    remat: str = "none",
) -> Tuple[TrainState, Dict[str, jax.Array]]:
    """One optimisation step (pure; jitted by :func:`make_train_step`).

    Args:
      state: replicated :class:`TrainState`.
      batch: global batch, ``pathway*`` ``[B, T, H, W, 3] float32`` (or their space-to-depth fold
        ``[B, T, H/2, W/2, 12]``, :func:`folds_input`) split on ``data``, labels and (offline)
        teacher targets/masks.
      teacher_variables: frozen online-teacher variables (not differentiated, not updated).
      teacher_fn: ``(teacher_variables, pathways) -> {ego_target, object_target}`` or None.

    Returns:
      (new state, metrics: every loss term, accuracy, ``lr``, ``grad_norm``, ``bad_inputs``,
      ``padded_clips``).
    """
    if teacher_fn is not None:
        if any(p.shape[-1] != 3 for p in pathways_of(batch, arch)):
            raise ValueError(
                f"online teachers read the frames [B, T, H, W, 3], but the batch holds pathways of shapes "
                f"{[tuple(p.shape) for p in pathways_of(batch, arch)]} (a space-to-depth fold: make the "
                "batches with space_to_depth=train.folds_input(config), which is False with online teachers)"
            )
        batch = {**batch, **jax.lax.stop_gradient(teacher_fn(teacher_variables, pathways_of(batch, arch)))}
    grads, terms, new_stats, outputs = loss_and_grads(
        state, batch, model=model, loss_weights=loss_weights, arch=arch, remat=remat
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(terms)
    metrics.update(task_accuracy(outputs, batch, bool(loss_weights.get("multi_label", False))))
    metrics["lr"] = schedule(state.step)
    metrics["grad_norm"] = optax.global_norm(grads)
    if "bad_inputs" in batch:
        metrics["bad_inputs"] = jnp.sum(batch["bad_inputs"]).astype(jnp.float32)
    if "padded" in batch:  # clips longer than their video (last frame repeated)
        metrics["padded_clips"] = jnp.sum(batch["padded"]).astype(jnp.float32)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state)
    return new_state, metrics


def make_train_step(mesh, **kwargs):
    """:func:`train_step` with ``kwargs`` bound, jitted over ``mesh``: state and teacher variables
    replicated, the batch split on ``data``, the old state donated."""
    step = functools.partial(train_step, **kwargs)
    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=(0,))


def make_config_train_step(config, mesh, *, model, tx, schedule, teacher_fn=None):
    """:func:`make_train_step` with what the run config decides (loss weights, architecture,
    ``model.remat``) read from ``config``: the step the training loop runs."""
    return make_train_step(
        mesh,
        model=model,
        tx=tx,
        schedule=schedule,
        loss_weights=loss_weights(config),
        arch=config.model.arch,
        teacher_fn=teacher_fn,
        remat=config.model.remat,
    )
