"""Multi-view evaluation: score every (video, view) once over all hosts, ensemble, measure, write.

Views come from the pipeline (``eval_pipeline.make_eval_iterator``): 'test' = num_ensemble_views
temporal clips x num_spatial_crops crops with PySlowFast's placement; 'val' = one view. Each view
goes through the model's test-time head (activation per position, then mean). Views are combined
per video by ``config.evaluate.ensemble``: ``max`` (Charades-Ego, sigmoid scores) or ``sum``
(Kinetics, EPIC softmax scores). Padding views (mask 0) are ignored; a video none of whose views
could be read keeps the neutral score (0 for sum, -1e10 for max, so it counts as a miss) and is
counted in ``unscored_videos``.

Metrics (percent): Kinetics top-1/top-5; Charades-Ego mAP over classes with a positive;
EPIC-100 and EPIC-55 verb/noun/action top-1/top-5 with the official action definition (EPIC-100
also the tail-class and unseen-participant variants when their csvs are configured). EPIC lists
without labels (the test timestamps) give result files only.

The eval step (:func:`eval_step`, jitted by :func:`make_eval_step`) runs one batch of views;
an :class:`Evaluator` holds it compiled for one model. :func:`evaluate_only` is
``config.mode=evaluate``: it loads a checkpoint and runs the final test.

The final test (:func:`evaluate_final`) runs on ``data.test_list``; for EPIC-55 with
``evaluate.epic55_s1`` / ``epic55_s2`` set, on the seen (S1) and unseen (S2) test lists instead,
tagged ``test_s1`` / ``test_s2``.

Files in ``workdir/results/`` (``{tag}`` = ``{split}_step{N}``): ``{tag}_scores.npz`` (per-video
ensembled scores, labels, keys), ``{tag}.md`` (the table that is also printed); EPIC-100 also
``{tag}_epic.pkl`` (the official "dict format": ``verb_output [N, 97]``, ``noun_output [N, 300]``,
``narration_id [N]``) and ``{tag}_submission.json`` (challenge format 0.2); EPIC-55
``{tag}_submission.json`` in the EPIC-55 challenge format 0.1 (keys = ``uid``; the S1 / S2 files
are the leaderboard's ``seen.json`` / ``unseen.json``). Unreadable
videos are listed in ``workdir/bad_inputs.txt`` (unless ``config.data.bad_input_log`` names another
file).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from egoexo_jax import batch_scaling, config_schema, metric_log, models, sharding, storage
from egoexo_jax import metrics as metrics_lib
from egoexo_jax.checkpoint import pretrained
from egoexo_jax.checkpoint import workdir as ckpt_lib
from egoexo_jax.data import bad_inputs, eval_pipeline
from egoexo_jax.data.sources import build_source
from egoexo_jax.train import folds_input, pathways_of

EPIC_SUBMISSION_VERSION = "0.2"
EPIC55_SUBMISSION_VERSION = "0.1"
EPIC55_TEST_SPLITS = (("s1", "epic55_s1"), ("s2", "epic55_s2"))  # (tag suffix, evaluate key)
BAD_INPUTS = "bad_inputs.txt"  # in the workdir, shared with training (one line per unreadable file)


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


def make_eval_step(mesh, **kwargs):
    """:func:`eval_step` with ``kwargs`` bound, jitted over ``mesh`` (variables replicated, the
    views split on ``data``)."""
    step = functools.partial(eval_step, **kwargs)
    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data), out_shardings=rep)


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """What evaluating one model needs besides its variables: the mesh, the jitted eval step
    (compiled on first use, then reused by every evaluation of the run), the workdir that
    ``results/`` and ``bad_inputs.txt`` go to, and whether the views come space-to-depth folded
    (:func:`egoexo_jax.train.folds_input`)."""

    mesh: Any
    workdir: str
    eval_fn: Callable
    space_to_depth: bool = False

    @classmethod
    def create(cls, config, model, mesh, workdir: str) -> "Evaluator":
        return cls(mesh, workdir, make_eval_step(mesh, model=model, arch=config.model.arch), folds_input(config))


def video_labels(data_cfg, split: str) -> Dict[str, Any]:
    """Ground truth per video from the split's index: ``keys [N]`` and ``label [N]`` (Kinetics),
    ``label [N, 157]`` multi-hot over the whole video (Charades-Ego) or ``verb``, ``noun``,
    ``participant`` (EPIC)."""
    source = build_source(data_cfg, split)
    items = [source.item(i) for i in range(len(source))]
    out: Dict[str, Any] = {"keys": np.asarray([it.key for it in items], dtype=object)}
    if data_cfg.dataset == "kinetics":
        out["label"] = np.asarray([it.label for it in items], np.int64)
    elif data_cfg.dataset == "charades_ego":
        from egoexo_jax.data.charades_ego import NUM_CLASSES  # pylint: disable=import-outside-toplevel

        num = int(data_cfg.get("num_classes_charades", NUM_CLASSES))
        hot = np.zeros((len(items), num), np.float32)
        for i, it in enumerate(items):
            hot[i, np.asarray(it.label_classes, np.int64)] = 1.0
        out["label"] = hot
    else:
        out["verb"] = np.asarray([it.verb for it in items], np.int64)
        out["noun"] = np.asarray([it.noun for it in items], np.int64)
        out["participant"] = np.asarray([it.video_id.split("_")[0] for it in items], dtype=object)
    return out


def collect_view_scores(
    eval_fn,
    variables,
    data_cfg,
    split: str,
    global_batch: int,
    mesh,
    ensemble: str,
    progress: bool = True,
    bad_input_log: Optional[str] = None,
    space_to_depth: bool = False,
) -> Dict[str, Any]:
    """Runs every view through ``eval_fn`` and ensembles per video; unreadable videos are listed
    in ``bad_input_log`` (default ``data_cfg.bad_input_log``); ``space_to_depth``: the views'
    pathways come folded (:func:`egoexo_jax.train.folds_input`).

    Returns ``scores``: list over tasks of ``[N, C] float32`` ensembled scores, ``views_seen [N]``,
    ``num_views``.
    """
    it, num_videos, num_views = eval_pipeline.make_eval_iterator(
        data_cfg,
        split=split,
        global_batch_size=global_batch,
        bad_input_log=bad_input_log,
        space_to_depth=space_to_depth,
    )
    neutral = 0.0 if ensemble == "sum" else -1e10
    scores: Optional[List[np.ndarray]] = None
    seen = np.zeros((num_videos, num_views), bool)
    bar = None
    if progress and jax.process_index() == 0:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel

        bar = tqdm(
            total=len(it), desc=f"evaluate {split} ({num_videos} videos x {num_views} views)", unit="batch", leave=False
        )
    try:
        for host_batch in it:
            host_batch = {
                k: v
                for k, v in host_batch.items()
                if k.startswith("pathway") or k in ("video_index", "view_index", "mask")
            }
            out = sharding.to_host(eval_fn(variables, sharding.global_batch(host_batch, mesh)))
            probs = out["probs"] if isinstance(out["probs"], (tuple, list)) else (out["probs"],)
            if scores is None:
                scores = [np.full((num_videos, p.shape[-1]), neutral, np.float32) for p in probs]
            valid = out["mask"] > 0
            vid, view = out["video_index"][valid], out["view_index"][valid]
            if np.any(seen[vid, view]):
                raise RuntimeError(f"evaluation scored a (video, view) twice in split {split!r}")
            seen[vid, view] = True
            for s, p in zip(scores, probs):
                p = np.asarray(p, np.float32)[valid]
                if ensemble == "sum":
                    np.add.at(s, vid, p)
                else:
                    np.maximum.at(s, vid, p)
            if bar is not None:
                bar.update(1)
    finally:
        it.close()
        if bar is not None:
            bar.close()
    return {"scores": scores, "views_seen": seen.sum(1), "num_views": num_views}


def compute_metrics(
    dataset: str, scores: Sequence[np.ndarray], truth: Dict[str, Any], eval_cfg: ml_collections.ConfigDict
) -> Dict[str, float]:
    """Dataset metrics (percent) from ensembled scores and :func:`video_labels`."""
    if dataset == "kinetics":
        k = min(5, scores[0].shape[1])
        return metrics_lib.topk_accuracy(scores[0], truth["label"], ks=(1, k))
    if dataset == "charades_ego":
        return {"mAP": metrics_lib.charades_map(scores[0], truth["label"])}
    verb, noun = scores
    labelled = (truth["verb"] >= 0) & (truth["noun"] >= 0)
    if not np.any(labelled):
        return {}
    args = (verb[labelled], noun[labelled], truth["verb"][labelled], truth["noun"][labelled])
    out = metrics_lib.epic_accuracy(*args, ks=(1, 5))
    if eval_cfg.epic_tail_classes or eval_cfg.epic_unseen_participants:
        tail_v = tail_n = np.zeros(0, np.int64)
        if eval_cfg.epic_tail_classes:
            verbs_csv, nouns_csv = eval_cfg.epic_tail_classes.split(",")
            tail_v = metrics_lib.read_epic_tail_classes(verbs_csv)
            tail_n = metrics_lib.read_epic_tail_classes(nouns_csv)
        unseen = (
            metrics_lib.read_epic_unseen_participants(eval_cfg.epic_unseen_participants)
            if eval_cfg.epic_unseen_participants
            else []
        )
        subsets = metrics_lib.epic_accuracy_subsets(*args, truth["participant"][labelled], tail_v, tail_n, unseen)
        for group in ("tail", "unseen"):
            for name, value in subsets.get(group, {}).items():
                out[f"{group}_{name}"] = value
    return out


def epic_submission(verb: np.ndarray, noun: np.ndarray, narration_ids: Sequence[str]) -> dict:
    """EPIC-KITCHENS-100 action-recognition challenge json (scores per class id as strings)."""
    return {
        "version": EPIC_SUBMISSION_VERSION,
        "challenge": "action_recognition",
        "sls_pt": -1,
        "sls_tl": -1,
        "sls_td": -1,  # fill in your supervision levels before submitting
        "results": {
            str(n): {
                "verb": {str(i): float(x) for i, x in enumerate(v)},
                "noun": {str(i): float(x) for i, x in enumerate(o)},
            }
            for n, v, o in zip(narration_ids, verb, noun)
        },
    }


def epic55_submission(verb: np.ndarray, noun: np.ndarray, uids: Sequence[str]) -> dict:
    """EPIC-KITCHENS-55 action-recognition challenge json: ``results[uid] = {verb: {class id:
    score}, noun: {...}}`` (one file per test set; the server soft-maxes the scores itself)."""
    return {
        "version": EPIC55_SUBMISSION_VERSION,
        "challenge": "action_recognition",
        "results": {
            str(u): {
                "verb": {str(i): float(x) for i, x in enumerate(v)},
                "noun": {str(i): float(x) for i, x in enumerate(o)},
            }
            for u, v, o in zip(uids, verb, noun)
        },
    }


def format_table(title: str, values: Dict[str, float]) -> str:
    width = max([len(k) for k in values] + [6])
    lines = [f"### {title}", "", f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|------:|"]
    lines += [f"| {k.ljust(width)} | {v:6.2f} |" for k, v in values.items()]
    return "\n".join(lines)


def write_results(
    results_dir: str, tag: str, dataset: str, scores: Sequence[np.ndarray], truth: Dict[str, Any], table: str
) -> None:
    """The result files of one evaluation in ``results_dir`` (a folder or ``gs://`` prefix), each
    written whole (:func:`storage.atomic_write`)."""
    path = lambda suffix: storage.join(results_dir, f"{tag}{suffix}")  # noqa: E731
    arrays = {f"scores_{i}": s for i, s in enumerate(scores)}
    arrays.update({k: np.asarray(v).astype(str) if v.dtype == object else v for k, v in truth.items()})
    storage.atomic_write(path("_scores.npz"), lambda f: np.savez_compressed(f, **arrays))
    if dataset == "epic100":
        epic = {
            "verb_output": scores[0],
            "noun_output": scores[1],
            "narration_id": np.asarray(truth["keys"]).astype(str),
        }
        storage.atomic_write(path("_epic.pkl"), lambda f: pickle.dump(epic, f))
        storage.write_text(path("_submission.json"), json.dumps(epic_submission(scores[0], scores[1], truth["keys"])))
    if dataset == "epic55":
        storage.write_text(path("_submission.json"), json.dumps(epic55_submission(scores[0], scores[1], truth["keys"])))
    storage.write_text(path(".md"), table + "\n")


def evaluate_split(
    config,
    evaluator: Evaluator,
    variables,
    split: str,
    step: int,
    logger=None,
    *,
    final: bool = False,
    data_cfg=None,
    tag: str = "",
) -> Dict[str, float]:
    """Evaluates ``variables`` on ``split`` ('val' one view, 'test' multi-view), logs
    ``{tag}/<metric>`` at ``step`` (``tag`` defaults to the split), writes result files (process
    0) and prints the table. ``data_cfg`` replaces ``config.data`` (another test list)."""
    data_cfg = config.data if data_cfg is None else data_cfg
    tag = tag or split
    bad_input_log = data_cfg.bad_input_log or storage.join(evaluator.workdir, BAD_INPUTS)
    collected = collect_view_scores(
        evaluator.eval_fn,
        variables,
        data_cfg,
        split,
        config.eval_batch_size,
        evaluator.mesh,
        config.evaluate.ensemble,
        bad_input_log=bad_input_log,
        space_to_depth=evaluator.space_to_depth,
    )
    if jax.process_index() == 0:
        bad_inputs.consolidate(bad_input_log)
    truth = video_labels(data_cfg, split)
    values = compute_metrics(data_cfg.dataset, collected["scores"], truth, config.evaluate)
    unscored = int(np.sum(collected["views_seen"] == 0))
    values["unscored_videos"] = float(unscored)
    if unscored:
        logging.warning("%d of %d %s videos could not be read and count as misses", unscored, len(truth["keys"]), split)
    title = f"{data_cfg.dataset} {tag}: {len(truth['keys'])} videos x {collected['num_views']} views, step {step}"
    table = format_table(title, values)
    if jax.process_index() == 0:
        write_results(
            storage.join(evaluator.workdir, "results"),
            f"{tag}_step{step}",
            data_cfg.dataset,
            collected["scores"],
            truth,
            table,
        )
        print(table, flush=True)
    if logger is not None:
        logger.write(step, {f"{tag}/{k}": v for k, v in values.items()})
    return values


def epic55_test_lists(config) -> List[tuple]:
    """``[(tag, data config)]`` of the configured EPIC-55 S1 / S2 test lists (empty otherwise)."""
    if config.data.dataset != "epic55":
        return []
    out = []
    for suffix, key in EPIC55_TEST_SPLITS:
        name = config.evaluate.get(key, "")
        if name:
            data_cfg = ml_collections.ConfigDict(config.data.to_dict())
            data_cfg.test_list = name  # joined to path_to_data_dir unless absolute
            out.append((f"test_{suffix}", data_cfg))
    return out


def evaluate_final(config, evaluator: Evaluator, variables, split: str, step: int, logger=None) -> Dict[str, float]:
    """The end-of-run / ``mode=evaluate`` evaluation: ``split`` of the data config, or for the EPIC-55
    test with S1 / S2 lists configured each of them (metrics prefixed ``test_s1_`` / ``test_s2_``
    in the returned dict)."""
    lists = epic55_test_lists(config) if split == "test" else []
    if not lists:
        return evaluate_split(config, evaluator, variables, split, step, logger, final=True)
    out: Dict[str, float] = {}
    for tag, data_cfg in lists:
        values = evaluate_split(
            config, evaluator, variables, split, step, logger, final=True, data_cfg=data_cfg, tag=tag
        )
        out.update({f"{tag}_{k}": v for k, v in values.items()})
    return out


def evaluate_only(config: ml_collections.ConfigDict, workdir: str, *, mesh=None) -> Dict[str, float]:
    """``mode=evaluate``: multi-view evaluation of ``config.evaluate.checkpoint`` (a workdir,
    converted directory or ``.pyth``; ``best``: the best-validation checkpoint of ``workdir``),
    else the newest checkpoint in ``workdir``, else ``config.init_from``."""
    workdir = ckpt_lib.prepare_workdir(workdir)
    with storage.WorkdirLock(workdir):
        return _evaluate_only(config, workdir, mesh)


def _evaluate_only(config: ml_collections.ConfigDict, workdir: str, mesh) -> Dict[str, float]:
    mesh = mesh if mesh is not None else sharding.make_mesh()
    config = batch_scaling.resolve_batch(config, mesh.devices.size)
    config_schema.check_batch_layout(config, mesh.devices.size, jax.process_count(), training=False)
    source = config.evaluate.checkpoint or (workdir if ckpt_lib.is_training_workdir(workdir) else config.init_from)
    if not source:
        raise config_schema.ConfigError(
            "mode=evaluate needs weights: set config.evaluate.checkpoint or config.init_from, "
            f"or point --workdir at a training workdir (none in {workdir})"
        )
    step = 0  # converted checkpoints and .pyth files carry no training step
    if source == "best":
        src_cfg, variables, step = ckpt_lib.load_workdir_variables(workdir, best=True)
        what = f"best-validation checkpoint of {workdir} (step {step})"
    elif ckpt_lib.is_training_workdir(source):
        src_cfg, variables, step = ckpt_lib.load_workdir_variables(source)
        what = f"training workdir {source} (step {step})"
    else:
        src_cfg, variables, what = pretrained.load_pretrained(
            source, flag="config.evaluate.checkpoint" if config.evaluate.checkpoint else "config.init_from"
        )
    src_cfg.dtype = config.dtype
    for field in models.RUNTIME_FIELDS:
        src_cfg[field] = config.model[field]
    model = models.build(src_cfg)
    print(f"evaluating {what}", flush=True)
    logger = metric_log.MetricLogger(workdir)
    try:
        return evaluate_final(
            config,
            Evaluator.create(config, model, mesh, workdir),
            sharding.replicate(variables, mesh),
            config.evaluate.split,
            step,
            logger,
        )
    finally:
        logger.flush()
