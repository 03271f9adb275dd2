"""Kueue's view of a run for ``launch k8s status``: its Workload, as one line.

Kueue makes a Workload for every queued Job or JobSet (owned by it) and records admission in
its conditions: QuotaReserved and Admitted (admitted to a ClusterQueue), Evicted (with the
reason: Preempted, PodsReadyTimeout, ...), Finished; ``status.requeueState.count`` is how often
it was evicted and requeued. Pure: the JSON of ``kubectl get workloads -o json`` in, a line out.
"""

from __future__ import annotations

from launch.k8s.scheduling import QUEUE_LABEL


def queue_of(run: dict) -> str | None:
    return (run.get("metadata") or {}).get("labels", {}).get(QUEUE_LABEL)


def _conditions(workload: dict) -> dict:
    return {c["type"]: c for c in (workload.get("status") or {}).get("conditions", [])}


def workload_of(workloads: dict, kind: str, name: str) -> dict | None:
    """The Workload owned by the run (its kind and name), or None."""
    for item in workloads.get("items", []):
        for owner in item["metadata"].get("ownerReferences", []):
            if owner.get("kind") == kind and owner.get("name") == name:
                return item
    return None


def line(run: dict, workloads: dict | None, error: str = "") -> str | None:
    """``kueue: ...`` for a queued run (None for a run without --queue)."""
    queue = queue_of(run)
    if not queue:
        return None
    if error:
        return f"kueue: queue {queue}; its Workload could not be read ({error})"
    workload = workload_of(workloads or {}, run.get("kind", "Job"), run["metadata"]["name"])
    if workload is None:
        return f"kueue: queue {queue}; no Workload yet (is Kueue installed and the queue there?)"
    c = _conditions(workload)
    requeued = ((workload.get("status") or {}).get("requeueState") or {}).get("count", 0)
    evictions = f"; evicted {requeued} times" if requeued else ""
    admission = (workload.get("status") or {}).get("admission") or {}
    if c.get("Finished", {}).get("status") == "True":
        return f"kueue: finished in queue {queue}{evictions}"
    if c.get("Evicted", {}).get("status") == "True":
        ev = c["Evicted"]
        return f"kueue: evicted ({ev.get('reason', '?')}: {ev.get('message', '')}){evictions}"
    if c.get("Admitted", {}).get("status") == "True":
        return f"kueue: admitted to cluster queue {admission.get('clusterQueue', '?')}{evictions}"
    pending = c.get("QuotaReserved") or c.get("Pending") or {}
    why = pending.get("message") or "waiting for quota"
    return f"kueue: pending in queue {queue} ({why}){evictions}"
