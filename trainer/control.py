"""Run control shared by the training loop: stop requests, exceptions, the progress window.

Kept apart from trainer.train so the loop reads as phases, not bookkeeping.
"""

from __future__ import annotations

import signal
import time

from absl import logging


class Preempted(Exception):
    """SIGTERM (or a lost peer) stopped the run after a checkpoint: retry the group."""


class TrainingDiverged(Exception):
    """The loss became NaN or Inf."""


class StopSignal:
    """Remembers SIGTERM/SIGINT so the loop can finish the step, save and exit."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("signal %d: stopping after this step and saving a checkpoint", signum)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


INPUT_BOUND_FRACTION = 0.1


class Window:
    """Steps, wall time and input-wait time since the last progress line."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.start, self.steps, self.wait, self.busy = time.monotonic(), 0, 0.0, 0.0

    def add(self, wait: float, total: float):
        self.steps += 1
        self.wait += wait
        self.busy += total

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def input_fraction(self) -> float:
        return self.wait / self.busy if self.busy > 0 else 0.0
