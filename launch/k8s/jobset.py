"""JobSet as the controller (``launch k8s render|submit --controller jobset``).

Why: under a plain Indexed Job a dead worker is replaced alone, and the survivors learn of it
only when --peer_timeout_seconds runs out and they exit 75 themselves. A JobSet
(kubernetes-sigs/jobset, an add-on the cluster must have) restarts the whole group at once.

Shape, derived from the Job controller's rendered objects (launch/k8s/manifests.py):
- one JobSet with one replicated Job ("worker", 1 replica) holding the Indexed Job's spec; the
  JobSet makes the headless Service itself (``network``: subdomain = the run's name, DNS
  host names, not-ready addresses published), so the rendered Service is dropped;
- pods are named ``<name>-worker-0-<i>`` and resolve as ``<name>-worker-0-<i>.<name>``: the
  child Job is ``<name>-worker-0``, so TRAINER_JOB_NAME=<name>-worker-0 and
  TRAINER_SERVICE=<name> give trainer/runtime/cluster.py the same rule as under the Job controller;
- failures: the child Job keeps its podFailurePolicy (exit 1 -> FailJob, 75 -> Count,
  disruptions ignored) with ``backoffLimit: 0``. Exit 1 fails it with reason PodFailurePolicy,
  which the JobSet's rule turns into FailJobSet (no restart); exit 75 (or any other failure)
  fails it with BackoffLimitExceeded and the JobSet restarts every worker, up to
  ``failurePolicy.maxRestarts`` times;
- the NetworkPolicy selects the JobSet's pods by ``jobset.sigs.k8s.io/jobset-name``.
"""

from __future__ import annotations

import copy

from launch.k8s import manifests as k8s
from trainer.runtime import cluster as tfconfig

API_VERSION = "jobset.x-k8s.io/v1alpha2"
REPLICATED_JOB = "worker"
JOBSET_NAME_LABEL = k8s.CONTROLLERS["jobset"][1]
KINDS = ["JobSet", "NetworkPolicy", "ServiceAccount"]


def child_job_name(name: str) -> str:
    """The one child Job's name: <jobset>-<replicatedJob>-<job index>."""
    return f"{name}-{REPLICATED_JOB}-0"


def check_name(name: str, workers: int) -> None:
    longest = f"{child_job_name(name)}-{workers - 1}"
    if len(longest) > 63:
        raise k8s.SpecError(
            f"--name={name!r} is too long for a JobSet: pod host name {longest!r} would pass "
            "63 characters."
        )


def to_jobset(docs: list[dict], name: str, max_restarts: int) -> list[dict]:
    """The Job controller's rendered objects (k8s.render) as a JobSet run (a new list)."""
    if max_restarts < 0:
        raise k8s.SpecError(f"--max_restarts={max_restarts} is invalid: it must be >= 0.")
    docs = copy.deepcopy(docs)
    by_kind = {d["kind"]: d for d in docs}
    job = by_kind["Job"]
    check_name(name, job["spec"]["completions"])
    spec = job["spec"]
    spec["backoffLimit"] = 0  # any counted failure fails the child Job: the JobSet decides
    pod = spec["template"]["spec"]
    pod.pop("subdomain", None)  # the JobSet sets it from network.subdomain
    container = pod["containers"][0]
    for var in container["env"]:
        if var["name"] == tfconfig.JOB_VAR:
            var["value"] = child_job_name(name)
    jobset = {
        "apiVersion": API_VERSION,
        "kind": "JobSet",
        "metadata": job["metadata"],
        "spec": {
            "network": {
                "enableDNSHostnames": True,
                "subdomain": name,
                "publishNotReadyAddresses": True,  # workers meet before they are "ready"
            },
            "failurePolicy": {
                "maxRestarts": max_restarts,
                "rules": [
                    {
                        "name": "bad-input-fails-at-once",
                        "action": "FailJobSet",
                        "onJobFailureReasons": ["PodFailurePolicy"],
                    }
                ],
            },
            "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {"spec": spec}}],
        },
    }
    policy = by_kind["NetworkPolicy"]
    own = {"matchLabels": {JOBSET_NAME_LABEL: name}}
    policy["spec"]["podSelector"] = own
    policy["spec"]["ingress"][0]["from"] = [{"podSelector": own}]
    return [by_kind["ServiceAccount"], jobset, policy]
