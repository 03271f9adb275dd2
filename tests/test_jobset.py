"""`launch k8s --controller jobset`: the JobSet validated offline against JobSet's own CRD
schema (../shared/crds, data read where it lies), the rest against the official schemas, and
TF_CONFIG derived from the host names JobSet gives its pods."""

import json

import pytest
import yaml

from launch.k8s import jobset
from launch.k8s import manifests as k8s
from tests.kube import (
    launch,
    pod_labels,
    render_with_evaluator,
    rendered_jobset,
    selects,
    spec,
    validate,
    validate_jobset,
)
from trainer.runtime import cluster as tfconfig


@pytest.mark.parametrize("workers, gpus", [(3, 1), (1, 0)])
def test_jobset_validates_against_its_crd_and_the_rest_strictly(workers, gpus, tmp_path):
    r = launch(
        "k8s", "render", "--controller", "jobset", "--max_restarts", "4", "--name", "exp1",
        "--image", "gcr.io/p/t:1", "--workers", str(workers), "--gpus_per_worker", str(gpus),
        "--model_dir", "gs://bkt/r", "--namespace", "ml", "--", "--train_steps=5",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert sorted(d["kind"] for d in docs) == jobset.KINDS
    (js,) = [d for d in docs if d["kind"] == "JobSet"]
    validate_jobset(js)
    others = [d for d in docs if d["kind"] != "JobSet"]
    (tmp_path / "m.yaml").write_text(k8s.to_yaml(others))
    assert validate(tmp_path / "m.yaml").count("passed") == 2
    assert {d["metadata"]["namespace"] for d in docs} == {"ml"}
    # what `submit --replace` reads of a JobSet it replaces: its workers and model_dir
    from launch.k8s import status

    assert status.worker_count(js) == workers and status.model_dir_of(js) == "gs://bkt/r"
    assert f"on 4 workers (it had {workers})" in status.replace_line(js, "exp1", 4, "gs://bkt/r")
    # the schema is really applied: a wrong field is refused
    import jsonschema

    bad = json.loads(json.dumps(js))
    bad["spec"]["failurePolicy"]["rules"][0]["action"] = "RestartEverything"
    with pytest.raises(jsonschema.ValidationError):
        validate_jobset(bad)


def test_jobset_restarts_the_group_on_75_and_fails_at_once_on_1():
    js = next(d for d in rendered_jobset(spec(workers=3), max_restarts=7) if d["kind"] == "JobSet")
    policy = js["spec"]["failurePolicy"]
    assert policy["maxRestarts"] == 7
    (rule,) = policy["rules"]
    assert rule["action"] == "FailJobSet" and rule["onJobFailureReasons"] == ["PodFailurePolicy"]
    (replicated,) = js["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert replicated["replicas"] == 1 and job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == 3
    assert job["backoffLimit"] == 0  # a counted failure (75) fails the child Job: group restart
    rules = {r["action"]: r for r in job["podFailurePolicy"]["rules"]}
    assert rules["FailJob"]["onExitCodes"]["values"] == [1]  # reason PodFailurePolicy
    assert rules["Count"]["onExitCodes"]["values"] == [75]
    assert rules["Ignore"]["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_tf_config_from_the_host_names_jobset_gives_its_pods():
    name, workers = "exp1", 3
    js = next(d for d in rendered_jobset(spec(name=name, workers=workers)) if d["kind"] == "JobSet")
    network = js["spec"]["network"]
    assert network["enableDNSHostnames"] and network["publishNotReadyAddresses"]
    # JobSet names pod i of replicated job r's Job j "<jobset>-<r>-<j>-<i>" and, with DNS host
    # names on, resolves it as "<that>.<network.subdomain>" (kubernetes-sigs/jobset docs).
    (replicated,) = js["spec"]["replicatedJobs"]
    hosts = [f"{name}-{replicated['name']}-0-{i}.{network['subdomain']}" for i in range(workers)]
    pod = replicated["template"]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    port = pod["containers"][0]["ports"][0]["containerPort"]
    for i in range(workers):
        config = tfconfig.derive_tf_config({**env, "JOB_COMPLETION_INDEX": str(i)})
        assert config["cluster"]["worker"] == [f"{h}:{port}" for h in hosts]
        assert config["task"] == {"type": "worker", "index": i}


def test_jobset_network_policy_selects_the_jobsets_pods_only():
    docs = rendered_jobset(spec(workers=2))
    js = next(d for d in docs if d["kind"] == "JobSet")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]
    child = {
        "metadata": {"name": jobset.child_job_name("exp1")},
        **js["spec"]["replicatedJobs"][0]["template"],
    }

    def pod(name, i):
        return {**pod_labels(child, i), jobset.JOBSET_NAME_LABEL: name}

    own, stranger = [pod("exp1", i) for i in range(2)], pod("exp2", 0)
    assert all(selects(policy["podSelector"], p) for p in own)
    assert all(selects(policy["ingress"][0]["from"][0]["podSelector"], p) for p in own)
    assert not selects(policy["podSelector"], stranger)


def test_submit_with_jobset_looks_up_and_deletes_the_jobset(stub_kubectl, tmp_path, monkeypatch):
    (tmp_path / "js.json").write_text(json.dumps({"status": {"conditions": [
        {"type": "Completed", "status": "True"}]}}))  # fmt: skip
    monkeypatch.setenv("KUBECTL_STUB_JOB", str(tmp_path / "js.json"))
    args = ["k8s", "submit", "--controller", "jobset", "--name", "exp1", "--image", "i:1",
            "--model_dir", "gs://bkt/r", "--skip_preflight"]  # fmt: skip
    r = launch(*args)
    assert r.returncode == 1 and r.stderr.startswith(
        "error: jobset exp1 already exists (succeeded)"
    )
    assert "launch k8s delete --name exp1 --controller jobset" in r.stderr
    r = launch(*args, "--replace")
    assert r.returncode == 0, r.stderr
    calls = [c["argv"] for c in stub_kubectl()]
    assert calls[1] == ["get", "jobset", "exp1", "-o", "json", "--ignore-not-found"]
    assert calls[2][:3] == ["delete", "jobset/exp1", "networkpolicy/exp1"]
    assert calls[3][:5] == [
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "jobset.sigs.k8s.io/jobset-name=exp1",
    ]
    assert calls[4] == ["apply", "-f", "-"] and "kind: JobSet" in stub_kubectl()[4]["stdin"]


def test_jobset_run_with_an_evaluator_beside_it(tmp_path):
    r, docs = render_with_evaluator(controller="jobset")
    assert r.returncode == 0, r.stderr
    assert sorted(d["kind"] for d in docs) == sorted(jobset.KINDS + ["Job", "NetworkPolicy"])
    (js,) = [d for d in docs if d["kind"] == "JobSet"]
    validate_jobset(js)
    others = [d for d in docs if d["kind"] != "JobSet"]
    (tmp_path / "m.yaml").write_text(k8s.to_yaml(others))
    assert validate(tmp_path / "m.yaml").count("passed") == 4
    (evaluator,) = [d for d in docs if d["kind"] == "Job"]
    assert evaluator["metadata"]["name"] == "exp1-evaluator"  # outside the JobSet's restarts
    assert evaluator["spec"]["template"]["spec"]["containers"][0]["args"][-1] == (
        "--mode=continuous_eval"
    )
    worker = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert worker["containers"][0]["args"][-1] == "--eval_every_steps=0"
