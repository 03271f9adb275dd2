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
):
    """Returns train_loop(iterator, num_steps, stop) -> LoopOutput.

    ``stop`` (0.0 or 1.0 per worker) travels with the metrics, so every worker learns at the
    same loop's end that one of them was asked to stop. A step whose loss is NaN or Inf ends
    the loop at once. The input wait is the time spent in ``next(iterator)`` (``tf.timestamp``
    around it); 0 when not ``timed``: TensorFlow refuses timestamps under op determinism
    (--deterministic). ``counters`` (global step, pairs seen: int64 variables) advance inside
    the function, so the host issues no extra ops per loop.
    """
    replica_step = _replica_step(strategy, model, optimizer, global_batch, plan, loss_scale)
    width = len(StepSums._fields)

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

    # An explicit while_loop (no AutoGraph: trainer.common.graph): it stops after the step
    # whose loss is NaN or Inf, which is then the last one counted.
    @tf.function(autograph=False)
    def train_loop(iterator, num_steps, stop):
        def more(i, sums, last, done, bad, wait):
            return tf.logical_and(i < num_steps, bad < 0)

        def step(i, sums, last, done, bad, wait):
            (inputs, labels), wait = next_batch(iterator, wait)
            last = strategy.reduce(SUM, strategy.run(replica_step, (inputs, labels, stop)), None)
            bad = tf.where(tf.math.is_finite(last[0] + last[1]), bad, i)
            return i + 1, sums + last, last, done + 1, bad, wait

        zeros = tf.zeros([width])
        start = (tf.constant(0), zeros, zeros, tf.constant(0), tf.constant(-1))
        _, sums, last, done, bad, wait = tf.while_loop(
            more, step, (*start, tf.constant(0.0, tf.float64))
        )
        if counters is not None:
            steps = tf.cast(done, tf.int64)
            counters[0].assign_add(steps)
            counters[1].assign_add(steps * global_batch)
        return LoopOutput(StepSums.stacked(sums), done, bad, wait, StepSums.stacked(last))

    return train_loop


def _replica_step(strategy, model, optimizer, global_batch: int, plan: str, loss_scale: bool):
    """The per-replica step -> its StepSums as a vector, compiled as ``plan`` says."""
    num_replicas = strategy.num_replicas_in_sync

    def forward_backward(inputs, labels):
        with tf.GradientTape() as tape:
            pred = model(inputs, training=True)
            y = tf.cast(tf.reshape(labels, [-1, 1]), pred.dtype)
            per_example = keras.losses.binary_crossentropy(y, pred)
            loss = tf.reduce_sum(per_example) / global_batch
            # Each replica adds 1/num_replicas of the penalty; the all-reduce sums it once.
            reg = tf.add_n(model.losses) / num_replicas if model.losses else tf.zeros([])
            total = loss + tf.cast(reg, loss.dtype)
            scaled = optimizer.scale_loss(total) if loss_scale else total
        grads = tape.gradient(scaled, model.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred > 0.5, y > 0.5), tf.float32))
        return grads, loss, tf.cast(reg, tf.float32), correct

    if plan == "forward_backward":
        forward_backward = tf.function(forward_backward, jit_compile=True, autograph=False)

    @graph_fn
    def replica_step(inputs, labels, stop):
        grads, loss, reg, correct = forward_backward(inputs, labels)
        optimizer.apply(grads, model.trainable_variables)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([tf.cast(loss, tf.float32), reg, correct, count, stop])

    if plan == "whole_step":
        return tf.function(replica_step, jit_compile=True, autograph=False)
    if plan not in ("none", "forward_backward"):
        raise ValueError(f"unknown compile plan {plan!r}")
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
