"""SIGTERM at any moment of a run ends it within a bounded time with exit 75 (preempted, resumable).

:class:`Preemption` owns the SIGTERM handler. Outside :meth:`Preemption.deferred` regions a SIGTERM
raises :class:`egoexo_jax.cli.Preempted` at once (start-up, evaluation-only runs: no state to
save). Inside them (the training loop) it only sets ``requested``; the loop saves a checkpoint at
the next step boundary, and :meth:`Preemption.interruptible` marks the waits inside the loop
(reading a batch, evaluation, precise BN) that the signal may cut short, raising
:class:`Interrupted` so the loop can save the state it has. A watchdog thread bounds the time from
the signal to the exit: if the process has not begun its save ``grace_s`` seconds after the
signal (a read stuck in C code, a collective waiting for a host that is gone), it prints one line
and exits 75 without a new checkpoint; the newest one on disk is where the rerun resumes. Leaving
the ``with`` block (the run is over, one way or the other) stands the watchdog down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, Optional

from absl import logging

from egoexo_jax import cli

GRACE_SECONDS = 120.0  # SIGTERM -> save begun, else exit 75 without a new checkpoint


class Interrupted(cli.Preempted):
    """SIGTERM cut short an interruptible wait of the training loop (``phase`` names it)."""

    def __init__(self, phase: str):
        super().__init__(f"SIGTERM during {phase}")
        self.phase = phase


class Preemption:
    """The SIGTERM handler of one run (installed on ``__enter__``, the previous one restored on
    ``__exit__``; in a thread other than the main one it does nothing, as Python allows handlers
    only there).

    ``interruptible_waits``: whether :meth:`interruptible` regions raise on a signal (single-
    process runs); multi-process runs keep every process in step and stop only at the boundaries
    where they agree (:meth:`any_host`).
    """

    def __init__(self, *, grace_s: float = GRACE_SECONDS, interruptible_waits: bool = True):
        self.requested = False
        self.grace_s = float(grace_s)
        self.interruptible_waits = interruptible_waits
        self._deferred = 0
        self._phase: Optional[str] = None
        self._saving = False
        self._old = None
        self._installed = False
        self._watchdog: Optional[threading.Thread] = None
        self._done = threading.Event()  # set on exit: a watchdog of this run stands down

    def __enter__(self) -> "Preemption":
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._installed:
            signal.signal(signal.SIGTERM, self._old if self._old is not None else signal.SIG_DFL)
            self._installed = False

    def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
        first = not self.requested
        self.requested = True
        if self._phase is not None:
            raise Interrupted(self._phase)
        if not self._deferred:
            raise cli.Preempted("SIGTERM during start-up, before training began; no new checkpoint was needed")
        if first:
            logging.warning("SIGTERM: saving a checkpoint at the end of this step and stopping")
            self._start_watchdog()

    @contextlib.contextmanager
    def deferred(self) -> Iterator["Preemption"]:
        """A region where SIGTERM only sets ``requested`` (the caller stops at a boundary)."""
        self._deferred += 1
        try:
            if self.requested:  # the signal came just before: start the clock now
                self._start_watchdog()
            yield self
        finally:
            self._deferred -= 1

    @contextlib.contextmanager
    def interruptible(self, phase: str) -> Iterator[None]:
        """Inside :meth:`deferred`: a wait that SIGTERM ends by raising :class:`Interrupted`
        (at once if the signal already came)."""
        if not self.interruptible_waits:
            yield
            return
        if self.requested:
            raise Interrupted(phase)
        outer, self._phase = self._phase, phase
        try:
            yield
        finally:
            self._phase = outer

    def saving(self) -> None:
        """The stop's checkpoint save has begun: the watchdog leaves the process alone."""
        self._saving = True

    def any_host(self) -> bool:
        """Whether any process got SIGTERM (a collective: every process must call it together)."""
        import jax  # pylint: disable=import-outside-toplevel

        if jax.process_count() == 1:
            return self.requested
        import numpy as np  # pylint: disable=import-outside-toplevel
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

        flags = multihost_utils.process_allgather(np.asarray([self.requested], np.int32))
        return bool(np.any(flags))

    def _start_watchdog(self) -> None:
        if self._watchdog is not None or not self._deferred:
            return
        self._watchdog = threading.Thread(target=self._watch, name="egoexo-sigterm-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        if self._done.wait(self.grace_s) or self._saving:
            return  # the run ended (or began its save) within the grace time
        print(
            f"preempted: SIGTERM and no step boundary within {self.grace_s:g} s; stopped without a new "
            f"checkpoint, the newest one in the workdir is where the rerun resumes (exit {cli.EXIT_PREEMPTED})",
            file=sys.stderr,
            flush=True,
        )
        os._exit(cli.EXIT_PREEMPTED)  # pylint: disable=protected-access
