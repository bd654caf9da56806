"""The training input pipeline (grain): an infinite, resumable iterator of host batches.

Order. All hosts share one global stream of item ids: `range(N)` shuffled with `seed`, reshuffled
every epoch (grain's per-epoch seed), repeated forever; global batch s is stream positions
[s*G, (s+1)*G) and each host takes its contiguous block of it (`grain_hosts`). The sample at
stream position i is a pure function of (seed, i), whatever the number of worker processes or
threads, so the iterator state is just the number of batches consumed (plus bad-input counters);
restoring it rebuilds the pipeline from that batch. The state is valid for any process count with
the same global batch size.

Bad inputs. A sample whose media cannot be read (missing, empty, corrupt) is replaced by another
item drawn from the same seed (at most `max_retries` times), logged as `path<TAB>reason` in the
bad-input log, and counted in the batch's `bad_inputs` field. The iterator raises
`TooManyBadInputsError` once more than `max_bad_fraction` of all decode attempts (plus a fixed
allowance of `bad_input_allowance`) failed.

Batches are dicts of numpy arrays; see `make_train_iterator`.
"""

from __future__ import annotations

import dataclasses
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

__all__ = ["TrainIterator", "make_train_iterator"]


class _StreamBlock:
    """Host-local index -> (global stream position, item id) for this host's block."""

    def __init__(self, stream: grain.MapDataset, block: HostBlock):
        self.stream = stream
        self.block = block

    def __call__(self, local: int) -> tuple[int, int]:
        position = self.block(local)
        return position, int(self.stream[position])


class _TrainLoader:
    """(stream position, item id) -> one training sample, replacing unreadable items."""

    def __init__(
        self, source, opts: samples.SampleOptions, seed: int, log: BadInputLog, aux_fn: AuxFn | None, max_retries: int
    ):
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
                sample = samples.make_sample(
                    item,
                    samples.View("train"),
                    rng,
                    self.opts,
                    split="train",
                    video_level_labels=False,
                    aux_fn=self.aux_fn,
                )
            except DecodeError as e:
                self.log.write(item.describe(), str(e))
                reasons.append(f"{item.describe()}: {e}")
                bad += 1
                candidate = int(np.random.default_rng([self.seed, position, attempt, 1]).integers(len(self.source)))
                continue
            sample["bad_inputs"] = np.int32(bad)
            return sample
        raise TooManyBadInputsError(
            f"sample at stream position {position}: {self.max_retries + 1} items in a row could not "
            f"be read (last: {reasons[-1]}); see the bad-input log {self.log.path or '(disabled)'}"
        )


class TrainIterator(GrainIterator):
    """Infinite iterator of host batches with `get_state()` / `set_state()`.

    Batch fields: `pathway0` `[B, T_slow, S, S, 3] float32` (the only pathway for non-SlowFast archs),
    `pathway1` `[B, T_fast, S, S, 3] float32` (SlowFast), both `[B, T, ceil(S/2), ceil(S/2), 12]`
    when made with `space_to_depth`, labels (Kinetics `label` int32 `[B]`;
    Charades-Ego `label` float32 `[B, 157]`; EPIC `verb`, `noun` int32 `[B]`), `bad_inputs` int32
    `[B]`, plus whatever `aux_fn` adds.
    """

    def __init__(
        self, batched: grain.MapDataset, cfg, *, seed: int, global_batch_size: int, num_items: int, log_path: str | None
    ):
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
            self._iterator = to_iterator(self._batched[self._batches :], self._cfg)
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
                f"{self._log_path or 'the bad-input log (disabled: pass bad_input_log)'}"
            )
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
                raise ValueError(
                    f"iterator state has {key}={state[key]}, this iterator "
                    f"{getattr(self, f'_{key}')}; it belongs to a different run"
                )
        self.close()
        self._batches = int(state["batches"])
        self._bad = int(state["bad_inputs"])
        self._attempts = int(state["attempts"])


def make_train_iterator(
    data_cfg,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    bad_input_log: str | os.PathLike | None = None,
    aux_fn: AuxFn | None = None,
    space_to_depth: bool = False,
) -> TrainIterator:
    """Training iterator over `data_cfg.train_list`, yielding host batches of global/process_count.

    Args:
      data_cfg: `default_data_config()`-style ConfigDict.
      global_batch_size: clips per step over all hosts.
      seed: shuffling and augmentation seed (same on all hosts).
      process_index, process_count: this host and the host count (default: from jax).
      bad_input_log: file collecting unreadable inputs (e.g. `workdir/bad_inputs.txt`).
      aux_fn: picklable `meta -> dict of fixed-shape arrays` merged into each sample (`meta` keys:
        dataset, split, key, video_id, frame_indices `[T] int64`, num_video_frames, transform).
      space_to_depth: pathways as their 2x2 space-to-depth fold (`egoexo_jax.train.folds_input`).
    """
    process_index, process_count = process_layout(process_index, process_count)
    host_batch = host_batch_size(global_batch_size, process_count)
    source = build_source(data_cfg, "train")
    opts = dataclasses.replace(samples.SampleOptions.from_config(data_cfg), space_to_depth=space_to_depth)
    log = BadInputLog(bad_input_log)
    stream = grain.MapDataset.range(len(source)).shuffle(seed=seed % 2**32).repeat()
    ds = grain.MapDataset.range(len(stream) // process_count)
    ds = ds.map(_StreamBlock(stream, HostBlock(process_index, process_count, host_batch)))
    ds = ds.map(_TrainLoader(source, opts, seed, log, aux_fn, int(data_cfg.max_retries)))
    ds = ds.batch(host_batch, drop_remainder=True, batch_fn=samples.stack)
    return TrainIterator(
        ds, data_cfg, seed=seed, global_batch_size=global_batch_size, num_items=len(source), log_path=log.path
    )
