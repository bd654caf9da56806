"""Resuming a training run: what a checkpoint holds besides the train state, whether it fits the
config, and where a run starts (:func:`start`: the newest readable fitting checkpoint, else a fresh
state).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from egoexo_jax import sharding, storage
from egoexo_jax.checkpoint import config_json, pretrained
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.train import TrainState, create_train_state, init_variables, model_config
from egoexo_jax.train_loop_utils import BestTracker, MetricAccumulator
from egoexo_jax.train_setup import Run


def abstract_state(config, run: Run) -> dict:
    """Shape/dtype/sharding skeleton of the train state (the restore target), as
    :meth:`TrainState.as_dict`."""

    def fresh():
        variables = init_variables(run.model, config, 0)
        params = variables["params"]
        return TrainState(
            jnp.zeros((), jnp.int32),
            params,
            variables.get("batch_stats", {}),
            run.tx.init(params),
            jax.random.PRNGKey(0),
        ).as_dict()

    shapes = jax.eval_shape(fresh)
    rep = sharding.replicated(run.mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


def checkpoint_meta(run: Run, acc: MetricAccumulator, best: Optional[BestTracker] = None) -> dict:
    """What a checkpoint stores besides the state: the data-iterator position, the metric sums,
    the model config (checked on resume), the run length and the best-validation tracker."""
    meta = {
        "data_iterator": run.train_iter.get_state(),
        "metrics_accumulator": acc.state(),
        "model_config": json.loads(config_json.model_config_to_json(model_config(run.config))),
        "steps_per_epoch": run.steps_per_epoch,
        "total_steps": run.total_steps,
    }
    if best is not None and best.state() is not None:
        meta["best"] = best.state()
    return meta


def start(
    config, run: Run, checkpointer: ckpt_lib.Checkpointer, logger, best_ckpts: Optional[ckpt_lib.BestCheckpoints] = None
) -> Tuple[TrainState, MetricAccumulator, Optional[pretrained.TransferReport], Optional[dict]]:
    """``(state, metric accumulator, init report, best-tracker state)``: the newest readable
    checkpoint that fits the config (:func:`check_resumable`), else a fresh state.
    ``metrics.jsonl`` keeps only the lines up to the restored step (none without a checkpoint),
    and best-validation states saved after it are dropped (the run recomputes them), so an
    interrupted run leaves no duplicate steps. The remaining best states are checked against their
    digests now; a damaged one is set aside (one line) and, if it was the tracked best, the
    tracker starts over, so the next validation saves a new best."""
    resumed = checkpointer.restore_newest(abstract_state(config, run), functools.partial(check_resumable, config, run))
    latest = 0 if resumed is None else resumed[0]
    logger.truncate_after(latest)
    damaged_best = []
    if best_ckpts is not None:
        best_ckpts.discard_after(latest)
        damaged_best = best_ckpts.set_aside_damaged()
    if resumed is None:
        state, report = create_train_state(config, run.model, run.tx, run.mesh)
        return state, MetricAccumulator(), report, None
    _, restored, meta = resumed
    run.train_iter.set_state(meta["data_iterator"])
    logging.info("resumed from %s/%d", checkpointer.directory, latest)
    print(f"resumed from step {latest}", flush=True)
    best = meta.get("best")
    if best is not None and best.get("step") in damaged_best:
        logging.warning("the best state (step %s) was set aside; the next validation starts a new best", best["step"])
        best = None
    return (TrainState.from_dict(restored), MetricAccumulator(meta.get("metrics_accumulator")), None, best)


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
    where = storage.join(run.workdir, ckpt_lib.CHECKPOINT_DIR, str(step))
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
                return functools.reduce(
                    lambda d, k: d.get(k, "<absent>") if isinstance(d, dict) else d, key.split("."), tree
                )

            raise ckpt_lib.CheckpointMismatchError(
                f"config.model.{key}={at(current)!r} but checkpoint {where} was saved with {at(saved_model)!r}; {hint}"
            )
    saved_iter, now = meta.get("data_iterator", {}), run.train_iter.get_state()
    for key, name in (
        ("global_batch_size", "config.batch_size"),
        ("seed", "config.seed"),
        ("num_items", f"the number of videos in {config.data.train_list}"),
    ):
        if key in saved_iter and saved_iter[key] != now[key]:
            raise ckpt_lib.CheckpointMismatchError(
                f"{name}={now[key]} but checkpoint {where} was saved with {saved_iter[key]}; {hint}"
            )
