"""The training run: build under a strategy, restore, loop, checkpoint, evaluate, stop cleanly.

Exit contract (DESIGN.md): returns normally when done; raises Preempted (exit 75) after saving
when SIGTERM arrived; raises TrainingDiverged (exit 1) on a NaN/Inf loss, keeping the last good
checkpoint; raises DataError naming the bad record when the input fails.
"""

from __future__ import annotations

import hashlib
import math
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainer.common.paths import join
from trainer.config import ModelConfig, TrainConfig
from trainer.data.read import pipeline, verify
from trainer.data.schema import DataError
from trainer.data.service import client as service
from trainer.model import builders as model_lib
from trainer.run import steps as steps_lib
from trainer.run.checkpoint import Checkpointer, write_last_eval
from trainer.run.control import (
    INPUT_BOUND_FRACTION,
    Preempted,
    StopSignal,
    TrainingDiverged,
    Window,
    loop_length,
)


def build_model(model_cfg: ModelConfig):
    return model_lib.create_dual_input_network(**model_cfg.builder_kwargs())


def _build(strategy, model_cfg: ModelConfig, learning_rate: float):
    keras.mixed_precision.set_global_policy(model_cfg.precision)
    with strategy.scope():
        model = build_model(model_cfg)
        optimizer = keras.optimizers.Adam(learning_rate)
        if model_cfg.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)  # slots exist before a restore
    return model, optimizer


def _eval_plan(source, per_replica_batch: int, replicas_per_worker: int, num_workers: int):
    """Batches every worker runs, so all take part in the same number of collective steps."""
    largest = max(
        pipeline.worker_shard(source, w, num_workers).records_per_epoch for w in range(num_workers)
    )
    batches = math.ceil(largest / per_replica_batch)
    return math.ceil(batches / replicas_per_worker) * replicas_per_worker


def _eval_input(source, batch: int, worker: int, workers: int, num_batches: int, spec):
    """This worker's eval batches with weights, padded with weight-0 pairs to num_batches."""
    real = pipeline.eval_dataset(source, batch, worker, workers).map(
        lambda x, y: (x, y, tf.ones_like(y, tf.float32))
    )
    zeros = tf.zeros([batch, spec.height, spec.width, spec.channels])
    pad = tf.data.Dataset.from_tensors(
        ({"input1": zeros, "input2": zeros}, tf.zeros([batch], tf.int32), tf.zeros([batch]))
    ).repeat()
    return real.concatenate(pad).take(num_batches)


class Trainer:
    """One training run of the dual-input model under ``strategy``."""

    def __init__(
        self,
        strategy,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        data_cfg,
        train_source,
        eval_source,
        worker_index=0,
        num_workers=1,
        compile_plan="none",
        fetch_to_device=True,
        steps_per_loop=1,
        summary_dir=None,
        best=None,
    ):
        self.strategy, self.cfg, self.data_cfg = strategy, train_cfg, data_cfg
        self.model_cfg = model_cfg
        self.train_source, self.eval_source = train_source, eval_source
        self.worker_index, self.num_workers = worker_index, num_workers
        self.is_chief = worker_index == 0
        replicas = strategy.num_replicas_in_sync  # divisibility checked in trainer.run.main
        self.per_replica_batch = train_cfg.global_batch_size // replicas
        self.replicas_per_worker = replicas // num_workers
        self.model, self.optimizer = _build(strategy, model_cfg, train_cfg.learning_rate)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.examples_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples")
        ckpt = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            examples_seen=self.examples_seen,
        )
        self.checkpointer = Checkpointer(
            train_cfg.model_dir, ckpt, train_cfg.keep_checkpoints, worker_index
        )
        self.steps_per_loop, self.compile_plan = steps_per_loop, compile_plan
        self.train_loop = steps_lib.make_train_loop(
            strategy,
            self.model,
            self.optimizer,
            train_cfg.global_batch_size,
            compile_plan,
            loss_scale=model_cfg.precision == "mixed_float16",
            timed=not train_cfg.deterministic,
            counters=(self.step, self.examples_seen),
        )
        self._constants = {}  # loop lengths and stop flags as tensors, made once each
        self.eval_step = steps_lib.make_eval_step(strategy, self.model)
        self.writer = (
            tf.summary.create_file_writer(summary_dir or join(train_cfg.model_dir, "tensorboard"))
            if self.is_chief
            else tf.summary.create_noop_writer()
        )
        self.best = best if self.is_chief else None  # a trainer.run.best.BestKeeper or None
        self.skipped = []
        self.profile_steps = train_cfg.profile_steps
        self.input_options = tf.distribute.InputOptions(
            experimental_fetch_to_device=fetch_to_device
        )

    # -- input ------------------------------------------------------------------------------
    def _train_iterator(self):
        # The stream position is a pure function of the pairs seen (see trainer.data.read.pipeline).
        per_step = self.per_replica_batch * self.strategy.num_replicas_in_sync
        start = int(self.examples_seen.numpy()) // per_step * self.replicas_per_worker
        rc = pipeline.ReaderConfig(
            batch_size=self.per_replica_batch,
            seed=self.data_cfg.seed,
            shuffle_buffer=self.data_cfg.shuffle_buffer,
            augment=self.data_cfg.augment,
            cache=self.data_cfg.cache,
            skip_corrupt=self.data_cfg.skip_corrupt,
        )

        address = self.data_cfg.service_address
        if address:
            # Every trainer worker reads one shared job of the tf.data service (its data
            # workers decode); see trainer.data.service.client for what a resume reproduces.
            seen = int(self.examples_seen.numpy())
            name = service.job_name(self.cfg.model_dir, self.data_cfg.seed, seen)
            logging.info("input from the tf.data service at %s, job %s", address, name)
            return iter(
                self.strategy.distribute_datasets_from_function(
                    lambda ctx: service.train_stream(
                        self.train_source, rc, address, name, seen, start
                    ),
                    self.input_options,
                )
            )

        def dataset_fn(ctx):
            ds, skipped = pipeline.train_dataset(
                self.train_source,
                rc,
                ctx.input_pipeline_id,
                ctx.num_input_pipelines,
                start_step=start,
            )
            self.skipped = skipped
            return ds

        dist = self.strategy.distribute_datasets_from_function(dataset_fn, self.input_options)
        if self.skipped:
            logging.warning(
                "skipping %d corrupt records or file tails: %s",
                len(self.skipped),
                "; ".join(self.skipped[:10]),
            )
        return iter(dist)

    def _data_error(self, error: tf.errors.OpError, source) -> Exception:
        problem = verify.locate_first_bad(source)
        if problem:
            return DataError(f"bad training data: {problem} (use --skip_corrupt to skip it).")
        return error

    # -- phases -----------------------------------------------------------------------------
    def restore(self) -> int:
        path = self.checkpointer.restore_latest()
        # The checkpoint holds the optimizer's learning rate too; the flag of this run wins.
        self.optimizer.learning_rate.assign(self.cfg.learning_rate)
        step = int(self.step.numpy())
        if path:
            logging.info("resumed from %s at step %d", path, step)
        return step

    def evaluate(self) -> dict:
        spec = self.eval_source.spec
        n = _eval_plan(
            self.eval_source, self.per_replica_batch, self.replicas_per_worker, self.num_workers
        )
        dist = self.strategy.distribute_datasets_from_function(
            lambda ctx: _eval_input(
                self.eval_source,
                self.per_replica_batch,
                ctx.input_pipeline_id,
                ctx.num_input_pipelines,
                n,
                spec,
            ),
            self.input_options,
        )
        it = iter(dist)
        total = None
        try:
            for _ in range(n // self.replicas_per_worker):
                out = self.eval_step(it).numpy()
                total = out if total is None else total + out
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            raise self._data_error(e, self.eval_source) from None
        return steps_lib.eval_metrics(total)

    def save(self) -> None:
        path = self.checkpointer.save(int(self.step.numpy()))
        if self.is_chief:
            logging.info("saved checkpoint %s", path)

    def fit(self, stop: StopSignal) -> dict | None:
        """Trains from the restored step to cfg.train_steps; returns the final eval metrics
        (None with --eval_every_steps=0: evaluation is left to a separate evaluator)."""
        cfg = self.cfg
        step = int(self.step.numpy())
        if step >= cfg.train_steps:
            logging.info("step %d >= --train_steps=%d: nothing to train", step, cfg.train_steps)
            return self.evaluate() if cfg.eval_every_steps else None
        it = self._train_iterator()
        logging.info(
            "training steps %d..%d, global batch %d over %d replicas, up to %d steps per loop, "
            "XLA: %s",
            step,
            cfg.train_steps,
            cfg.global_batch_size,
            self.strategy.num_replicas_in_sync,
            self.steps_per_loop,
            self.compile_plan,
        )
        window = Window()
        last_saved = step if step > 0 else None
        while step < cfg.train_steps:
            self._profile(step)
            n = loop_length(step, self.steps_per_loop, cfg, self.profile_steps)
            sums, done, bad, last = self._one_loop(it, n, stop, window)
            if bad >= 0:
                self._diverged(last, step + bad + 1, last_saved)
            step += done  # the loop advanced self.step and self.examples_seen itself
            if sums[4] > 0:
                self.save()
                raise Preempted(f"stopped by a signal at step {step}; checkpoint saved.")
            if step % cfg.log_every_steps == 0 or step == cfg.train_steps:
                self._log_progress(step, window)
            if step % cfg.checkpoint_every_steps == 0 or step == cfg.train_steps:
                self.save()
                last_saved = step
            every = cfg.eval_every_steps
            if every and step % every == 0 and step != cfg.train_steps:
                self.report_eval(step, self.evaluate())
        self._profile(step)
        metrics = None
        if cfg.eval_every_steps:
            metrics = self.evaluate()
            self.report_eval(step, metrics)
        logging.info(
            "worker %d final weights sha256 %s", self.worker_index, self.weights_fingerprint()
        )
        return metrics

    def _one_loop(self, it, n: int, stop: StopSignal, window: Window):
        """Runs one compiled loop of ``n`` steps; returns (metric sums, steps run, index of a
        non-finite step or -1, that step's metrics)."""
        try:
            t0 = time.monotonic()
            sums, done, bad, wait, last = self.train_loop(
                it, self._constant(n), self._constant(1.0 if stop.requested else 0.0)
            )
            sums, done, bad = sums.numpy(), int(done.numpy()), int(bad.numpy())
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            raise self._data_error(e, self.train_source) from None
        window.add(done, float(wait.numpy()), time.monotonic() - t0, sums)
        return sums, done, bad, last.numpy()

    def _constant(self, value):
        key = (type(value), value)  # 1 and 1.0 are one dict key otherwise
        if key not in self._constants:
            self._constants[key] = tf.constant(value)
        return self._constants[key]

    def _diverged(self, out: np.ndarray, step: int, last_saved: int | None):
        total = float(out[0]) + float(out[1])  # data loss plus L2 penalty
        kept = (
            f"the last good checkpoint (step {last_saved}) is kept"
            if last_saved
            else "no checkpoint was saved"
        )
        raise TrainingDiverged(
            f"the loss became {total} at step {step}; {kept}: lower --learning_rate or "
            "--lambda_regularization, or use --precision=float32."
        )

    def _log_progress(self, step: int, window: Window) -> None:
        cfg = self.cfg
        loss, acc = window.mean_loss(), window.accuracy()
        rate = window.steps * cfg.global_batch_size / max(window.elapsed(), 1e-9)
        eta = (cfg.train_steps - step) * cfg.global_batch_size / max(rate, 1e-9)
        wait = window.input_fraction()
        logging.info(
            "step %d/%d loss %.4f accuracy %.3f %.0f pairs/s input wait %s ETA %.0fs",
            step,
            cfg.train_steps,
            loss,
            acc,
            rate,
            "n/a" if cfg.deterministic else f"{100 * wait:.0f}%",  # no timestamps then
            eta,
        )
        if wait > INPUT_BOUND_FRACTION:
            logging.warning(
                "input-bound: %.0f%% of step time waits for the next batch; %s",
                100 * wait,
                "add data workers to the tf.data service"
                if self.data_cfg.service_address
                else "try --cache, raw encoding, more shards, fewer augmentations or the "
                "tf.data service (--data_service_address)",
            )
        self._scalars(
            step,
            {
                "train/loss": loss,
                "train/accuracy": acc,
                "train/pairs_per_second": rate,
                "train/input_wait": wait,
                "train/learning_rate": cfg.learning_rate,
            },
        )
        window.reset()

    def _profile(self, step: int) -> None:
        """Starts/stops TensorBoard's profiler at the --profile_steps bounds (chief only)."""
        if not self.profile_steps or not self.is_chief:
            return
        first, last = self.profile_steps
        if step == first:
            tf.profiler.experimental.start(join(self.cfg.model_dir, "tensorboard"))
            self._profiling = True
        elif step == last and getattr(self, "_profiling", False):
            tf.profiler.experimental.stop()
            self._profiling = False
            logging.info(
                "profile of steps %d..%d written to %s",
                first,
                last,
                join(self.cfg.model_dir, "tensorboard"),
            )

    def report_eval(self, step: int, metrics: dict) -> None:
        """Logs an eval, writes its scalars and last.json, offers the weights as the best."""
        logging.info(
            "eval at step %d: loss %.4f accuracy %.4f auc %.4f (%d pairs)",
            step,
            metrics["loss"],
            metrics["accuracy"],
            metrics["auc"],
            metrics["pairs"],
        )
        self._scalars(step, {f"eval/{k}": v for k, v in metrics.items() if k != "pairs"})
        if self.is_chief:
            write_last_eval(self.cfg.model_dir, step, metrics)
        if self.best is not None:
            self.best.offer(step, metrics, self.model)

    def _scalars(self, step: int, values: dict) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self.writer.flush()

    def weights_fingerprint(self) -> str:
        """SHA-256 of every model variable's bytes: equal on all workers when in sync."""
        digest = hashlib.sha256()
        for v in self.model.weights:
            value = v.numpy() if not hasattr(v, "values") else v.values[0].numpy()
            digest.update(np.ascontiguousarray(value).tobytes())
        return digest.hexdigest()
