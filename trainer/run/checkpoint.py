"""Checkpoints: only the chief writes; restore picks the newest checkpoint that reads whole.

Layout: ``<model_dir>/checkpoints/ckpt-<step>`` (tf.train.CheckpointManager) and
``<model_dir>/config.json`` (the model-defining values). The manager's state file is updated
only after a save completes, and restore reads every tensor of a candidate before using it,
so a checkpoint cut off mid-write (or damaged later) is skipped for the one before it.
``moving_average`` reads the average of the weights a checkpoint keeps (--ema_decay) for the
modes and tools that use a model without its optimizer.
"""

from __future__ import annotations

import logging

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from trainer.common.errors import first_line
from trainer.common.files import read_json, write_json
from trainer.common.paths import join
from trainer.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"


def checkpoint_dir(model_dir: str) -> str:
    return join(model_dir, "checkpoints")


def _scratch_dir(model_dir: str, worker_index: int) -> str:
    # Non-chief workers must take part in a save (collectives) but their copy is discarded.
    return join(model_dir, f".scratch-worker-{worker_index}")


def load_model_config(model_dir: str) -> ModelConfig | None:
    """The ModelConfig saved in <model_dir>/config.json, or None when there is none."""
    path = join(model_dir, CONFIG_FILE)
    saved = read_json(path)
    return None if saved is None else ModelConfig.from_json_dict(saved, path)


def check_model_config(
    model_dir: str, model: ModelConfig, write: bool, reading: bool = False
) -> None:
    """Refuses a run whose model-defining values differ from the saved config.json; writes
    config.json when there is none and ``write`` (the chief of a training run). ``reading``:
    a mode that reads a checkpoint (its advice differs: it takes the flags not given)."""
    wanted = model.to_json_dict()
    previous = load_model_config(model_dir)
    if previous is not None:
        saved = previous.to_json_dict()
        changed = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items())
            todo = (
                _reading_advice(changed) if reading else "use the saved values or a new --model_dir"
            )
            raise ConfigError(f"{model_dir} holds a model with other settings ({detail}): {todo}.")
        return
    if write:
        write_json(join(model_dir, CONFIG_FILE), wanted, indent=2, sort_keys=True)


def _reading_advice(changed: dict) -> str:
    """What to do when a mode that reads a checkpoint was given another model: drop the flags
    (config.json supplies them), or read data of the model's image size."""
    flags = [f"--{k}" for k in changed if k not in ("image_size", "channels")]
    advice = []
    if flags:
        advice.append(f"drop {', '.join(flags)} (the model flags not given come from config.json)")
    if len(flags) < len(changed):
        advice.append("give a --data_dir of the saved image size and channels")
    return " and ".join(advice)


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
            first_line(e),
        )
        return False


def moving_average(prefix: str) -> list | None:
    """The moving average of the weights that the checkpoint at ``prefix`` keeps (Keras'
    ``use_ema``, --ema_decay), in the order of the model's trainable variables.

    None when it keeps none; an empty list when it keeps one that has not started (saved
    before the first update, where Keras' average is still zeros). Read through the
    checkpoint's object graph (root -> optimizer [-> the loss-scale wrapper's
    inner_optimizer] -> ``_model_variables_moving_average``), not through an optimizer,
    which would restore only with the class and flags the run was trained with."""
    reader = tf.train.load_checkpoint(prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    )

    def child(node, name):
        if node is None:
            return None
        found = [c.node_id for c in node.children if c.local_name == name]
        return graph.nodes[found[0]] if found else None

    def value(node):
        return reader.get_tensor(node.attributes[0].checkpoint_key)

    optimizer = child(graph.nodes[0], "optimizer")
    wrapped = child(optimizer, "inner_optimizer")
    optimizer = optimizer if wrapped is None else wrapped
    averages = child(optimizer, "_model_variables_moving_average")
    iterations = child(optimizer, "_iterations")
    if averages is None or not averages.children:
        return None
    if iterations is None or int(value(iterations)) == 0:
        return []
    entries = sorted(averages.children, key=lambda c: int(c.local_name))
    return [value(graph.nodes[c.node_id]) for c in entries]


def apply_moving_average(model, prefix: str) -> bool | None:
    """Puts the moving average the checkpoint at ``prefix`` keeps into ``model`` (restored
    from it already), as the training run's own eval and exports use it. Returns True when
    it did, False when the average has not started, None when the checkpoint keeps none."""
    averages = moving_average(prefix)
    if not averages:
        return None if averages is None else False
    variables = model.trainable_variables
    if [tuple(a.shape) for a in averages] != [tuple(v.shape) for v in variables]:
        raise ConfigError(
            f"{prefix}'s moving average of the weights does not match this model's "
            f"{len(variables)} trainable variables: check the model flags against config.json."
        )
    for variable, average in zip(variables, averages):
        variable.assign(average)
    return True


class Checkpointer:
    """Saves and restores one tf.train.Checkpoint for the chief (scratch copies for others)."""

    def __init__(
        self,
        model_dir: str,
        parts: dict,
        keep: int,
        worker_index: int = 0,
        newer: tuple = (),
    ):
        """``parts``: the tf.train.Checkpoint's children; ``newer``: names of parts that
        checkpoints written by earlier versions lack (they restore without them)."""
        self.is_chief = worker_index == 0
        self.scratch = _scratch_dir(model_dir, worker_index)
        self.parts, self.newer = parts, newer
        self.checkpoint = tf.train.Checkpoint(**parts)
        # Every worker restores from the chief's directory; only the chief saves there.
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, checkpoint_dir(model_dir), max_to_keep=keep, checkpoint_name="ckpt"
        )

    def restore_latest(self, partial: bool = False) -> str | None:
        """Restores the newest whole checkpoint; returns its path or None (fresh start).
        ``partial``: this checkpoint object holds only part of what was saved (the model
        without its optimizer, for export)."""
        for prefix in reversed(self.manager.checkpoints):
            if readable(prefix):
                status = self._for(prefix).restore(prefix).assert_existing_objects_matched()
                if partial:
                    status.expect_partial()
                return prefix
        return None

    def _for(self, prefix: str) -> tf.train.Checkpoint:
        """The checkpoint object that matches ``prefix``: without the newer parts it lacks
        (the objects are shared, so restoring through it fills the same variables)."""
        saved = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(prefix)}
        missing = [name for name in self.newer if name not in saved]
        if not missing:
            return self.checkpoint
        return tf.train.Checkpoint(**{k: v for k, v in self.parts.items() if k not in missing})

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
