"""How a shared GPU cluster runs the rendered objects: Kueue admission and priority, Spot
capacity, and the run's lifetime. Pure: applied last, to every object a run renders (the
workers' Job or JobSet, the evaluator Job, the tf.data service's Deployments, the converter
Job).

- Kueue: ``kueue.x-k8s.io/queue-name`` (and ``kueue.x-k8s.io/priority-class``, a
  WorkloadPriorityClass) on the top-level workload objects only (Job, JobSet, Deployment),
  never on pod templates or Services. Kueue's webhook suspends a labelled Job until its
  ClusterQueue admits it, so the launcher sets no ``suspend`` of its own; no partial
  admission is asked for (the world size is fixed by TF_CONFIG).
- Spot: the pods of the Jobs (training workers, evaluator, converter) get GKE's
  ``cloud.google.com/gke-spot: "true"`` node selector and its toleration, a
  terminationGracePeriodSeconds within Spot's notice (``--grace_seconds``, 15 by default with
  ``--spot``: GKE gives a Spot pod 15 s after the preemption notice, whatever the pod asks),
  and the trainer is told its budget in TRAINER_GRACE_SECONDS.
- ``ttl_seconds`` (ttlSecondsAfterFinished) and ``deadline_seconds`` (activeDeadlineSeconds).
"""

from __future__ import annotations

import copy
import dataclasses

from launch.k8s.manifests import LABEL_VALUE, SpecError

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
SPOT_LABEL = "cloud.google.com/gke-spot"
GRACE_VAR = "TRAINER_GRACE_SECONDS"
SPOT_GRACE_SECONDS = 15
WORKLOADS = ("Job", "JobSet", "Deployment")  # what Kueue admits


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scheduling:
    queue: str = ""  # a LocalQueue in the run's namespace; empty: no Kueue
    priority: str = ""  # a WorkloadPriorityClass
    spot: bool = False
    grace_seconds: int = 0  # 0: 15 with spot, else the manifests' own (300)
    ttl_seconds: int = -1  # -1: keep finished Jobs
    deadline_seconds: int = 0  # 0: no deadline

    @property
    def grace(self) -> int:
        return self.grace_seconds or (SPOT_GRACE_SECONDS if self.spot else 0)


def check(s: Scheduling) -> None:
    """SpecError (one sentence) for a value no cluster would take."""
    for flag, value in (("--queue", s.queue), ("--priority", s.priority)):
        if value and (not LABEL_VALUE.match(value) or len(value) > 63):
            raise SpecError(f"{flag}={value!r} is not a Kubernetes label value.")
    if s.priority and not s.queue:
        raise SpecError(f"--priority={s.priority} needs --queue: Kueue assigns priorities.")
    if s.grace_seconds < 0 or s.deadline_seconds < 0 or s.ttl_seconds < -1:
        raise SpecError(
            "--grace_seconds and --deadline_seconds must be >= 0, --ttl_seconds >= 0 (or -1)."
        )


def apply(docs: list[dict], s: Scheduling) -> list[dict]:
    """``docs`` (a new list) with ``s`` set on the objects it concerns."""
    check(s)
    docs = copy.deepcopy(docs)
    for doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        labels = doc.setdefault("metadata", {}).setdefault("labels", {})
        if s.queue:
            labels[QUEUE_LABEL] = s.queue
        if s.priority:
            labels[PRIORITY_LABEL] = s.priority
        if doc["kind"] == "Deployment":
            continue
        _lifetime(doc, s)
        for pod in _pod_specs(doc):
            _place(pod, s)
    return docs


def _pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "Job":
        return [doc["spec"]["template"]["spec"]]
    return [r["template"]["spec"]["template"]["spec"] for r in doc["spec"]["replicatedJobs"]]


def _lifetime(doc: dict, s: Scheduling) -> None:
    spec = doc["spec"]
    if s.ttl_seconds >= 0:
        spec["ttlSecondsAfterFinished"] = s.ttl_seconds
    if s.deadline_seconds:
        jobs = (
            [spec]
            if doc["kind"] == "Job"
            else [r["template"]["spec"] for r in spec["replicatedJobs"]]
        )
        for job in jobs:
            job["activeDeadlineSeconds"] = s.deadline_seconds


def _place(pod: dict, s: Scheduling) -> None:
    if s.spot:
        pod.setdefault("nodeSelector", {})[SPOT_LABEL] = "true"
        toleration = {
            "key": SPOT_LABEL,
            "operator": "Equal",
            "value": "true",
            "effect": "NoSchedule",
        }
        tolerations = pod.setdefault("tolerations", [])
        if toleration not in tolerations:
            tolerations.append(toleration)
    if s.grace:
        pod["terminationGracePeriodSeconds"] = s.grace
        for container in pod["containers"]:
            env = [e for e in container.setdefault("env", []) if e["name"] != GRACE_VAR]
            container["env"] = env + [{"name": GRACE_VAR, "value": str(s.grace)}]
