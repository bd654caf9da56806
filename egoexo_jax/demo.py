"""The bundled demo (``config.mode = "demo"``, ``configs/demo.py``): Ego-Exo end to end on a laptop.

Stages, each an ordinary training run in its own sub-folder of the workdir (so each resumes on
its own and leaves its checkpoints, ``metrics.jsonl``, TensorBoard events and result tables):

1. ``data/``: :func:`egoexo_jax.demo_data.demo_sets.write_demo_data` writes a "Kinetics" pre-training
   set (motion classes, mp4 + official csv lists + the three teacher files) and an egocentric
   multi-label set in the Charades-Ego frame-list layout (+ hand-object detections).
2. ``pretrain_baseline/``: the student pre-trained with the action loss only.
3. ``pretrain_egoexo/``: the same student with Ego-Exo's three distillation losses (offline
   teacher files, official weights 0.5 / 0.1 / 0.5 / 1 / 1).
4. ``finetune_baseline/``, ``finetune_egoexo/``: each pre-trained student fine-tuned on the
   egocentric set (multi-label BCE, fine-tune transfer semantics: backbone kept, heads new),
   multi-view tested (max over views, mAP).

The demo ends with a table (printed, ``results.md``, and ``metrics.jsonl`` / TensorBoard at the
top of the workdir) comparing the two students with chance.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict

import jax
import ml_collections
import numpy as np

from egoexo_jax import config_schema, storage
from egoexo_jax.cli import InputError
from egoexo_jax.demo_data import demo_sets
from egoexo_jax.models import presets

STAGES = ("pretrain_baseline", "pretrain_egoexo", "finetune_baseline", "finetune_egoexo")


def student(num_classes: int, *, egoexo: bool, demo: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The demo's small SlowFast: R18 layout, width 8, 8 fast / 2 slow frames, 32 px crops; res5
    keeps stride 16 so the interaction map is 2 x 2."""
    m = presets.slowfast(
        18,
        width_per_group=demo.width,
        num_frames=demo.num_frames,
        crop_size=demo.crop,
        num_classes=(num_classes,),
        spatial_strides=(1, 2, 2, 1),
        bn_group_size=demo.bn_group_size,
        dropout_rate=0.0 if egoexo else 0.5,
        interaction_conv_dim=64,
    )
    if egoexo:
        presets.egoexo_pretrain_heads(m)
    return m


def _common(c: ml_collections.ConfigDict, demo: ml_collections.ConfigDict) -> None:
    c.seed = demo.seed
    c.batch_size = demo.batch_size
    c.eval_batch_size = demo.eval_batch_size
    c.data.update(
        num_frames=demo.num_frames,
        sampling_rate=demo.sampling_rate,
        alpha=4,
        train_jitter_scales=(demo.crop, demo.crop * 9 // 8),
        train_crop_size=demo.crop,
        test_crop_size=demo.crop,
        num_ensemble_views=demo.temporal_views,
        num_spatial_crops=demo.spatial_crops,
        num_threads=2,
        prefetch=2,
        flip_prob=0.0,  # the demo's classes have a direction: a flip turns left into right
    )
    c.log_every_steps = 10
    c.eval_every_epochs = 0.0
    c.checkpoint.every_epochs = 2.0
    c.checkpoint.keep = 1
    c.schedule.policy = "cosine"


def pretrain_config(paths: demo_sets.DemoPaths, demo: ml_collections.ConfigDict, *, egoexo: bool):
    c = config_schema.base_config()
    c.data.update(
        path_to_data_dir=paths.kinetics_dir, path_prefix=paths.kinetics_prefix, num_classes=paths.num_pretrain_classes
    )
    _common(c, demo)
    c.model = student(paths.num_pretrain_classes, egoexo=egoexo, demo=demo)
    c.num_epochs = demo.pretrain_epochs
    c.optimizer.name = demo.pretrain_optimizer
    c.optimizer.base_lr = demo.pretrain_lr
    c.optimizer.reference_batch_size = demo.batch_size
    c.schedule.warmup_epochs = 1.0
    c.schedule.warmup_start_lr = demo.pretrain_lr / 10
    c.evaluate.ensemble = "sum"
    if egoexo:
        c.loss.update(ce=0.5, ego=0.1, object=0.5, hand=1.0, object_map=1.0)
        c.teachers.ego.update(source="file", file=paths.ego_scores)
        c.teachers.object.update(source="file", file=paths.object_scores)
        c.teachers.interaction.update(source="file", detections=paths.kinetics_detections)
    return c


def finetune_config(paths: demo_sets.DemoPaths, demo: ml_collections.ConfigDict, init_from: str):
    c = config_schema.base_config()
    c.data = config_schema.default_data_config("charades_ego")
    c.data.update(path_to_data_dir=paths.charades_dir, path_prefix=paths.charades_prefix)
    _common(c, demo)
    c.data.sampling_rate = demo.finetune_sampling_rate
    c.model = student(157, egoexo=False, demo=demo)
    presets.charades_ego_heads(c.model)
    c.loss.multi_label = True
    c.num_epochs = demo.finetune_epochs
    c.optimizer.base_lr = demo.finetune_lr
    c.optimizer.reference_batch_size = demo.batch_size
    c.evaluate.ensemble = "max"
    c.init_from = init_from
    return c


def stage_configs(
    paths: demo_sets.DemoPaths, demo: ml_collections.ConfigDict, workdir: str
) -> Dict[str, ml_collections.ConfigDict]:
    out = {
        "pretrain_baseline": pretrain_config(paths, demo, egoexo=False),
        "pretrain_egoexo": pretrain_config(paths, demo, egoexo=True),
    }
    for kind in ("baseline", "egoexo"):
        out[f"finetune_{kind}"] = finetune_config(paths, demo, storage.join(workdir, f"pretrain_{kind}"))
    for c in out.values():
        c.dtype = demo.dtype
        config_schema.validate(c)
    return out


def chance_map(label_matrix: np.ndarray) -> float:
    """Expected mAP of random scores: mean positive rate of the classes that have positives."""
    rates = label_matrix.mean(0)
    return float(100 * rates[rates > 0].mean())


def results_table(results: Dict[str, Dict[str, float]], chance: Dict[str, float], minutes: float) -> str:
    rows = [
        ("pre-train top-1 (synthetic Kinetics test, 8 classes)", "top1", "pretrain"),
        ("pre-train top-5", "top5", "pretrain"),
        ("fine-tune mAP (egocentric test)", "mAP", "finetune"),
    ]
    lines = ["## egoexo-jax demo results", "", "| metric | chance | baseline | Ego-Exo |", "|---|---:|---:|---:|"]
    for title, key, stage in rows:
        base = results.get(f"{stage}_baseline", {}).get(key, float("nan"))
        ego = results.get(f"{stage}_egoexo", {}).get(key, float("nan"))
        lines.append(f"| {title} | {chance[key]:.1f} | {base:.1f} | {ego:.1f} |")
    lines += ["", f"Wall time {minutes:.1f} min on {jax.device_count()} {jax.devices()[0].platform} device(s)."]
    return "\n".join(lines)


def run_demo(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Dict[str, float]]:
    """Generates the data (once), runs the four stages (each resumable) and prints the table."""
    from egoexo_jax import metric_log, train_loop  # pylint: disable=import-outside-toplevel

    start = time.time()
    demo = config.demo
    workdir = storage.absolute(storage.check(workdir, "--workdir"))
    if storage.is_url(workdir) and not demo.data_root:
        raise InputError(
            f"the demo writes its generated videos to a local folder, --workdir={workdir}, expected a local "
            "--workdir or --config.demo.data_root=LOCAL_FOLDER"
        )
    storage.makedirs(workdir)
    if demo.xla_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR") and not storage.is_url(workdir):
        # The two fine-tunes (and re-runs) compile identical programs: cache them.
        jax.config.update("jax_compilation_cache_dir", storage.join(workdir, "xla_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    data_root = demo.data_root or storage.join(workdir, "data")
    print(f"[demo] writing the synthetic datasets to {data_root} ...", flush=True)
    paths = demo_sets.write_demo_data(
        data_root,
        seed=demo.seed,
        num_pretrain_videos=demo.pretrain_videos,
        num_finetune_videos=demo.finetune_videos,
        height=demo.height,
        width=demo.width_px,
        num_frames=demo.video_frames,
        finetune_frames=demo.finetune_video_frames,
    )
    configs = stage_configs(paths, demo, workdir)
    results: Dict[str, Dict[str, float]] = {}
    for name in STAGES:
        print(f"[demo] stage {name} ({time.time() - start:.0f} s so far)", flush=True)
        results[name] = train_loop.train_and_evaluate(configs[name], storage.join(workdir, name))
    from egoexo_jax import evaluate as eval_lib  # pylint: disable=import-outside-toplevel

    labels = eval_lib.video_labels(configs["finetune_baseline"].data, "test")["label"]
    chance = {
        "top1": 100.0 / paths.num_pretrain_classes,
        "top5": 500.0 / paths.num_pretrain_classes,
        "mAP": chance_map(labels),
    }
    minutes = (time.time() - start) / 60
    table = results_table(results, chance, minutes)
    if jax.process_index() == 0:
        storage.write_text(storage.join(workdir, "results.md"), table + "\n")
        logger = metric_log.MetricLogger(workdir)
        flat = {f"{stage}/{k}": v for stage, vals in results.items() for k, v in vals.items()}
        flat.update({f"chance/{k}": v for k, v in chance.items()})
        flat["wall_minutes"] = minutes
        logger.write(0, flat)
        logger.close()
        summary = {"results": results, "chance": chance, "wall_minutes": minutes}
        storage.write_text(storage.join(workdir, "results.json"), json.dumps(summary, indent=2))
    print(table, flush=True)
    return results
