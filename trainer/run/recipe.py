"""The training recipe: the learning-rate schedule, the Keras 3 optimizer, and the weights'
moving average swapped in for eval and export.

The rate is a pure function of the global step (``rate_at``, and ``rate_fn``: the same formula
in TensorFlow ops from Keras' own schedules), read by the compiled loop at every step, so a
resume, the loop length and gradient accumulation cannot move it: linear warmup from 0 over
``warmup_steps``, then constant, cosine (Keras ``CosineDecay``) or linear (Keras
``PolynomialDecay``, power 1) decay to ``peak * lr_min_ratio`` at ``decay_steps`` (by default
``train_steps``; set it to keep the schedule when a run is stopped early or extended).

The moving average is Keras' own (``use_ema``): its variables live in the optimizer, so the
checkpoint carries them. ``averaged_weights`` puts them into the model for a block (eval,
best-model export, final export) and the trained weights back afterwards.
"""

from __future__ import annotations

import contextlib
import math

import keras
import tensorflow as tf

from trainer.config import RecipeConfig


def rate_at(step: int, *, peak: float, recipe: RecipeConfig, train_steps: int) -> float:
    """The learning rate of the update made at global step ``step`` (0-based)."""
    warmup, horizon = recipe.warmup_steps, recipe.decay_steps or train_steps
    if step < warmup:
        return peak * step / warmup
    if recipe.lr_schedule == "constant":
        return peak
    t = min(step - warmup, horizon - warmup) / (horizon - warmup)
    floor = recipe.lr_min_ratio
    if recipe.lr_schedule == "cosine":
        return peak * ((1 - floor) * 0.5 * (1 + math.cos(math.pi * t)) + floor)
    return peak * (1 - (1 - floor) * t)


def rate_fn(*, peak: float, recipe: RecipeConfig, train_steps: int):
    """``rate_at`` in TensorFlow ops: step (an int64 tensor) -> float32 rate."""
    warmup = recipe.warmup_steps
    decay_steps = (recipe.decay_steps or train_steps) - warmup
    if recipe.lr_schedule == "cosine":
        decay = keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=recipe.lr_min_ratio)
    elif recipe.lr_schedule == "linear":
        decay = keras.optimizers.schedules.PolynomialDecay(
            peak, decay_steps, end_learning_rate=peak * recipe.lr_min_ratio, power=1.0
        )
    else:
        decay = None

    def rate(step):
        step = tf.cast(step, tf.float32)
        after = decay(step - warmup) if decay is not None else tf.constant(peak, tf.float32)
        if not warmup:
            return tf.cast(after, tf.float32)
        return tf.cast(tf.where(step < warmup, peak * step / warmup, after), tf.float32)

    return rate


def make_optimizer(recipe: RecipeConfig, learning_rate: float):
    """The Keras 3 optimizer the recipe names (its rate is set at every step by the loop).
    Clipping is not Keras' here: Keras clips each replica's share of the gradient, and the
    loop clips the gradient summed over replicas (trainer.run.steps)."""
    ema = {"use_ema": recipe.ema_decay > 0, "ema_momentum": recipe.ema_decay or 0.99}
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay or None,
            **ema,
        )
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay, **ema)
    return keras.optimizers.Adam(learning_rate, **ema)


def inner(optimizer):
    """The optimizer a LossScaleOptimizer wraps (or ``optimizer`` itself)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


@contextlib.contextmanager
def averaged_weights(model, optimizer):
    """The moving average of the weights in ``model`` for the block, the trained weights
    back after it; nothing when the optimizer keeps no average (or has taken no step:
    Keras' average starts at the first update)."""
    base = inner(optimizer) if optimizer is not None else None
    if base is None or not base.use_ema or int(base.iterations.numpy()) == 0:
        yield
        return
    trained = [v.numpy() for v in model.trainable_variables]
    base.finalize_variable_values(model.trainable_variables)
    try:
        yield
    finally:
        for variable, value in zip(model.trainable_variables, trained):
            variable.assign(value)


def checkpoint_of(source: str) -> str:
    """--init_from's checkpoint prefix: ``source`` itself, or the newest one of a model_dir
    (ConfigError when there is none: checked before the model is built)."""
    from trainer.config import ConfigError
    from trainer.run import checkpoint

    prefix = source if tf.io.gfile.exists(source + ".index") else None
    prefix = prefix or tf.train.latest_checkpoint(checkpoint.checkpoint_dir(source))
    if prefix is None:
        raise ConfigError(
            f"--init_from={source} holds no checkpoint: give a run's model_dir or a "
            "checkpoint prefix such as <model_dir>/checkpoints/ckpt-300."
        )
    return prefix


def warm_start(model, source: str) -> str:
    """The trained weights of ``source`` (a model_dir or a checkpoint prefix) into ``model``
    (not its moving average, which lives in its optimizer); the checkpoint's path.
    ConfigError naming the first variable whose shape differs."""
    from trainer.common.errors import first_line
    from trainer.config import ConfigError

    prefix = checkpoint_of(source)
    try:
        status = tf.train.Checkpoint(model=model).restore(prefix)
        status.assert_existing_objects_matched().expect_partial()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        raise ConfigError(
            f"--init_from={source}: the model does not match this run's ({first_line(e, 300)})."
        ) from None
    return prefix
