"""Running the online teachers once over a dataset list (:func:`precompute`): the config check,
the teachers' view of one video, chunks shared out over processes, a part file per chunk, the
merge. The command line, the output formats and the choice of clip are described in
:mod:`egoexo_jax.precompute_teachers`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import jax
import numpy as np
from tqdm import tqdm

from egoexo_jax import storage, teacher_loading
from egoexo_jax.data import samples, sources, transforms
from egoexo_jax.data.video import DecodeError
from egoexo_jax.models import teachers
from egoexo_jax.precompute_parts import (
    PrecomputeError,
    check_or_write_manifest,
    finished_chunks,
    manifest,
    merge,
    part_path,
    set_aside_damaged,
    write_part,
)

SIGNALS = ("ego", "object")

# Config keys read here (and by the teacher loaders / data readers), with what they should hold.
REQUIRED_KEYS = {
    "seed": "int (random-init seed of a weightless object teacher)",
    "model.dtype": "compute dtype of the teachers, e.g. 'float32'",
    "model.object_classes": "Object-Score classes (0 = 1000)",
    "data.dataset": "'kinetics' | 'charades_ego' | 'epic100' | 'epic55'",
    "data.source": "'files' | 'tfds'",
    "data.path_to_data_dir": "folder of the split lists",
    "data.path_prefix": "folder the list paths are relative to",
    "data.train_list": "file name of the training list",
    "data.num_frames": "frames per clip (the student's)",
    "data.sampling_rate": "frame stride of the clip",
    "data.target_fps": "frame rate the stride refers to",
    "data.train_jitter_scales": "(min, max) short side of training; the teachers see min",
    "data.train_crop_size": "crop size the teachers see",
    "data.mean": "input normalisation mean",
    "data.std": "input normalisation std",
    "data.bgr": "channel order (None = dataset default)",
    "data.arch": "pathway packing ('slowfast' | 'slow' | 'mvit')",
    "data.alpha": "slow/fast ratio",
    "data.num_threads": "decoding threads",
    "teachers.ego.source": "'none' | 'file' | 'online'",
    "teachers.ego.checkpoint": "2-way ego/exo classifier: workdir, converted dir or .pyth",
    "teachers.object.source": "'none' | 'file' | 'online'",
    "teachers.object.weights": "torchvision ImageNet ResNet .pth",
    "teachers.object.depth": "ResNet depth",
    "teachers.object.width": "ResNet width",
    "teachers.object.num_frames": "frames per clip the object teacher averages",
}


# ----------------------------------------------------------------------------------------------
# Config checks.


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            raise KeyError(dotted) from None
    return node


def check_config(config, where: str = "config", check_files: bool = True) -> List[str]:
    """The online signals of ``config`` (``["ego", "object"]`` or a subset), after checks.

    ``check_files=False`` skips the existence check of the teacher checkpoint (a merge needs none).

    Raises:
      PrecomputeError: a missing key (named, with what it should hold), no online teacher, an
        empty / non-existent teacher checkpoint or weights file.
    """
    for key, what in REQUIRED_KEYS.items():
        try:
            _get(config, key)
        except KeyError:
            raise PrecomputeError(f"{where}: missing key '{key}' (expected {what})") from None
    online = [s for s in SIGNALS if config.teachers[s].source == "online"]
    if not online:
        raise PrecomputeError(
            f"{where}: config.teachers.ego.source={config.teachers.ego.source!r} and "
            f"config.teachers.object.source={config.teachers.object.source!r}; at least one must be "
            "'online' (e.g. --config=configs/pretrain.py:online)"
        )
    if "ego" in online and check_files:
        path = config.teachers.ego.checkpoint
        if not path:
            raise PrecomputeError(
                f"{where}: config.teachers.ego.checkpoint is empty; expected a 2-way "
                "ego/exo classifier (training workdir, converted directory or .pyth)"
            )
        storage.check(path, "config.teachers.ego.checkpoint")
        if not storage.exists(path):
            raise PrecomputeError(
                f"{where}: config.teachers.ego.checkpoint={path}: no such file or "
                "directory (expected a training workdir, converted directory or .pyth)"
            )
    return online


def _check_object_weights(config, where: str, allow_random: bool) -> None:
    weights = config.teachers.object.weights
    if weights and not storage.isfile(storage.check(weights, "config.teachers.object.weights")):
        raise PrecomputeError(
            f"{where}: config.teachers.object.weights={weights}: no such file "
            "(expected torchvision's ImageNet ResNet .pth, e.g. resnet50-0676ba61.pth)"
        )
    if not weights and not allow_random:
        raise PrecomputeError(
            f"{where}: config.teachers.object.weights is empty: the object teacher would be randomly "
            "initialised and its file meaningless; set it to torchvision's ImageNet ResNet .pth "
            "(or pass --allow_random_object_teacher for a smoke test)"
        )


# ----------------------------------------------------------------------------------------------
# The teacher view of one video.


@dataclasses.dataclass(frozen=True)
class TeacherView:
    """How a video becomes the teachers' input (see the module docstring).

    Attributes:
      opts: the student's sample options with the centre clip's test-clip count.
      scale: short side the frames are resized to; crop: centre crop size.
    """

    opts: Any
    scale: int
    crop: int

    @classmethod
    def from_config(cls, data_cfg) -> "TeacherView":
        opts = samples.SampleOptions.from_config(data_cfg)
        # Test clip 1 of 2 starts at (N - span) / 2 for videos; frame lists spread K clips with
        # step free / (K - 1), so their middle clip is 1 of 3.
        opts = dataclasses.replace(opts, num_ensemble_views=2 if data_cfg.dataset == "kinetics" else 3)
        return cls(opts, int(data_cfg.train_jitter_scales[0]), int(data_cfg.train_crop_size))

    def pathways(self, item) -> Dict[str, np.ndarray]:
        """``{"pathway0": [T_0, S, S, 3] float32, ...}`` of ``item`` (``S`` = crop).

        Raises:
          egoexo_jax.data.video.DecodeError: missing, empty or corrupt media.
        """
        clip = samples.decode_clip(item, samples.View("test", 1, 1), None, self.opts)
        _, h, w, _ = clip.frames.shape
        params = transforms.test_spatial(h, w, spatial_idx=1, scale=self.scale, crop_size=self.crop)
        return samples.pathways(clip.frames, params, self.opts)


def _load(view: TeacherView, item) -> Tuple[Optional[Dict[str, np.ndarray]], str]:
    """(pathways, "") or (None, reason) for an unreadable video."""
    try:
        return view.pathways(item), ""
    except (DecodeError, OSError, EOFError, ValueError) as e:
        return None, " ".join(str(e).split()) or type(e).__name__


def _bounded_map(executor, fn: Callable, items: Sequence, lookahead: int) -> Iterator:
    """``map(fn, items)`` in order on ``executor``, at most ``lookahead`` results in flight."""
    futures: List[concurrent.futures.Future] = []
    it = iter(items)
    for item in it:
        futures.append(executor.submit(fn, item))
        if len(futures) >= lookahead:
            break
    while futures:
        result = futures.pop(0).result()
        for item in it:
            futures.append(executor.submit(fn, item))
            break
        yield result


# ----------------------------------------------------------------------------------------------
# Running.


def chunks_of_process(num_chunks: int, process_index: int, process_count: int) -> List[int]:
    """Chunks ``c`` with ``c % process_count == process_index``."""
    return list(range(process_index, num_chunks, process_count))


def _chunk_range(chunk: int, chunk_size: int, num_items: int) -> Tuple[int, int]:
    return chunk * chunk_size, min(num_items, (chunk + 1) * chunk_size)


@functools.lru_cache(maxsize=None)
def _jitted_targets():
    return jax.jit(
        teachers.online_teacher_targets, static_argnums=(0,), static_argnames=("input_mean", "input_std", "input_bgr")
    )


def teacher_function(teacher_fn: functools.partial) -> Callable:
    """``(variables, pathways) -> {"ego_target", "object_target"}``, jitted, for the
    ``functools.partial`` of :func:`egoexo_jax.teacher_loading.from_config`.

    The teacher spec is a static argument of one module-level jitted function, so runs with the
    same teachers in one process (a restart, several splits) compile once.
    """
    (spec,) = teacher_fn.args
    norm = dict(teacher_fn.keywords)
    return lambda variables, pathways: _jitted_targets()(spec, variables, pathways, **norm)


def _run_chunk(
    chunk: int,
    start: int,
    stop: int,
    source,
    view: TeacherView,
    teacher_fn,
    variables,
    signals: Sequence[str],
    batch_size: int,
    executor,
    bar,
) -> Tuple[List[str], Dict, List]:
    keys: List[str] = []
    bad: List[Tuple[str, str]] = []
    scores: Dict[str, List[np.ndarray]] = {s: [] for s in signals}
    items = [source.item(i) for i in range(start, stop)]
    batch: List[Dict[str, np.ndarray]] = []

    def flush():
        if not batch:
            return
        names = sorted(batch[0])
        pathways = []
        for name in names:
            x = np.stack([b[name] for b in batch])
            pad = np.zeros((batch_size - len(batch),) + x.shape[1:], x.dtype)  # one compiled shape
            pathways.append(np.concatenate([x, pad]))
        out = teacher_fn(variables, pathways)
        for s in signals:
            scores[s].append(np.asarray(out[f"{s}_target"], np.float32)[: len(batch)])
        batch.clear()

    lookahead = max(2 * batch_size, 4)
    loaded = _bounded_map(executor, lambda it: _load(view, it), items, lookahead)
    for item, (sample, reason) in zip(items, loaded):
        if sample is None:
            bad.append((item.describe(), reason))
            bar.write(f"precompute_teachers: skipped {item.describe()}: {reason}", file=sys.stderr)
        else:
            keys.append(item.key)
            batch.append(sample)
            if len(batch) == batch_size:
                flush()
        bar.update(1)
    flush()
    stacked = {s: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)) for s, v in scores.items()}
    return keys, stacked, bad


@dataclasses.dataclass
class Result:
    """What :func:`precompute` did.

    Attributes:
      files: ``{signal: pickle path}`` when merged here, else ``{}``.
      chunks_done: chunks this process computed now (not counting those found on disk).
      num_chunks: chunks of the whole list; complete: every part exists and the pickles are merged.
    """

    files: Dict[str, str]
    chunks_done: int
    num_chunks: int
    complete: bool


def precompute(
    config,
    output: str,
    *,
    split: str = "train",
    chunk_size: int = 512,
    batch_size: int = 16,
    merge_only: bool = False,
    allow_random_object_teacher: bool = False,
    max_chunks: Optional[int] = None,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    where: str = "config",
) -> Result:
    """Runs the online teachers of ``config`` over ``split`` and writes the offline files to ``output``.

    Args:
      config: an experiment config (``configs/pretrain.py:online``-style: see ``REQUIRED_KEYS``).
      output: output folder (created), local or ``gs://``.
      split: 'train' | 'val' | 'test' (which list of ``config.data``).
      chunk_size: list entries per part file; batch_size: clips per teacher call.
      merge_only: only merge existing parts (the ``--merge`` step).
      allow_random_object_teacher: accept an empty ``teachers.object.weights`` (tests, smoke runs).
      max_chunks: stop after computing this many chunks (no merge; the run resumes later).
      process_index, process_count: this process and how many share the work (default: jax's).
      where: name of the config in error messages.
    Raises:
      PrecomputeError: see :func:`check_config`, a manifest of other settings, missing parts.
    """
    if chunk_size < 1 or batch_size < 1:
        raise PrecomputeError(f"--chunk_size={chunk_size} and --batch_size={batch_size} must be positive")
    if split not in ("train", "val", "test"):
        raise PrecomputeError(f"--split={split!r}; expected 'train', 'val' or 'test'")
    online = check_config(config, where, check_files=not merge_only)
    if "object" in online and not merge_only:
        _check_object_weights(config, where, allow_random_object_teacher)
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    output = storage.absolute(storage.check(output, "--output"))
    try:
        source = sources.build_source(config.data, split)
    except (OSError, ValueError) as e:
        raise PrecomputeError(f"{where}: cannot read the {split} list of config.data: {e}") from None
    view = TeacherView.from_config(config.data)
    num_items = len(source)
    num_chunks = math.ceil(num_items / chunk_size)
    check_or_write_manifest(output, manifest(config, split, source, online, chunk_size, batch_size, view))
    if merge_only:
        return Result(merge(output, num_chunks=num_chunks, signals=online), 0, num_chunks, True)

    mine = chunks_of_process(num_chunks, process_index, process_count)
    finished = finished_chunks(output)
    # A part left truncated or damaged (e.g. by a copy) is set aside and its chunk redone.
    finished -= set(set_aside_damaged(output, [c for c in mine if c in finished], online))
    todo = [c for c in mine if c not in finished]
    sizes = {c: _chunk_range(c, chunk_size, num_items)[1] - _chunk_range(c, chunk_size, num_items)[0] for c in mine}
    done_items = sum(sizes[c] for c in mine if c not in todo)
    computed = 0
    if todo and (max_chunks is None or max_chunks > 0):
        try:
            teacher_fn, variables = teacher_loading.from_config(config, config.model)
        except teachers.TeacherError as e:
            raise PrecomputeError(f"{where}: {e}") from None
        variables = jax.device_put(variables)
        fn = teacher_function(teacher_fn)
        bar = tqdm(
            total=sum(sizes.values()),
            initial=done_items,
            unit="video",
            file=sys.stderr,
            desc=f"teachers {'+'.join(online)}"
            + (f" (process {process_index}/{process_count})" if process_count > 1 else ""),
        )
        threads = max(1, int(config.data.num_threads))
        with concurrent.futures.ThreadPoolExecutor(threads) as executor:
            for c in todo:
                if max_chunks is not None and computed >= max_chunks:
                    break
                start, stop = _chunk_range(c, chunk_size, num_items)
                keys, scores, bad = _run_chunk(
                    c, start, stop, source, view, fn, variables, online, batch_size, executor, bar
                )
                write_part(part_path(output, c), chunk=c, start=start, stop=stop, keys=keys, scores=scores, bad=bad)
                computed += 1
        bar.close()
    if max_chunks is not None and computed < len(todo):
        return Result({}, computed, num_chunks, False)
    if process_count > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

        multihost_utils.sync_global_devices("egoexo_precompute_teachers")
    if process_index != 0:
        return Result({}, computed, num_chunks, False)
    return Result(merge(output, num_chunks=num_chunks, signals=online), computed, num_chunks, True)
