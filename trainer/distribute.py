"""Strategy choice (a pure function) and construction; TF_CONFIG comes from trainer.tfconfig.

Must run before TensorFlow touches a device: logical CPU devices can only be set up then.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from trainer import tfconfig
from trainer.config import STRATEGIES, ConfigError


def choose_strategy(flag: str, has_cluster: bool, num_gpus: int) -> str:
    """The strategy name for --strategy=flag on this host (see the flag's help)."""
    if flag not in STRATEGIES:
        raise ConfigError(f"--strategy={flag!r} is unknown: use one of {', '.join(STRATEGIES)}.")
    if flag != "auto":
        return flag
    if has_cluster:
        return "multi_worker"
    return "mirrored" if num_gpus > 1 else "one_device"


def use_jit(flag: str, num_gpus: int) -> bool:
    """XLA for --jit_compile: auto means on with GPUs (on CPU it measured 3x slower)."""
    return flag == "true" or (flag == "auto" and num_gpus > 0)


def split_cpu(devices_per_worker: int) -> None:
    """Splits the CPU into N logical devices so MirroredStrategy has replicas without GPUs."""
    if devices_per_worker <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * devices_per_worker
    )


def _local_devices() -> list[str]:
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def make_strategy(flag: str, env=None):
    """Returns (strategy, name, worker index, worker count, number of GPUs)."""
    env = os.environ if env is None else env
    try:
        cluster = tfconfig.derive_tf_config(env)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    num_gpus = len(tf.config.list_physical_devices("GPU"))
    name = choose_strategy(flag, cluster is not None, num_gpus)
    index, count = 0, 1
    if name == "multi_worker":
        if cluster is None:
            raise ConfigError(
                "--strategy=multi_worker needs TF_CONFIG or the Indexed Job variables "
                f"({tfconfig.INDEX_VAR} and {tfconfig.HOSTS_VAR}); use `launch local` to set them."
            )
        os.environ["TF_CONFIG"] = json.dumps(cluster)
        index, count = tfconfig.task_of(cluster)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING
                if num_gpus == 0
                else tf.distribute.experimental.CommunicationImplementation.AUTO
            )
        )
    elif name == "mirrored":
        devices = _local_devices()
        cross = None if num_gpus else tf.distribute.ReductionToOneDevice()
        strategy = tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross)
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy(_local_devices()[0])
    else:
        strategy = tf.distribute.get_strategy()
    return strategy, name, index, count, num_gpus
