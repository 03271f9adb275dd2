"""The resolve step: fills in what depends on the data and the devices, and checks it, once.

After trainer.checks.validate (the checks that need neither) and before anything is written
or built: the model's image size and channels come from the dataset, steps per loop and the
XLA plan from the devices, the global batch must divide over the replicas, and the model
must fit in memory (the flatten head grows with the image). Returns a new
Config; raises ConfigError with one sentence. Pure but for the activation check, which asks
Keras whether it knows the name.
"""

from __future__ import annotations

import dataclasses
import os

from trainer.config import Config, ConfigError
from trainer.model import options
from trainer.runtime.strategy import compile_plan, steps_per_loop, use_jit


def check_activation(name: str) -> None:
    """ConfigError unless Keras knows the activation (imports Keras)."""
    from trainer.model import builders

    try:
        builders._check_activation(name)
    except ValueError as e:
        raise ConfigError(f"--{e}") from None


def check_batch(global_batch: int, replicas: int) -> None:
    if global_batch % replicas:
        raise ConfigError(
            f"--global_batch_size={global_batch} does not divide over {replicas} replicas: "
            f"use a multiple of {replicas}."
        )


TRAINING_COPIES = 4  # weights, gradients, Adam's two moments: float32 each


def memory_bytes() -> int:
    """This machine's memory (the bound for the model's weights while it trains)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_model_size(model, *, available: int) -> None:
    """ConfigError when the tower's first dense layer cannot train in ``available`` bytes:
    the flatten head at a large image size (it grows with the pixels), said with its size."""
    d1 = options.d1_parameters(model.image_size, model.head)
    needed = d1 * 4 * TRAINING_COPIES
    if needed > available:
        height, width = model.image_size
        raise ConfigError(
            f"--head={model.head} at {height}x{width} images gives the first dense layer "
            f"{d1:,} parameters, about {needed / 2**30:,.1f} GiB to train (weights, "
            f"gradients, Adam's moments) against this machine's {available / 2**30:,.1f} GiB: "
            "use --head=global_max, or smaller images (trainer-data convert --image_size)."
        )


def resolve(config: Config, *, spec, num_gpus: int, replicas: int) -> Config:
    """``config`` with the image size and channels of ``spec`` (the dataset's ImageSpec),
    steps per loop and the XLA plan for ``num_gpus`` GPUs and ``replicas`` replicas."""
    check_activation(config.model.activation)
    check_batch(config.train.global_batch_size, replicas)
    model = dataclasses.replace(
        config.model, image_size=(spec.height, spec.width), channels=spec.channels
    )
    check_model_size(model, available=memory_bytes())
    train = dataclasses.replace(
        config.train,
        steps_per_loop=steps_per_loop(config.train.steps_per_loop, num_gpus),
        compile_plan=compile_plan(use_jit(config.train.jit_compile, num_gpus), num_gpus, replicas),
    )
    return dataclasses.replace(config, model=model, train=train)
