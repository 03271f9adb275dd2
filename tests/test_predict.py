"""Batch prediction and the evaluation report on the main job's SavedModel, real PNG files and
TFRecords; figures checked against independent computations. Each command line runs once as a
real process (its exit status and message); the other calls go through the same main function
in this process."""

import csv
import json
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.inprocess import run_in_process
from tests.runs import run_module
from trainer.data.write.synthetic import make_pair
from trainer.tools import predict, report

N = 30


def auc_by_pairs(scores, labels) -> float:
    """Mann-Whitney: the chance a follows pair outscores a different one (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def auc_by_trapezoids(scores, labels) -> float:
    """ROC AUC with the trapezoid rule over every distinct threshold."""
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    tpr = [np.mean(scores[labels == 1] >= t) for t in thresholds]
    fpr = [np.mean(scores[labels == 0] >= t) for t in thresholds]
    return float(np.trapezoid(tpr, fpr))


@pytest.fixture(scope="module")
def pairs(main_job, tmp_path_factory):
    """N labelled synthetic pairs as PNG files and a CSV naming them (relative paths)."""
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    folder = tmp_path_factory.mktemp("pairs")
    (folder / "img").mkdir()
    rows, labels = [], []
    for i in range(N):
        a, b, label, _ = make_pair(16, 3, 42, i)
        for name, image in (("a", a), ("b", b)):
            (folder / f"img/{i}{name}.png").write_bytes(tf.io.encode_png(image).numpy())
        rows.append([f"img/{i}a.png", f"img/{i}b.png", label])
        labels.append(label)
    with open(folder / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image_a", "image_b", "label"], *rows])
    return folder, rows, np.array(labels)


def serving_default(export, folder, rows) -> np.ndarray:
    """The SavedModel's own bytes-in signature on the same files, in this process."""
    fn = tf.saved_model.load(str(export)).signatures["serving_default"]
    a = tf.constant([(folder / r[0]).read_bytes() for r in rows])
    b = tf.constant([(folder / r[1]).read_bytes() for r in rows])
    return fn(input1=a, input2=b)["probability"].numpy()[:, 0]


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_batch_prediction_equals_the_model_in_input_order(main_job, pairs, tmp_path):
    folder, rows, labels = pairs
    out = tmp_path / "scores.csv"
    r = run_in_process(
        predict.main,
        "trainer.predict",
        f"--saved_model={main_job.export_dir}",
        f"--pairs={folder / 'pairs.csv'}",
        f"--output={out}",
        "--batch_size=7",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = read_csv(out)
    assert got[0] == ["image_a", "image_b", "probability", "label"]
    assert [g[:2] for g in got[1:]] == [r_[:2] for r_ in rows]  # input order, paths as given
    assert [int(g[3]) for g in got[1:]] == labels.tolist()
    scores = np.array([float(g[2]) for g in got[1:]])
    expected = serving_default(main_job.export_dir, folder, rows)
    assert np.ptp(expected) > 0.1  # distinct pairs, distinct scores: the comparison bites
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    accuracy = np.mean((expected >= 0.5) == (labels == 1))
    auc = auc_by_pairs(expected, labels)
    assert f"accuracy {accuracy:.4f} auc {auc:.4f} on {N} labelled pairs" in r.stdout
    assert f"scored {N} pairs in " in r.stdout and "pairs/s" in r.stdout


def test_bad_rows_write_nothing_or_are_skipped_exactly(main_job, pairs, tmp_path):
    folder, rows, _ = pairs
    (folder / "img/junk.png").write_bytes(b"this is not an image")
    bad = [list(r) for r in rows[:8]]
    bad[2][0] = "img/missing.png"  # CSV line 3 (no header)
    bad[5][1] = "img/junk.png"  # CSV line 6
    no_label = folder / "bad.csv"
    with open(no_label, "w", newline="") as f:
        csv.writer(f).writerows([r[:2] for r in bad])  # no header, no label column
    out = tmp_path / "scores.csv"
    base = [f"--saved_model={main_job.export_dir}", f"--pairs={no_label}", f"--output={out}"]
    r = run_module("trainer.predict", *base)
    assert r.returncode == 1
    assert "2 of 8 rows have missing or unreadable images, nothing was written" in r.stderr
    assert "line 3 image_a img/missing.png: file not found" in r.stderr
    assert "line 6 image_b img/junk.png: not a PNG or JPEG file" in r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())
    r = run_in_process(predict.main, "trainer.predict", *base, "--skip_bad_rows")
    assert r.returncode == 0, r.stderr[-2000:]
    got = read_csv(out)
    assert got[0] == ["image_a", "image_b", "probability"]
    good = [b[:2] for i, b in enumerate(bad) if i not in (2, 5)]
    assert [g[:2] for g in got[1:]] == good
    expected = serving_default(main_job.export_dir, folder, good)
    np.testing.assert_allclose([float(g[2]) for g in got[1:]], expected, atol=1e-5)
    assert "skipped line 3 image_a" in r.stderr and "skipped line 6 image_b" in r.stderr
    assert re.search(r"^scored 6 pairs in .*, skipped 2 bad rows: ", r.stdout, re.M), r.stdout
    assert "accuracy" not in r.stdout  # no labels, no figures


def test_batch_prediction_of_tfrecords(main_job, tmp_path):
    from trainer.data.read import pipeline
    from trainer.data.read.source import open_source

    data = main_job.root / "cache/inception-pair-trainer"
    (data,) = data.iterdir()
    out = tmp_path / "scores.csv"
    r = run_in_process(
        predict.main,
        "trainer.predict",
        f"--saved_model={main_job.export_dir}",
        f"--data_dir={data}",
        f"--output={out}",
        "--batch_size=100",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = read_csv(out)
    assert got[0] == ["pair_id", "probability", "label"]
    source = open_source(str(data), "eval")
    records = tf.stack(list(pipeline.records_in_order(source)))  # file order
    ids = tf.io.parse_example(records, {"pair_id": tf.io.FixedLenFeature([], tf.string)})
    ids = [x.decode() for x in ids["pair_id"].numpy()]
    images_a, images_b, labels = pipeline.parse_batch(records, source.spec)
    assert [g[0] for g in got[1:]] == ids and len(ids) == source.num_records
    assert [int(g[2]) for g in got[1:]] == labels.numpy().tolist()
    fn = tf.saved_model.load(str(main_job.export_dir)).signatures["serving_float"]
    x1 = tf.cast(images_a, tf.float32) / 255
    x2 = tf.cast(images_b, tf.float32) / 255
    expected = fn(input1=x1, input2=x2)["probability"].numpy()[:, 0]
    np.testing.assert_allclose([float(g[1]) for g in got[1:]], expected, atol=1e-5)


def test_report_figures_and_pictures(main_job, pairs, tmp_path):
    folder, rows, labels = pairs
    out = tmp_path / "report"
    r = run_in_process(
        report.main,
        "trainer.report",
        f"--saved_model={main_job.export_dir}",
        f"--pairs={folder / 'pairs.csv'}",
        f"--output_dir={out}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    scores = serving_default(main_job.export_dir, folder, rows)
    assert m["pairs"] == N and m["positives"] == int(labels.sum())
    assert abs(m["auc"] - auc_by_trapezoids(scores, labels)) < 1e-3
    assert abs(m["auc"] - auc_by_pairs(scores, labels)) < 1e-3
    # The best-F1 threshold is one pair's score as the report computed it; this test's own
    # scores (another batching) may differ from it in the last bits, so it stands here as
    # that pair's score in this test's numbers (a pair at the threshold counts as called).
    best = scores[np.argmin(np.abs(scores - m["at_best_f1"]["threshold"]))]
    assert abs(best - m["at_best_f1"]["threshold"]) < 1e-5
    for key, threshold in (("at_0.5", 0.5), ("at_best_f1", best)):
        called = scores >= threshold
        tp = int(np.sum(called & (labels == 1)))
        assert m[key]["tp"] == tp and m[key]["fp"] == int(np.sum(called & (labels == 0)))
        precision, recall = tp / max(called.sum(), 1), tp / labels.sum()
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        assert m[key]["f1"] == pytest.approx(f1, abs=1e-6)
    # The best-F1 threshold beats every other score used as a threshold.
    f1s = []
    for t in np.unique(scores):
        called = scores >= t
        tp = np.sum(called & (labels == 1))
        f1s.append(2 * tp / (called.sum() + labels.sum()))
    assert m["at_best_f1"]["f1"] == pytest.approx(max(f1s), abs=1e-6)
    for name in ("roc", "precision_recall", "score_histogram", "confusion", "most_wrong"):
        image = tf.io.decode_png((out / f"{name}.png").read_bytes()).numpy()
        height, width = image.shape[:2]
        assert 300 <= width <= 2000 and 250 <= height <= 3000, (name, image.shape)
        assert image.std() > 10, name  # drawn on, not blank
    # Without labels there is nothing to compare: one sentence, nothing written.
    unlabelled = folder / "unlabelled.csv"
    unlabelled.write_text("".join(f"{a},{b}\n" for a, b, _ in rows))
    r = run_module(
        "trainer.report",
        f"--saved_model={main_job.export_dir}",
        f"--pairs={unlabelled}",
        f"--output_dir={tmp_path / 'none'}",
    )
    assert r.returncode == 1 and "has no label column" in r.stderr
    assert not (tmp_path / "none").exists()
