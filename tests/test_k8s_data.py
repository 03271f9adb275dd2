"""`launch k8s render --data_workers N` (the tf.data service's objects: validated strictly
against the official Kubernetes schemas, the JobSet against its CRD, and who may reach whom)
and `launch k8s convert` (an Indexed Job of converter slices). No API server here: submits go
to the named stub kubectl (tests/stubs)."""

import pytest
import yaml

from launch.k8s import manifests as k8s
from tests.kube import (
    k8s_expand,
    launch,
    pod_labels,
    render_with_evaluator,
    selects,
    validate,
    validate_jobset,
)

JOBSET_POD = {"jobset.sigs.k8s.io/jobset-name": "exp1"}  # what the JobSet controller adds


def _by_name(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_spec(deployment):
    return deployment["spec"]["template"]["spec"]


def test_data_service_validates_and_only_trainers_reach_it(tmp_path):
    r, docs = render_with_evaluator("--data_workers", "3", "--data_worker_cpu", "6")
    assert r.returncode == 0, r.stderr
    (tmp_path / "m.yaml").write_text(r.stdout)
    assert validate(tmp_path / "m.yaml").count("passed") == 11
    jobs, deps = _by_name(docs, "Job"), _by_name(docs, "Deployment")
    services, policies = _by_name(docs, "Service"), _by_name(docs, "NetworkPolicy")
    trainer_args = jobs["exp1"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--data_service_address=grpc://exp1-data:5050" in trainer_args
    evaluator_args = jobs["exp1-evaluator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any("data_service" in a for a in evaluator_args)  # it reads eval data itself

    dispatcher, workers = deps["exp1-data-dispatcher"], deps["exp1-data-worker"]
    _check_data_deployments(dispatcher, workers)
    (disp,) = _pod_spec(dispatcher)["containers"]
    service = services["exp1-data"]
    assert service["spec"]["selector"] == dispatcher["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["port"] == disp["ports"][0]["containerPort"] == 5050
    assert {d["metadata"].get("namespace") for d in docs} == {"ml"}
    _check_who_may_connect(jobs, dispatcher, workers, policies)


def _check_data_deployments(dispatcher: dict, workers: dict) -> None:
    """The dispatcher (one pod, Recreate) and the data workers (3 pods, 6 CPUs, announcing
    their pod IP): CPU-only nodes, no token, the image's user."""
    assert dispatcher["spec"]["replicas"] == 1 and dispatcher["spec"]["strategy"] == {
        "type": "Recreate"
    }
    assert workers["spec"]["replicas"] == 3
    (disp,) = _pod_spec(dispatcher)["containers"]
    assert disp["command"] == ["trainer-data"]
    assert disp["args"] == ["dispatcher", "--port=5050", "--work_dir=gs://bkt/r/data_service"]
    (work,) = _pod_spec(workers)["containers"]
    assert work["args"] == [
        "data_worker",
        "--dispatcher_address=exp1-data:5050",
        "--port=5051",
        "--worker_address=$(POD_IP):5051",
    ]
    pod_ip = next(e for e in work["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert work["resources"]["requests"]["cpu"] == "6"
    for dep in (dispatcher, workers):
        pod = _pod_spec(dep)
        (c,) = pod["containers"]
        assert "nvidia.com/gpu" not in str(c["resources"]) and "nodeSelector" not in pod
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        (term,) = terms["nodeSelectorTerms"]
        assert {"key": k8s.ACCELERATOR_LABEL, "operator": "DoesNotExist"} in term[
            "matchExpressions"
        ]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsUser"] == 10001
        assert dep["spec"]["selector"]["matchLabels"].items() <= (
            dep["spec"]["template"]["metadata"]["labels"].items()
        )


def _check_who_may_connect(jobs: dict, dispatcher: dict, workers: dict, policies: dict) -> None:
    """The NetworkPolicies against the label sets of every pod kind of this run and of a
    stranger: trainers reach the service, data workers reach the dispatcher, no one else."""
    trainer = pod_labels(jobs["exp1"], 0)
    evaluator = pod_labels(jobs["exp1-evaluator"], 0)
    data_worker = workers["spec"]["template"]["metadata"]["labels"]
    dispatcher_pod = dispatcher["spec"]["template"]["metadata"]["labels"]
    stranger = {**trainer, "batch.kubernetes.io/job-name": "exp2", "job-name": "exp2"}

    def admitted(policy_name, labels):
        (rule,) = policies[policy_name]["spec"]["ingress"]
        return any(selects(s["podSelector"], labels) for s in rule["from"])

    def selected(policy_name, labels):
        return selects(policies[policy_name]["spec"]["podSelector"], labels)

    assert selected("exp1-data-dispatcher", dispatcher_pod)
    assert not selected("exp1-data-dispatcher", data_worker)
    assert selected("exp1-data-worker", data_worker)
    assert admitted("exp1-data-dispatcher", trainer) and admitted(
        "exp1-data-dispatcher", data_worker
    )
    assert admitted("exp1-data-worker", trainer)
    for outsider in (evaluator, stranger, dispatcher_pod):
        assert not admitted("exp1-data-worker", outsider)
    for outsider in (evaluator, stranger):
        assert not admitted("exp1-data-dispatcher", outsider)
    (work,) = _pod_spec(workers)["containers"]
    ports = {n: p["spec"]["ingress"][0]["ports"] for n, p in policies.items() if "data" in n}
    assert ports == {
        "exp1-data-dispatcher": [{"protocol": "TCP", "port": 5050}],
        "exp1-data-worker": [{"protocol": "TCP", "port": work["ports"][0]["containerPort"]}],
    }
    # the trainers' own policy still admits only trainers: no data pod reaches a trainer
    assert not admitted("exp1", data_worker) and not admitted("exp1", dispatcher_pod)


def test_data_service_beside_a_jobset(tmp_path):
    r, docs = render_with_evaluator("--data_workers", "2", controller="jobset")
    assert r.returncode == 0, r.stderr
    (js,) = [d for d in docs if d["kind"] == "JobSet"]
    validate_jobset(js)
    (tmp_path / "m.yaml").write_text(k8s.to_yaml([d for d in docs if d["kind"] != "JobSet"]))
    assert validate(tmp_path / "m.yaml").count("passed") == 9
    pod = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert "--data_service_address=grpc://exp1-data:5050" in pod["spec"]["containers"][0]["args"]
    trainer = {**pod.get("metadata", {}).get("labels", {}), **JOBSET_POD}
    policy = _by_name(docs, "NetworkPolicy")["exp1-data-worker"]
    (source,) = policy["spec"]["ingress"][0]["from"]
    assert selects(source["podSelector"], trainer)
    assert not selects(source["podSelector"], {"batch.kubernetes.io/job-name": "exp1"})


@pytest.mark.parametrize(
    "own, trainer, fragment",
    [
        (["--data_workers", "-1"], [], "--data_workers=-1 is invalid"),
        (["--name", "a-very-long-run-name-that-goes-on-and-on-and-on-x"], [], "too long for the"),
        ([], ["--", "--data_service_address=grpc://x:1"], "drop --data_service_address"),
    ],
)
def test_bad_data_service_requests_render_nothing(own, trainer, fragment):
    base = ["k8s", "render", "--name", "exp1", "--image", "i:1", "--model_dir", "gs://bkt/r"]
    r = launch(*base, "--data_workers", "2", *own, *trainer)  # a later flag wins
    assert r.returncode == 1 and r.stdout == ""
    assert fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


CONVERT = ["k8s", "convert", "--name", "conv1", "--image", "i:1", "--workers", "3"]
CONVERT += ["--pairs", "gs://bkt/pairs.csv", "--output_dir", "gs://bkt/ds", "--namespace", "ml"]


def test_convert_job_gives_each_pod_its_slice(tmp_path, stub_kubectl):
    r = launch(*CONVERT, "--dry_run", "--", "--image_size=64", "--num_shards=48", "--note=$(X)")
    assert r.returncode == 0, r.stderr
    (tmp_path / "m.yaml").write_text(r.stdout)
    assert validate(tmp_path / "m.yaml").count("passed") == 3
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert stub_kubectl() == []  # --dry_run applies nothing
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
            "values": [1]}} in rules  # fmt: skip
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["trainer-data"] and "ports" not in container
    assert "nvidia.com/gpu" not in str(container["resources"]) and "nodeSelector" not in pod
    (index_var,) = [e for e in container["env"] if e["name"] == "JOB_COMPLETION_INDEX"]
    annotation = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert index_var["valueFrom"] == {"fieldRef": {"fieldPath": annotation}}
    for i in range(3):  # what pod i's converter receives after Kubernetes' expansion
        args = [k8s_expand(a, {"JOB_COMPLETION_INDEX": str(i)}) for a in container["args"]]
        assert args == [
            "convert", "--pairs=gs://bkt/pairs.csv", "--output_dir=gs://bkt/ds",
            "--num_workers=3", f"--worker_index={i}", "--image_size=64", "--num_shards=48",
            "--note=$(X)",
        ]  # fmt: skip
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["ingress"] == [] and selects(
        policy["spec"]["podSelector"], pod_labels(job, 2)
    )
    r = launch(*CONVERT)  # without --dry_run: looked up, then applied
    assert r.returncode == 0, r.stderr
    lookup, apply = stub_kubectl()
    assert lookup["argv"][-5:] == ["job", "conv1", "-o", "json", "--ignore-not-found"]
    assert apply["argv"][-3:] == ["apply", "-f", "-"] and "trainer-data" in apply["stdin"]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--pairs", "pairs.csv"], "--pairs='pairs.csv' must be a gs:// path"),
        (["--output_dir", "/data/out"], "--output_dir='/data/out' must be a gs:// path"),
        (["--", "--worker_index=1"], "converter flag '--worker_index=1' is set by launch"),
        (["--workers", "0"], "--workers=0 must be at least 1"),
    ],
)
def test_bad_convert_requests_submit_nothing(extra, fragment, stub_kubectl):
    r = launch(*CONVERT, *extra)
    assert r.returncode == 1 and r.stdout == "" and stub_kubectl() == []
    assert fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
