"""The training loop: :func:`train_and_evaluate` reads top to bottom as one run goes.

Set up (:mod:`egoexo_jax.train_setup`), resume or start fresh (:mod:`egoexo_jax.train_resume`),
then one jitted :func:`egoexo_jax.train.train_step` per batch; at step boundaries: log the metric
means, precise BN after an epoch (:mod:`egoexo_jax.precise_bn`), validate and keep the best state,
save a checkpoint, and on SIGTERM save and stop (:class:`egoexo_jax.cli.Preempted`). At the end the
final multi-view test (:mod:`egoexo_jax.evaluate`).
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import ml_collections
from absl import logging
from clu import periodic_actions

from egoexo_jax import batch_scaling, cli, metric_log, sharding, storage
from egoexo_jax import evaluate as eval_lib
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.data import bad_inputs
from egoexo_jax.precise_bn import PreciseBN
from egoexo_jax.preemption import Interrupted, Preemption
from egoexo_jax.train import TrainState, make_config_train_step
from egoexo_jax.train_loop_utils import BestTracker, MetricAccumulator, best_metric_name, check_finite, every
from egoexo_jax.train_resume import checkpoint_meta, start
from egoexo_jax.train_setup import BAD_INPUTS, Run, log_teacher_missing, setup


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, mesh=None, stop_after: Optional[int] = None
) -> Dict[str, float]:
    """Trains (resuming from ``workdir`` when it has a checkpoint), evaluates, returns the final
    test metrics (or the last validation metrics when ``test_at_end`` is off).

    ``mesh``: default all devices (``batch_from_devices`` counts its devices).
    ``stop_after``: leave the loop after that many steps of this call (tests).

    Raises:
      cli.Preempted: SIGTERM arrived; in the loop a checkpoint of the current step was saved first.
    """
    with Preemption(interruptible_waits=jax.process_count() == 1) as preempt:
        workdir = ckpt_lib.prepare_workdir(workdir)
        with storage.WorkdirLock(workdir):
            return _train(config, workdir, mesh, stop_after, preempt)


def _train(config, workdir: str, mesh, stop_after: Optional[int], preempt: Preemption) -> Dict[str, float]:
    mesh = mesh if mesh is not None else sharding.make_mesh()
    config = batch_scaling.resolve_batch(config, mesh.devices.size)
    run = setup(config, workdir, mesh)
    logger = metric_log.MetricLogger(workdir)
    checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
    best_ckpts = ckpt_lib.BestCheckpoints(workdir) if config.checkpoint.keep_best else None
    try:
        state, acc, _, best_state = start(config, run, checkpointer, logger, best_ckpts)
        best = BestTracker(best_metric_name(config), best_state)
        first = int(jax.device_get(state.step))
        # A run stopped by SIGTERM during precise BN or validation redoes that work at its step.
        redo = checkpointer.read_meta(first).get("pending") if first else None
        write_config(config, workdir)  # only now: the run has started cleanly
        p_train = make_config_train_step(
            config, run.mesh, model=run.model, tx=run.tx, schedule=run.schedule, teacher_fn=run.teacher_fn
        )
        ckpt_every = (
            max(int(round(config.checkpoint.every_epochs * run.steps_per_epoch)), 0)
            if config.checkpoint.every_epochs > 0
            else 0
        )
        eval_every = (
            max(int(round(config.eval_every_epochs * run.steps_per_epoch)), 1) if config.eval_every_epochs > 0 else 0
        )
        evaluator = eval_lib.Evaluator.create(config, run.model, run.mesh, workdir)
        precise_bn = PreciseBN(config, run.model, run.mesh, run.steps_per_epoch) if config.precise_bn.enabled else None
        report_progress = periodic_actions.ReportProgress(
            num_train_steps=run.total_steps, writer=logger, every_steps=config.log_every_steps
        )
    except BaseException:  # the loop's ``finally`` is not reached: close what is open
        checkpointer.close()
        if best_ckpts is not None:
            best_ckpts.close()
        run.train_iter.close()
        raise
    if jax.process_index() == 0:
        print(
            f"training {run.total_steps} steps ({run.steps_per_epoch} per epoch, global batch "
            f"{config.batch_size}, {jax.device_count()} devices) from step {first}",
            flush=True,
        )

    def save(step: int, pending: Optional[str] = None):
        logger.flush()  # the metric lines up to ``step`` are written before its checkpoint
        meta = checkpoint_meta(run, acc, best)
        if pending:
            meta["pending"] = pending
        checkpointer.save(step, state.as_dict(), meta)

    def save_best(step: int):
        checkpointer.wait()  # older bests stay until a periodic checkpoint covers the new one
        best_ckpts.prune(checkpointer.latest_step())
        best_ckpts.save(step, state.as_dict(), checkpoint_meta(run, acc, best))
        logging.info("best %s %.4f at step %d", best.metric, best.value, step)

    def stop_now(step: int, pending: Optional[str] = None, during: str = ""):
        """Saves the state of ``step`` (unless that checkpoint exists) and raises Preempted."""
        preempt.saving()
        if checkpointer.latest_step() != step:
            save(step, pending)
        checkpointer.wait()
        if jax.process_count() > 1:  # every process exits only once the save is complete
            from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

            multihost_utils.sync_global_devices("egoexo_preempted")
        logging.warning("stopped after SIGTERM at step %d (checkpoint saved)", step)
        raise cli.Preempted(
            f"SIGTERM at step {step} of {run.total_steps}{during}; checkpoint saved in {checkpointer.directory}/{step}"
        )

    def boundary_work(step: int, from_phase: str = "precise_bn") -> Dict[str, float]:
        """Precise BN, the epoch's teacher log and validation (with the best checkpoint) after
        ``step``; SIGTERM during precise BN or validation saves ``step`` to redo them on resume."""
        nonlocal state
        epoch_end = every(step, run.steps_per_epoch)
        values: Dict[str, float] = {}
        try:
            if from_phase == "precise_bn":
                if precise_bn is not None and (epoch_end or step == run.total_steps):
                    with preempt.interruptible("precise BN"):
                        state = precise_bn(state, step)
                if epoch_end:
                    log_teacher_missing(run, logger, step)
            if every(step, eval_every) or (eval_every and step == run.total_steps):
                with preempt.interruptible("validation"):
                    values = eval_lib.evaluate_split(
                        config, evaluator, state.variables, config.eval_split, step, logger
                    )
                if best_ckpts is not None and best.update(step, values):
                    save_best(step)
        except Interrupted as e:
            stop_now(step, "precise_bn" if e.phase == "precise BN" else "eval", f" ({e.phase} is redone on resume)")
        return values

    last_eval: Dict[str, float] = {}
    pending = None
    step = first
    end = run.total_steps if stop_after is None else min(run.total_steps, first + stop_after)
    with preempt.deferred():
        try:
            if redo:
                last_eval = boundary_work(first, redo)
            while step < end:
                before = run.train_iter.get_state()
                try:
                    with preempt.interruptible("reading training data"):
                        host_batch = next(run.train_iter)
                except Interrupted:
                    run.train_iter.set_state(before)  # the batch is read again on resume
                    if pending is not None:
                        _consume(pending, acc)
                        pending = None
                    stop_now(step)
                batch = sharding.global_batch(host_batch, run.mesh)
                state, metrics = p_train(state, batch, run.teacher_variables)
                if pending is not None:  # fetch the previous step's metrics (one-step lag)
                    _consume(pending, acc)
                step += 1
                pending = (step, metrics)
                report_progress(step)
                epoch_end = every(step, run.steps_per_epoch)
                boundary = (
                    step == end
                    or epoch_end
                    or every(step, config.log_every_steps)
                    or every(step, ckpt_every)
                    or every(step, config.checkpoint.every_steps)
                    or every(step, eval_every)
                )
                stop = (
                    preempt.requested
                    if jax.process_count() == 1
                    else (every(step, config.log_every_steps) and preempt.any_host())
                )
                if not (boundary or stop):
                    continue
                _consume(pending, acc)
                pending = None
                scalars = acc.pop_means() if every(step, config.log_every_steps) or step == end else {}
                if epoch_end:
                    scalars.update(_epoch_summary(step // run.steps_per_epoch, acc, run, config))
                if scalars:
                    logger.write(step, scalars)
                last_eval = boundary_work(step) or last_eval
                if jax.process_count() == 1:
                    stop = stop or preempt.requested
                if stop:
                    stop_now(step)
                if every(step, ckpt_every) or every(step, config.checkpoint.every_steps) or step == run.total_steps:
                    save(step)
            if pending is not None:
                _consume(pending, acc)
            if step >= run.total_steps:
                checkpointer.wait()
                if best_ckpts is not None:
                    best_ckpts.prune(checkpointer.latest_step())
                if config.test_at_end:
                    try:
                        with preempt.interruptible("the final test"):
                            last_eval = eval_lib.evaluate_final(
                                config, evaluator, _test_variables(run, state), "test", step, logger
                            )
                    except Interrupted as e:
                        raise cli.Preempted(
                            f"SIGTERM during the final test after step {step}; the checkpoint of step {step} is "
                            f"in {checkpointer.directory}, the rerun repeats the test"
                        ) from e
            else:
                save(step)
            return last_eval
        finally:
            checkpointer.close()
            if best_ckpts is not None:
                best_ckpts.close()
            run.train_iter.close()
            logger.flush()
            if jax.process_index() == 0:
                bad_inputs.consolidate(storage.join(workdir, BAD_INPUTS))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """``workdir/config.json`` (process 0), written atomically."""
    if jax.process_index() == 0:
        storage.write_text(storage.join(workdir, "config.json"), config.to_json_best_effort(indent=2))


def _epoch_summary(epoch: int, acc: MetricAccumulator, run: Run, config) -> Dict[str, float]:
    """The epoch's padded-clip count (logged, and a line when any clip was padded)."""
    stats = acc.pop_epoch()
    n = int(stats["padded_clips_epoch"])
    if n and jax.process_index() == 0:
        print(
            f"epoch {epoch}: {n} of {run.steps_per_epoch * config.batch_size} training clips ran past "
            "the end of their video (last frame repeated, as PySlowFast does)",
            flush=True,
        )
    return stats


def _consume(pending, acc: MetricAccumulator) -> None:
    """Fetches a step's metrics to the host, checks the losses, adds them to ``acc``."""
    step, metrics = pending
    host = jax.device_get(metrics)
    check_finite(step, host)
    acc.add({k: float(v) for k, v in host.items()})


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
