"""Kueue admission and priority, Spot capacity and the run's lifetime on the rendered objects
(launch/k8s/scheduling.py, issue 25): the labels on the right objects only, validated by the
official Kubernetes schemas (kubernetes-validate --strict) and JobSet's CRD; the launcher's
command line in this process (kubectl kustomize is the one subprocess)."""

import pytest
import yaml

from launch.k8s import scheduling
from launch.k8s.manifests import SpecError
from tests.inprocess import run_entry
from tests.kube import validate, validate_jobset

RUN = ["--name", "exp1", "--image", "gcr.io/p/t:1", "--model_dir", "gs://bkt/r",
       "--namespace", "ml"]  # fmt: skip
QUEUED = ["--queue", "team-a", "--priority", "high", "--spot", "--ttl_seconds", "3600",
          "--deadline_seconds", "86400"]  # fmt: skip


def render(*args):
    r = run_entry("launch", ["k8s", "render", *RUN, *args])
    assert r.returncode == 0, r.stderr
    return r.stdout, [d for d in yaml.safe_load_all(r.stdout) if d]


def pods_of(doc):
    if doc["kind"] == "Job":
        return [doc["spec"]["template"]]
    if doc["kind"] == "JobSet":
        return [j["template"]["spec"]["template"] for j in doc["spec"]["replicatedJobs"]]
    return [doc["spec"]["template"]] if doc["kind"] == "Deployment" else []


@pytest.mark.parametrize("controller", ["job", "jobset"])
def test_queue_priority_and_spot_land_on_the_right_objects(controller, tmp_path):
    text, docs = render("--controller", controller, "--workers", "2", "--evaluator",
                        "--data_workers", "1", *QUEUED)  # fmt: skip
    kinds = sorted(d["kind"] for d in docs)
    top = {"job": "Job", "jobset": "JobSet"}[controller]
    assert kinds.count("Deployment") == 2  # the tf.data service: dispatcher, data workers
    assert kinds.count("Job") == (2 if top == "Job" else 1)  # the evaluator is a Job too
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        admitted = doc["kind"] in ("Job", "JobSet", "Deployment")  # workers, evaluator, service
        assert (labels.get(scheduling.QUEUE_LABEL) == "team-a") == admitted, doc["kind"]
        assert (labels.get(scheduling.PRIORITY_LABEL) == "high") == admitted, doc["kind"]
        assert "suspend" not in doc.get("spec", {})  # Kueue's webhook suspends, not the launcher
        for pod in pods_of(doc):
            assert scheduling.QUEUE_LABEL not in pod.get("metadata", {}).get("labels", {})
            spec = pod["spec"]
            if doc["kind"] == "Deployment":  # CPU decoders: no Spot node asked for
                assert scheduling.SPOT_LABEL not in spec.get("nodeSelector", {})
                continue
            assert spec["nodeSelector"][scheduling.SPOT_LABEL] == "true"
            assert {"key": scheduling.SPOT_LABEL, "operator": "Equal", "value": "true",
                    "effect": "NoSchedule"} in spec["tolerations"]  # fmt: skip
            assert spec["terminationGracePeriodSeconds"] == 15
            env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
            assert env[scheduling.GRACE_VAR] == "15"
    workers = next(d for d in docs if d["kind"] == top)
    assert workers["spec"]["ttlSecondsAfterFinished"] == 3600
    child = (
        workers["spec"]
        if top == "Job"
        else workers["spec"]["replicatedJobs"][0]["template"]["spec"]
    )
    assert child["activeDeadlineSeconds"] == 86400
    if controller == "jobset":
        validate_jobset(workers)
        docs = [d for d in docs if d["kind"] != "JobSet"]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all(docs))
    validate(tmp_path / "m.yaml")


def test_without_scheduling_flags_nothing_changes():
    plain, _ = render("--workers", "2")
    assert "kueue.x-k8s.io" not in plain and "gke-spot" not in plain
    assert "terminationGracePeriodSeconds: 300" in plain and "ttlSecondsAfterFinished" not in plain
    grace, docs = render("--grace_seconds", "120")  # GKE 1.35+ Spot pools allow up to 120 s
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    assert "gke-spot" not in grace


@pytest.mark.parametrize(
    "args, says",
    [
        (["--priority", "high"], "--priority=high needs --queue"),
        (["--queue", "team a"], "--queue='team a' is not a Kubernetes label value"),
        (["--grace_seconds", "-1"], "--grace_seconds and --deadline_seconds must be >= 0"),
    ],
)
def test_bad_scheduling_values_are_refused_before_rendering(args, says):
    r = run_entry("launch", ["k8s", "render", *RUN, *args])
    assert r.returncode == 1 and r.stdout == ""
    assert says in r.stderr.strip().splitlines()[-1]
    with pytest.raises(SpecError):
        scheduling.check(scheduling.Scheduling(queue="ok", deadline_seconds=-5))


def _workload(owner_kind="Job", owner="exp1", conditions=(), requeued=0, cluster_queue="gpu"):
    """A Workload as Kueue's API returns it (kueue.x-k8s.io/v1beta1, the fields read)."""
    status = {"conditions": [dict(c) for c in conditions]}
    if requeued:
        status["requeueState"] = {"count": requeued}
    if any(c["type"] == "Admitted" for c in conditions):
        status["admission"] = {"clusterQueue": cluster_queue}
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "Workload",
        "metadata": {"name": f"job-{owner}-1a2b3", "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": owner_kind, "name": owner, "uid": "u1"}]},
        "status": status,
    }  # fmt: skip


PENDING = {"type": "QuotaReserved", "status": "False", "reason": "Pending",
           "message": "couldn't assign flavors to pod set main: insufficient quota for "
                      "nvidia.com/gpu in flavor t4, 8 more needed"}  # fmt: skip
ADMITTED = {"type": "Admitted", "status": "True", "reason": "Admitted"}
EVICTED = {"type": "Evicted", "status": "True", "reason": "Preempted",
           "message": "Preempted to accommodate a higher priority Workload"}  # fmt: skip
FINISHED = {"type": "Finished", "status": "True", "reason": "Succeeded"}


@pytest.mark.parametrize(
    "workload, says",
    [
        (_workload(conditions=[PENDING]), "kueue: pending in queue team-a (couldn't assign"),
        (_workload(conditions=[{"type": "QuotaReserved", "status": "True"}, ADMITTED]),
         "kueue: admitted to cluster queue gpu"),
        (_workload(conditions=[ADMITTED, EVICTED], requeued=2),
         "kueue: evicted (Preempted: Preempted to accommodate a higher priority Workload); "
         "evicted 2 times"),
        (_workload(conditions=[ADMITTED], requeued=1), "admitted to cluster queue gpu; evicted 1"),
        (_workload(conditions=[ADMITTED, FINISHED]), "kueue: finished in queue team-a"),
        (_workload(owner="another"), "no Workload yet"),
        (_workload(owner_kind="JobSet", conditions=[ADMITTED]), "no Workload yet"),  # not ours
    ],
)  # fmt: skip
def test_kueues_view_of_a_run_in_each_state(workload, says):
    from launch.k8s import kueue

    run = {
        "kind": "Job",
        "metadata": {"name": "exp1", "labels": {scheduling.QUEUE_LABEL: "team-a"}},
    }
    got = kueue.line(run, {"items": [_workload(owner="x"), workload]})
    assert says in got, got
    assert kueue.line({"kind": "Job", "metadata": {"name": "exp1"}}, {"items": [workload]}) is None
    assert "could not be read (no such resource)" in kueue.line(run, None, "no such resource")


def test_status_of_a_queued_run_shows_its_workload(stub_kubectl, tmp_path, monkeypatch):
    # the stub kubectl (tests/stubs/kubectl) answers with the JSON of the API's shape
    import json

    _, docs = render("--queue", "team-a")
    job = next(d for d in docs if d["kind"] == "Job")
    job["status"] = {"active": 1}
    container = job["spec"]["template"]["spec"]["containers"][0]  # no storage to read here
    container["args"] = [a for a in container["args"] if not a.startswith("--model_dir=")]
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "pods.json").write_text(json.dumps({"items": []}))
    (tmp_path / "wl.json").write_text(json.dumps({"items": [_workload(conditions=[PENDING])]}))
    monkeypatch.setenv("KUBECTL_STUB_JOB", str(tmp_path / "job.json"))
    monkeypatch.setenv("KUBECTL_STUB_PODS", str(tmp_path / "pods.json"))
    monkeypatch.setenv("KUBECTL_STUB_WORKLOADS", str(tmp_path / "wl.json"))
    r = run_entry("launch", ["k8s", "status", "--name", "exp1", "--namespace", "ml"])
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("kueue: pending in queue team-a (couldn't assign flavors"), last
    assert ["--namespace=ml", "get", "workloads", "-o", "json"] in [
        c["argv"] for c in stub_kubectl()
    ]
