"""Kubernetes manifests: kustomize renders the overlays offline, the official schemas validate
them strictly, the network policy admits only a run's own pods, the evaluator joins no cluster,
TF_CONFIG follows from a worker's environment, and hostile names and arguments stay data."""

import re
import subprocess

import pytest
import yaml

from launch.k8s import manifests as k8s
from tests.kube import (
    HOSTILE_ARGS,
    K8S,
    k8s_expand,
    launch,
    pod_labels,
    render_with_evaluator,
    rendered,
    selects,
    spec,
    validate,
)
from trainer.runtime import cluster as tfconfig


@pytest.mark.parametrize("overlay", ["debug", "single-node", "multi-worker"])
def test_overlays_render_offline_and_validate(overlay, tmp_path):
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert sorted(d["kind"] for d in docs) == k8s.KINDS
    (tmp_path / "m.yaml").write_text(out)
    assert validate(tmp_path / "m.yaml").count("passed") == 4
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("workers, gpus", [(1, 1), (1, 4), (4, 1), (2, 0)])
def test_launch_render_passes_strict_schema_validation(workers, gpus, tmp_path):
    r = launch(
        "k8s", "render", "--name", "exp1", "--image", "gcr.io/p/t:1", "--workers", workers,
        "--gpus_per_worker", gpus, "--model_dir", "gs://bkt/r", "--namespace", "ml",
        "--", "--train_steps=5",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (tmp_path / "m.yaml").write_text(r.stdout)
    assert validate(tmp_path / "m.yaml").count("passed") == 4
    docs = list(yaml.safe_load_all(r.stdout))
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers
    container = job["spec"]["template"]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    strategy = {1: "auto", 4: "mirrored", 0: "auto"}[gpus] if workers == 1 else "multi_worker"
    assert container["args"][0] == f"--strategy={strategy}"


def test_network_policy_admits_only_the_jobs_own_pods_and_pods_are_locked_down():
    docs = rendered(spec(workers=3))
    other = rendered(spec(name="exp2", workers=3))
    by_kind = {d["kind"]: d for d in docs}
    job, policy = by_kind["Job"], by_kind["NetworkPolicy"]
    other_job = next(d for d in other if d["kind"] == "Job")
    own = [pod_labels(job, i) for i in range(3)]
    strangers = [pod_labels(other_job, i) for i in range(3)]
    rules = policy["spec"]
    assert rules["policyTypes"] == ["Ingress"]  # egress open: Cloud Storage, DNS, metadata
    assert all(selects(rules["podSelector"], p) for p in own)
    assert not any(selects(rules["podSelector"], p) for p in strangers)
    (ingress,) = rules["ingress"]
    (source,) = ingress["from"]
    assert set(source) == {"podSelector"}  # no namespaceSelector / ipBlock: same namespace
    assert all(selects(source["podSelector"], p) for p in own)
    assert not any(selects(source["podSelector"], p) for p in strangers)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert ingress["ports"] == [{"protocol": "TCP", "port": container["ports"][0]["containerPort"]}]
    # every namespaced object lands in --namespace
    assert {d["metadata"].get("namespace") for d in docs} == {"ml"}
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    security = pod["securityContext"]
    assert min(security["runAsUser"], security["runAsGroup"], security["fsGroup"]) >= 10000
    user = re.search(r"^USER (\d+):(\d+)$", (K8S / "Dockerfile").read_text(), re.M)
    assert (int(user.group(1)), int(user.group(2))) == (
        security["runAsUser"],
        security["runAsGroup"],
    )


def test_evaluator_pod_validates_joins_no_cluster_and_is_reachable_by_no_one(tmp_path):
    r, docs = render_with_evaluator("--", "--train_steps=500", "--best_metric=auc")
    assert r.returncode == 0, r.stderr
    (tmp_path / "m.yaml").write_text(r.stdout)
    assert validate(tmp_path / "m.yaml").count("passed") == 6
    assert {d["metadata"]["namespace"] for d in docs} == {"ml"}
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    workers, evaluator = jobs["exp1"], jobs["exp1-evaluator"]
    worker_args = workers["spec"]["template"]["spec"]["containers"][0]["args"]
    assert worker_args[-1] == "--eval_every_steps=0"  # the evaluator evaluates instead
    pod = evaluator["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "--model_dir=gs://bkt/r", "--data_dir=gs://bkt/d", "--train_steps=500", "--best_metric=auc",
        "--mode=continuous_eval",
    ]  # fmt: skip
    env = {e["name"]: e["value"] for e in container["env"]}
    assert tfconfig.derive_tf_config(env) is None  # no cluster to join
    assert "ports" not in container and "subdomain" not in pod
    assert "nvidia.com/gpu" not in container["resources"]["limits"] and "nodeSelector" not in pod
    assert evaluator["spec"]["completions"] == 1 and evaluator["spec"]["completionMode"] == (
        "NonIndexed"
    )
    assert (
        pod["automountServiceAccountToken"] is False
        and pod["securityContext"] == (workers["spec"]["template"]["spec"]["securityContext"])
    )
    assert evaluator["spec"]["podFailurePolicy"] == workers["spec"]["podFailurePolicy"]
    # Its own policy selects it and admits no one; the workers' policy neither selects nor
    # admits it (it reads checkpoints from Cloud Storage, it never dials a worker).
    evaluator_pod, worker_pods = (
        pod_labels(evaluator, 0),
        [pod_labels(workers, i) for i in (0, 1)],
    )
    own = policies["exp1-evaluator"]["spec"]
    assert selects(own["podSelector"], evaluator_pod) and own["ingress"] == []
    assert own["policyTypes"] == ["Ingress"]
    assert not any(selects(own["podSelector"], p) for p in worker_pods)
    theirs = policies["exp1"]["spec"]
    assert not selects(theirs["podSelector"], evaluator_pod)
    assert not selects(theirs["ingress"][0]["from"][0]["podSelector"], evaluator_pod)
    # a user's own --eval_every_steps stays; a GPU evaluator asks for one GPU; two are refused
    r, docs = render_with_evaluator("--evaluator_gpus", "1", "--", "--eval_every_steps=50")
    assert r.returncode == 0, r.stderr
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    assert jobs["exp1"]["spec"]["template"]["spec"]["containers"][0]["args"][-1] == (
        "--eval_every_steps=50"
    )
    gpu_pod = jobs["exp1-evaluator"]["spec"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_pod["nodeSelector"] == {k8s.ACCELERATOR_LABEL: "nvidia-tesla-t4"}
    r, _ = render_with_evaluator("--evaluator_gpus", "2")
    assert r.returncode == 1 and "--evaluator_gpus=2 is invalid" in r.stderr and not r.stdout


def test_worker_environment_yields_the_trainers_tf_config():
    docs = rendered(spec())
    job = next(d for d in docs if d["kind"] == "Job")
    service = next(d for d in docs if d["kind"] == "Service")
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert (
        service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    )
    port = service["spec"]["ports"][0]["port"]
    for i in range(3):
        # The Job controller adds JOB_COMPLETION_INDEX; the pod's DNS name is <job>-<i>.<svc>.
        cfg = tfconfig.derive_tf_config({**env, "JOB_COMPLETION_INDEX": str(i)})
        expected_hosts = [
            f"{job['metadata']['name']}-{j}.{pod['subdomain']}:{port}" for j in range(3)
        ]
        assert cfg == {
            "cluster": {"worker": expected_hosts},
            "task": {"type": "worker", "index": i},
        }


def test_hostile_trainer_args_stay_one_verbatim_argument(tmp_path):
    text = k8s.to_yaml(rendered(spec(trainer_args=HOSTILE_ARGS)))
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert len(docs) == 4 and "Secret" not in [d["kind"] for d in docs]
    container = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    received = [k8s_expand(a, env) for a in container["args"]]
    assert tuple(received[-len(HOSTILE_ARGS) :]) == HOSTILE_ARGS
    (tmp_path / "m.yaml").write_text(text)
    validate(tmp_path / "m.yaml")


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("name", "Exp_1", "--name='Exp_1' is not a DNS-1123 label"),
        ("name", "a\nkind: Secret", "is not a DNS-1123 label"),
        ("name", "x" * 62, "would pass 63 characters"),
        ("namespace", "ml'; drop", "--namespace="),
        ("image", "img\n---\nkind: Secret", "--image="),
        ("model_dir", "/local/path", "must be a gs:// path"),
        ("accelerator", "a b", "--accelerator='a b'"),
        ("trainer_args", ("--model_dir=gs://x",), "is set by launch k8s"),
    ],
)
def test_bad_names_and_values_are_refused(field, value, fragment):
    with pytest.raises(k8s.SpecError, match=fragment.replace("$", "\\$")):
        k8s.render(spec(**{field: value}), [])
