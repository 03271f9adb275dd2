"""Cloud Storage for real: the CLIs on gs:// paths through TensorFlow's own GCS client, against
fake-gcs-server in a private network namespace (tests/gcs_sandbox.py; conftest's ``gcs``):
the data tools, export, predict, inspect and launch's preflight, the start checks that name
a bucket, and a `launch local` group. Storage faults during training: test_gcs_faults.py.

Every command under test runs inside the namespace; the test reads and writes the same
buckets with google-cloud-storage. Commands whose process is the subject (exit codes of a
process, a group of workers) run as processes of their own; the others share one process in
the namespace (tests/runs.py's ``in_namespace``).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.gcs_sandbox import Sandbox
from tests.kube import applied
from tests.runs import gcs_flags, in_namespace
from trainer.data.write.synthetic import make_pair

PY = sys.executable


def _png(pixels) -> bytes:
    return tf.io.encode_png(np.asarray(pixels, np.uint8)).numpy()


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

    local = gcs.download("data", "conv/", dest)
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


# ---- exporting, predicting, inspecting, preflight ------------------------------------------


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
        ("trainer", *gcs_flags("gs://models/e", "--mode=export", "--export_dir=gs://models/e/again")),
        ("trainer.predict", "--saved_model=gs://models/e/again", *pair),
        ("trainer.inspect", "--model_dir=gs://models/e", "--output=gs://models/e/activations.png",
         *pair),
        # an export folder holding other files, not a SavedModel: refused, nothing moved
        ("trainer", *gcs_flags("gs://models/e", "--mode=export", "--export_dir=gs://raw/pair")),
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
    again = gcs.download("models", "e/again/", tmp_path / "again")
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
            ("trainer", *gcs_flags("gs://nobucket/run")),
            ("trainer", *gcs_flags("gs://models/s", data="gs://nodata/syn")),
            ("trainer", *gcs_flags("gs://models/s", data="gs://data/none-*.tfrecord")),
            ("trainer", *gcs_flags("gs://unreach/run", "--storage_timeout_seconds=3")),
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


# ---- several workers ---------------------------------------------------------------------


def test_launch_local_two_workers_write_only_the_chiefs_objects(gcs):
    r = gcs.run(
        [PY, "-m", "launch", "local", "--workers", "2", "--",
         *gcs_flags("gs://models/mw", "--train_steps=4", "--checkpoint_every_steps=2", "--export",
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
