"""The compiled training loop in-process: the whole-step XLA plan and the input-wait figure."""

import time

import keras
import numpy as np
import tensorflow as tf

from trainer.config import ModelConfig, RecipeConfig
from trainer.run import steps as steps_lib
from trainer.run.programs import build_model_and_optimizer

CFG = ModelConfig(lambda_regularization=1e-4, image_size=(16, 16), channels=3)


def batches(n=8):
    rng = np.random.default_rng(0)
    x1, x2 = (rng.random((n, 16, 16, 3), dtype=np.float32) for _ in range(2))
    y = rng.integers(0, 2, n).astype(np.int32)
    return tf.data.Dataset.from_tensors(({"input1": x1, "input2": x2}, y)).repeat()


def loop_on(ds, plan="none", optimizer_name="sgd", *, global_batch=8, accum_steps=1):
    """A model and its compiled loop (SGD unless asked: the loop's timing is the subject, and
    Keras' Adam traces ~40 graph ops per variable)."""
    keras.utils.set_random_seed(1)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    model, optimizer = build_model_and_optimizer(
        strategy, CFG, 1e-3, RecipeConfig(optimizer=optimizer_name)
    )
    loop = steps_lib.make_train_loop(
        strategy=strategy,
        model=model,
        optimizer=optimizer,
        global_batch=global_batch,
        plan=plan,
        loss_scale=False,
        accum_steps=accum_steps,
    )
    return model, loop, iter(strategy.experimental_distribute_dataset(ds)), strategy


def test_whole_step_plan_trains_like_the_uncompiled_step():
    """The GPU path's whole-step XLA cluster, run on this CPU (one replica): the same metrics
    and, to float tolerance, the same weights as the uncompiled loop."""
    results = {}
    for plan in ("none", "whole_step"):
        model, loop, it, _ = loop_on(batches(), plan, optimizer_name="adam")  # the GPU default
        before = [w.numpy() for w in model.trainable_weights]
        out = loop(it, tf.constant(3), tf.constant(0.0))
        assert int(out.steps) == 3 and int(out.bad) == -1
        sums = np.array([float(v) for v in out.sums])
        results[plan] = sums, [w.numpy() for w in model.trainable_weights]
    np.testing.assert_allclose(results["whole_step"][0], results["none"][0], rtol=1e-5)
    assert results["none"][0][1] > 0  # the L2 penalty (StepSums.reg) went through both
    apart = [np.abs(a - b).max() for a, b in zip(*(r[1] for r in results.values()))]
    trained = [np.abs(a - b).max() for a, b in zip(results["whole_step"][1], before)]
    assert max(apart) < 1e-4 < min(trained)  # every weight moved, both plans alike


def test_accumulated_batches_update_as_one_batch_of_their_size():
    """--grad_accum_steps=2 over batches of 8 pairs is one update of the 16 pairs together:
    the same weights and sums to float tolerance, uncompiled and as the GPU's whole-step XLA
    cluster."""
    rng = np.random.default_rng(0)
    x = {name: rng.random((16, 16, 16, 3), dtype=np.float32) for name in ("input1", "input2")}
    y = rng.integers(0, 2, 16).astype(np.int32)
    whole = tf.data.Dataset.from_tensors((x, y)).repeat()
    halves = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    results, start = {}, None
    for name, ds, batch, accum, plan in (
        ("one batch", whole, 16, 1, "none"),
        ("two", halves, 8, 2, "none"),
        ("two, XLA", halves, 8, 2, "whole_step"),
    ):
        model, loop, it, _ = loop_on(ds, plan, global_batch=batch, accum_steps=accum)
        start = start or [w.numpy() for w in model.trainable_weights]  # the same seed each
        out = loop(it, tf.constant(1), tf.constant(0.0))
        assert int(out.steps) == 1
        after = [w.numpy() for w in model.trainable_weights]
        results[name] = np.array([float(v) for v in out.sums]), after
    one_sums, one_weights = results.pop("one batch")
    assert one_sums[3] == 16  # pairs counted
    assert min(np.abs(a - b).max() for a, b in zip(one_weights, start)) > 0  # every weight moved
    for name, (sums, weights) in results.items():
        np.testing.assert_allclose(sums, one_sums, rtol=1e-5, err_msg=name)
        apart = max(np.abs(a - b).max() for a, b in zip(weights, one_weights))
        assert apart < 1e-6, (name, apart)


def test_input_wait_is_the_time_spent_waiting_for_batches():
    """Measured inside the loop (tf.timestamp around next(iterator)): a pipeline that takes
    0.2 s per batch (slower than this small step on any host) shows most of the loop's time
    as wait; batches held in memory show little."""

    def slow(x, y):
        return tf.py_function(lambda: time.sleep(0.2) or 0.0, [], tf.float32), x, y

    slow_ds = batches().map(slow).map(lambda _, x, y: (x, y))
    fractions = {}
    _, loop, _, strategy = loop_on(batches())  # one model and loop: one trace serves both
    for name, ds, steps in (("memory", batches().prefetch(2), 10), ("slow", slow_ds, 5)):
        it = iter(strategy.experimental_distribute_dataset(ds))
        loop(it, tf.constant(2), tf.constant(0.0))  # warm up
        start = time.monotonic()
        out = loop(it, tf.constant(steps), tf.constant(0.0))
        fractions[name] = float(out.wait) / (time.monotonic() - start)
        assert int(out.steps) == steps
    assert fractions["slow"] > 0.3 and fractions["slow"] > 2 * fractions["memory"], fractions
    assert fractions["memory"] < 0.25, fractions


def test_a_loop_ends_itself_early_once_it_has_run_its_seconds():
    """A grace budget's limit (trainer.run.controller.GraceBudget): the loop checks its own
    clock before each step after the first, so a limit already passed runs one step, and
    none runs every step asked for."""
    _, loop, it, strategy = loop_on(batches())
    out = loop(it, tf.constant(5), tf.constant(0.0), tf.constant(0.0))
    assert int(out.steps) == 1  # the first step always runs: the stop vote must travel
    out = loop(it, tf.constant(5), tf.constant(0.0), tf.constant(float("inf")))
    assert int(out.steps) == 5
    slow = batches().map(lambda x, y: (tf.py_function(lambda: time.sleep(0.3), [], []), (x, y))[1])
    it = iter(strategy.experimental_distribute_dataset(slow))  # the same loop: one trace
    out = loop(it, tf.constant(20), tf.constant(0.0), tf.constant(1.0))
    assert 2 <= int(out.steps) <= 6  # ~0.3 s a batch: stopped near one second, long before 20
