"""Cloud Storage for real: the CLIs on gs:// paths through TensorFlow's own GCS client, against
fake-gcs-server in a private network namespace (tests/gcs_sandbox.py), and storage faults.

Every command under test runs inside the namespace; the test reads and writes the same
buckets with google-cloud-storage. Commands whose process is the subject (kill -9, outages,
SIGTERM, exit codes) run as processes of their own; the others share one process in the
namespace (``in_namespace``: tests/inprocess.py). Where this host cannot make the namespace
the fixture fails with one line saying why: these tests never skip.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import inprocess
from tests.gcs_sandbox import Sandbox
from tests.kube import applied
from tests.runs import read_checkpoint, small_flags
from trainer.data.write.synthetic import make_pair

PY = sys.executable
# Short enough that a failing test does not wait out TF's ~195 s per operation.
QUICK = "--storage_timeout_seconds=20"
BIG = "gs://data/big"


@pytest.fixture(scope="module")
def gcs():
    sandbox = Sandbox()
    try:
        for bucket in ("data", "models", "raw"):
            sandbox.client.create_bucket(bucket)
        # Both sets in one process: the small one most tests train on, and one 3 MB shard
        # (32x32) for the reads that fail in the middle of an epoch.
        results = in_namespace(
            sandbox,
            ("trainer.data", "synthetic", "--output_dir", "gs://data/syn", "--num_train", "512",
             "--num_eval", "64", "--image_size", "16", "--seed", "3"),
            ("trainer.data", "synthetic", "--output_dir", BIG, "--num_train", "512",
             "--num_eval", "32", "--image_size", "32", "--num_shards", "1"),
        )  # fmt: skip
        for r in results:
            assert r.returncode == 0, r.stderr[-2000:]
        yield sandbox
    finally:
        sandbox.close()


def in_namespace(sb, *calls, env=None) -> list[subprocess.CompletedProcess]:
    """Command lines ((entry, args...) with an entry of tests/inprocess.py) run one after the
    other in one process inside the namespace: one TensorFlow start for all of them."""
    plan = [[entry, [str(a) for a in args]] for entry, *args in calls]
    r = sb.run([PY, inprocess.__file__, json.dumps(plan)], env=env)
    found = [line[len(inprocess.RESULT) :] for line in r.stdout.splitlines()]
    results = [json.loads(line) for line in found if line.startswith("[")]
    assert len(results) == len(plan), r.stderr[-3000:]
    return [subprocess.CompletedProcess(c[0], *res) for c, res in zip(plan, results)]


def _flags(model_dir, *extra, data="gs://data/syn"):
    return small_flags(data, model_dir, QUICK, *extra)


def start_trainer(sb, model_dir, *extra, data="gs://data/syn"):
    """The trainer running in the namespace, its stderr piped."""
    return sb.popen(
        [PY, "-m", "trainer", *_flags(model_dir, *extra, data=data)], stderr=subprocess.PIPE
    )


def download(sb, bucket, prefix, dest):
    """Copies gs://bucket/prefix... into dest (folder markers left out); returns dest."""
    for blob in sb.client.list_blobs(bucket, prefix=prefix):
        if blob.name.endswith("/"):
            continue
        local = os.path.join(dest, os.path.relpath(blob.name, prefix))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        blob.download_to_filename(local)
    return str(dest)


def _png(pixels) -> bytes:
    return tf.io.encode_png(np.asarray(pixels, np.uint8)).numpy()


def _wait_down(sb, proc, what):
    """Waits until the sandbox's outage began (returns its time) while ``proc`` runs."""
    while not sb.is_down():
        assert proc.poll() is None, f"the run ended before the outage ({what})"
        time.sleep(0.02)
    return time.monotonic()


# ---- the data tools ------------------------------------------------------------------------


def _upload_image_pairs(gcs) -> None:
    """gs://raw/imgs: 8 pairs of flat PNGs (pair i: grey 10i, then 10i + 5; label i % 2) with
    their pairs.csv, and a bad.csv naming a missing image."""
    raw = gcs.client.bucket("raw")
    rows = ["image_a,image_b,label"]
    for i in range(8):
        raw.blob(f"imgs/a{i}.png").upload_from_string(_png(np.full((8, 8, 3), 10 * i)))
        raw.blob(f"imgs/b{i}.png").upload_from_string(_png(np.full((8, 8, 3), 10 * i + 5)))
        rows.append(f"a{i}.png,b{i}.png,{i % 2}")
    raw.blob("imgs/pairs.csv").upload_from_string("\n".join(rows) + "\n")
    raw.blob("imgs/bad.csv").upload_from_string("a0.png,missing.png,1\n")


def _converted_pair_ids(gcs, dest) -> set:
    """The pair ids (grey level / 10) in gs://data/conv, each checked against its second image
    and its label: the shards written to gs:// hold the pixels of the images read from it."""
    from trainer.data.read import pipeline
    from trainer.data.read.source import open_source

    local = download(gcs, "data", "conv/", dest)
    seen = set()
    for split in ("train", "eval"):
        for x, y in pipeline.eval_dataset(open_source(local, split), 4):
            for a, b, label in zip(x["input1"].numpy(), x["input2"].numpy(), y.numpy()):
                i = int(round(a.mean() * 255)) // 10
                assert round(b.mean() * 255) == 10 * i + 5 and label == i % 2
                seen.add(i)
    return seen


def test_data_tools_read_and_write_gs(gcs, tmp_path):
    _upload_image_pairs(gcs)
    gcs.go_down_at("/b/gone/")  # the last call's first request: the endpoint gone from then on
    try:
        converted, verified, bad, nobucket, unverified, unanswered = in_namespace(
            gcs,
            ("trainer.data", "convert", "--pairs", "gs://raw/imgs/pairs.csv", "--output_dir",
             "gs://data/conv", "--eval_fraction", "0.25", "--num_shards", "2"),
            ("trainer.data", "verify", "gs://data/conv"),
            ("trainer.data", "convert", "--pairs", "gs://raw/imgs/bad.csv", "--output_dir",
             "gs://data/conv2"),
            ("trainer.data", "synthetic", "--output_dir", "gs://nobucket/syn", "--num_train", "8",
             "--num_eval", "0"),
            ("trainer.data", "verify", "gs://gone/conv"),
            ("trainer.predict", "--saved_model", "gs://gone/m", tmp_path, tmp_path),
            env={"GCS_RETRY_CONFIG_MAX_RETRIES": "0"},  # the tools' client: no retries to wait
        )  # fmt: skip
    finally:
        gcs.come_back()
    # A tool whose storage does not answer: the storage's sentence and 75, from the one guard
    # of every entry point (was: an unexpected error to report), or predict's own handling
    r = unverified
    assert r.returncode == 75, r.stderr[-2000:]
    assert r.stderr.startswith(
        "error: Cloud Storage failed reading metadata of gs://gone/conv: libcurl code "
    ) and r.stderr.endswith(". Exit 75: rerun when the storage is reachable.\n"), r.stderr
    r = unanswered
    assert r.returncode == 75, r.stderr[-2000:]
    assert r.stderr.startswith(
        "error: Cloud Storage failed reading metadata of gs://gone/m/saved_model.pb: libcurl code "
    ) and r.stderr.endswith(". Exit 75: rerun when the storage is reachable.\n"), r.stderr
    r = converted
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote 6 training and 2 eval pairs (png) to gs://data/conv" in r.stdout
    r = verified
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8 records" in r.stdout and "all records are good" in r.stdout
    assert _converted_pair_ids(gcs, tmp_path / "conv") == set(range(8))
    # Bad input on gs://: one sentence, exit 1, nothing written.
    r = bad
    assert r.returncode == 1 and "gs://raw/imgs/missing.png: file not found" in r.stderr
    assert gcs.names("data", "conv2") == []
    # A bucket that does not exist: refused (tf.io.gfile.makedirs would loop forever on it).
    r = nobucket
    assert r.returncode == 1 and "output_dir bucket gs://nobucket does not exist" in r.stderr


# ---- training, resuming, exporting ---------------------------------------------------------


def test_resume_on_gs_is_bitwise_exact_after_kill_9_and_after_a_cut_save(gcs, tmp_path):
    common = ["--deterministic", "--checkpoint_every_steps=2", "--augment", "--train_steps=8"]
    # kill -9 right after the checkpoint of step 2 is saved
    proc = start_trainer(gcs, "gs://models/b", *common)
    for line in proc.stderr:
        if "saved checkpoint gs://models/b/checkpoints/ckpt-2" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # the rerun resumes; the storage goes away in the middle of the save of step 6 (the data
    # file is written, its index is not): exit 75 naming the upload, within the bound
    gcs.go_down_at("b/checkpoints/ckpt-6_temp/part-00000-of-00001.index")
    proc = start_trainer(gcs, "gs://models/b", *common, "--storage_timeout_seconds=6")
    down = _wait_down(gcs, proc, "save of step 6")
    _, err = proc.communicate()
    waited = time.monotonic() - down
    gcs.come_back()
    assert proc.returncode == 75, err[-3000:]
    assert re.search(r"resumed from \S+ckpt-[24] at step [24]", err), err[-3000:]
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1, err[-3000:]
    assert "Cloud Storage failed" in message[0]
    assert "gs://models/b/checkpoints/ckpt-6_temp/part-00000-of-00001.index" in message[0]
    assert "(retried within --storage_timeout_seconds=6)" in message[0]
    # The flag bounds the wait (TF's own retries: ~195 s per operation, three operations for
    # a failed write), with slack for a slow host.
    assert waited < 60, waited
    names = gcs.names("models", "b/checkpoints/")
    assert any("ckpt-6_temp/part-00000-of-00001.data" in n for n in names)  # cut mid-write
    assert "b/checkpoints/ckpt-6.index" not in names

    # storage back: the rerun resumes from step 4, never from the cut save; the straight
    # run it must equal shares its process (neither process is the subject)
    rest, straight = in_namespace(
        gcs,
        ("trainer", *_flags("gs://models/b", *common)),
        ("trainer", *_flags("gs://models/a", *common)),
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "at step 4" in rest.stderr and "ckpt-6" not in rest.stderr.split("resumed")[1][:80]
    a = read_checkpoint(download(gcs, "models", "a/checkpoints/", tmp_path / "a") + "/ckpt-8")
    b = read_checkpoint(download(gcs, "models", "b/checkpoints/", tmp_path / "b") + "/ckpt-8")
    assert a.keys() == b.keys() and len(a) > 40
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _upload_model_dir(gcs, model_dir, name: str) -> None:
    """A local run's checkpoints and config.json into gs://models/<name>."""
    models = gcs.client.bucket("models")
    for folder, _, files in os.walk(model_dir / "checkpoints"):
        for file in files:
            models.blob(f"{name}/checkpoints/{file}").upload_from_filename(
                os.path.join(folder, file)
            )
    models.blob(f"{name}/config.json").upload_from_filename(model_dir / "config.json")


def test_export_predict_inspect_and_preflight_on_gs(gcs, main_job, tmp_path, stub_kubectl):
    # A trained model_dir on gs://: the session's main job (built-in 16x16 set), uploaded.
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    _upload_model_dir(gcs, main_job.model_dir, "e")
    a, b, _, _ = make_pair(16, 3, seed=5, index=0)
    raw = gcs.client.bucket("raw")
    raw.blob("pair/a.png").upload_from_string(_png(a))
    raw.blob("pair/b.png").upload_from_string(_png(b))
    pair = ("gs://raw/pair/a.png", "gs://raw/pair/b.png")
    exported, predicted, inspected, over_run = in_namespace(
        gcs,
        ("trainer", *_flags("gs://models/e", "--mode=export", "--export_dir=gs://models/e/again")),
        ("trainer.predict", "--saved_model=gs://models/e/again", *pair),
        ("trainer.inspect", "--model_dir=gs://models/e", "--output=gs://models/e/activations.png",
         *pair),
        # an export folder holding other files, not a SavedModel: refused, nothing moved
        ("trainer", *_flags("gs://models/e", "--mode=export", "--export_dir=gs://raw/pair")),
    )  # fmt: skip
    r = over_run
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == (
        "error: export_dir gs://raw/pair holds other files (a.png, b.png), not a SavedModel: "
        "the export replaces the whole folder, so give an empty or new folder."
    ), r.stderr[-2000:]
    assert sorted(b.name for b in raw.list_blobs(prefix="pair/")) == ["pair/a.png", "pair/b.png"]
    r = exported
    assert r.returncode == 0, r.stderr[-3000:]
    first = str(main_job.export_dir)
    again = download(gcs, "models", "e/again/", tmp_path / "again")
    # the export from gs:// serves the same model as the training run's export
    x = tf.random.uniform([2, 16, 16, 3], seed=1)
    outputs = [
        tf.saved_model.load(path).signatures["serving_float"](input1=x, input2=x)["probability"]
        for path in (first, again)
    ]
    np.testing.assert_array_equal(outputs[0], outputs[1])

    r = predicted
    assert r.returncode == 0, r.stderr[-2000:]
    from trainer.tools.predict import predict

    assert float(r.stdout) == pytest.approx(predict(first, _png(a), _png(b)), abs=2e-6)

    r = inspected
    assert r.returncode == 0, r.stderr[-2000:]
    grid = tf.io.decode_png(
        gcs.client.bucket("models").blob("e/activations.png").download_as_bytes()
    )
    assert grid.shape[0] > 100 and grid.shape[1] > 100 and int(tf.reduce_max(grid)) > 0

    # launch's preflight (google-cloud-storage) and the trainer see the same bucket and step
    r = gcs.run(
        [PY, "-m", "launch", "k8s", "submit", "--name", "exp1", "--image", "i:1", "--workers",
         "2", "--model_dir", "gs://models/e", "--data_dir", "gs://data/syn"]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    latest = tf.train.latest_checkpoint(str(main_job.model_dir / "checkpoints"))
    steps = int(latest.rsplit("-", 1)[1])
    assert f"will resume from step {steps}" in r.stdout and "gs://data/syn: 4 files" in r.stdout
    assert len(applied(stub_kubectl())) == 1


def test_start_checks_exit_1_naming_the_bucket_and_write_nothing(gcs, stub_kubectl):
    # The last call's model_dir bucket lookup finds the endpoint gone (and all after it).
    gcs.go_down_at("/b/unreach")
    try:
        nobucket, nodata, nofiles, unanswered = in_namespace(
            gcs,
            ("trainer", *_flags("gs://nobucket/run")),
            ("trainer", *_flags("gs://models/s", data="gs://nodata/syn")),
            ("trainer", *_flags("gs://models/s", data="gs://data/none-*.tfrecord")),
            ("trainer", *_flags("gs://unreach/run", "--storage_timeout_seconds=3")),
        )
    finally:
        gcs.come_back()
    r = unanswered  # not an unexpected error: the one sentence of an outage, exit 75
    assert r.returncode == 75, r.stderr[-2000:]
    assert (
        "error: Cloud Storage failed looking up the model_dir bucket gs://unreach (retried "
        "within --storage_timeout_seconds=3): libcurl code "
    ) in r.stderr and "Exit 75: rerun when the storage is reachable" in r.stderr
    r = nobucket
    assert r.returncode == 1 and "error: model_dir bucket gs://nobucket does not exist." in r.stderr
    r = gcs.run(
        [PY, "-m", "launch", "k8s", "submit", "--name", "exp1", "--image", "i:1",
         "--model_dir", "gs://nobucket/run"]
    )  # fmt: skip
    assert r.returncode == 1 and "model_dir bucket gs://nobucket does not exist" in r.stderr
    assert applied(stub_kubectl()) == []
    r = nodata
    assert r.returncode == 1 and "error: data bucket gs://nodata does not exist." in r.stderr
    r = nofiles
    assert r.returncode == 1 and "no files match gs://data/none-*.tfrecord" in r.stderr
    assert gcs.names("models", "s") == []


def test_unwritable_model_dir_bucket_exits_1(tmp_path):
    # The real server refusing writes: its filesystem backend's bucket folder made immutable.
    sandbox = Sandbox(backend="filesystem")
    try:
        sandbox.client.create_bucket("locked")
        folder = sandbox.bucket_folder("locked")
        subprocess.run(["chattr", "+i", folder], check=True)
        try:
            r = sandbox.run(
                [PY, "-m", "trainer", "--model_dir=gs://locked/run", "--storage_timeout_seconds=3"]
            )
        finally:
            subprocess.run(["chattr", "-i", folder], check=True)
        assert r.returncode == 1, r.stderr[-2000:]
        assert "error: model_dir bucket gs://locked is not writable" in r.stderr
        assert sandbox.names("locked") == []
    finally:
        sandbox.close()


# ---- reads failing in the middle of an epoch -----------------------------------------------


def test_reads_short_outage_is_absorbed_lasting_one_exits_75(gcs):
    # BIG's one 3 MB shard: the reader fetches it in 1 MB requests, so the second request of
    # an epoch falls in its middle.
    big, shard = BIG, "/data/big/train-00000-of-00001.tfrecord"
    # 20 steps of 64: 2.5 epochs, each reading the shard again after the outage.
    quiet = ["--train_steps=20", "--log_every_steps=1000", "--checkpoint_every_steps=1000"]

    gcs.go_down_at(shard, nth=2)
    proc = start_trainer(gcs, "gs://models/r1", *quiet, "--storage_timeout_seconds=60", data=big)
    _wait_down(gcs, proc, "second read")
    time.sleep(3)
    gcs.come_back()
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "step 20/20" in err
    assert any(shard.split("/")[-1] in d and d.startswith("GET") for d in gcs.dropped())

    gcs.go_down_at(shard, nth=2)
    proc = start_trainer(gcs, "gs://models/r2", *quiet, "--storage_timeout_seconds=6", data=big)
    down = _wait_down(gcs, proc, "second read")
    _, err = proc.communicate()
    waited = time.monotonic() - down
    gcs.come_back()
    assert proc.returncode == 75, err[-3000:]
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "peer" not in message[0], err[-3000:]
    assert "Cloud Storage failed reading gs:/" + shard in message[0]
    assert waited < 60, waited


# ---- several workers ---------------------------------------------------------------------


def test_launch_local_two_workers_write_only_the_chiefs_objects(gcs):
    r = gcs.run(
        [PY, "-m", "launch", "local", "--workers", "2", "--",
         *_flags("gs://models/mw", "--train_steps=4", "--checkpoint_every_steps=2", "--export",
                 "--eval_every_steps=4")]  # the eval: eval/last.json is one of the chief's
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    # the launcher's own Cloud Storage checks, through google-cloud-storage in the namespace,
    # before the workers start (its probe object gone: see the names below)
    preflight = r.stdout.split("[launch] starting", 1)[0].splitlines()
    assert preflight == [
        "[launch] preflight: model_dir gs://models/mw: bucket exists and is writable",
        "[launch] preflight: data gs://data/syn: 4 files",
    ], r.stdout[:2000]
    names = gcs.names("models", "mw/")
    assert "mw/checkpoints/ckpt-4.index" in names and "mw/export/saved_model.pb" in names
    tops = {n.split("/")[1] for n in names if n.count("/") >= 1 and n.split("/")[1]}
    assert tops == {"checkpoints", "config.json", "eval", "export", "tensorboard"}, tops
    assert len([n for n in names if "/tensorboard/events" in n]) == 1  # the chief's only
