"""grain input pipelines: an infinite, resumable training iterator and a one-pass evaluation iterator.

Training order. All hosts share one global stream of item ids: `range(N)` shuffled with `seed`,
reshuffled every epoch (grain's per-epoch seed), repeated forever. Global batch s is stream positions
[s*G, (s+1)*G); host p of P takes the contiguous block [s*G + p*G/P, s*G + (p+1)*G/P), so the
global array assembled from the host blocks lists the clips in stream order whatever P is (and
BatchNorm groups of consecutive clips are the same on 1 host and on many). The sample at
stream position i is a pure function of (seed, i), whatever the number of worker processes or threads,
so the iterator state is just the number of batches consumed (plus bad-input counters); restoring
it rebuilds the pipeline from that batch. The state is valid for any process count with the same
global batch size.

Bad inputs. A sample whose media cannot be read (missing, empty, corrupt) is replaced by another
item drawn from the same seed (at most `max_retries` times), logged as `path<TAB>reason` in the
bad-input log, and counted in the batch's `bad_inputs` field. The iterator raises
`TooManyBadInputsError` once more than `max_bad_fraction` of all decode attempts (plus a fixed
allowance of `bad_input_allowance`) failed.

Evaluation. Every (video, view) pair is visited once across all hosts: positions 0..N*V-1, padded
to a multiple of the global batch; global batch s covers [s*G, (s+1)*G) and host p the contiguous
block [s*G + p*G/P, s*G + (p+1)*G/P). Padding positions repeat real samples with `mask` 0, so every
host yields the same number of full batches. A video that cannot be read also gets `mask` 0.

Batches are dicts of numpy arrays; see `make_train_iterator` / `make_eval_iterator`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import grain
import ml_collections
import numpy as np
from ml_collections import config_dict

from egoexo_jax.data import samples
from egoexo_jax.data.bad_inputs import BadInputLog
from egoexo_jax.data.errors import TooManyBadInputsError
from egoexo_jax.data.sources import build_source
from egoexo_jax.data.video import DecodeError

AuxFn = Callable[[dict], dict]

# Per dataset: (train, val, test) list files, and the TFDS splits they become.
# Charades-Ego "val" is the test split (as in the original); EPIC is tested on its validation set.
_LISTS = {
    "kinetics": ("train.csv", "val.csv", "test.csv"),
    "charades_ego": ("train_1st.csv", "test_1st.csv", "test_1st.csv"),
    "epic100": ("EPIC_100_train.csv", "EPIC_100_validation.csv", "EPIC_100_validation.csv"),
    # The Ego-Exo release's split of the EPIC-55 training set (TBN); tested on its val part.
    "epic55": ("EPIC_train_action_labels.pkl", "EPIC_val_action_labels.pkl",
               "EPIC_val_action_labels.pkl"),
}
_TFDS_SPLITS = {
    "kinetics": ("train", "validation", "test"),
    "charades_ego": ("train", "test", "test"),
    "epic100": ("train", "validation", "validation"),
    "epic55": ("train", "validation", "validation"),
}


def default_data_config(dataset: str = "kinetics") -> ml_collections.ConfigDict:
    """Data config with the Ego-Exo defaults for `dataset` ('kinetics' | 'charades_ego' | 'epic100' |
    'epic55').

    Fields:
      dataset, source: 'files' (split lists + media under path_prefix) or 'tfds' (ArrayRecord build).
      path_to_data_dir: folder of the split lists / annotation files.
      path_prefix: folder the media paths in the lists are relative to (EPIC-100: the folder holding
        `{P}/rgb_frames/...`; EPIC-55: the folder holding `{video_id}/frame_*.jpg`).
      train_list, val_list, test_list: file names inside path_to_data_dir.
      path_label_separator: Kinetics list separator.
      num_classes: Kinetics classes (400).
      charades_fps: frame rate of the Charades-Ego frames (only for the official csv index).
      num_frames, sampling_rate, target_fps: clip = num_frames frames every sampling_rate (at
        target_fps for videos; raw frames for JPEG datasets).
      train_jitter_scales, train_crop_size, flip_prob: training augmentation.
      test_crop_size: short side and crop of evaluation views.
      num_ensemble_views, num_spatial_crops: test views = temporal x spatial.
      epic_val_random: EPIC 'val' with training-style random sampling (Ego-Exo*) instead of the centre
        clip and crop.
      mean, std: normalisation of [0, 1] pixels.
      bgr: channel order; None = the original code's per dataset (RGB for Kinetics, BGR for the
        OpenCV-read Charades-Ego and EPIC frames).
      arch, alpha: 'slowfast' packs [slow, fast] with slow = T // alpha frames; other archs one pathway.
      num_workers: grain worker processes (0 = in-process); num_threads: loader threads when
        num_workers is 0 (worker processes load sequentially);
        prefetch: batches buffered per process.
      decode_threads: PyAV codec thread_type ('AUTO', 'FRAME', 'SLICE', 'NONE').
      max_bad_fraction, bad_input_allowance, max_retries: bad-input policy (module docstring).
      bad_input_log: eval bad-input log file ('' = none; training takes the path as an argument).
      eval_seed: seed of the random views of Kinetics / Charades-Ego 'val'.
      tfds_name, tfds_data_dir, tfds_{train,val,test}_split: the TFDS build read when source='tfds'.
    """
    if dataset not in _LISTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(_LISTS)}")
    train_list, val_list, test_list = _LISTS[dataset]
    tfds_train, tfds_val, tfds_test = _TFDS_SPLITS[dataset]
    return ml_collections.ConfigDict({
        "dataset": dataset,
        "source": "files",
        "path_to_data_dir": "",
        "path_prefix": "",
        "train_list": train_list,
        "val_list": val_list,
        "test_list": test_list,
        "path_label_separator": " ",
        "num_classes": 400,
        "charades_fps": 24.0,
        "num_frames": 32,
        "sampling_rate": 2,
        "target_fps": 30.0,
        "train_jitter_scales": (256, 320),
        "train_crop_size": 224,
        "test_crop_size": 256,
        "flip_prob": 0.5,
        "num_ensemble_views": 10,
        "num_spatial_crops": 3,
        "epic_val_random": False,
        "mean": 0.45,
        "std": 0.225,
        "bgr": config_dict.placeholder(bool),
        "arch": "slowfast",
        "alpha": 4,
        "num_workers": 0,
        "num_threads": 2,
        "prefetch": 2,
        "decode_threads": "AUTO",
        "max_bad_fraction": 0.01,
        "bad_input_allowance": 10,
        "max_retries": 10,
        "bad_input_log": "",
        "eval_seed": 0,
        "tfds_name": "",
        "tfds_data_dir": "",
        "tfds_train_split": tfds_train,
        "tfds_val_split": tfds_val,
        "tfds_test_split": tfds_test,
    })


def _process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # pylint: disable=g-import-not-at-top
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    return int(process_index), int(process_count)


def _host_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(f"global batch {global_batch_size} is not a positive multiple of "
                         f"{process_count} processes")
    return global_batch_size // process_count


def _to_iterator(ds: grain.MapDataset, cfg) -> Any:
    """Batched MapDataset -> python iterator with thread prefetch and optional worker processes."""
    if cfg.num_workers > 0:
        # The worker processes are the parallelism and their queues the prefetch buffer (num_workers x
        # prefetch batches in flight); no extra thread prefetch inside each worker.
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=int(cfg.num_workers), per_worker_buffer_size=max(int(cfg.prefetch), 1)))
    else:
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(cfg.num_threads),
                                                     prefetch_buffer_size=int(cfg.prefetch)))
    return iter(it_ds)


def _close(iterator) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


# ----------------------------------------------------------------------------------------------
# Training.


class _StreamBlock:
    """Host-local index -> (global stream position, item id) for this host's block."""

    def __init__(self, stream: grain.MapDataset, block: "_HostBlock"):
        self.stream = stream
        self.block = block

    def __call__(self, local: int) -> tuple[int, int]:
        position = self.block(local)
        return position, int(self.stream[position])


class _TrainLoader:
    """(stream position, item id) -> one training sample, replacing unreadable items."""

    def __init__(self, source, opts: samples.SampleOptions, seed: int, log: BadInputLog,
                 aux_fn: AuxFn | None, max_retries: int):
        self.source = source
        self.opts = opts
        self.seed = seed
        self.log = log
        self.aux_fn = aux_fn
        self.max_retries = max_retries

    def __call__(self, element: tuple[int, int]) -> dict[str, np.ndarray]:
        position, candidate = element
        bad = 0
        reasons = []
        for attempt in range(self.max_retries + 1):
            rng = np.random.default_rng([self.seed, position, attempt])
            item = self.source.item(candidate)
            try:
                sample = samples.make_sample(item, samples.View("train"), rng, self.opts, split="train",
                                             video_level_labels=False, aux_fn=self.aux_fn)
            except DecodeError as e:
                self.log.write(item.describe(), str(e))
                reasons.append(f"{item.describe()}: {e}")
                bad += 1
                candidate = int(np.random.default_rng([self.seed, position, attempt, 1]).integers(
                    len(self.source)))
                continue
            sample["bad_inputs"] = np.int32(bad)
            return sample
        raise TooManyBadInputsError(
            f"sample at stream position {position}: {self.max_retries + 1} items in a row could not "
            f"be read (last: {reasons[-1]}); see the bad-input log {self.log.path or '(disabled)'}")


class TrainIterator:
    """Infinite iterator of host batches with `get_state()` / `set_state()`.

    Batch fields: `pathway0` `[B, T_slow, S, S, 3] float32` (the only pathway for non-SlowFast archs),
    `pathway1` `[B, T_fast, S, S, 3] float32` (SlowFast), labels (Kinetics `label` int32 `[B]`;
    Charades-Ego `label` float32 `[B, 157]`; EPIC `verb`, `noun` int32 `[B]`), `bad_inputs` int32
    `[B]`, plus whatever `aux_fn` adds.
    """

    def __init__(self, batched: grain.MapDataset, cfg, *, seed: int, global_batch_size: int,
                 num_items: int, log_path: str | None):
        self._batched = batched
        self._cfg = cfg
        self._seed = seed
        self._global_batch_size = global_batch_size
        self._num_items = num_items
        self._log_path = log_path
        self._batches = 0
        self._bad = 0
        self._attempts = 0
        self._iterator = None

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = _to_iterator(self._batched[self._batches:], self._cfg)
        batch = next(self._iterator)
        self._batches += 1
        bad = int(np.sum(batch["bad_inputs"]))
        self._bad += bad
        self._attempts += bad + len(batch["bad_inputs"])
        allowed = self._cfg.max_bad_fraction * self._attempts + self._cfg.bad_input_allowance
        if self._bad > allowed:
            raise TooManyBadInputsError(
                f"{self._bad} of {self._attempts} samples read so far could not be decoded (more than "
                f"{self._cfg.max_bad_fraction:.2%} + {self._cfg.bad_input_allowance}); the list is in "
                f"{self._log_path or 'the bad-input log (disabled: pass bad_input_log)'}")
        return batch

    def get_state(self) -> dict:
        """JSON-serialisable position of the iterator."""
        return {
            "version": 1,
            "batches": self._batches,
            "bad_inputs": self._bad,
            "attempts": self._attempts,
            "seed": self._seed,
            "global_batch_size": self._global_batch_size,
            "num_items": self._num_items,
        }

    def set_state(self, state: dict) -> None:
        """Continues from `state` (from `get_state()` of an iterator over the same data and seed)."""
        for key in ("seed", "global_batch_size", "num_items"):
            if state[key] != getattr(self, f"_{key}"):
                raise ValueError(f"iterator state has {key}={state[key]}, this iterator "
                                 f"{getattr(self, f'_{key}')}; it belongs to a different run")
        self.close()
        self._batches = int(state["batches"])
        self._bad = int(state["bad_inputs"])
        self._attempts = int(state["attempts"])

    def close(self) -> None:
        """Stops worker processes (they restart on the next `next`)."""
        if self._iterator is not None:
            _close(self._iterator)
            self._iterator = None

    def __enter__(self) -> "TrainIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_train_iterator(data_cfg, *, global_batch_size: int, seed: int,
                        process_index: int | None = None, process_count: int | None = None,
                        bad_input_log: str | os.PathLike | None = None,
                        aux_fn: AuxFn | None = None) -> TrainIterator:
    """Training iterator over `data_cfg.train_list`, yielding host batches of global/process_count.

    Args:
      data_cfg: `default_data_config()`-style ConfigDict.
      global_batch_size: clips per step over all hosts.
      seed: shuffling and augmentation seed (same on all hosts).
      process_index, process_count: this host and the host count (default: from jax).
      bad_input_log: file collecting unreadable inputs (e.g. `workdir/bad_inputs.txt`).
      aux_fn: picklable `meta -> dict of fixed-shape arrays` merged into each sample (`meta` keys:
        dataset, split, key, video_id, frame_indices `[T] int64`, num_video_frames, transform).
    """
    process_index, process_count = _process_layout(process_index, process_count)
    host_batch = _host_batch_size(global_batch_size, process_count)
    source = build_source(data_cfg, "train")
    opts = samples.SampleOptions.from_config(data_cfg)
    log = BadInputLog(bad_input_log)
    stream = grain.MapDataset.range(len(source)).shuffle(seed=seed % 2**32).repeat()
    ds = grain.MapDataset.range(len(stream) // process_count)
    ds = ds.map(_StreamBlock(stream, _HostBlock(process_index, process_count, host_batch)))
    ds = ds.map(_TrainLoader(source, opts, seed, log, aux_fn, int(data_cfg.max_retries)))
    ds = ds.batch(host_batch, drop_remainder=True, batch_fn=samples.stack)
    return TrainIterator(ds, data_cfg, seed=seed, global_batch_size=global_batch_size,
                         num_items=len(source), log_path=log.path)


# ----------------------------------------------------------------------------------------------
# Evaluation.


class _HostBlock:
    """Host-local index -> global position: step s, slot j of host p -> s*G + p*B + j."""

    def __init__(self, process_index: int, process_count: int, host_batch: int):
        self.p, self.count, self.b = process_index, process_count, host_batch

    def __call__(self, local: int) -> int:
        step, slot = divmod(local, self.b)
        return step * self.b * self.count + self.p * self.b + slot


class _EvalLoader:
    """Global position -> one evaluation sample with video_index, view_index, mask."""

    def __init__(self, source, opts: samples.SampleOptions, *, split: str, num_views: int,
                 view_mode: str, seed: int, log: BadInputLog, aux_fn: AuxFn | None,
                 max_retries: int):
        self.source = source
        self.opts = opts
        self.split = split
        self.num_views = num_views
        self.view_mode = view_mode
        self.seed = seed
        self.log = log
        self.aux_fn = aux_fn
        self.max_retries = max_retries
        self.total = len(source) * num_views
        self._cache = None  # (item index, temporal clip, Clip): test crops of one clip decode once

    def _view(self, view_index: int) -> samples.View:
        if self.view_mode == "test":
            return samples.view_of(view_index, self.opts)
        return samples.View(self.view_mode)

    def _sample(self, video: int, view: samples.View, rng) -> dict[str, np.ndarray]:
        item = self.source.item(video)
        clip = None
        cache_key = (video, view.temporal_idx)
        if view.mode == "test":
            cached = self._cache
            if cached is not None and cached[0] == cache_key:
                clip = cached[1]
            else:
                clip = samples.decode_clip(item, view, rng, self.opts)
                self._cache = (cache_key, clip)
        return samples.make_sample(item, view, rng, self.opts, split=self.split,
                                   video_level_labels=True, aux_fn=self.aux_fn, clip=clip)

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        real = position < self.total
        video, view_index = divmod(position % self.total, self.num_views)
        view = self._view(view_index)
        ok = True
        bad = 0
        for attempt in range(self.max_retries + 1):
            candidate = (video + attempt) % len(self.source)
            try:
                sample = self._sample(candidate, view, np.random.default_rng([self.seed, position]))
                break
            except DecodeError as e:
                item = self.source.item(candidate)
                self.log.write(item.describe(), str(e))
                ok = False
                bad += 1
        else:
            raise TooManyBadInputsError(
                f"{self.max_retries + 1} videos in a row from #{video} could not be read; see the "
                f"bad-input log {self.log.path or '(disabled: set data_cfg.bad_input_log)'}")
        sample["video_index"] = np.int32(video)
        sample["view_index"] = np.int32(view_index)
        sample["mask"] = np.float32(real and ok)
        sample["bad_inputs"] = np.int32(bad)
        return sample


class EvalIterator:
    """One pass over this host's evaluation batches; `len()` = number of batches (same on every host).

    Batch fields: the training fields with evaluation labels (Charades-Ego video-level), plus
    `video_index` int32 `[B]`, `view_index` int32 `[B]`, `mask` float32 `[B]` (1 real, 0 padding or
    unreadable) and `bad_inputs` int32 `[B]`.
    """

    def __init__(self, ds: grain.MapDataset, cfg, num_batches: int):
        self._ds = ds
        self._cfg = cfg
        self._num_batches = num_batches
        self._iterator = None

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> "EvalIterator":
        self.close()
        self._iterator = _to_iterator(self._ds, self._cfg)
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = _to_iterator(self._ds, self._cfg)
        try:
            return next(self._iterator)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if self._iterator is not None:
            _close(self._iterator)
            self._iterator = None

    def __enter__(self) -> "EvalIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def eval_view_mode(data_cfg, split: str) -> tuple[str, int]:
    """(view mode, views per video) of an evaluation split."""
    if split == "test":
        return "test", int(data_cfg.num_ensemble_views) * int(data_cfg.num_spatial_crops)
    if split == "val":
        if data_cfg.dataset in ("epic100", "epic55") and not data_cfg.epic_val_random:
            return "center", 1
        return "train", 1
    raise ValueError(f"evaluation split must be 'val' or 'test', got {split!r}")


def make_eval_iterator(data_cfg, *, split: str, global_batch_size: int,
                       process_index: int | None = None, process_count: int | None = None,
                       aux_fn: AuxFn | None = None,
                       bad_input_log: str | os.PathLike | None = None) -> tuple[EvalIterator, int, int]:
    """Evaluation iterator visiting every (video, view) once over all hosts.

    Args:
      split: 'val' (one view: EPIC centre clip/crop, or Kinetics/Charades-Ego training-style random
        view with a fixed seed) or 'test' (num_ensemble_views x num_spatial_crops views).
      bad_input_log: file listing unreadable videos (default: `data_cfg.bad_input_log`).

    Returns:
      (iterator, num_videos, num_views).
    """
    process_index, process_count = _process_layout(process_index, process_count)
    host_batch = _host_batch_size(global_batch_size, process_count)
    source = build_source(data_cfg, split)
    view_mode, num_views = eval_view_mode(data_cfg, split)
    opts = samples.SampleOptions.from_config(data_cfg)
    total = len(source) * num_views
    num_batches = math.ceil(total / global_batch_size)
    loader = _EvalLoader(source, opts, split=split, num_views=num_views, view_mode=view_mode,
                         seed=int(data_cfg.eval_seed),
                         log=BadInputLog(bad_input_log if bad_input_log else data_cfg.bad_input_log),
                         aux_fn=aux_fn, max_retries=int(data_cfg.max_retries))
    ds = grain.MapDataset.range(num_batches * host_batch)
    ds = ds.map(_HostBlock(process_index, process_count, host_batch)).map(loader)
    ds = ds.batch(host_batch, drop_remainder=True, batch_fn=samples.stack)
    return EvalIterator(ds, data_cfg, num_batches), len(source), num_views
