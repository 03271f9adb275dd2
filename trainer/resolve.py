"""The resolve step: fills in what depends on the data and the devices, and checks it, once.

After trainer.config.validate (the checks that need neither) and before anything is written
or built: the model's image size and channels come from the dataset, steps per loop and the
XLA plan from the devices, and the global batch must divide over the replicas. Returns a new
Config; raises ConfigError with one sentence. Pure but for the activation check, which asks
Keras whether it knows the name.
"""

from __future__ import annotations

import dataclasses

from trainer.config import Config, ConfigError
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


def resolve(config: Config, *, spec, num_gpus: int, replicas: int) -> Config:
    """``config`` with the image size and channels of ``spec`` (the dataset's ImageSpec),
    steps per loop and the XLA plan for ``num_gpus`` GPUs and ``replicas`` replicas."""
    check_activation(config.model.activation)
    check_batch(config.train.global_batch_size, replicas)
    model = dataclasses.replace(
        config.model, image_size=(spec.height, spec.width), channels=spec.channels
    )
    train = dataclasses.replace(
        config.train,
        steps_per_loop=steps_per_loop(config.train.steps_per_loop, num_gpus),
        compile_plan=compile_plan(use_jit(config.train.jit_compile, num_gpus), num_gpus, replicas),
    )
    return dataclasses.replace(config, model=model, train=train)
