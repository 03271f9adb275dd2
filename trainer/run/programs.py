"""The train program and the eval program that the controller drives (orbit's AbstractTrainer
and AbstractEvaluator): they own the model, the optimizer, the checkpointed state and the
compiled functions, and know nothing of the schedule.

- TrainProgram: model and optimizer under the strategy, the checkpoint (model, optimizer,
  global step, pairs seen and the size they were counted at: trainer.run.resize), the
  training iterator positioned by the checkpoint, and
  ``train(n, stop)``: one compiled loop of n steps -> a controller.LoopResult.
- EvalProgram: a model (the train program's, or one built alone for the eval modes) and the
  compiled eval step over the padded eval split -> metrics. It has no optimizer.

A bad record stops either with a DataError naming the file and record.
"""

from __future__ import annotations

import hashlib
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainer.common.errors import first_line
from trainer.config import ConfigError, DataConfig, ModelConfig, RecipeConfig, TrainConfig
from trainer.model import builders
from trainer.run import inputs, resize, steps
from trainer.run.checkpoint import Checkpointer
from trainer.run.controller import LoopResult
from trainer.run.recipe import make_optimizer, rate_fn


def build_model(model_cfg: ModelConfig):
    """The seed's dual-input network for ``model_cfg`` (under the current dtype policy)."""
    return builders.create_dual_input_network(**model_cfg.builder_kwargs())


def build_model_and_optimizer(
    strategy, model_cfg: ModelConfig, learning_rate: float, recipe: RecipeConfig | None = None
):
    """Model and the recipe's optimizer (wrapped for loss scaling under mixed_float16), slots
    built so that a restore has every variable to fill."""
    keras.mixed_precision.set_global_policy(model_cfg.precision)
    with strategy.scope():
        model = build_model(model_cfg)
    return model, build_optimizer(strategy, model, model_cfg, learning_rate, recipe)


def build_optimizer(strategy, model, model_cfg: ModelConfig, learning_rate: float, recipe=None):
    """The recipe's optimizer for ``model`` as training builds it (loss-scale wrapped under
    mixed_float16: a checkpoint's optimizer restores only into the same shape)."""
    with strategy.scope():
        optimizer = make_optimizer(recipe or RecipeConfig(), learning_rate)
        if model_cfg.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    return optimizer


def input_options(fetch_to_device: bool) -> tf.distribute.InputOptions:
    return tf.distribute.InputOptions(experimental_fetch_to_device=fetch_to_device)


class TrainProgram:
    """One worker's share of a training run under ``strategy`` (see the module docstring)."""

    def __init__(
        self,
        *,
        strategy,
        model: ModelConfig,
        train: TrainConfig,
        data: DataConfig,
        source,
        worker_index: int = 0,
        num_workers: int = 1,
        fetch_to_device: bool = False,
    ):
        self.strategy, self.cfg, self.data_cfg, self.source = strategy, train, data, source
        self.worker_index, self.num_workers = worker_index, num_workers
        replicas = strategy.num_replicas_in_sync  # divisibility checked by trainer.resolve
        self.per_replica_batch = train.global_batch_size // replicas
        self.replicas_per_worker = replicas // num_workers
        self.model, self.optimizer = build_model_and_optimizer(
            strategy, model, train.learning_rate, train.recipe
        )
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.examples_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples")
        # The size the pairs seen are counted at (trainer.run.resize): this run's, until a
        # restore reads the checkpoint's (a checkpoint without it leaves this run's).
        accum = train.recipe.grad_accum_steps
        self.size = resize.Size(num_workers, train.global_batch_size * accum)
        self.restored_size = self.size
        self.saved_size = tf.Variable(
            [self.size.workers, self.size.step_pairs], dtype=tf.int64, trainable=False, name="size"
        )
        self.checkpointer = self._checkpointer(train, worker_index)
        self._loop = steps.make_train_loop(
            strategy=strategy,
            model=self.model,
            optimizer=self.optimizer,
            global_batch=train.global_batch_size,
            plan=train.compile_plan or "none",
            loss_scale=model.precision == "mixed_float16",
            timed=not train.deterministic,
            counters=(self.global_step, self.examples_seen),
            rate_fn=rate_fn(
                peak=train.learning_rate, recipe=train.recipe, train_steps=train.train_steps
            ),
            clip_norm=train.recipe.clip_norm,
            accum_steps=train.recipe.grad_accum_steps,
        )
        self.options = input_options(fetch_to_device)
        self._iterator = None
        self._constants = {}  # loop lengths and stop flags as tensors, made once each

    def _checkpointer(self, train: TrainConfig, worker_index: int) -> Checkpointer:
        return Checkpointer(
            train.model_dir,
            {
                "model": self.model,
                "optimizer": self.optimizer,
                "step": self.global_step,
                "examples_seen": self.examples_seen,
                "size": self.saved_size,
            },
            train.keep_checkpoints,
            worker_index,
            newer=("size",),  # checkpoints saved before it restore without it
        )

    @property
    def step(self) -> int:
        return int(self.global_step.numpy())

    def restore(self) -> str | None:
        """The newest whole checkpoint into model, optimizer and counters; its path or None."""
        # The checkpoint holds the optimizer's last rate too; the loop sets the schedule's
        # rate of each step before its update, so a resume follows this run's flags.
        try:
            path = self.checkpointer.restore_latest()
        except (ValueError, AssertionError) as e:  # another optimizer's slots, or an average
            raise ConfigError(
                f"{self.cfg.model_dir}'s checkpoint was trained with other --optimizer, "
                f"--ema_decay or --precision flags ({first_line(e, 200)}): resume with the "
                "flags it was trained with, or start a new --model_dir."
            ) from None
        self.restored_size = resize.Size(*(int(v) for v in self.saved_size.numpy()))
        self.saved_size.assign([self.size.workers, self.size.step_pairs])  # what saves record
        return path

    def resize_lines(self) -> list[str]:
        """What a resume at another size than the checkpoint's keeps (trainer.run.resize);
        the first loop then logs where each worker reads on."""
        return resize.resize_lines(
            saved=self.restored_size,
            now=self.size,
            step=self.step,
            pairs_seen=int(self.examples_seen.numpy()),
            service=bool(self.data_cfg.service_address),
        )

    def save(self) -> str:
        """Saves at the current step; every worker must call it (the save has collective
        parts); only the chief's copy is kept."""
        path = self.checkpointer.save(self.step)
        if self.worker_index == 0:
            logging.info("saved checkpoint %s", path)
        return path

    def train(self, num_steps: int, stop: bool, max_seconds: float = float("inf")) -> LoopResult:
        """One compiled loop of ``num_steps`` steps (fewer if a loss turns NaN/Inf, or once
        it has run ``max_seconds``)."""
        if self._iterator is None:  # made after restore: the checkpoint positions it
            self._iterator = inputs.train_iterator(
                self.strategy,
                self.source,
                self.data_cfg,
                per_replica_batch=self.per_replica_batch,
                replicas_per_worker=self.replicas_per_worker,
                examples_seen=int(self.examples_seen.numpy()),
                model_dir=self.cfg.model_dir,
                options=self.options,
                show_position=self.restored_size.workers not in (0, self.num_workers),
            )
        started = time.monotonic()
        try:
            out = self._loop(
                self._iterator,
                self._constant(num_steps),
                self._constant(1.0 if stop else 0.0),
                self._constant(float(max_seconds)),
            )
            out = tf.nest.map_structure(lambda t: t.numpy(), out)
        except inputs.DATA_ERRORS as e:
            raise inputs.data_error(e, self.source, "training") from None
        bad = int(out.bad)
        return LoopResult(
            steps=int(out.steps),
            loss=float(out.sums.loss),
            correct=float(out.sums.correct),
            count=float(out.sums.count),
            stop_votes=float(out.sums.stop),
            wait_seconds=float(out.wait),
            seconds=time.monotonic() - started,
            diverged_at=None if bad < 0 else bad,
            diverged_loss=float(out.last.loss) + float(out.last.reg),
            rate=float(out.rate),
        )

    def _constant(self, value):
        key = (type(value), value)  # 1 and 1.0 are one dict key otherwise
        if key not in self._constants:
            self._constants[key] = tf.constant(value)
        return self._constants[key]

    def weights_fingerprint(self) -> str:
        """SHA-256 of every model variable's bytes: equal on all workers when in sync."""
        return weights_fingerprint(self.model)


def weights_fingerprint(model) -> str:
    digest = hashlib.sha256()
    for v in model.weights:
        value = v.numpy() if not hasattr(v, "values") else v.values[0].numpy()
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


class EvalProgram:
    """Loss, accuracy and AUC of ``model`` on the eval split, every worker taking part."""

    def __init__(
        self,
        *,
        strategy,
        model,
        source,
        global_batch_size: int,
        num_workers: int = 1,
        fetch_to_device: bool = False,
    ):
        self.strategy, self.model, self.source = strategy, model, source
        replicas = strategy.num_replicas_in_sync
        self.per_replica_batch = global_batch_size // replicas
        self.replicas_per_worker = replicas // num_workers
        self.num_batches = inputs.eval_batches(
            source, self.per_replica_batch, self.replicas_per_worker, num_workers
        )
        self.options = input_options(fetch_to_device)
        self._step = steps.make_eval_step(strategy, model)

    def evaluate(self) -> dict:
        it = inputs.eval_iterator(
            self.strategy,
            self.source,
            per_replica_batch=self.per_replica_batch,
            num_batches=self.num_batches,
            options=self.options,
        )
        total = None
        try:
            for _ in range(self.num_batches // self.replicas_per_worker):
                out = tf.nest.map_structure(lambda t: t.numpy(), self._step(it))
                total = out if total is None else tf.nest.map_structure(np.add, total, out)
        except inputs.DATA_ERRORS as e:
            raise inputs.data_error(e, self.source, "eval") from None
        return steps.eval_metrics(total)
