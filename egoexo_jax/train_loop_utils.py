"""Small pieces of the training loop (:mod:`egoexo_jax.train_loop`): the host-side metric sums,
the finite-loss check and the best-validation tracker."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from absl import logging

from egoexo_jax import cli


class NonFiniteLossError(cli.UserError, FloatingPointError):
    """A training step produced a non-finite loss; names the step and the terms."""


class MetricAccumulator:
    """Host-side running sums of step metrics between two log writes, and the count of padded
    clips in the current epoch (saved in checkpoints)."""

    def __init__(self, state: Optional[dict] = None):
        state = state or {}
        self.sums: Dict[str, float] = dict(state.get("sums", {}))
        self.count: int = int(state.get("count", 0))
        self.epoch_padded: float = float(state.get("epoch_padded", 0.0))

    def add(self, metrics: Dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        self.epoch_padded += float(metrics.get("padded_clips", 0.0))

    def pop_epoch(self) -> Dict[str, float]:
        """``{"padded_clips_epoch": n}``: training clips of the epoch that ran past their video."""
        n, self.epoch_padded = self.epoch_padded, 0.0
        return {"padded_clips_epoch": n}

    def pop_means(self) -> Dict[str, float]:
        means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return means

    def state(self) -> dict:
        return {"sums": self.sums, "count": self.count, "epoch_padded": self.epoch_padded}


def check_finite(step: int, metrics: Dict[str, np.ndarray]) -> None:
    """Raises :class:`NonFiniteLossError` naming the loss terms of ``step`` (host values) that are
    NaN or infinite."""
    bad = sorted(
        k for k, v in metrics.items() if k.startswith(("loss", "weighted_", "grad_norm")) and not np.all(np.isfinite(v))
    )
    if bad:
        values = ", ".join(f"{k}={float(metrics[k])}" for k in bad)
        raise NonFiniteLossError(
            f"non-finite training loss at step {step}: {values}; the newest "
            f"checkpoint on disk is from before this step; expected finite losses "
            f"(lower config.optimizer.base_lr, or check the inputs)"
        )


def every(step: int, period_steps: int) -> bool:
    """Whether ``step`` ends a period of ``period_steps`` (never when the period is 0)."""
    return period_steps > 0 and step % period_steps == 0


def best_metric_name(config) -> str:
    """The validation metric the best checkpoint follows: ``checkpoint.best_metric``, else the
    one the original's validation meter ranks epochs by (Charades-Ego mAP, EPIC action top-1 =
    verb and noun both top-1, top-1 otherwise)."""
    if config.checkpoint.best_metric:
        return str(config.checkpoint.best_metric)
    return {"charades_ego": "mAP", "epic100": "action_top1", "epic55": "action_top1"}.get(config.data.dataset, "top1")


class BestTracker:
    """The best periodic validation value so far; an evaluation is a new best when its value is
    strictly higher than the previous best, starting from 0 (PySlowFast's ``ValMeter``)."""

    def __init__(self, metric: str, state: Optional[dict] = None):
        self.metric = metric
        self.value = float(state["value"]) if state else 0.0
        self.step = int(state["step"]) if state else None
        self._warned = False

    def update(self, step: int, values: Dict[str, float]) -> bool:
        """Records ``values`` of the evaluation at ``step``; True when it is a new best."""
        if self.metric not in values:
            if not self._warned:
                logging.warning(
                    "best checkpoint: validation reported no %r (got %s); none kept", self.metric, sorted(values)
                )
                self._warned = True
            return False
        value = float(values[self.metric])
        if not value > self.value:
            return False
        self.value, self.step = value, step
        return True

    def state(self) -> Optional[dict]:
        if self.step is None:
            return None
        return {"metric": self.metric, "value": self.value, "step": self.step}
