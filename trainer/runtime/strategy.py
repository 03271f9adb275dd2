"""Strategy choice (a pure function) and construction; TF_CONFIG comes from trainer.runtime.cluster.

Must run before TensorFlow touches a device: logical CPU devices can only be set up then.
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf
from absl import logging

from trainer.common.console import plural
from trainer.config import ConfigError
from trainer.runtime import cluster as tfconfig
from trainer.runtime import rendezvous


def choose_strategy(flag: str, has_cluster: bool, num_gpus: int, evaluator: bool = False) -> str:
    """The strategy name for --strategy=flag on this host (see the flag's help).

    An evaluator (--mode=evaluate/continuous_eval) runs alone: a cluster in its environment
    (a pod rendered beside the workers) is not its to join.
    """
    if evaluator:
        if flag == "multi_worker":
            raise ConfigError(
                "--strategy=multi_worker does not apply to an evaluation mode: an evaluator "
                "runs alone (one device, or mirrored over this host's GPUs)."
            )
        has_cluster = False
    if flag != "auto":
        return flag
    if has_cluster:
        return "multi_worker"
    return "mirrored" if num_gpus > 1 else "one_device"


def use_jit(flag: str, num_gpus: int) -> bool:
    """XLA for --jit_compile: auto means on with GPUs (on CPU it measured 3x slower); what it
    compiles: compile_plan."""
    return flag == "true" or (flag == "auto" and num_gpus > 0)


COMPILE_PLANS = ("none", "forward_backward", "whole_step")


def compile_plan(jit: bool, num_gpus: int, replicas: int) -> str:
    """What XLA compiles of a training step (trainer/run/steps.py):

    - ``none``: nothing (--jit_compile=false, or auto on CPU);
    - ``forward_backward``: the per-replica forward and backward pass; the gradient
      all-reduce and the optimizer update run outside XLA. On CPU always (XLA cannot compile
      collectives there, and the update measured no faster: DESIGN.md), and with more than one
      GPU replica, where Keras' optimizer all-reduces inside its apply (a cross-replica
      merge_call no XLA cluster can hold);
    - ``whole_step``: forward, backward and the optimizer update in one XLA cluster: a single
      GPU replica, where there is nothing to all-reduce.
    """
    if not jit:
        return "none"
    if num_gpus == 0 or replicas > 1:
        return "forward_backward"
    return "whole_step"


def steps_per_loop(value: int, num_gpus: int) -> int:
    """--steps_per_loop: a positive number as given; 0 (auto) = 10 on CPU, 100 with GPUs.

    Measured on a 2-core CPU (bench/steps_per_loop.py, bench/e2e.py; bench/RESULTS.md): the
    host round trip costs about 2-3 ms per step, so 10 steps per loop ran 1.2x faster than 1 at
    batch 2 and 8 and up to 1.04x at batch 64, and 100 added almost nothing more; 10 keeps the
    SIGTERM delay (a loop's end) to 10 steps. On a GPU a step takes about a millisecond, so a
    round trip per step would leave it idle most of the time; 100 steps keep a loop to a
    fraction of a second.
    """
    if value:
        return value
    return 100 if num_gpus else 10


def fetch_to_device(num_gpus: int) -> bool:
    """Whether tf.distribute should copy input batches to the replicas' devices ahead of use.

    With GPUs this overlaps the host-to-device copy with the step. Without GPUs the batches
    already sit in host memory, and the prefetching MultiDeviceIterator only costs: when it is
    destroyed (the end of every training run) its inner tf.data autotune thread is not woken,
    so the process stalls until the thread's next wake-up (measured: 8-10 s after a 15 s run).
    """
    return num_gpus > 0


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


def _configure_coordination(cluster: dict, timeout_s: int) -> None:
    """Bounded peer-failure detection for MultiWorkerMirroredStrategy.

    MWMS sets up TF's coordination service with its defaults only when none is configured;
    configuring it first gives a registration timeout (a peer that never comes) and a
    heartbeat timeout (a peer that dies) of ``timeout_s``, so the others fail instead of
    hanging. Uses TF's context API, the only place these settings exist.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    spec = cluster["cluster"]
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=j, num_tasks=len(spec[j]))
        for j in ("chief", "worker")
        if j in spec
    ]
    leader = "/job:chief/replica:0/task:0" if "chief" in spec else "/job:worker/replica:0/task:0"
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=leader,
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=timeout_s * 1000,
        heartbeat_timeout_in_ms=timeout_s * 1000,
        shutdown_barrier_timeout_in_ms=timeout_s * 1000,
    )


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this process trains: its strategy and its place in the cluster."""

    strategy: tf.distribute.Strategy
    name: str  # one of STRATEGIES but auto
    worker_index: int
    num_workers: int
    num_gpus: int

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def make_strategy(
    flag: str,
    *,
    env=None,
    peer_timeout_s: int = 300,
    devices_per_worker: int = 0,
    evaluator: bool = False,
) -> Placement:
    """The strategy for --strategy=flag here (TF_CONFIG derived first; peers met first)."""
    env = os.environ if env is None else env
    try:
        cluster = None if evaluator else tfconfig.derive_tf_config(env)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    num_gpus = len(tf.config.list_physical_devices("GPU"))
    name = choose_strategy(flag, cluster is not None, num_gpus, evaluator)
    index, count = 0, 1
    if name == "multi_worker":
        if cluster is None:
            raise ConfigError(
                "--strategy=multi_worker needs TF_CONFIG or the Indexed Job variables "
                f"({tfconfig.INDEX_VAR} and {tfconfig.HOSTS_VAR}); use `launch local` to set them."
            )
        if devices_per_worker > 1 and num_gpus == 0:
            # TF's MultiWorkerMirroredStrategy uses exactly one CPU device per worker.
            raise ConfigError(
                f"--devices_per_worker={devices_per_worker} does not apply to multi_worker on "
                "CPU (TensorFlow runs one CPU replica per worker): use it with "
                "--strategy=mirrored on one host, or drop it."
            )
        os.environ["TF_CONFIG"] = json.dumps(cluster)
        index, count = tfconfig.task_of(cluster)
        hosts = cluster["cluster"].get("chief", []) + cluster["cluster"].get("worker", [])
        # TF would wait for a missing peer forever (see trainer.runtime.rendezvous): meet first.
        logging.info(
            "worker %d: meeting %s (waiting up to %ds)",
            index,
            plural(len(hosts) - 1, "peer"),
            peer_timeout_s,
        )
        rendezvous.meet(hosts, index, peer_timeout_s)
        _configure_coordination(cluster, peer_timeout_s)
        impl = tf.distribute.experimental.CommunicationImplementation
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=impl.RING if num_gpus == 0 else impl.AUTO,
                timeout_seconds=peer_timeout_s,  # a collective waiting on a lost peer fails
            )
        )
    elif name == "mirrored":
        devices = _local_devices()
        # NCCL needs GPUs; on logical CPU devices reduce through one device.
        cross = None if num_gpus else tf.distribute.ReductionToOneDevice()
        strategy = tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross)
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy(_local_devices()[0])
    else:
        strategy = tf.distribute.get_strategy()
    return Placement(strategy, name, index, count, num_gpus)


# Errors a collective or the coordination service raises when a peer is gone.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    rendezvous.RendezvousTimeout,
)


def is_multi_worker(flag: str, env=None) -> bool:
    """Whether --strategy=flag will run multi-worker here (before TF touches a device)."""
    env = os.environ if env is None else env
    try:
        cluster = tfconfig.derive_tf_config(env)
    except ValueError:
        return False
    return flag == "multi_worker" or (flag == "auto" and cluster is not None)
