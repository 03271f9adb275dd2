"""The compiled functions: the distributed training loop, the eval step, and their metric maths.

Training runs in loops: one tf.function runs up to --steps_per_loop steps with the
distributed iterator inside (a ``tf.range`` loop, TensorFlow model garden's host loop),
sums the metrics on the device and returns once, so the host pays one round trip per loop.
What XLA compiles of a step is trainer.runtime.strategy.compile_plan's choice: nothing, the
per-replica forward/backward pass (the gradient all-reduce and the optimizer update, inside
Keras' ``optimizer.apply``, outside it: XLA cannot compile collectives on CPU, DESIGN.md), or
the whole replica step (one GPU replica).

Both functions return named structures (StepSums, LoopOutput, EvalSums). Inside, a replica's
figures travel as one stacked vector so that a step costs one all-reduce, not five.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from trainer.common.graph import graph_fn

AUC_BINS = 200
SUM = tf.distribute.ReduceOp.SUM


class StepSums(NamedTuple):
    """A step's figures summed over replicas (or a loop's, summed over its steps too)."""

    loss: tf.Tensor  # data loss (each replica's share of the global mean)
    reg: tf.Tensor  # the L2 penalty
    correct: tf.Tensor  # pairs classified right
    count: tf.Tensor  # pairs
    stop: tf.Tensor  # workers that asked to stop (the multi-worker stop vote)

    @classmethod
    def stacked(cls, vector) -> StepSums:
        return cls(*tf.unstack(vector, num=len(cls._fields)))


class LoopOutput(NamedTuple):
    sums: StepSums  # every step of the loop added up
    steps: tf.Tensor  # steps run (fewer than asked when one diverged)
    bad: tf.Tensor  # index in the loop of a step whose loss was NaN/Inf, or -1
    wait: tf.Tensor  # seconds spent in next(iterator) (0 when untimed)
    last: StepSums  # the last step's own figures
    rate: tf.Tensor  # the learning rate of the loop's last update


def make_train_loop(
    *,
    strategy,
    model,
    optimizer,
    global_batch: int,
    plan: str,
    loss_scale: bool,
    timed: bool = True,
    counters=None,
    rate_fn=None,
    clip_norm: float = 0.0,
    accum_steps: int = 1,
):
    """Returns train_loop(iterator, num_steps, stop) -> LoopOutput.

    ``stop`` (0.0 or 1.0 per worker) travels with the metrics: every worker learns at the same
    loop's end that one was asked to stop. A NaN/Inf loss ends the loop at that step. The
    input wait is timed around ``next(iterator)`` unless not ``timed`` (op determinism allows
    no timestamps). ``counters`` (global step, pairs seen) advance inside the function;
    ``rate_fn(step)`` sets the rate before each update (trainer.run.recipe); ``max_seconds``
    ends a loop early (timed loops only: a grace budget, trainer.run.controller). A step is one
    update over ``accum_steps`` batches, summed inside the replica step: no accumulator
    outlives a step, and every strategy applies the update at the same point.
    """
    recipe = _StepRecipe(global_batch, plan, loss_scale, clip_norm, accum_steps)
    replica_step = _replica_step(strategy, model, optimizer, recipe)
    width = len(StepSums._fields)
    next_batches, set_rate = _batch_reader(timed, accum_steps), _rate_setter(optimizer, rate_fn)

    # An explicit while_loop (no AutoGraph: trainer.common.graph): it stops after the step
    # whose loss is NaN or Inf, which is then the last one counted.
    @tf.function(autograph=False)
    def train_loop(iterator, num_steps, stop, max_seconds=np.inf):
        first = counters[0].read_value() if counters is not None else tf.constant(0, tf.int64)
        more = _loop_condition(num_steps, max_seconds, timed)

        def step(i, sums, last, done, bad, wait, rate):
            batches, wait = next_batches(iterator, wait)
            rate = set_rate(first + tf.cast(i, tf.int64))
            with tf.control_dependencies([rate]):
                last = strategy.reduce(SUM, strategy.run(replica_step, (batches, stop)), None)
            bad = tf.where(tf.math.is_finite(last[0] + last[1]), bad, i)
            return i + 1, sums + last, last, done + 1, bad, wait, rate

        zeros = tf.zeros([width])
        start = (tf.constant(0), zeros, zeros, tf.constant(0), tf.constant(-1))
        _, sums, last, done, bad, wait, rate = tf.while_loop(
            more, step, (*start, tf.constant(0.0, tf.float64), tf.constant(0.0))
        )
        if counters is not None:
            steps = tf.cast(done, tf.int64)
            counters[0].assign_add(steps)
            counters[1].assign_add(steps * global_batch * accum_steps)
        return LoopOutput(StepSums.stacked(sums), done, bad, wait, StepSums.stacked(last), rate)

    return train_loop


def _loop_condition(num_steps, max_seconds, timed: bool):
    """The while_loop's condition: steps left and no NaN/Inf yet, and (timed loops) less than
    ``max_seconds`` run: a grace budget ends the loop early (one step at least), so the loop
    a SIGTERM arrives in leaves time for the save. No clock under op determinism."""
    started = tf.timestamp() if timed else None

    def more(i, sums, last, done, bad, wait, rate):
        going = tf.logical_and(i < num_steps, bad < 0)
        if started is None:
            return going
        limit = tf.cast(max_seconds, tf.float64)
        early = tf.logical_and(i > 0, tf.timestamp() - started >= limit)
        return tf.logical_and(going, tf.logical_not(early))

    return more


def _batch_reader(timed: bool, count: int):
    """next_batches(iterator, wait) -> (``count`` batches, wait + the seconds they took)
    (wait unchanged when not ``timed``)."""

    def next_batch(iterator, wait):
        if not timed:
            return next(iterator), wait
        # Explicit edges: a timestamp touches no resource, so tf.function would not order it
        # against the iterator's get_next by itself.
        started = tf.timestamp()
        with tf.control_dependencies([started]):
            batch = next(iterator)
        with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
            return batch, wait + (tf.timestamp() - started)

    def next_batches(iterator, wait):
        batches = []
        for _ in range(count):
            batch, wait = next_batch(iterator, wait)
            batches.append(batch)
        return tuple(batches), wait

    return next_batches


def _rate_setter(optimizer, rate_fn):
    """set_rate(step) -> the rate it gave the optimizer (0 without ``rate_fn``: the rate the
    optimizer was made with stays)."""

    def set_rate(step):
        if rate_fn is None:
            return tf.constant(0.0)
        rate = rate_fn(step)
        optimizer.learning_rate.assign(rate)
        return rate

    return set_rate


class _StepRecipe(NamedTuple):
    global_batch: int
    plan: str  # what XLA compiles (trainer.runtime.strategy.compile_plan)
    loss_scale: bool  # mixed_float16: the optimizer scales the loss
    clip_norm: float  # 0: off
    accum_steps: int  # batches per update


def _clip(grads, clip_norm: float, scale):
    """Each replica's gradient scaled so that their sum has at most ``clip_norm`` global norm
    (times the loss scale under mixed_float16): one extra all-reduce, which Keras'
    own clipping (each replica's share, before its all-reduce) would not do."""
    summed = tf.distribute.get_replica_context().all_reduce(SUM, grads)
    norm = tf.linalg.global_norm(summed)
    factor = tf.minimum(1.0, clip_norm * scale / tf.maximum(norm, 1e-12))
    return [g * tf.cast(factor, g.dtype) for g in grads]


def _replica_step(strategy, model, optimizer, recipe: _StepRecipe):
    """The per-replica step -> its StepSums as a vector, compiled as ``recipe.plan`` says:
    the gradients of ``recipe.accum_steps`` batches, averaged, clipped, applied once."""
    num_replicas = strategy.num_replicas_in_sync

    def forward_backward(inputs, labels):
        with tf.GradientTape() as tape:
            pred = model(inputs, training=True)
            y = tf.cast(tf.reshape(labels, [-1, 1]), pred.dtype)
            per_example = keras.losses.binary_crossentropy(y, pred)
            loss = tf.reduce_sum(per_example) / recipe.global_batch
            # Each replica adds 1/num_replicas of the penalty; the all-reduce sums it once.
            reg = tf.add_n(model.losses) / num_replicas if model.losses else tf.zeros([])
            total = loss + tf.cast(reg, loss.dtype)
            scaled = optimizer.scale_loss(total) if recipe.loss_scale else total
        grads = tape.gradient(scaled, model.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred > 0.5, y > 0.5), tf.float32))
        return grads, tf.cast(loss, tf.float32), tf.cast(reg, tf.float32), correct

    if recipe.plan == "forward_backward":
        forward_backward = tf.function(forward_backward, jit_compile=True, autograph=False)

    @graph_fn
    def replica_step(batches, stop):
        n = len(batches)
        grads, loss, reg, correct, count = None, 0.0, 0.0, 0.0, 0.0
        for inputs, labels in batches:
            g, batch_loss, batch_reg, batch_correct = forward_backward(inputs, labels)
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            loss, reg, correct = loss + batch_loss, reg + batch_reg, correct + batch_correct
            count += tf.cast(tf.shape(labels)[0], tf.float32)
        if n > 1:
            grads = [g / n for g in grads]
        if recipe.clip_norm:
            scale = optimizer.dynamic_scale if recipe.loss_scale else 1.0
            grads = _clip(grads, recipe.clip_norm, scale)
        optimizer.apply(grads, model.trainable_variables)
        return tf.stack([loss / n, reg / n, correct, count, stop])

    if recipe.plan == "whole_step":
        return tf.function(replica_step, jit_compile=True, autograph=False)
    if recipe.plan not in ("none", "forward_backward"):
        raise ValueError(f"unknown compile plan {recipe.plan!r}")
    return replica_step


class EvalSums(NamedTuple):
    """Eval figures summed over batches and replicas (padding pairs weigh 0)."""

    bce: tf.Tensor  # binary cross-entropy, summed
    correct: tf.Tensor
    weight: tf.Tensor  # real pairs
    positives: tf.Tensor  # histogram of the positives' scores, AUC_BINS bins
    negatives: tf.Tensor  # the same for the negatives


def make_eval_step(strategy, model):
    """Returns eval_step(iterator) -> EvalSums of one batch per replica."""

    @graph_fn
    def replica_eval(inputs, labels, weights):
        pred = tf.cast(model(inputs, training=False)[:, 0], tf.float32)
        y = tf.cast(labels, tf.float32)
        bce = keras.losses.binary_crossentropy(y[:, None], pred[:, None])
        correct = tf.cast(tf.equal(pred > 0.5, y > 0.5), tf.float32)
        bins = tf.clip_by_value(tf.cast(pred * AUC_BINS, tf.int32), 0, AUC_BINS - 1)
        pos = tf.math.unsorted_segment_sum(weights * y, bins, AUC_BINS)
        neg = tf.math.unsorted_segment_sum(weights * (1 - y), bins, AUC_BINS)
        sums = tf.stack(
            [tf.reduce_sum(bce * weights), tf.reduce_sum(correct * weights), tf.reduce_sum(weights)]
        )
        return tf.concat([sums, pos, neg], 0)

    @tf.function(autograph=False)
    def eval_step(iterator):
        inputs, labels, weights = next(iterator)
        total = strategy.reduce(SUM, strategy.run(replica_eval, (inputs, labels, weights)), None)
        pos, neg = total[3 : 3 + AUC_BINS], total[3 + AUC_BINS :]
        return EvalSums(total[0], total[1], total[2], pos, neg)

    return eval_step


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC from prediction histograms of positives and negatives (trapezoids)."""
    tp = np.concatenate([[0.0], np.cumsum(pos[::-1])])
    fp = np.concatenate([[0.0], np.cumsum(neg[::-1])])
    if tp[-1] == 0 or fp[-1] == 0:
        return float("nan")
    tpr, fpr = tp / tp[-1], fp / fp[-1]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def eval_metrics(total: EvalSums) -> dict:
    """Loss, accuracy, AUC and the pair count from summed EvalSums (numpy values)."""
    weight = max(float(total.weight), 1.0)
    return {
        "loss": float(total.bce) / weight,
        "accuracy": float(total.correct) / weight,
        "auc": auc_from_histograms(np.asarray(total.positives), np.asarray(total.negatives)),
        "pairs": int(total.weight),
    }
