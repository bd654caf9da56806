"""How batches are split among hosts, and batched grain datasets turned into iterators.

Global batch s covers positions [s*G, (s+1)*G) of a global order (the training stream, or the
evaluation's (video, view) list); host p of P takes the contiguous block
[s*G + p*G/P, s*G + (p+1)*G/P), so the global array assembled from the host blocks lists the
samples in global order whatever P is (and BatchNorm groups of consecutive clips are the same on
1 host and on many).
"""

from __future__ import annotations

from typing import Any, Self

import grain

__all__ = ["process_layout", "host_batch_size", "HostBlock", "to_iterator", "GrainIterator"]


def process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """``(process_index, process_count)``, each defaulting to jax's (validated)."""
    if process_index is None or process_count is None:
        import jax  # pylint: disable=g-import-not-at-top

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    return int(process_index), int(process_count)


def host_batch_size(global_batch_size: int, process_count: int) -> int:
    """Clips per host batch; the global batch must split evenly over the processes."""
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(f"global batch {global_batch_size} is not a positive multiple of {process_count} processes")
    return global_batch_size // process_count


def to_iterator(ds: grain.MapDataset, cfg) -> Any:
    """Batched MapDataset -> python iterator with thread prefetch and optional worker processes."""
    if cfg.num_workers > 0:
        # The worker processes are the parallelism and their queues the prefetch buffer
        # (num_workers x prefetch batches in flight); no extra thread prefetch inside each worker.
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=int(cfg.num_workers), per_worker_buffer_size=max(int(cfg.prefetch), 1)
            )
        )
    else:
        it_ds = ds.to_iter_dataset(
            grain.ReadOptions(num_threads=int(cfg.num_threads), prefetch_buffer_size=int(cfg.prefetch))
        )
    return iter(it_ds)


class GrainIterator:
    """Base of the pipelines' iterators: `_iterator` is the running grain iterator (None when
    stopped); `close()` stops it, also on leaving a `with` block."""

    _iterator: Any = None

    def close(self) -> None:
        """Stops the worker processes / threads (they restart on the next `next`)."""
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            self._iterator = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HostBlock:
    """Host-local index -> global position: step s, slot j of host p -> s*G + p*B + j."""

    def __init__(self, process_index: int, process_count: int, host_batch: int):
        self.p, self.count, self.b = process_index, process_count, host_batch

    def __call__(self, local: int) -> int:
        step, slot = divmod(local, self.b)
        return step * self.b * self.count + self.p * self.b + slot
