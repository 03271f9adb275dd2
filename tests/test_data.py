"""Paired TFRecords: round trip, order, sharding, resume position, cache, the synthetic set, the
CLI (trainer-data). Bad data is in test_bad_data.py."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import datagen
from trainer.config import DataConfig
from trainer.data import schema
from trainer.data.read import pipeline, verify
from trainer.data.read.source import open_source
from trainer.data.write import synthetic


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_round_trip_pixels_and_labels(tmp_path, encoding):
    datagen.write_pairs(str(tmp_path), 10, 3, encoding)
    source = open_source(str(tmp_path))
    assert source.counts == (3, 3, 4) and source.spec.encoding == encoding
    seen = []
    for inputs, label in pipeline.eval_dataset(source, 4):
        for a, b, y in zip(inputs["input1"].numpy(), inputs["input2"].numpy(), label.numpy()):
            i = datagen.pair_id(a)
            want_a, want_b = datagen.pair_pixels(i)
            tol = 0 if encoding != "jpeg" else 8 / 255  # JPEG is lossy
            np.testing.assert_allclose(a, want_a / 255.0, atol=tol + 1e-6)
            np.testing.assert_allclose(b, want_b / 255.0, atol=tol + 1e-6)
            assert y == i % 2
            seen.append(i)
    assert sorted(seen) == list(range(10))  # every pair once


def test_same_seed_same_order_and_epochs_differ(tmp_path):
    datagen.write_pairs(str(tmp_path), 48, 4)
    source = open_source(str(tmp_path))
    cfg = DataConfig(seed=5, shuffle_buffer=16)
    first = datagen.ids_of(pipeline.train_dataset(source, cfg, batch_size=8)[0], 12)
    again = datagen.ids_of(pipeline.train_dataset(source, cfg, batch_size=8)[0], 12)
    other = datagen.ids_of(
        pipeline.train_dataset(source, DataConfig(seed=6, shuffle_buffer=16), batch_size=8)[0], 12
    )
    assert first == again
    assert first != other
    epoch0, epoch1 = sum(first[:6], []), sum(first[6:], [])
    assert sorted(epoch0) == sorted(epoch1) == list(range(48))
    assert epoch0 != epoch1  # reshuffled each epoch


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("num_files", [6, 2])  # file-level, then record-level sharding
def test_sharding_covers_every_record_once_per_epoch(tmp_path, workers, num_files):
    datagen.write_pairs(str(tmp_path), 30, num_files)
    source = open_source(str(tmp_path))
    cfg = DataConfig(seed=3)
    for epoch in range(2):
        seen = []
        for w in range(workers):
            shard = pipeline.worker_shard(source, w, workers)
            assert shard.stride == (1 if num_files >= workers else workers)
            n = shard.records_per_epoch
            ds, _ = pipeline.train_dataset(
                source, cfg, batch_size=1, worker_index=w, num_workers=workers, start_step=epoch * n
            )
            seen += sum(datagen.ids_of(ds, n), [])
        assert sorted(seen) == list(range(30)), f"epoch {epoch}"


def test_record_sharding_is_named_only_where_a_split_has_fewer_files_than_workers(tmp_path):
    datagen.write_pairs(str(tmp_path / "one"), 6, 1)
    datagen.write_pairs(str(tmp_path / "three"), 6, 3)
    one, three = open_source(str(tmp_path / "one")), open_source(str(tmp_path / "three"))
    assert pipeline.record_sharding_warning(one, 2, "training") == (
        "1 training file for 2 workers: sharding by record (every worker reads every file); "
        "write at least 2 shards to read less."
    )
    assert pipeline.record_sharding_warning(three, 4, "eval").startswith("3 eval files for 4 ")
    assert pipeline.record_sharding_warning(one, 1, "training") is None
    assert pipeline.record_sharding_warning(three, 3, "eval") is None


@pytest.mark.parametrize("options", [{}, {"augment": True}, {"cache": True}])
def test_resume_at_step_k_matches_uninterrupted(tmp_path, options):
    datagen.write_pairs(str(tmp_path), 40, 4)
    source = open_source(str(tmp_path))
    cfg = DataConfig(seed=11, shuffle_buffer=32, **options)

    def batches(start, count):
        ds, _ = pipeline.train_dataset(
            source, cfg, batch_size=6, worker_index=1, num_workers=2, start_step=start
        )
        return [(x["input1"].numpy(), x["input2"].numpy(), y.numpy()) for x, y in ds.take(count)]

    straight = batches(0, 12)  # 20 records per worker: crosses three epoch boundaries
    for k in (1, 3, 7):
        resumed = batches(k, 12 - k)
        for (a1, b1, y1), (a2, b2, y2) in zip(straight[k:], resumed):
            np.testing.assert_array_equal(a1, a2)
            np.testing.assert_array_equal(b1, b2)
            np.testing.assert_array_equal(y1, y2)


def test_a_workers_pairs_do_not_depend_on_its_batch_and_start_anywhere(tmp_path):
    """The resize contract's data side: a worker's record order is one sequence whatever
    its per-replica batch (so GPUs per worker may change), entered at any pair count; and
    next_pair_ids, which a resized run logs, names exactly the pairs the stream decodes."""
    datagen.write_pairs(str(tmp_path), 40, 4)
    source = open_source(str(tmp_path))
    cfg = DataConfig(seed=4, shuffle_buffer=16)

    def pairs(batch, start_pairs, count):
        ds, _ = pipeline.train_dataset(
            source, cfg, batch_size=batch, worker_index=0, num_workers=3, start_pairs=start_pairs
        )
        return sum(datagen.ids_of(ds, count // batch), [])

    straight = pairs(1, 0, 60)  # 20 pairs a worker-epoch here: three epochs
    assert pairs(4, 0, 60) == pairs(3, 0, 60) == straight
    for start in (5, 20, 33):  # mid-epoch, on an epoch boundary, in a later epoch
        assert pairs(3, start, 24) == straight[start : start + 24]
        named = pipeline.next_pair_ids(
            source, cfg, worker_index=0, num_workers=3, start_pairs=start, count=9
        )
        assert [int(i) for i in named] == straight[start : start + 9]
    assert (
        pipeline.next_pair_ids(
            source, DataConfig(cache=True), worker_index=0, num_workers=1, start_pairs=0, count=2
        )
        is None
    )


def test_augmentation_is_identical_for_both_images(tmp_path):
    size = datagen.SIZE
    rec = []
    for i in range(16):
        img = np.random.default_rng(i).integers(0, 255, (size, size, 3), np.uint8)
        rec.append(schema.encode_pair(img.tobytes(), img.tobytes(), 0, size, size, 3, "raw"))
    datagen.write_pairs(str(tmp_path), 16, 2, records=rec)
    source = open_source(str(tmp_path))
    plain, _ = pipeline.train_dataset(source, DataConfig(seed=2), batch_size=16)
    aug, _ = pipeline.train_dataset(source, DataConfig(seed=2, augment=True), batch_size=16)
    (xp, _), (xa, _) = next(iter(plain)), next(iter(aug))
    np.testing.assert_array_equal(xa["input1"], xa["input2"])  # same transform on both
    assert not np.allclose(xa["input1"], xp["input1"])  # and it did transform


def test_cache_reads_files_once(tmp_path):
    files = datagen.write_pairs(str(tmp_path), 12, 2)
    source = open_source(str(tmp_path))
    ds, _ = pipeline.train_dataset(source, DataConfig(seed=1, cache=True), batch_size=4)
    first = datagen.ids_of(ds, 3)  # one whole epoch fills the cache
    it = iter(ds)
    for path in files:
        os.remove(path)
    rest = datagen.ids_of(ds, 9)  # later epochs come from memory, not the deleted files
    assert sorted(sum(rest[3:6], [])) == list(range(12))
    del it, first


# ---- synthetic set ----------------------------------------------------------------------


def test_synthetic_is_deterministic_and_balanced(tmp_path):
    a = synthetic.make_pair(32, 3, seed=4, index=17)
    b = synthetic.make_pair(32, 3, seed=4, index=17)
    c = synthetic.make_pair(32, 3, seed=5, index=17)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    kinds = [synthetic.make_pair(16, 3, 0, i)[3] for i in range(400)]
    labels = [synthetic.make_pair(16, 3, 0, i)[2] for i in range(400)]
    assert 0.4 < np.mean(labels) < 0.6
    assert set(kinds) == set(synthetic.KINDS)


def test_synthetic_follows_means_shape_moves_down():
    for i in range(40):
        a, b, label, kind = synthetic.make_pair(32, 3, 1, i)
        if kind == "different":
            continue
        # The shape's colour is >= 128 in every channel; the noise is < 96.
        rows = [np.nonzero((img >= 128).all(-1).any(1))[0].mean() for img in (a, b)]
        assert (rows[1] > rows[0]) == (label == 1), (i, kind, rows)


# ---- command line -----------------------------------------------------------------------


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "trainer.data", *args], capture_output=True, text=True
    )


def _cli_here(capsys, *args):
    """The same command line in this process (its main() with argv): for the cases after the
    first, which need no fresh process, only the same entry point."""
    from trainer.data.__main__ import main

    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's errors exit
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_the_tools_bound_their_storage_waits_as_the_trainer_does(monkeypatch, capsys):
    """trainer.data (and predict, report, inspect through trainer.common.cli) set the
    trainer's default retry bound before TensorFlow loads; a variable the user set stays."""
    from trainer.config import DEFAULT_STORAGE_TIMEOUT_S
    from trainer.runtime import storage

    for var in storage.RETRY_VARS:
        monkeypatch.setenv(var, "unset")  # recorded, so the test's end restores the absence
        monkeypatch.delenv(var)
    monkeypatch.setenv("GCS_RETRY_CONFIG_MAX_RETRIES", "2")  # the user's own
    assert _cli_here(capsys, "verify", "/nonexistent/set").returncode == 1
    mine = {"GCS_RETRY_CONFIG_MAX_RETRIES": "2"}
    expected = {**storage.retry_env(DEFAULT_STORAGE_TIMEOUT_S, mine), **mine}
    assert {v: os.environ[v] for v in storage.RETRY_VARS} == expected
    assert len(expected) == len(storage.RETRY_VARS) > 3
    from trainer.tools import predict

    for var in set(storage.RETRY_VARS) - set(mine):
        monkeypatch.delenv(var)
    assert predict.main(["trainer.predict", "--saved_model", "/nonexistent/m", "a", "b"]) == 1
    capsys.readouterr()
    assert {v: os.environ[v] for v in storage.RETRY_VARS} == expected


def test_cli_synthetic_then_verify_and_a_bad_folder(tmp_path, capsys):
    out = tmp_path / "syn"
    r = _cli(
        "synthetic",
        "--output_dir",
        str(out),
        "--num_train",
        "40",
        "--num_eval",
        "8",
        "--image_size",
        "16",
        "--encoding",
        "png",
        "--num_shards",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert f"wrote 40 training and 8 eval pairs (png) to {out}" in r.stdout
    info = schema.read_info(str(out))
    assert info.counts == {"train": 40, "eval": 8} and info.height == 16
    r = _cli_here(capsys, "verify", str(out))
    assert r.returncode == 0 and "total: 4 files, 48 records" in r.stdout
    datagen.corrupt(str(out / "train-00001-of-00002.tfrecord"), "truncated")
    r = _cli_here(capsys, "verify", str(out))
    assert r.returncode == 1
    assert "first bad record: " + str(out / "train-00001-of-00002.tfrecord") + " record" in r.stdout
    r = _cli_here(capsys, "synthetic", "--output_dir", str(out), "--num_train", "4")
    assert r.returncode == 1 and "already holds a dataset" in r.stderr
    r = _cli_here(capsys, "synthetic", "--output_dir", str(tmp_path / "x"), "--num_train", "lots")
    assert r.returncode == 1 and "invalid int value: 'lots'" in r.stderr
    assert not (tmp_path / "x").exists()


def test_a_label_the_binary_model_cannot_learn_is_bad_whatever_dataset_json_says(tmp_path):
    """An older converter wrote a class name for every label it saw: 0/1/2. The model is
    binary, so verify and the reader both name the record with label 2."""
    records = datagen.good_records(8, encoding="raw")
    records[3] = schema.encode_pair(b"\0" * 192, b"\0" * 192, 2, 8, 8, 3, "raw")
    (path,) = datagen.write_pairs(str(tmp_path), 8, 1, encoding="raw", records=records)
    info = schema.read_info(str(tmp_path))
    schema.write_info(str(tmp_path), dataclasses.replace(info, label_names=("0", "1", "2")))
    source = open_source(str(tmp_path))
    assert source.spec.num_classes == 2
    problem = verify.locate_first_bad(source)
    assert problem.startswith(f"{path} record 3: ") and "label is outside [0, 1]" in problem
