"""Run control shared by the training loop: stop requests, exceptions, the progress window.

Kept apart from trainer.run.train so the loop reads as phases, not bookkeeping.
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
    """Steps, wall time, input wait and summed metrics since the last progress line."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.start, self.steps, self.wait, self.busy = time.monotonic(), 0, 0.0, 0.0
        self.loss = self.correct = self.count = 0.0

    def add(self, steps: int, wait: float, total: float, sums=None):
        """One loop of ``steps`` steps: ``wait`` of its ``total`` seconds went to waiting for
        input; ``sums`` is its [loss, reg, correct, count, stop] summed over its steps."""
        self.steps += steps
        self.wait += wait
        self.busy += total
        if sums is not None:
            self.loss += float(sums[0])
            self.correct += float(sums[2])
            self.count += float(sums[3])

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def input_fraction(self) -> float:
        return min(1.0, self.wait / self.busy) if self.busy > 0 else 0.0

    def mean_loss(self) -> float:
        """The data loss averaged over the window's steps (the step's own with one step)."""
        return self.loss / max(self.steps, 1)

    def accuracy(self) -> float:
        return self.correct / max(self.count, 1.0)


def loop_length(step: int, steps_per_loop: int, cfg, profile_steps=()) -> int:
    """Steps in the next compiled loop from ``step``: at most ``steps_per_loop``, cut so a
    loop ends at every multiple of the log, checkpoint and eval intervals, at the profile
    bounds and at --train_steps. So every interval works with any --steps_per_loop, and a
    loop never runs past a step where the host has work to do."""
    end = min(step + steps_per_loop, cfg.train_steps)
    for every in (cfg.log_every_steps, cfg.checkpoint_every_steps, cfg.eval_every_steps):
        if every:
            end = min(end, (step // every + 1) * every)
    for mark in profile_steps:
        if step < mark:
            end = min(end, mark)
    return end - step
