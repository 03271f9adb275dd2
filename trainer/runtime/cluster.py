"""TF_CONFIG derivation: one pure rule shared by the trainer, ``launch local`` and ``launch k8s``.

No TensorFlow import here: the launcher uses it without loading TF.

Rule (DESIGN.md): if TF_CONFIG is set it is used as is. Otherwise, when JOB_COMPLETION_INDEX
(set by an Indexed Job) and the worker hosts are known, worker i's TF_CONFIG is built from
them. The hosts come from TRAINER_WORKER_HOSTS ("h0:p,h1:p", what ``launch local`` sets), or are
built of TRAINER_JOB_NAME, TRAINER_SERVICE, TRAINER_NUM_WORKERS and TRAINER_PORT, giving
``<job>-<i>.<service>:<port>`` (what the Kubernetes manifests set).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

INDEX_VAR = "JOB_COMPLETION_INDEX"
HOSTS_VAR = "TRAINER_WORKER_HOSTS"
JOB_VAR, SERVICE_VAR, COUNT_VAR, PORT_VAR = (
    "TRAINER_JOB_NAME",
    "TRAINER_SERVICE",
    "TRAINER_NUM_WORKERS",
    "TRAINER_PORT",
)
DEFAULT_PORT = 2222


def indexed_job_hosts(job: str, service: str, num_workers: int, port: int) -> list[str]:
    """Stable DNS names of an Indexed Job's pods behind a headless Service."""
    return [f"{job}-{i}.{service}:{port}" for i in range(num_workers)]


def worker_hosts(env: Mapping[str, str]) -> list[str] | None:
    """The cluster's worker addresses from the environment, or None when not given."""
    if env.get(HOSTS_VAR):
        return [h.strip() for h in env[HOSTS_VAR].split(",") if h.strip()]
    if all(env.get(v) for v in (JOB_VAR, SERVICE_VAR, COUNT_VAR)):
        try:
            count = int(env[COUNT_VAR])
            port = int(env.get(PORT_VAR) or DEFAULT_PORT)
        except ValueError:
            raise ValueError(
                f"{COUNT_VAR}={env[COUNT_VAR]!r} and {PORT_VAR}={env.get(PORT_VAR)!r} must be "
                "integers."
            ) from None
        return indexed_job_hosts(env[JOB_VAR], env[SERVICE_VAR], count, port)
    return None


def worker_tf_config(hosts: list[str], index: int) -> dict:
    """TF_CONFIG of worker ``index`` in a cluster of ``hosts`` (worker 0 is the chief)."""
    if not 0 <= index < len(hosts):
        raise ValueError(f"worker index {index} is outside [0, {len(hosts)}) for hosts {hosts}.")
    return {"cluster": {"worker": list(hosts)}, "task": {"type": "worker", "index": index}}


def derive_tf_config(env: Mapping[str, str]) -> dict | None:
    """The TF_CONFIG this process should use, or None for a single-process run."""
    if env.get("TF_CONFIG"):
        try:
            return json.loads(env["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON ({e}).") from None
    if env.get(INDEX_VAR) is None:
        return None
    hosts = worker_hosts(env)
    if hosts is None:
        return None
    try:
        index = int(env[INDEX_VAR])
    except ValueError:
        raise ValueError(f"{INDEX_VAR}={env[INDEX_VAR]!r} is not an integer.") from None
    return worker_tf_config(hosts, index)


def task_of(tf_config: dict | None) -> tuple[int, int]:
    """(worker index, worker count) of a TF_CONFIG (0, 1 without one)."""
    if not tf_config:
        return 0, 1
    cluster = tf_config.get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    task = tf_config.get("task", {})
    index = task.get("index", 0) + (1 if task.get("type") == "worker" and "chief" in cluster else 0)
    return int(index), max(1, workers)


LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def workers_on_this_host(tf_config: dict | None) -> int:
    """How many workers of the cluster run on this machine's loopback (``launch local``), so
    share its cores: 0 when the cluster is not all loopback (pods) or is one process."""
    if not tf_config:
        return 0
    cluster = tf_config.get("cluster", {})
    hosts = [*cluster.get("chief", []), *cluster.get("worker", [])]
    on_loopback = all(h.rsplit(":", 1)[0] in LOOPBACK for h in hosts)
    return len(hosts) if len(hosts) > 1 and on_loopback else 0
