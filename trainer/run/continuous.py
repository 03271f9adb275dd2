"""Evaluating checkpoints from outside the training loop: --mode=evaluate (one checkpoint)
and --mode=continuous_eval (the side-car evaluator of TensorFlow's model garden).

The evaluator watches ``<model_dir>/checkpoints`` (local or gs://), evaluates each new
checkpoint once, oldest first, runs the eval actions (scalars to
``<model_dir>/tensorboard/eval``, ``eval/last.json``, the best model) and records every
evaluated step with its metrics in ``<model_dir>/eval/evaluated.json``, so a restarted
evaluator redoes none. It stops after the checkpoint of --train_steps, or when no new
checkpoint appeared for --eval_timeout_seconds.

The trainer rotates old checkpoints away (--keep_checkpoints); one that vanishes while it is
read is skipped with a warning. CheckpointManager deletes a checkpoint's data file before its
index, so "its files are incomplete" is what a rotation looks like from here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

import tensorflow as tf
from absl import logging

from trainer.common.console import plural
from trainer.common.errors import NotThereYet, UsageError, first_line
from trainer.common.files import read_json, write_json
from trainer.common.paths import join
from trainer.config import ConfigError, ModelConfig
from trainer.run.checkpoint import CONFIG_FILE, check_model_config, checkpoint_dir
from trainer.runtime import storage

RECORD_FILE = "eval/evaluated.json"
_INDEX_RE = re.compile(r"ckpt-(\d+)\.index$")


def checkpoint_steps(model_dir: str) -> list[int]:
    """Steps of the complete checkpoints (their index written) in model_dir, ascending."""
    try:
        names = tf.io.gfile.glob(join(checkpoint_dir(model_dir), "ckpt-*.index"))
    except tf.errors.NotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _INDEX_RE.search(n)))


def checkpoint_to_read(model_dir: str, mode: str, step: int = 0) -> int:
    """--mode=export/evaluate: the step of the checkpoint to read (``step``, 0: the newest);
    ConfigError when model_dir has none (or none at ``step``). Cheap (a listing), so the
    modes ask it before they read data or write anything."""
    available = checkpoint_steps(model_dir)
    if not available:
        gone = "" if tf.io.gfile.exists(model_dir) else " (the folder does not exist)"
        raise ConfigError(f"--mode={mode}: {model_dir} has no checkpoint{gone}.")
    if step and step not in available:
        raise ConfigError(
            f"--checkpoint_step={step}: {checkpoint_dir(model_dir)} has no checkpoint "
            f"at that step (it has steps {', '.join(map(str, available))})."
        )
    return step or available[-1]


def wait_for_config(model_dir: str, *, timeout_s: float, poll_s: float) -> None:
    """Returns once <model_dir>/config.json exists (at once if it does); NotThereYet (exit
    75: a queued run's evaluator Job retries, and so waits again) when none came within
    ``timeout_s``.

    Why: an evaluator started before its trainer would build the model of its own flags
    (defaults where not given) and be refused at the first checkpoint of a run with other
    model flags. The trainer's chief writes config.json before its first step; once it is
    there, the model flags not given come from it (trainer.run.setup.with_saved_model)."""
    path = join(model_dir, CONFIG_FILE)
    if tf.io.gfile.exists(path):
        return
    logging.info(
        "waiting for %s, which the trainer writes as it starts (up to %.0f s: "
        "--eval_timeout_seconds)",
        path,
        timeout_s,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        if tf.io.gfile.exists(path):
            return
    raise NotThereYet(
        f"--mode=continuous_eval: no training run started in {model_dir} within {timeout_s:.0f} "
        f"s (--eval_timeout_seconds; it writes {CONFIG_FILE} as it starts): check --model_dir."
    )


def pending(available: list[int], done: dict, skipped: set) -> list[int]:
    """The checkpoints still to evaluate, oldest first."""
    return sorted(s for s in available if s not in done and s not in skipped)


def finished(done: dict, train_steps: int) -> bool:
    """Whether the checkpoint of the final step (or a later one) has been evaluated."""
    return any(s >= train_steps for s in done)


def load_record(model_dir: str) -> dict[int, dict]:
    """{step: metrics} of what was evaluated before (by this or an earlier evaluator)."""
    saved = read_json(join(model_dir, RECORD_FILE)) or {}
    return {int(k): v for k, v in saved.items()}


def save_record(model_dir: str, record: dict[int, dict]) -> None:
    """Replaces evaluated.json whole."""
    ordered = {str(k): record[k] for k in sorted(record)}
    write_json(join(model_dir, RECORD_FILE), ordered, indent=1, sort_keys=True)


def record_summary(evaluated: int, record: dict) -> str:
    """The line an evaluator ends with."""
    steps = f"{len(record)} in all (steps {', '.join(map(str, sorted(record)))})"
    return (
        f"continuous eval: evaluated {plural(evaluated, 'checkpoint')} this run, "
        f"{steps if record else 'none in all'}"
    )


class CheckpointEvaluator:
    """Restores checkpoints into an eval program's model and evaluates them."""

    def __init__(
        self,
        *,
        model_dir: str,
        model_cfg: ModelConfig,
        restore: Callable[[str], None],
        evaluate: Callable[[], dict],
        on_eval: Sequence[Callable[[int, dict], None]] = (),
    ):
        self.model_dir, self.model_cfg = model_dir, model_cfg
        self.restore, self.run_eval, self.on_eval = restore, evaluate, on_eval
        self.record = load_record(model_dir)
        self.skipped: set[int] = set()

    def _restore(self, step: int) -> bool:
        prefix = join(checkpoint_dir(self.model_dir), f"ckpt-{step}")
        try:
            self.restore(prefix)
            return True
        except UsageError:
            raise  # a refusal (the flags against the checkpoint), not a damaged checkpoint
        except (tf.errors.OpError, ValueError, AssertionError) as e:
            if isinstance(e, tf.errors.OpError) and (found := storage.failure(e)) is not None:
                if found.transient:
                    raise  # storage out of reach: the run exits 75 and is retried
            gone = not tf.io.gfile.glob(prefix + ".data-*") or not tf.io.gfile.exists(
                prefix + ".index"
            )
            why = "it was rotated away by the trainer" if gone else "it is unreadable"
            logging.warning("skipping checkpoint ckpt-%d: %s (%s)", step, why, first_line(e))
            return False

    def evaluate(self, step: int) -> dict | None:
        """Evaluates ckpt-<step>, records and reports it; None when it could not be read."""
        # The trainer may have written config.json after this evaluator started: a model
        # with other settings is refused (ConfigError), not skipped checkpoint by checkpoint.
        check_model_config(self.model_dir, self.model_cfg, write=False, reading=True)
        if not self._restore(step):
            self.skipped.add(step)
            return None
        metrics = self.run_eval()
        self.record[step] = metrics
        save_record(self.model_dir, self.record)
        for action in self.on_eval:
            action(step, metrics)
        return metrics

    def evaluate_one(self, step: int = 0) -> tuple[int, dict]:
        """--mode=evaluate: ckpt-<step> (0: the latest); ConfigError when there is none."""
        step = checkpoint_to_read(self.model_dir, "evaluate", step)
        metrics = self.evaluate(step)
        if metrics is None:
            raise ConfigError(f"checkpoint ckpt-{step} could not be read (see the warning).")
        return step, metrics

    def run_continuous(self, *, train_steps: int, timeout_s: float, poll_s: float) -> int:
        """Evaluates new checkpoints until the final step's; returns how many it evaluated."""
        logging.info(
            "watching %s for new checkpoints (%d evaluated before)",
            checkpoint_dir(self.model_dir),
            len(self.record),
        )
        evaluated, quiet_since = 0, time.monotonic()
        while True:
            todo = pending(checkpoint_steps(self.model_dir), self.record, self.skipped)
            for step in todo:
                ok = self.evaluate(step) is not None
                evaluated += ok
                if step >= train_steps:
                    if ok:
                        logging.info("evaluated the checkpoint of step %d: done", step)
                    else:
                        logging.warning("the final checkpoint could not be read: stopping")
                    return evaluated
            if todo:
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since > timeout_s:
                logging.warning(
                    "no new checkpoint for %.0f s (--eval_timeout_seconds): stopping before "
                    "step %d",
                    timeout_s,
                    train_steps,
                )
                return evaluated
            time.sleep(poll_s)
