"""--mode=evaluate and --mode=continuous_eval: score checkpoints from outside the training loop.

The side-car evaluator of TensorFlow's model garden: it watches ``<model_dir>/checkpoints``
(local or gs://), evaluates each new checkpoint once, oldest first, writes the scalars to
``<model_dir>/tensorboard/eval`` and records every evaluated step with its metrics in
``<model_dir>/eval/evaluated.json``, so a restarted evaluator redoes none. It stops after the
checkpoint of --train_steps, or when no new checkpoint appeared for --eval_timeout_seconds.

The trainer rotates old checkpoints away (--keep_checkpoints); one that vanishes while it is
read is skipped with a warning. CheckpointManager deletes a checkpoint's data file before its
index, so "its files are incomplete" is what a rotation looks like from here.
"""

from __future__ import annotations

import json
import re
import time

import tensorflow as tf
from absl import logging

from trainer.common.paths import join
from trainer.config import ConfigError
from trainer.run.checkpoint import check_model_config, checkpoint_dir
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


def pending(available: list[int], done: dict, skipped: set) -> list[int]:
    """The checkpoints still to evaluate, oldest first."""
    return sorted(s for s in available if s not in done and s not in skipped)


def finished(done: dict, train_steps: int) -> bool:
    """Whether the checkpoint of the final step (or a later one) has been evaluated."""
    return any(s >= train_steps for s in done)


def load_record(model_dir: str) -> dict[int, dict]:
    """{step: metrics} of what was evaluated before (by this or an earlier evaluator)."""
    path = join(model_dir, RECORD_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return {int(k): v for k, v in json.load(f).items()}


def save_record(model_dir: str, record: dict[int, dict]) -> None:
    """Replaces evaluated.json whole (a temporary name, then a rename)."""
    path = join(model_dir, RECORD_FILE)
    tf.io.gfile.makedirs(join(model_dir, "eval"))
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump({str(k): record[k] for k in sorted(record)}, f, indent=1, sort_keys=True)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


class Evaluator:
    """Restores checkpoints into a Trainer's model and evaluates them on the eval split."""

    def __init__(self, trainer, model_cfg, model_dir: str, train_steps: int):
        self.trainer, self.model_dir, self.train_steps = trainer, model_dir, train_steps
        self.model_cfg = model_cfg
        self.record = load_record(model_dir)
        self.skipped: set[int] = set()

    def _restore(self, step: int) -> bool:
        prefix = join(checkpoint_dir(self.model_dir), f"ckpt-{step}")
        try:
            self.trainer.checkpointer.checkpoint.restore(prefix).assert_existing_objects_matched()
            return True
        except (tf.errors.OpError, ValueError, AssertionError) as e:
            if isinstance(e, tf.errors.OpError) and (found := storage.failure(e)) is not None:
                if found.transient:
                    raise  # storage out of reach: the run exits 75 and is retried
            gone = not tf.io.gfile.glob(prefix + ".data-*") or not tf.io.gfile.exists(
                prefix + ".index"
            )
            why = "it was rotated away by the trainer" if gone else "it is unreadable"
            logging.warning(
                "skipping checkpoint ckpt-%d: %s (%s)",
                step,
                why,
                str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__,
            )
            return False

    def evaluate(self, step: int) -> dict | None:
        """Evaluates ckpt-<step>, records and reports it; None when it could not be read."""
        # The trainer may have written config.json after this evaluator started: a model
        # with other settings is refused (ConfigError), not skipped checkpoint by checkpoint.
        check_model_config(self.model_dir, self.model_cfg, write=False)
        if not self._restore(step):
            self.skipped.add(step)
            return None
        metrics = self.trainer.evaluate()
        self.record[step] = metrics
        save_record(self.model_dir, self.record)
        self.trainer.report_eval(step, metrics)  # scalars, last.json, best model
        return metrics

    def evaluate_one(self, step: int = 0) -> tuple[int, dict]:
        """--mode=evaluate: ckpt-<step> (0: the latest); ConfigError when there is none."""
        available = checkpoint_steps(self.model_dir)
        if not available:
            raise ConfigError(f"--mode=evaluate: {self.model_dir} has no checkpoint.")
        step = step or available[-1]
        if step not in available:
            raise ConfigError(
                f"--checkpoint_step={step}: {checkpoint_dir(self.model_dir)} has no checkpoint "
                f"at that step (it has steps {', '.join(map(str, available))})."
            )
        metrics = self.evaluate(step)
        if metrics is None:
            raise ConfigError(f"checkpoint ckpt-{step} could not be read (see the warning).")
        return step, metrics

    def run_continuous(self, timeout_s: float, poll_s: float) -> int:
        """Evaluates new checkpoints until the final step's; returns how many it evaluated."""
        if finished(self.record, self.train_steps):
            logging.info(
                "the checkpoint of step %d (--train_steps) was evaluated before: nothing to do "
                "(%d checkpoints in %s)",
                max(self.record),
                len(self.record),
                join(self.model_dir, RECORD_FILE),
            )
            return 0
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
                if step >= self.train_steps:
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
                    self.train_steps,
                )
                return evaluated
            time.sleep(poll_s)
