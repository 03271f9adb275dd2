"""Checkpoints: only the chief writes; restore picks the newest checkpoint that reads whole.

Layout: ``<model_dir>/checkpoints/ckpt-<step>`` (tf.train.CheckpointManager) and
``<model_dir>/config.json`` (the model-defining values). The manager's state file is updated
only after a save completes, and restore reads every tensor of a candidate before using it,
so a checkpoint cut off mid-write (or damaged later) is skipped for the one before it.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import tensorflow as tf

from trainer.common.paths import join
from trainer.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"
LAST_EVAL_FILE = "eval/last.json"  # the newest eval's step, time and metrics


def checkpoint_dir(model_dir: str) -> str:
    return join(model_dir, "checkpoints")


def _scratch_dir(model_dir: str, worker_index: int) -> str:
    # Non-chief workers must take part in a save (collectives) but their copy is discarded.
    return join(model_dir, f".scratch-worker-{worker_index}")


def load_model_config(model_dir: str) -> ModelConfig | None:
    """The ModelConfig saved in <model_dir>/config.json, or None when there is none."""
    path = join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f)
    return ModelConfig(**{**saved, "image_size": tuple(saved["image_size"])})


def check_model_config(model_dir: str, model: ModelConfig, write: bool) -> None:
    """Refuses a run whose model-defining values differ from the saved config.json; writes
    config.json when there is none and ``write`` (the chief of a training run)."""
    path = join(model_dir, CONFIG_FILE)
    wanted = dataclasses.asdict(model)
    wanted["image_size"] = list(wanted["image_size"])
    previous = load_model_config(model_dir)
    if previous is not None:
        saved = dataclasses.asdict(previous)
        saved["image_size"] = list(saved["image_size"])
        changed = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(
                f"{model_dir} holds a model with other settings ({detail}): use the saved "
                "values or a new --model_dir."
            )
        return
    if write:
        tf.io.gfile.makedirs(model_dir)
        tmp = path + ".tmp"
        with tf.io.gfile.GFile(tmp, "w") as f:
            json.dump(wanted, f, indent=2, sort_keys=True)
        tf.io.gfile.rename(tmp, path, overwrite=True)


def readable(prefix: str) -> bool:
    """True when every tensor of the checkpoint at ``prefix`` can be read."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        return True
    except (tf.errors.OpError, ValueError, IndexError) as e:  # IndexError: a cut-off file
        log.warning(
            "checkpoint %s is unreadable (%s); trying the one before it",
            prefix,
            str(e).splitlines()[0][:200],
        )
        return False


class Checkpointer:
    """Saves and restores one tf.train.Checkpoint for the chief (scratch copies for others)."""

    def __init__(
        self, model_dir: str, checkpoint: tf.train.Checkpoint, keep: int, worker_index: int = 0
    ):
        self.is_chief = worker_index == 0
        self.scratch = _scratch_dir(model_dir, worker_index)
        self.checkpoint = checkpoint
        # Every worker restores from the chief's directory; only the chief saves there.
        self.manager = tf.train.CheckpointManager(
            checkpoint, checkpoint_dir(model_dir), max_to_keep=keep, checkpoint_name="ckpt"
        )

    def restore_latest(self) -> str | None:
        """Restores the newest whole checkpoint; returns its path or None (fresh start)."""
        for prefix in reversed(self.manager.checkpoints):
            if readable(prefix):
                self.checkpoint.restore(prefix).assert_existing_objects_matched()
                return prefix
        return None

    def save(self, step: int) -> str:
        """Saves at ``step``; every worker must call it (the save has collective parts)."""
        if self.is_chief:
            return self.manager.save(checkpoint_number=step)
        scratch = tf.train.CheckpointManager(self.checkpoint, self.scratch, max_to_keep=1)
        path = scratch.save(checkpoint_number=step)
        tf.io.gfile.rmtree(self.scratch)
        return path


def latest_checkpoint_step(model_dir: str) -> int | None:
    """Step of the newest checkpoint in model_dir, or None."""
    path = tf.train.latest_checkpoint(checkpoint_dir(model_dir))
    return int(path.rsplit("-", 1)[1]) if path else None


def write_last_eval(model_dir: str, step: int, metrics: dict) -> None:
    """<model_dir>/eval/last.json (replaced whole): what `launch k8s status` shows."""
    import time

    record = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
    path = join(model_dir, LAST_EVAL_FILE)
    tf.io.gfile.makedirs(join(model_dir, "eval"))
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump(record, f, sort_keys=True)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
