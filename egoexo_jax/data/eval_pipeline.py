"""The evaluation input pipeline (grain): one pass over every (video, view) pair.

Every (video, view) pair is visited once across all hosts: positions 0..N*V-1, padded to a
multiple of the global batch; global batch s covers [s*G, (s+1)*G) and each host takes its
contiguous block of it (`grain_hosts`). Padding positions (only in the last batch) repeat one real
sample with `mask` 0, decoded once per loader rather than per position, so every host yields the
same number of full batches. A video that cannot be read also gets `mask` 0.

Batches are dicts of numpy arrays; see `make_eval_iterator`.
"""

from __future__ import annotations

import dataclasses
import math
import os

import grain
import numpy as np

from egoexo_jax.data import samples
from egoexo_jax.data.bad_inputs import BadInputLog
from egoexo_jax.data.errors import TooManyBadInputsError
from egoexo_jax.data.grain_hosts import GrainIterator, HostBlock, host_batch_size, process_layout, to_iterator
from egoexo_jax.data.samples import AuxFn
from egoexo_jax.data.sources import build_source
from egoexo_jax.data.video import DecodeError

__all__ = ["EvalIterator", "eval_view_mode", "make_eval_iterator"]


class _EvalLoader:
    """Global position -> one evaluation sample with video_index, view_index, mask."""

    def __init__(
        self,
        source,
        opts: samples.SampleOptions,
        *,
        split: str,
        num_views: int,
        view_mode: str,
        seed: int,
        log: BadInputLog,
        aux_fn: AuxFn | None,
        max_retries: int,
    ):
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
        self._last = None  # the newest real sample: padding positions copy it instead of decoding

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
        return samples.make_sample(
            item, view, rng, self.opts, split=self.split, video_level_labels=True, aux_fn=self.aux_fn, clip=clip
        )

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        if position >= self.total:
            return self._padding()
        return self._real(position)

    def _padding(self) -> dict[str, np.ndarray]:
        """A masked copy of a real sample (decoded once per loader when none was made yet)."""
        if self._last is None:
            self._last = self._real(0)
        sample = dict(self._last)
        sample["mask"] = np.float32(0.0)
        sample["bad_inputs"] = np.int32(0)
        return sample

    def _real(self, position: int) -> dict[str, np.ndarray]:
        video, view_index = divmod(position, self.num_views)
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
                f"bad-input log {self.log.path or '(disabled: set data_cfg.bad_input_log)'}"
            )
        sample["video_index"] = np.int32(video)
        sample["view_index"] = np.int32(view_index)
        sample["mask"] = np.float32(ok)
        sample["bad_inputs"] = np.int32(bad)
        self._last = sample
        return sample


class EvalIterator(GrainIterator):
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
        self._iterator = to_iterator(self._ds, self._cfg)
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = to_iterator(self._ds, self._cfg)
        try:
            return next(self._iterator)
        except StopIteration:
            self.close()
            raise


def eval_view_mode(data_cfg, split: str) -> tuple[str, int]:
    """(view mode, views per video) of an evaluation split."""
    if split == "test":
        return "test", int(data_cfg.num_ensemble_views) * int(data_cfg.num_spatial_crops)
    if split == "val":
        if data_cfg.dataset in ("epic100", "epic55") and not data_cfg.epic_val_random:
            return "center", 1
        return "train", 1
    raise ValueError(f"evaluation split must be 'val' or 'test', got {split!r}")


def make_eval_iterator(
    data_cfg,
    *,
    split: str,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    aux_fn: AuxFn | None = None,
    bad_input_log: str | os.PathLike | None = None,
    space_to_depth: bool = False,
) -> tuple[EvalIterator, int, int]:
    """Evaluation iterator visiting every (video, view) once over all hosts.

    Args:
      split: 'val' (one view: EPIC centre clip/crop, or Kinetics/Charades-Ego training-style random
        view with a fixed seed) or 'test' (num_ensemble_views x num_spatial_crops views).
      bad_input_log: file listing unreadable videos (default: `data_cfg.bad_input_log`).
      space_to_depth: pathways as their 2x2 space-to-depth fold (`egoexo_jax.train.folds_input`).

    Returns:
      (iterator, num_videos, num_views).
    """
    process_index, process_count = process_layout(process_index, process_count)
    host_batch = host_batch_size(global_batch_size, process_count)
    source = build_source(data_cfg, split)
    view_mode, num_views = eval_view_mode(data_cfg, split)
    opts = dataclasses.replace(samples.SampleOptions.from_config(data_cfg), space_to_depth=space_to_depth)
    total = len(source) * num_views
    num_batches = math.ceil(total / global_batch_size)
    loader = _EvalLoader(
        source,
        opts,
        split=split,
        num_views=num_views,
        view_mode=view_mode,
        seed=int(data_cfg.eval_seed),
        log=BadInputLog(bad_input_log if bad_input_log else data_cfg.bad_input_log),
        aux_fn=aux_fn,
        max_retries=int(data_cfg.max_retries),
    )
    ds = grain.MapDataset.range(num_batches * host_batch)
    ds = ds.map(HostBlock(process_index, process_count, host_batch)).map(loader)
    ds = ds.batch(host_batch, drop_remainder=True, batch_fn=samples.stack)
    return EvalIterator(ds, data_cfg, num_batches), len(source), num_views
