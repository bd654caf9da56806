"""Train state, the jitted train / eval steps and the training loop.

One batch, end to end: the grain pipeline yields a host batch (``pathway0``, ``pathway1``,
labels, offline teacher targets) -> :func:`egoexo_jax.sharding.global_batch` places it on the
``data`` mesh axis -> :func:`train_step` (one ``jax.jit``): online teachers (frozen) add their
targets -> student forward in ``config.dtype`` -> :func:`egoexo_jax.losses.total` -> gradients ->
optax update -> metrics. Parameters are replicated; BatchNorm statistics are computed in groups
of ``model.bn_group_size`` clips, so results do not depend on the device count.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import periodic_actions

from egoexo_jax import cli, config_schema
from egoexo_jax import evaluate as eval_lib
from egoexo_jax import losses, models, ops, optim, sharding
from egoexo_jax.checkpoint import config_json, pretrained
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.data import train_pipeline


class NonFiniteLossError(cli.UserError, FloatingPointError):
    """A training step produced a non-finite loss; names the step and the terms."""


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
        return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
                "opt_state": self.opt_state, "rng": self.rng}

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


def input_shapes(config: ml_collections.ConfigDict, batch: int, crop: int) -> list:
    if config.model.arch == "mvit":
        return [(batch, config.data.num_frames, crop, crop, 3)]
    return models.input_shapes(config.model, batch, crop)


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
        return {"verb_top1": 100 * _top1(logits[0], batch["verb"]),
                "noun_top1": 100 * _top1(logits[1], batch["noun"])}
    if multi_label:
        return {}
    return {"top1": 100 * _top1(logits, batch["label"])}


def loss_and_grads(state: TrainState, batch: Dict[str, Any], *, model, loss_weights: Dict[str, float],
                   arch: str, remat: str = "none"):
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


def train_step(state: TrainState, batch: Dict[str, Any], teacher_variables: Any, *, model, tx,
               schedule: Callable, loss_weights: Dict[str, float], arch: str,
               teacher_fn: Optional[Callable] = None, remat: str = "none") -> Tuple[TrainState, Dict[str, jax.Array]]:
    """One optimisation step (pure; jitted by :func:`make_train_step`).

    Args:
      state: replicated :class:`TrainState`.
      batch: global batch, ``pathway*`` ``[B, T, H, W, 3] float32`` split on ``data``, labels and
        (offline) teacher targets/masks.
      teacher_variables: frozen online-teacher variables (not differentiated, not updated).
      teacher_fn: ``(teacher_variables, pathways) -> {ego_target, object_target}`` or None.

    Returns:
      (new state, metrics: every loss term, accuracy, ``lr``, ``grad_norm``, ``bad_inputs``,
      ``padded_clips``).
    """
    if teacher_fn is not None:
        batch = {**batch, **jax.lax.stop_gradient(teacher_fn(teacher_variables, pathways_of(batch, arch)))}
    grads, terms, new_stats, outputs = loss_and_grads(state, batch, model=model, loss_weights=loss_weights,
                                                      arch=arch, remat=remat)
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


def eval_step(variables: dict, batch: Dict[str, Any], *, model, arch: str) -> Dict[str, Any]:
    """Test-time outputs of one batch of views: ``probs`` (activation per position, then mean;
    a tuple for multi-task heads) and the view bookkeeping fields passed through (labels come from
    the split's index, ``evaluate.video_labels``)."""
    outputs = model.apply(variables, pathways_of(batch, arch), train=False)
    out = {"probs": outputs["probs"]}
    for k in ("video_index", "view_index", "mask"):
        if k in batch:
            out[k] = batch[k]
    return out


def make_train_step(mesh, **kwargs):
    step = functools.partial(train_step, **kwargs)
    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=(0,))


def make_eval_step(mesh, **kwargs):
    step = functools.partial(eval_step, **kwargs)
    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data), out_shardings=rep)


def make_precise_bn_step(model, arch: str, group_size: int, mesh) -> Callable:
    """Jitted ``(variables, global batch, weights [G]) -> sum_g weights[g] * BN statistics of
    group g``, the groups being the batch's consecutive ``group_size`` clips."""
    probe = model.clone(bn_momentum=1.0)  # running <- this group's statistics (unbiased var)

    @functools.partial(jax.jit, out_shardings=sharding.replicated(mesh))
    def stats(v, batch, weights):
        def one_group(pathways):
            _, mutated = probe.apply(v, pathways, train=True, mutable=["batch_stats"],
                                     rngs={"dropout": jax.random.PRNGKey(0)})
            return mutated["batch_stats"]
        pathways = [p.reshape((-1, group_size) + p.shape[1:]) for p in pathways_of(batch, arch)]
        per_group = jax.vmap(one_group)(pathways)  # leaves [G, C]
        return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1), per_group)

    return stats


def precise_bn_stats(model, variables: dict, batches, arch: str, num_groups: int, group_size: int,
                     mesh, stats_fn: Optional[Callable] = None) -> dict:
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


# ----------------------------------------------------------------------------------------------
# Setting up a run.


@dataclasses.dataclass
class Run:
    """What the loop needs, built once from the config."""
    config: ml_collections.ConfigDict
    workdir: str
    mesh: Any
    model: Any
    tx: Any
    schedule: Callable
    steps_per_epoch: int
    total_steps: int
    train_iter: Any
    teacher_fn: Optional[Callable]
    teacher_variables: Any
    init_report: Optional[pretrained.TransferReport] = None
    teacher_missing: Dict[str, int] = dataclasses.field(default_factory=dict)


def loss_weights(config) -> Dict[str, float]:
    """Python-number loss weights (``losses.total`` skips a zero-weighted term at trace time)."""
    return {k: (bool(v) if k == "multi_label" else float(v)) for k, v in config.loss.items()}


def build_teachers(config, model_cfg) -> Tuple[Optional[Callable], Any]:
    """Online teachers of the config: ``(teacher_fn, teacher_variables)``; ``(None, {})`` if none."""
    online = [s for s in ("ego", "object") if config.teachers[s].source == "online"]
    if not online:
        return None, {}
    from egoexo_jax import teacher_loading  # pylint: disable=import-outside-toplevel
    from egoexo_jax.models.teachers import TeacherError  # pylint: disable=import-outside-toplevel
    try:
        return teacher_loading.from_config(config, model_cfg)
    except TeacherError as e:  # a teacher checkpoint or setting the user must change
        raise config_schema.ConfigError(str(e)) from e


def offline_aux_fn(config, split: str = "train"):
    """The grain ``aux_fn`` adding offline teacher targets (None if every signal is online/off)."""
    if all(config.teachers[s].source != "file" for s in ("ego", "object", "interaction")):
        return None
    from egoexo_jax import offline_teachers  # pylint: disable=import-outside-toplevel
    return offline_teachers.from_config(config.teachers, config.data, config.model)


def check_teacher_files(config, aux_fn) -> Dict[str, int]:
    """Before the first step: training items without an offline teacher entry, per signal.

    Raises :class:`~egoexo_jax.data.aux_targets.MissingTeacherEntriesError` naming how many and
    the first keys unless ``config.teachers.allow_missing`` (then those items are masked out of
    that term and the counts are returned, to be logged every epoch). A TFDS source cannot list
    its keys cheaply: there the ``aux_fn`` checks each sample as it is read (same rule).
    """
    if aux_fn is None:
        return {}
    from egoexo_jax.data import aux_targets  # pylint: disable=import-outside-toplevel
    from egoexo_jax.data.sources import build_source  # pylint: disable=import-outside-toplevel
    ids = build_source(config.data, "train").ids()
    if ids is None:
        logging.info("teacher files: the %s source cannot list its keys; missing entries are "
                     "checked per sample", config.data.source)
        return {}
    missing = aux_targets.missing_entries(aux_fn, config.data.dataset, ids)
    counts = {signal: len(keys) for signal, keys in missing.items()}
    if any(counts.values()):
        message = aux_targets.missing_entries_message(aux_fn, missing, len(ids))
        if not config.teachers.allow_missing:
            raise aux_targets.MissingTeacherEntriesError(
                f"{message}. The official loaders fail on such items; fix the files, or set "
                f"config.teachers.allow_missing=True to mask these items out of those terms")
        logging.warning("teacher files (allow_missing: masked out of those terms): %s", message)
    return counts


def _log_teacher_missing(run: "Run", logger, step: int) -> None:
    """Every epoch with ``teachers.allow_missing``: how many training items lack each signal."""
    counts = {f"teachers/missing_{k}": float(v) for k, v in run.teacher_missing.items() if v}
    if counts:
        logging.warning("epoch %d: training items masked for missing teacher entries: %s",
                        step // run.steps_per_epoch, counts)
        logger.write(step, counts)


def best_metric_name(config) -> str:
    """The validation metric the best checkpoint follows: ``checkpoint.best_metric``, else the
    one the original's validation meter ranks epochs by (Charades-Ego mAP, EPIC action top-1 =
    verb and noun both top-1, top-1 otherwise)."""
    if config.checkpoint.best_metric:
        return str(config.checkpoint.best_metric)
    return {"charades_ego": "mAP", "epic100": "action_top1",
            "epic55": "action_top1"}.get(config.data.dataset, "top1")


class _BestTracker:
    """The best periodic validation value so far; an evaluation is a new best when its value is
    strictly higher than the previous best, starting from 0 (PySlowFast's ``ValMeter``)."""

    def __init__(self, metric: str, state: Optional[dict] = None):
        self.metric = metric
        self.value = float(state["value"]) if state else 0.0
        self.step = int(state["step"]) if state else None
        self._warned = False

    def update(self, step: int, values: Dict[str, float]) -> bool:
        if self.metric not in values:
            if not self._warned:
                logging.warning("best checkpoint: validation reported no %r (got %s); none kept",
                                self.metric, sorted(values))
                self._warned = True
            return False
        value = float(values[self.metric])
        if not value > self.value:
            return False
        self.value, self.step = value, step
        return True

    def state(self) -> Optional[dict]:
        if self.step is None:
            return None
        return {"metric": self.metric, "value": self.value, "step": self.step}


def create_train_state(config, model, tx, mesh, *, workdir_hint: str = "") -> Tuple[TrainState, Optional[pretrained.TransferReport]]:
    """Fresh state: PySlowFast init, then ``config.init_from`` (fine-tune transfer) if set."""
    state_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    report = None
    if config.init_from:  # read and checked before the (slow) initialisation
        src_cfg, src_vars, what = pretrained.load_pretrained(config.init_from)
        logging.info("init_from: %s (arch %s)", what, src_cfg.arch)
        if src_cfg.arch != config.model.arch:
            raise ckpt_lib.CheckpointMismatchError(
                f"config.init_from={config.init_from} holds a {src_cfg.arch} model but config.model.arch is "
                f"{config.model.arch}; expected a checkpoint of the same architecture")
    variables = init_variables(model, config, config.seed)
    if config.init_from:
        target = {k: jax.tree.map(np.asarray, v) for k, v in variables.items()}
        variables, report = pretrained.transfer(target, src_vars, allow_reinit=config.reinit_heads)
        print(f"init_from {what}:\n{report.summary()}", flush=True)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                       opt_state=tx.init(params), rng=state_rng)
    return sharding.replicate(state, mesh), report


def steps_per_epoch_of(num_items: int, batch_size: int, where: str) -> int:
    n = num_items // batch_size
    if n <= 0:
        raise config_schema.ConfigError(
            f"{where}: {num_items} training videos are fewer than config.batch_size={batch_size}; expected "
            "at least one batch")
    return n


# ----------------------------------------------------------------------------------------------
# The loop.


class _Preemption:
    """SIGTERM -> save a checkpoint at the next step and stop with :class:`cli.Preempted`
    (the previous handler is restored on exit)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum, frame):  # pylint: disable=unused-argument
        logging.warning("SIGTERM: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def any_host(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        flags = multihost_utils.process_allgather(np.asarray([self.requested], np.int32))
        return bool(np.any(flags))


class _Accumulator:
    """Host-side running sums of step metrics between two log writes, and the count of padded
    clips in the current epoch (saved in checkpoints)."""

    def __init__(self, state: Optional[dict] = None):
        state = state or {}
        self.sums: Dict[str, float] = dict(state.get("sums", {}))
        self.count: int = int(state.get("count", 0))
        self.epoch_padded: float = float(state.get("epoch_padded", 0.0))

    def add(self, metrics: Dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        self.epoch_padded += float(metrics.get("padded_clips", 0.0))

    def pop_epoch(self) -> Dict[str, float]:
        """``{"padded_clips_epoch": n}``: training clips of the epoch that ran past their video."""
        n, self.epoch_padded = self.epoch_padded, 0.0
        return {"padded_clips_epoch": n}

    def pop_means(self) -> Dict[str, float]:
        means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return means

    def state(self) -> dict:
        return {"sums": self.sums, "count": self.count, "epoch_padded": self.epoch_padded}


def _check_finite(step: int, metrics: Dict[str, np.ndarray]) -> None:
    bad = sorted(k for k, v in metrics.items() if k.startswith(("loss", "weighted_", "grad_norm"))
                 and not np.all(np.isfinite(v)))
    if bad:
        values = ", ".join(f"{k}={float(metrics[k])}" for k in bad)
        raise NonFiniteLossError(f"non-finite training loss at step {step}: {values}; the newest "
                                 f"checkpoint on disk is from before this step; expected finite losses "
                                 f"(lower config.optimizer.base_lr, or check the inputs)")


def _every(step: int, period_steps: int) -> bool:
    return period_steps > 0 and step % period_steps == 0


def setup(config, workdir: str, mesh=None) -> Run:
    mesh = mesh if mesh is not None else sharding.make_mesh()
    config_schema.check_batch_layout(config, mesh.devices.size, jax.process_count())
    model_cfg = model_config(config)
    model = models.build(model_cfg)
    aux_fn = offline_aux_fn(config)
    teacher_missing = check_teacher_files(config, aux_fn)
    train_iter = train_pipeline.make_train_iterator(
        config.data, global_batch_size=config.batch_size, seed=config.seed,
        bad_input_log=os.path.join(workdir, "bad_inputs.txt"), aux_fn=aux_fn)
    spe = steps_per_epoch_of(train_iter.get_state()["num_items"], config.batch_size,
                             f"config.data ({config.data.dataset} train list)")
    total = int(config.total_steps) if config.total_steps > 0 else int(math.ceil(config.num_epochs * spe))
    schedule = optim.make_schedule(config, spe)
    abstract_params = jax.eval_shape(
        lambda: init_variables(model, config, 0))["params"]
    tx = optim.make_optimizer(config, spe, abstract_params)
    teacher_fn, teacher_vars = build_teachers(config, model_cfg)
    return Run(config, workdir, mesh, model, tx, schedule, spe, total, train_iter, teacher_fn,
               sharding.replicate(teacher_vars, mesh), teacher_missing=teacher_missing)


def _meta(run: Run, acc: _Accumulator, best: Optional[_BestTracker] = None) -> dict:
    meta = {"data_iterator": run.train_iter.get_state(), "metrics_accumulator": acc.state(),
            "model_config": json.loads(config_json.model_config_to_json(model_config(run.config))),
            "steps_per_epoch": run.steps_per_epoch, "total_steps": run.total_steps}
    if best is not None and best.state() is not None:
        meta["best"] = best.state()
    return meta


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh=None,
                       stop_after: Optional[int] = None) -> Dict[str, float]:
    """Trains (resuming from ``workdir`` when it has a checkpoint), evaluates, returns the final
    test metrics (or the last validation metrics when ``test_at_end`` is off).

    ``stop_after``: leave the loop after that many steps of this call (tests).

    Raises:
      cli.Preempted: SIGTERM arrived; a checkpoint of the current step was saved first.
    """
    os.makedirs(workdir, exist_ok=True)
    run = setup(config, workdir, mesh)
    from egoexo_jax import metric_log  # pylint: disable=import-outside-toplevel
    logger = metric_log.MetricLogger(workdir)
    checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.checkpoint.keep,
                                         async_save=config.checkpoint.async_save)
    best_ckpts = ckpt_lib.BestCheckpoints(workdir) if config.checkpoint.keep_best else None
    try:
        state, acc, run.init_report, best_state = _start(config, run, checkpointer, logger, best_ckpts)
    except BaseException:
        checkpointer.close()
        if best_ckpts is not None:
            best_ckpts.close()
        run.train_iter.close()
        raise
    best = _BestTracker(best_metric_name(config), best_state)
    write_config(config, workdir)  # only now: the run has started cleanly

    p_train = make_train_step(run.mesh, model=run.model, tx=run.tx, schedule=run.schedule,
                              loss_weights=loss_weights(config), arch=config.model.arch,
                              teacher_fn=run.teacher_fn, remat=config.model.remat)
    start = int(jax.device_get(state.step))
    ckpt_every = max(int(round(config.checkpoint.every_epochs * run.steps_per_epoch)), 0) \
        if config.checkpoint.every_epochs > 0 else 0
    eval_every = max(int(round(config.eval_every_epochs * run.steps_per_epoch)), 1) \
        if config.eval_every_epochs > 0 else 0
    report_progress = periodic_actions.ReportProgress(num_train_steps=run.total_steps,
                                                      writer=logger.writer, every_steps=config.log_every_steps)
    if jax.process_index() == 0:
        print(f"training {run.total_steps} steps ({run.steps_per_epoch} per epoch, global batch "
              f"{config.batch_size}, {jax.device_count()} devices) from step {start}", flush=True)

    def save(step: int):
        checkpointer.save(step, state.as_dict(), _meta(run, acc, best))

    def save_best(step: int):
        checkpointer.wait()  # older bests stay until a periodic checkpoint covers the new one
        best_ckpts.prune(checkpointer.latest_step())
        best_ckpts.save(step, state.as_dict(), _meta(run, acc, best))
        logging.info("best %s %.4f at step %d", best.metric, best.value, step)

    last_eval: Dict[str, float] = {}
    pending = None
    step = start
    end = run.total_steps if stop_after is None else min(run.total_steps, start + stop_after)
    with _Preemption() as preempt:
        try:
            while step < end:
                host_batch = next(run.train_iter)
                batch = sharding.global_batch(host_batch, run.mesh)
                state, metrics = p_train(state, batch, run.teacher_variables)
                if pending is not None:  # fetch the previous step's metrics (one-step lag)
                    _consume(pending, acc)
                step += 1
                pending = (step, metrics)
                report_progress(step)
                epoch_end = _every(step, run.steps_per_epoch)
                boundary = (step == end or epoch_end or _every(step, config.log_every_steps)
                            or _every(step, ckpt_every) or _every(step, config.checkpoint.every_steps)
                            or _every(step, eval_every))
                stop = preempt.requested if jax.process_count() == 1 else (
                    _every(step, config.log_every_steps) and preempt.any_host())
                if not (boundary or stop):
                    continue
                _consume(pending, acc)
                pending = None
                scalars = acc.pop_means() if _every(step, config.log_every_steps) or step == end else {}
                if epoch_end:
                    scalars.update(_epoch_summary(step // run.steps_per_epoch, acc, run, config))
                if scalars:
                    logger.write(step, scalars)
                if config.precise_bn.enabled and (epoch_end or step == run.total_steps):
                    state = _precise_bn(run, state, step)
                if epoch_end:
                    _log_teacher_missing(run, logger, step)
                if _every(step, eval_every) or (eval_every and step == run.total_steps):
                    last_eval = eval_lib.evaluate_split(config, run, state.variables, config.eval_split, step, logger)
                    if best_ckpts is not None and best.update(step, last_eval):
                        save_best(step)
                if (_every(step, ckpt_every) or _every(step, config.checkpoint.every_steps)
                        or step == run.total_steps or stop):
                    save(step)
                if stop:
                    checkpointer.wait()
                    if jax.process_count() > 1:  # every process exits only once the save is complete
                        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
                        multihost_utils.sync_global_devices("egoexo_preempted")
                    logging.warning("stopped after SIGTERM at step %d (checkpoint saved)", step)
                    raise cli.Preempted(f"SIGTERM at step {step} of {run.total_steps}; checkpoint saved in "
                                        f"{checkpointer.directory}/{step}")
            if pending is not None:
                _consume(pending, acc)
            if step >= run.total_steps:
                checkpointer.wait()
                if best_ckpts is not None:
                    best_ckpts.prune(checkpointer.latest_step())
                if config.test_at_end:
                    last_eval = eval_lib.evaluate_final(config, run, _test_variables(run, state),
                                                        "test", step, logger)
            else:
                save(step)
            return last_eval
        finally:
            checkpointer.close()
            if best_ckpts is not None:
                best_ckpts.close()
            run.train_iter.close()
            logger.flush()


def _start(config, run: Run, checkpointer: ckpt_lib.Checkpointer, logger,
           best_ckpts: Optional[ckpt_lib.BestCheckpoints] = None):
    """``(state, metric accumulator, init report, best-tracker state)``: the newest readable
    checkpoint that fits the config (:func:`check_resumable`), else a fresh state.
    ``metrics.jsonl`` keeps only the lines up to the restored step (none without a checkpoint),
    and best-validation states saved after it are dropped (the run recomputes them), so an
    interrupted run leaves no duplicate steps."""
    resumed = checkpointer.restore_newest(_abstract_state(config, run)[0],
                                          functools.partial(check_resumable, config, run))
    latest = 0 if resumed is None else resumed[0]
    logger.truncate_after(latest)
    if best_ckpts is not None:
        best_ckpts.discard_after(latest)
    if resumed is None:
        state, report = create_train_state(config, run.model, run.tx, run.mesh)
        return state, _Accumulator(), report, None
    _, restored, meta = resumed
    run.train_iter.set_state(meta["data_iterator"])
    logging.info("resumed from %s/%d", checkpointer.directory, latest)
    print(f"resumed from step {latest}", flush=True)
    return TrainState.from_dict(restored), _Accumulator(meta.get("metrics_accumulator")), None, meta.get("best")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """``workdir/config.json`` (process 0), written atomically."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(path + ".tmp", path)


def _first_difference(saved: Any, current: Any, prefix: str = "") -> Optional[str]:
    """Dotted name of the first key whose value differs between two JSON-like dicts."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in list(current) + [k for k in saved if k not in current]:
            diff = _first_difference(saved.get(key, "<absent>"), current.get(key, "<absent>"), f"{prefix}{key}.")
            if diff is not None:
                return diff
        return None
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  JSON has no tuples
    return None if norm(saved) == norm(current) else prefix[:-1]


def check_resumable(config: ml_collections.ConfigDict, run: Run, step: int, meta: Dict[str, Any]) -> None:
    """Raises :class:`checkpoint.CheckpointMismatchError` naming the first config key that makes
    checkpoint ``step`` unusable for this run: the model (architecture and heads; the compute
    dtype may change), or the data order (seed, global batch, training list)."""
    where = os.path.join(run.workdir, ckpt_lib.CHECKPOINT_DIR, str(step))
    hint = "expected the value the run started with (or a new --workdir)"
    if meta.get("model_config") is not None:
        saved_model = json.loads(json.dumps(meta["model_config"]))  # a copy: dtype is dropped below
        current = json.loads(config_json.model_config_to_json(model_config(config)))
        for m in (saved_model, current):
            m.pop("dtype", None)
            m.get("mvit", {}).pop("dtype", None)
        key = _first_difference(saved_model, current)
        if key is not None:
            def at(tree):
                return functools.reduce(lambda d, k: d.get(k, "<absent>") if isinstance(d, dict) else d,
                                        key.split("."), tree)
            raise ckpt_lib.CheckpointMismatchError(
                f"config.model.{key}={at(current)!r} but checkpoint {where} was saved with "
                f"{at(saved_model)!r}; {hint}")
    saved_iter, now = meta.get("data_iterator", {}), run.train_iter.get_state()
    for key, name in (("global_batch_size", "config.batch_size"), ("seed", "config.seed"),
                      ("num_items", f"the number of videos in {config.data.train_list}")):
        if key in saved_iter and saved_iter[key] != now[key]:
            raise ckpt_lib.CheckpointMismatchError(
                f"{name}={now[key]} but checkpoint {where} was saved with {saved_iter[key]}; {hint}")


def _epoch_summary(epoch: int, acc: _Accumulator, run: Run, config) -> Dict[str, float]:
    """The epoch's padded-clip count (logged, and a line when any clip was padded)."""
    stats = acc.pop_epoch()
    n = int(stats["padded_clips_epoch"])
    if n and jax.process_index() == 0:
        print(f"epoch {epoch}: {n} of {run.steps_per_epoch * config.batch_size} training clips ran past "
              "the end of their video (last frame repeated, as PySlowFast does)", flush=True)
    return stats


def _consume(pending, acc: _Accumulator) -> None:
    step, metrics = pending
    host = jax.device_get(metrics)
    _check_finite(step, host)
    acc.add({k: float(v) for k, v in host.items()})


def _abstract_state(config, run: Run):
    """Shape/dtype/sharding skeleton of the train state (restore target)."""
    def fresh():
        variables = init_variables(run.model, config, 0)
        params = variables["params"]
        return TrainState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}),
                          run.tx.init(params), jax.random.PRNGKey(0)).as_dict()
    shapes = jax.eval_shape(fresh)
    rep = sharding.replicated(run.mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes), None


def _precise_bn(run: Run, state: TrainState, step: int) -> TrainState:
    """Precise BN after the epoch ending at ``step`` (PySlowFast: after every epoch).

    ``min(precise_bn.num_batches, steps per epoch)`` groups of ``model.bn_group_size`` training
    clips (the original's per-GPU batches and loader length) from a stream of its own (seed + 1)
    that continues from epoch to epoch, so each epoch sees new clips and a resumed run the same
    ones.
    """
    if not state.batch_stats:
        return state
    config = run.config
    group = int(config.model.bn_group_size)
    group = min(group, config.batch_size) if group > 0 else config.batch_size
    num_groups = min(int(config.precise_bn.num_batches), run.steps_per_epoch)
    batches_per_epoch = -(-num_groups * group // config.batch_size)
    epoch = (step - 1) // run.steps_per_epoch
    batches = train_pipeline.make_train_iterator(config.data, global_batch_size=config.batch_size,
                                           seed=config.seed + 1, aux_fn=None)
    position = batches.get_state()
    position["batches"] = epoch * batches_per_epoch
    batches.set_state(position)
    stats_fn = getattr(run, "_precise_bn_fn", None)
    if stats_fn is None:
        stats_fn = make_precise_bn_step(run.model, config.model.arch, group, run.mesh)
        run._precise_bn_fn = stats_fn  # pylint: disable=protected-access
    try:
        stats = precise_bn_stats(run.model, state.variables, batches, config.model.arch, num_groups,
                                 group, run.mesh, stats_fn=stats_fn)
    finally:
        batches.close()
    logging.info("precise BN after epoch %d: running statistics = mean of %d groups of %d clips",
                 epoch + 1, num_groups, group)
    return state.replace(batch_stats=stats)


def _test_variables(run: Run, state: TrainState) -> dict:
    """What the final test evaluates: the last state, or with ``evaluate.checkpoint='best'`` the
    best-validation checkpoint (the last state when none was kept)."""
    if run.config.evaluate.checkpoint != "best":
        return state.variables
    try:
        _, variables, step = ckpt_lib.load_workdir_variables(run.workdir, best=True)
    except FileNotFoundError:
        logging.warning("evaluate.checkpoint='best' but no best checkpoint was kept; testing the last state")
        return state.variables
    print(f"testing the best-validation checkpoint (step {step})", flush=True)
    return sharding.replicate(variables, run.mesh)


def evaluate_only(config: ml_collections.ConfigDict, workdir: str, *, mesh=None) -> Dict[str, float]:
    """``mode=evaluate``: multi-view evaluation of ``config.evaluate.checkpoint`` (a workdir,
    converted directory or ``.pyth``; ``best``: the best-validation checkpoint of ``workdir``),
    else the newest checkpoint in ``workdir``, else ``config.init_from``."""
    os.makedirs(workdir, exist_ok=True)
    mesh = mesh if mesh is not None else sharding.make_mesh()
    config_schema.check_batch_layout(config, mesh.devices.size, jax.process_count(), training=False)
    source = config.evaluate.checkpoint or (workdir if ckpt_lib.is_training_workdir(workdir) else config.init_from)
    if not source:
        raise config_schema.ConfigError(
            "mode=evaluate needs weights: set config.evaluate.checkpoint or config.init_from, "
            f"or point --workdir at a training workdir (none in {workdir})")
    step = 0  # converted checkpoints and .pyth files carry no training step
    if source == "best":
        src_cfg, variables, step = ckpt_lib.load_workdir_variables(workdir, best=True)
        what = f"best-validation checkpoint of {workdir} (step {step})"
    elif os.path.isdir(source) and ckpt_lib.is_training_workdir(source):
        src_cfg, variables, step = ckpt_lib.load_workdir_variables(source)
        what = f"training workdir {source} (step {step})"
    else:
        src_cfg, variables, what = pretrained.load_pretrained(
            source, flag="config.evaluate.checkpoint" if config.evaluate.checkpoint else "config.init_from")
    src_cfg.dtype = config.dtype
    for field in models.RUNTIME_FIELDS:
        src_cfg[field] = config.model[field]
    model = models.build(src_cfg)
    print(f"evaluating {what}", flush=True)
    from egoexo_jax import metric_log  # pylint: disable=import-outside-toplevel
    logger = metric_log.MetricLogger(workdir)
    run = Run(config, workdir, mesh, model, None, None, 0, 0, None, None, {})
    try:
        return eval_lib.evaluate_final(config, run, sharding.replicate(variables, mesh),
                                       config.evaluate.split, step, logger)
    finally:
        logger.flush()
