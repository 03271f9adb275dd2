"""The outer loop (orbit's Controller): the schedule, the stop rules, and when actions run.

It owns what happens *between* compiled loops and nothing inside them: how long the next loop
is, when to log, checkpoint, evaluate and profile, and when to stop (SIGTERM or the
multi-worker stop vote: save, then Preempted; a NaN/Inf loss: TrainingDiverged, keeping the
last good checkpoint). It drives a train program (TrainProgram protocol), an optional
evaluate callable and plain callables as actions, so it is pure Python: no TensorFlow, and
its tests drive it with a fake program.

Loops are cut so that one ends at every multiple of the log, checkpoint and eval intervals,
at the profile bounds and at train_steps: every interval works with any steps_per_loop, and
nothing the host does moves when steps_per_loop changes.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable, Sequence
from typing import Protocol


class Preempted(Exception):
    """SIGTERM (or the stop vote) stopped the run after a checkpoint: retry the group (75)."""


class TrainingDiverged(Exception):
    """The loss became NaN or Inf (exit 1); the message names the step and what was kept."""


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """What one compiled loop reports back, as plain Python numbers."""

    steps: int  # steps run
    loss: float  # data loss summed over the steps
    correct: float  # pairs classified right, summed
    count: float  # pairs, summed
    stop_votes: float  # workers that asked to stop
    wait_seconds: float  # time spent waiting for input
    seconds: float  # the loop's wall time
    diverged_at: int | None = None  # index in the loop of a step with a NaN/Inf loss
    diverged_loss: float = 0.0  # that step's loss plus penalty
    rate: float = 0.0  # the learning rate of the loop's last update


class TrainProgram(Protocol):
    """The inner loop (orbit's AbstractTrainer) that the controller drives."""

    @property
    def step(self) -> int: ...

    def train(self, num_steps: int, stop: bool, max_seconds: float = ...) -> LoopResult: ...

    def save(self) -> str: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schedule:
    """The intervals of a training run, in steps (eval_every 0: no eval in the loop)."""

    train_steps: int
    steps_per_loop: int
    log_every: int
    checkpoint_every: int
    eval_every: int = 0
    profile_steps: tuple = ()

    def loop_length(self, step: int) -> int:
        """Steps in the next compiled loop from ``step``: at most steps_per_loop, ending at
        the next multiple of each interval, profile bound or train_steps."""
        end = min(step + self.steps_per_loop, self.train_steps)
        for every in (self.log_every, self.checkpoint_every, self.eval_every):
            if every:
                end = min(end, (step // every + 1) * every)
        for mark in self.profile_steps:
            if step < mark:
                end = min(end, mark)
        return end - step

    def _due(self, step: int, every: int) -> bool:
        return bool(every) and (step % every == 0 or step == self.train_steps)

    def log_due(self, step: int) -> bool:
        return self._due(step, self.log_every)

    def checkpoint_due(self, step: int) -> bool:
        return self._due(step, self.checkpoint_every)

    def eval_due(self, step: int) -> bool:
        """An eval inside the loop (the final one runs after it, whatever the interval)."""
        return bool(self.eval_every) and step % self.eval_every == 0 and step != self.train_steps


@dataclasses.dataclass
class GraceBudget:
    """Keeps the loop a SIGTERM arrives in, and the save after it, inside the pod's grace
    period (TRAINER_GRACE_SECONDS: 15 s on a GKE Spot node). A compiled loop cannot be left
    midway, so with a budget every loop is given at most half of it minus the slowest save
    seen (``loop_seconds``: the loop ends itself early on its own clock, trainer.run.steps)
    and, where it has no clock (--deterministic), as many steps as that leaves at the last
    loop's pace (``cap``; the first loop is one step: its pace is not known yet)."""

    seconds: float = 0.0  # 0: no budget
    step_seconds: float = 0.0  # per step, in the last loop
    save_seconds: float = 0.0  # the slowest save so far

    def loop_seconds(self) -> float:
        """The most a loop may run (inf without a budget)."""
        if not self.seconds:
            return float("inf")
        return max(self.seconds / 2 - self.save_seconds, 0.0)

    def cap(self, length: int) -> int:
        if not self.seconds:
            return length
        if not self.step_seconds:
            return 1
        return max(1, min(length, int(self.loop_seconds() / self.step_seconds)))

    def saw_loop(self, loop: LoopResult) -> None:
        if loop.steps:
            self.step_seconds = loop.seconds / loop.steps

    def saw_save(self, seconds: float) -> None:
        self.save_seconds = max(self.save_seconds, seconds)


class Window:
    """Steps, wall time, input wait and summed metrics since the last progress line."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.start, self.steps, self.wait, self.busy = self.clock(), 0, 0.0, 0.0
        self.loss = self.correct = self.count = self.rate = 0.0

    def add(self, loop: LoopResult) -> None:
        self.steps += loop.steps
        self.wait += loop.wait_seconds
        self.busy += loop.seconds
        self.loss += loop.loss
        self.correct += loop.correct
        self.count += loop.count
        self.rate = loop.rate  # the window's last update's

    def elapsed(self) -> float:
        return self.clock() - self.start

    def input_fraction(self) -> float:
        return min(1.0, self.wait / self.busy) if self.busy > 0 else 0.0

    def mean_loss(self) -> float:
        """The data loss averaged over the window's steps (the step's own with one step)."""
        return self.loss / max(self.steps, 1)

    def accuracy(self) -> float:
        return self.correct / max(self.count, 1.0)


StepAction = Callable[[int], None]  # at a loop boundary: (step)
LogAction = Callable[[int, Window], None]  # at a log step: (step, the window since the last)
EvalAction = Callable[[int, dict], None]  # after an eval: (step, metrics)


class Controller:
    """Runs a train program from its step to the schedule's end; all arguments keyword-only."""

    def __init__(
        self,
        *,
        program: TrainProgram,
        schedule: Schedule,
        stop_requested: Callable[[], bool] = lambda: False,
        evaluate: Callable[[], dict] | None = None,
        on_boundary: Sequence[StepAction] = (),
        on_log: Sequence[LogAction] = (),
        on_eval: Sequence[EvalAction] = (),
        stop_after_eval: Callable[[int, dict], bool] | None = None,
        evaluate_first: bool = False,
        grace: GraceBudget | None = None,
        log: Callable[[str], None] = lambda message: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.grace = grace or GraceBudget()
        self.program, self.schedule = program, schedule
        self.stop_after_eval = stop_after_eval  # early stopping: True ends the run there
        self.evaluate_first = evaluate_first  # an eval before the first step (a warm start)
        self.stop_requested, self.evaluate = stop_requested, evaluate
        self.on_boundary, self.on_log, self.on_eval = on_boundary, on_log, on_eval
        self.log, self.clock = log, clock

    def train(self) -> dict | None:
        """Trains to train_steps; returns the final eval's metrics (None without an eval).

        Raises Preempted after saving when a stop was asked, TrainingDiverged on a NaN/Inf
        loss. Everything else the program raises passes through."""
        s, step = self.schedule, self.program.step
        if step >= s.train_steps:
            self.log(f"step {step} >= --train_steps={s.train_steps}: nothing to train")
            # the final eval's figures, without the actions: they ran when it was trained
            return self.evaluate() if s.eval_every and self.evaluate else None
        if self.evaluate_first and self.evaluate:
            self._run_eval(step)
        window = Window(self.clock)
        last_saved = step if step > 0 else None
        while step < s.train_steps:
            self._boundary(step)
            stop = self.stop_requested()
            # A stop asked for during the last loop travels in this one (every worker must
            # learn it at the same step): one step then, so it costs no time.
            length = 1 if stop else self.grace.cap(s.loop_length(step))
            loop = self.program.train(length, stop, max_seconds=self.grace.loop_seconds())
            self.grace.saw_loop(loop)
            window.add(loop)
            if loop.diverged_at is not None:
                raise _diverged(loop, step + loop.diverged_at + 1, last_saved)
            step += loop.steps
            if loop.stop_votes > 0:
                self._save()
                raise Preempted(f"stopped by a signal at step {step}; checkpoint saved.")
            if s.log_due(step):
                for action in self.on_log:
                    action(step, window)
                window.reset()
            if s.checkpoint_due(step):
                self._save()
                last_saved = step
            if s.eval_due(step) and self.evaluate:
                metrics = self._run_eval(step)
                if self.stop_after_eval and self.stop_after_eval(step, metrics):
                    if last_saved != step:  # a rerun must find the run where it ended
                        self._save()
                    return metrics
        self._boundary(step)
        if s.eval_every and self.evaluate:
            metrics = self._run_eval(step)
            if self.stop_after_eval:  # the final eval counts too (a longer rerun goes on)
                self.stop_after_eval(step, metrics)
            return metrics
        return None

    def _save(self) -> None:
        started = self.clock()
        self.program.save()
        self.grace.saw_save(self.clock() - started)

    def _boundary(self, step: int) -> None:
        for action in self.on_boundary:
            action(step)

    def _run_eval(self, step: int) -> dict:
        metrics = self.evaluate()
        for action in self.on_eval:
            action(step, metrics)
        return metrics


def _diverged(loop: LoopResult, step: int, last_saved: int | None) -> TrainingDiverged:
    kept = (
        f"the last good checkpoint (step {last_saved}) is kept"
        if last_saved
        else "no checkpoint was saved"
    )
    return TrainingDiverged(
        f"the loss became {loop.diverged_loss} at step {step}; {kept}: lower --learning_rate "
        "or --lambda_regularization, or use --precision=float32."
    )


class StopSignal:
    """Remembers SIGTERM/SIGINT so the loop can finish its steps, save and exit 75; callable
    as the controller's ``stop_requested``."""

    def __init__(self, log: Callable[[str], None] = lambda message: None):
        self.requested = False
        self.log = log
        self._previous = {}

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.log(f"signal {signum}: stopping after this loop and saving a checkpoint")
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
