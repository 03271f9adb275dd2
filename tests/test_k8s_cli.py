"""`launch k8s` submit, status, logs and delete through kubectl (the named stub of
tests/stubs: no API server can run here), the real kubectl when the cluster is out of reach,
resubmits of a name that exists (refused, or --replace), and the API server's errors in one
line."""

import json
import os

import pytest
import yaml

from launch.k8s import kubectl
from tests.kube import DELETE_FLAGS, DELETED, HOSTILE_ARGS, launch


def test_submit_status_logs_delete_call_kubectl(stub_kubectl):
    common = ["--name", "exp1", "--context", "gke-a", "--namespace", "ml"]
    r = launch(
        "k8s",
        "submit",
        *common,
        "--image",
        "img:1",
        "--workers",
        "2",
        "--model_dir",
        "gs://bkt/r",
        "--skip_preflight",
        "--",
        *HOSTILE_ARGS,
    )
    assert r.returncode == 0, r.stderr
    g = ["--context=gke-a", "--namespace=ml"]
    lookup, apply = stub_kubectl()
    assert lookup["argv"] == g + ["get", "job", "exp1", "-o", "json", "--ignore-not-found"]
    assert apply["argv"] == g + ["apply", "-f", "-"]
    docs = [d for d in yaml.safe_load_all(apply["stdin"]) if d]
    assert [d["kind"] for d in docs].count("Job") == 1 and len(docs) == 4
    for action in ("logs", "delete"):
        assert launch("k8s", action, *common).returncode == 0
    calls = [c["argv"] for c in stub_kubectl()[2:]]
    sel = "batch.kubernetes.io/job-name=exp1"
    assert calls == [
        g + ["logs", "-l", sel, "--prefix", "--tail=-1"],
        g + ["delete", *DELETED, *DELETE_FLAGS],
    ]


def test_dry_run_and_bad_name_submit_nothing(stub_kubectl):
    r = launch(
        "k8s",
        "submit",
        "--name",
        "exp1",
        "--image",
        "i:1",
        "--model_dir",
        "gs://bkt/r",
        "--dry_run",
    )
    assert r.returncode == 0 and "kind: Job" in r.stdout
    r = launch(
        "k8s",
        "submit",
        "--name",
        "BAD NAME",
        "--image",
        "i:1",
        "--model_dir",
        "gs://bkt/r",
        "--skip_preflight",
    )
    assert r.returncode == 1 and "is not a DNS-1123 label" in r.stderr
    r = launch("k8s", "delete", "--name", "x;y")
    assert r.returncode == 1
    assert stub_kubectl() == []


def test_a_cluster_out_of_reach_is_one_sentence_from_each_command(tmp_path):
    """The real kubectl, pointed at an API server address where nothing listens: status,
    logs, delete and submit each say that the cluster is out of reach and where to look, in
    one line (was client-go's retry lines, raw, from logs and delete)."""
    from launch.local.processes import free_ports

    port = free_ports(1)[0]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    submit = ["--image", "i:1", "--model_dir", "gs://bkt/r", "--skip_preflight"]
    for action, verb, extra in [
        ("status", "get", []),
        ("logs", "logs", []),
        ("delete", "delete", []),
        ("submit", "get", submit),  # its look for a job of that name comes first
    ]:
        r = launch("k8s", action, "--name", "exp1", *extra, env=env)
        assert r.returncode == 1 and r.stdout == "", (action, r.stdout, r.stderr)
        assert r.stderr == (
            f"error: kubectl {verb}: the cluster's API server is out of reach (The connection "
            f"to the server 127.0.0.1:{port} was refused - did you specify the right host or "
            "port): check which cluster kubectl talks to (kubectl config current-context; "
            "--context, KUBECONFIG).\n"
        ), action


# ---- resubmits ----------------------------------------------------------------------------

RUNNING = {"spec": {"completions": 3}, "status": {"active": 2, "succeeded": 1}}
FAILED = {
    "spec": {"completions": 3},
    "status": {
        "failed": 1,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"},
            {
                "type": "Failed",
                "status": "True",
                "reason": "PodFailurePolicy",
                "message": "Container trainer for pod ml/exp1-1-x7k2p failed with exit code 1 "
                "matching FailJob rule at index 0",
            },
        ],
    },
}
SUCCEEDED = {"spec": {"completions": 3}, "status": {"conditions": [
    {"type": "Complete", "status": "True"}]}}  # fmt: skip


def test_job_state_in_words():
    assert kubectl.job_state(RUNNING) == "running (2 of 3 workers active)"
    assert kubectl.job_state(FAILED) == "failed at index 1 (PodFailurePolicy)"
    assert kubectl.job_state(SUCCEEDED) == "succeeded"
    assert kubectl.job_state({"spec": {"completions": 2}, "status": {}}) == "pending"


def _submit_existing(tmp_path, monkeypatch, job, *extra):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    monkeypatch.setenv("KUBECTL_STUB_JOB", str(path))
    return launch(
        "k8s", "submit", "--name", "exp1", "--namespace", "ml", "--image", "i:1",
        "--workers", "3", "--model_dir", "gs://bkt/r", "--skip_preflight", *extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    "job, state",
    [(RUNNING, "running (2 of 3 workers active)"), (FAILED, "failed at index 1"),
     (SUCCEEDED, "succeeded")],
)  # fmt: skip
def test_submit_on_an_existing_name_is_refused_with_its_state(
    job, state, tmp_path, monkeypatch, stub_kubectl
):
    r = _submit_existing(tmp_path, monkeypatch, job)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(
        f"error: job exp1 already exists in namespace ml ({state}"
    )
    assert "`launch k8s delete --name exp1 --namespace ml`" in r.stderr and "--replace" in r.stderr
    assert [c["argv"][1] for c in stub_kubectl()] == ["get"]  # looked up, nothing applied


def test_replace_deletes_waits_for_the_pods_then_submits(tmp_path, monkeypatch, stub_kubectl):
    r = _submit_existing(tmp_path, monkeypatch, FAILED, "--replace")
    assert r.returncode == 0, r.stderr
    ns = ["--namespace=ml"]
    calls = [c["argv"] for c in stub_kubectl()]
    assert calls == [
        ns + ["get", "job", "exp1", "-o", "json", "--ignore-not-found"],
        ns + ["delete", *DELETED, *DELETE_FLAGS],
        ns + ["wait", "--for=delete", "pod", "-l", "batch.kubernetes.io/job-name=exp1",
              "--timeout=600s"],
        ns + ["apply", "-f", "-"],
    ]  # fmt: skip
    assert "kind: Job" in stub_kubectl()[-1]["stdin"]
    # --replace on a name that does not exist: just a submit
    monkeypatch.delenv("KUBECTL_STUB_JOB")
    (tmp_path / "kubectl.log").unlink()
    r = launch("k8s", "submit", "--name", "exp1", "--namespace", "ml", "--image", "i:1",
               "--model_dir", "gs://bkt/r", "--skip_preflight", "--replace")  # fmt: skip
    assert r.returncode == 0 and [c["argv"][1] for c in stub_kubectl()] == ["get", "apply"]


def test_replace_with_another_worker_count_goes_on_in_the_same_model_dir(
    tmp_path, monkeypatch, stub_kubectl
):
    """`submit --replace --workers K` on a run of 2 workers: the same --model_dir, so the
    new run resumes there (the trainer keeps step, optimizer and pairs seen; tested in
    test_distributed); the launcher says so, and says when the model_dir is another."""
    r = launch("k8s", "render", "--name", "exp1", "--namespace", "ml", "--image", "i:1",
               "--workers", "2", "--model_dir", "gs://bkt/r")  # fmt: skip
    job = next(d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "Job")
    job["status"] = FAILED["status"]
    same = _submit_existing(tmp_path, monkeypatch, job, "--replace")
    assert same.returncode == 0, same.stderr
    assert "replacing exp1: the new run goes on in gs://bkt/r on 3 workers (it had 2), from its " \
        "newest checkpoint's step" in same.stdout  # fmt: skip
    assert [c["argv"][1] for c in stub_kubectl()][-1] == "apply"
    rendered = yaml.safe_load_all(stub_kubectl()[-1]["stdin"])
    (new,) = [d for d in rendered if d and d["kind"] == "Job"]
    assert new["spec"]["completions"] == 3
    assert "--model_dir=gs://bkt/r" in new["spec"]["template"]["spec"]["containers"][0]["args"]
    (tmp_path / "kubectl.log").unlink()
    other = launch("k8s", "submit", "--name", "exp1", "--namespace", "ml", "--image", "i:1",
                   "--model_dir", "gs://bkt/r2", "--skip_preflight", "--replace")  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert "the new run writes to gs://bkt/r2; the replaced run's gs://bkt/r is left as it is" \
        in other.stdout  # fmt: skip


# What kubectl printed when a Job's pod template was changed on resubmit (shortened: the real
# one carried a 4.5 KB dump of the Go struct).
IMMUTABLE = (
    'The Job "exp1" is invalid: spec.template: Invalid value: core.PodTemplateSpec{ObjectMeta:'
    'v1.ObjectMeta{Name:"", Labels:map[string]string{"app":"x"}}, Spec:core.PodSpec{Volumes:'
    '[]core.Volume{core.Volume{Name:"dshm"}}, Containers:[]core.Container{core.Container{Name:'
    '"trainer", Image:"i:2"}}}}: field is immutable\n'
)


def test_api_server_errors_are_reduced_to_their_message(tmp_path, monkeypatch, stub_kubectl):
    assert kubectl.api_error(IMMUTABLE) == (
        'The Job "exp1" is invalid: spec.template: Invalid value: (...): field is immutable'
    )
    (tmp_path / "err.txt").write_text(IMMUTABLE)
    monkeypatch.setenv("KUBECTL_STUB_FAIL", "apply")
    monkeypatch.setenv("KUBECTL_STUB_STDERR", str(tmp_path / "err.txt"))
    r = launch("k8s", "submit", "--name", "exp1", "--image", "i:2", "--model_dir", "gs://bkt/r",
               "--skip_preflight")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr == (
        'error: kubectl apply: The Job "exp1" is invalid: spec.template: Invalid value: (...): '
        "field is immutable.\n"
    )
