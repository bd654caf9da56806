"""Setting up a training run: the model, optimiser and data iterator of a config (:func:`setup`),
the online teachers, and the check of the offline teacher files before the first step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import ml_collections
from absl import logging

from egoexo_jax import batch_scaling, config_schema, models, optim, sharding, storage
from egoexo_jax.data import aux_targets, train_pipeline
from egoexo_jax.data.sources import build_source
from egoexo_jax.train import folds_input, init_variables, model_config

BAD_INPUTS = "bad_inputs.txt"  # in the workdir: one line per unreadable training video


@dataclasses.dataclass
class Run:
    """What the loop needs, built once from the config by :func:`setup`.

    ``tx`` and ``schedule`` use the learning rates of
    :func:`egoexo_jax.batch_scaling.scaled_learning_rates`; ``teacher_missing``: training items
    without an offline teacher entry, per signal (logged every epoch when ``teachers.allow_missing``).
    """

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
    teacher_missing: Dict[str, int] = dataclasses.field(default_factory=dict)


def setup(config, workdir: str, mesh=None) -> Run:
    """Builds the :class:`Run` of ``config`` (the batch checked against ``mesh``, default all
    devices); the training data iterator starts at the beginning (the loop restores its state)."""
    mesh = mesh if mesh is not None else sharding.make_mesh()
    config_schema.check_batch_layout(config, mesh.devices.size, jax.process_count())
    model_cfg = model_config(config)
    model = models.build(model_cfg)
    aux_fn = offline_aux_fn(config)
    teacher_missing = check_teacher_files(config, aux_fn)
    train_iter = train_pipeline.make_train_iterator(
        config.data,
        global_batch_size=config.batch_size,
        seed=config.seed,
        bad_input_log=storage.join(workdir, BAD_INPUTS),
        aux_fn=aux_fn,
        space_to_depth=folds_input(config),
    )
    spe = steps_per_epoch_of(
        train_iter.get_state()["num_items"], config.batch_size, f"config.data ({config.data.dataset} train list)"
    )
    total = int(config.total_steps) if config.total_steps > 0 else int(math.ceil(config.num_epochs * spe))
    lr_config = batch_scaling.scaled_learning_rates(config)
    schedule = optim.make_schedule(lr_config, spe)
    abstract_params = jax.eval_shape(lambda: init_variables(model, config, 0))["params"]
    tx = optim.make_optimizer(lr_config, spe, abstract_params)
    teacher_fn, teacher_vars = build_teachers(config, model_cfg)
    return Run(
        config,
        workdir,
        mesh,
        model,
        tx,
        schedule,
        spe,
        total,
        train_iter,
        teacher_fn,
        sharding.replicate(teacher_vars, mesh),
        teacher_missing=teacher_missing,
    )


def steps_per_epoch_of(num_items: int, batch_size: int, where: str) -> int:
    """Full batches per epoch (the last partial batch is dropped, as PySlowFast's loader does)."""
    n = num_items // batch_size
    if n <= 0:
        raise config_schema.ConfigError(
            f"{where}: {num_items} training videos are fewer than config.batch_size={batch_size}; expected "
            "at least one batch"
        )
    return n


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
    ids = build_source(config.data, "train").ids()
    if ids is None:
        logging.info(
            "teacher files: the %s source cannot list its keys; missing entries are checked per sample",
            config.data.source,
        )
        return {}
    missing = aux_targets.missing_entries(aux_fn, config.data.dataset, ids)
    counts = {signal: len(keys) for signal, keys in missing.items()}
    if any(counts.values()):
        message = aux_targets.missing_entries_message(aux_fn, missing, len(ids))
        if not config.teachers.allow_missing:
            raise aux_targets.MissingTeacherEntriesError(
                f"{message}. The official loaders fail on such items; fix the files, or set "
                f"config.teachers.allow_missing=True to mask these items out of those terms"
            )
        logging.warning("teacher files (allow_missing: masked out of those terms): %s", message)
    return counts


def log_teacher_missing(run: Run, logger, step: int) -> None:
    """Every epoch with ``teachers.allow_missing``: how many training items lack each signal."""
    counts = {f"teachers/missing_{k}": float(v) for k, v in run.teacher_missing.items() if v}
    if counts:
        logging.warning(
            "epoch %d: training items masked for missing teacher entries: %s", step // run.steps_per_epoch, counts
        )
        logger.write(step, counts)
