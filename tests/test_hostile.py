"""Hostile inputs at every entry point (issue 23): the trainer, trainer-data, predict, report,
and inspect, each case asserting the exit code, one error sentence as the last line of stderr,
no traceback, and nothing written where the command would write (tests.runs.refused).

In-process through each command line's main function (tests/inprocess.py), since the
process is not the subject. The launcher, real processes and --help are in
test_hostile_cli.py.
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

from tests.inprocess import run_entry
from tests.runs import refused, train_here


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny dataset (2 shards per split); cases copy it and break the copy."""
    from trainer.data.write.synthetic import write_synthetic

    path = str(tmp_path_factory.mktemp("hostile") / "syn")
    write_synthetic(path, num_train=64, num_eval=16, image_size=16, num_shards=2, seed=9)
    return path


def broken(data, tmp_path, how):
    """A copy of ``data`` broken by ``how(folder)``."""
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    how(folder)
    return str(folder)


def cut(name):
    def how(folder):
        path = folder / name
        os.truncate(path, os.path.getsize(path) * 3 // 4 - 5)  # inside a record

    return how


def edit_info(**changes):
    def how(folder):
        info = json.loads((folder / "dataset.json").read_text())
        for key, value in changes.items():
            if isinstance(value, dict):
                info[key].update(value)
            else:
                info[key] = value
        (folder / "dataset.json").write_text(json.dumps(info))

    return how


def flip_in_record(name, index):
    """One byte flipped inside record ``index``'s image data: the frames stay whole, so only
    reading the record (its CRC) shows the damage, mid-run."""

    def how(folder):
        path = folder / name
        data = bytearray(path.read_bytes())
        offset = 0
        for _ in range(index):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            offset += 16 + length
        data[offset + 12 + 40] ^= 0xFF
        path.write_bytes(bytes(data))

    return how


def trainer(data_dir, model_dir, *flags):
    return train_here(
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--train_steps=4",
        "--global_batch_size=8",
        "--eval_every_steps=0",
        "--optimizer=sgd",  # not these runs' subject, and cheaper to trace (tests.runs.small_flags)
        *flags,
    )


@pytest.mark.parametrize(
    "flag, says",
    [
        ("--train_steps=abc", "--train_steps=abc is invalid: it must be a whole number"),
        ("--seed=-1", "--seed=-1 is invalid: use 0 to 4294967295"),
        ("--learning_rate=inf", "--learning_rate=inf is invalid: it must be a finite number"),
        ("--lambda_regularization=nan", "--lambda_regularization=nan is invalid"),
        ("--train_steps=100000000000000000000", "must fit in 64 bits"),
        ("--eval_poll_seconds=0", "--eval_poll_seconds=0.0 is invalid"),
        ("--peer_timeout_seconds=-1", "--peer_timeout_seconds=-1 is invalid"),
        ("--steps_per_loop=x", "--steps_per_loop=x is invalid"),
        ("--profile_steps=5,2", "--profile_steps=5,2 is invalid"),
        ("--activation=nope", "activation='nope'"),
        ("--strategy=turbo", "--strategy=turbo is invalid"),
        ("--no_such_flag=1", "no_such_flag"),
        ("stray", "unexpected arguments ['stray']"),
    ],
)
def test_trainer_bad_values(data, tmp_path, flag, says):
    refused(trainer(data, tmp_path / "m", flag), says, nothing_at=[tmp_path / "m"])


@pytest.mark.parametrize(
    "how, says",
    [
        (cut("train-00001-of-00002.tfrecord"), "train-00001-of-00002.tfrecord is cut off"),
        (cut("eval-00000-of-00002.tfrecord"), "eval-00000-of-00002.tfrecord is cut off"),
        (lambda f: (f / "dataset.json").write_text("{"), "dataset.json is not valid JSON"),
        (edit_info(counts={"train": 65}), "says 65 train pairs but its files add up to 64"),
        (edit_info(height=32), "says 32x16x3 raw images but"),
        (edit_info(channels=4), '"channels" is 4, it must be 1 or 3'),
        (
            edit_info(files={"train-00000-of-00002.tfrecord": 31}, counts={"train": 63}),
            "train-00000-of-00002.tfrecord holds 32 records but dataset.json says 31",
        ),
        (
            lambda f: shutil.copy(
                f / "train-00000-of-00002.tfrecord", f / "train-00002-of-00003.tfrecord"
            ),
            "train-00002-of-00003.tfrecord is not in dataset.json",
        ),
        (lambda f: os.remove(f / "dataset.json"), "dataset.json does not exist"),
    ],
)
def test_trainer_bad_data_is_refused_before_anything_is_written(data, tmp_path, how, says):
    data_dir = broken(data, tmp_path, how)
    refused(trainer(data_dir, tmp_path / "m"), says, nothing_at=[tmp_path / "m"])
    # --skip_corrupt lets a cut-off training file through (its tail skipped, and said);
    # nothing else: an eval file, or metadata that is not the folder's.
    r = trainer(data_dir, tmp_path / "s", "--skip_corrupt", "--noexport")
    if "train-00001-of-00002.tfrecord is cut off" in says:
        assert "--skip_corrupt" in refused_line(data_dir, tmp_path)
        assert r.returncode == 0 and "onwards: unreadable" in r.stderr, r.stderr[-2000:]
    else:
        refused(r, says, nothing_at=[tmp_path / "s"])
        assert "--skip_corrupt" not in r.stderr


def refused_line(data_dir, tmp_path) -> str:
    return trainer(data_dir, tmp_path / "m").stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda p: p.write_text("x"), "model_dir {p} is a file: give a folder"),
        (lambda p: (p / "config.json").write_text("{oops"), "config.json is not valid JSON"),
        (
            lambda p: (p / "config.json").write_text('{"size": 3}'),
            "config.json is not this trainer's model record (unknown field size)",
        ),
    ],
)
def test_trainer_bad_model_dir(data, tmp_path, make, says):
    model_dir = tmp_path / "m"
    if "is a file" not in says:
        model_dir.mkdir()
    make(model_dir)
    before = sorted(os.listdir(model_dir)) if model_dir.is_dir() else None
    r = trainer(data, model_dir)
    refused(r, says.format(p=model_dir), unchanged=(model_dir, before) if before else None)


def test_trainer_export_dir_that_is_a_file_and_export_without_checkpoint(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = trainer(data, tmp_path / "m", f"--export_dir={blocker}")
    refused(r, f"export_dir {blocker} is a file", nothing_at=[tmp_path / "m"])
    r = trainer(data, tmp_path / "m", "--mode=export")
    refused(r, "has no checkpoint", nothing_at=[tmp_path / "m/export"])


def test_a_model_too_large_for_memory_is_refused_with_its_size(tmp_path):
    from trainer.data import schema
    from trainer.data.write.synthetic import write_synthetic

    # Two records of 2048x2048 zeros as PNG (a few KB each): dataset.json, the records and
    # the flatten head agree; only the first dense layer's size is wrong for this machine.
    folder = tmp_path / "big"
    write_synthetic(str(folder), num_train=2, num_eval=0, image_size=16, num_shards=1)
    import tensorflow as tf

    png = tf.io.encode_png(tf.zeros([2048, 2048, 3], tf.uint8)).numpy()
    record = schema.encode_pair(png, png, 0, 2048, 2048, 3, "png")
    with tf.io.TFRecordWriter(str(folder / "train-00000-of-00001.tfrecord")) as w:
        w.write(record)
        w.write(record)
    edit_info(height=2048, width=2048, encoding="png")(folder)
    r = trainer(str(folder), tmp_path / "m")
    refused(r, "gives the first dense layer 4,194,304,100 parameters", nothing_at=[tmp_path / "m"])
    assert "use --head=global_max" in r.stderr


def test_a_record_damaged_in_the_eval_split_after_training_keeps_the_checkpoint(data, tmp_path):
    data_dir = broken(data, tmp_path, flip_in_record("eval-00001-of-00002.tfrecord", 3))
    r = trainer(data_dir, tmp_path / "m", "--eval_every_steps=4")
    refused(r, "bad eval data: ", nothing_at=[tmp_path / "m/export"])
    last = r.stderr.strip().splitlines()[-1]
    assert "eval-00001-of-00002.tfrecord record 3" in last and "fix or rewrite the file" in last
    assert f"the checkpoint of step 4 is kept in {tmp_path / 'm'}/checkpoints" in last
    assert (tmp_path / "m/checkpoints/ckpt-4.index").exists()


# --- trainer-data --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six 16x16 PNGs in images/ and a folder named like one."""
    import numpy as np
    import tensorflow as tf

    root = tmp_path_factory.mktemp("images")
    (root / "images").mkdir()
    for i in range(6):
        pixels = np.random.RandomState(i).randint(0, 256, (16, 16, 3), dtype=np.uint8)
        tf.io.write_file(str(root / f"images/{i}.png"), tf.io.encode_png(pixels))
    (root / "images/folder.png").mkdir()
    return root


def csv_file(root, name, text, encoding="utf-8"):
    path = root / name
    path.write_bytes(text.encode(encoding))
    return str(path)


@pytest.mark.parametrize(
    "rows, says",
    [
        ("images/0.png,images/1.png,2\n", "line 1: label 2 is not 0 or 1"),
        ("images/0.png,images/1.png,0\nimages/caf\xe9.png,images/2.png,1\n", "line 2 is not UTF-8"),
        ("a,b\n" * 3000, "has 3000 bad lines: line 1: expected 3 fields, found 2"),
        ("a,b,1\nc,d\n", "has 1 bad line: line 2: expected 3 fields, found 2."),
        ("images/0.png,images/9.png,1\n", "relative paths are read from the CSV's folder"),
        ("images/folder.png,images/1.png,1\n", "images/folder.png: a folder, not an image"),
        ("images/0.png,images/1.png,1\nimages/2.png,images/3.png,one\n", "line 2: label 'one'"),
        ("", "holds no pairs"),
    ],
)
def test_converter_bad_csv(images, tmp_path, rows, says):
    encoding = "latin-1" if "\xe9" in rows else "utf-8"
    pairs = csv_file(images, f"pairs-{abs(hash(rows))}.csv", rows, encoding)
    out = tmp_path / "out"
    r = run_entry("trainer.data", ["convert", "--pairs", pairs, "--output_dir", str(out)])
    refused(r, says, nothing_at=[out])
    if "3000" in says:
        assert "; and 2990 more." in r.stderr


def test_data_tools_bad_folders_and_values(images, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    pairs = csv_file(images, "good.csv", "images/0.png,images/1.png,1\n")
    cases = [
        (["convert", "--pairs", pairs, "--output_dir", str(blocker)], "is a file: give a folder"),
        (["convert", "--pairs", pairs, "--output_dir", f"{blocker}/x"], "cannot be made"),
        (["convert", "--pairs", str(tmp_path / "no.csv"), "--output_dir", "o"], "does not exist"),
        (["synthetic", "--output_dir", str(blocker)], "is a file: give a folder"),
        (
            ["synthetic", "--output_dir", str(tmp_path / "s"), "--num_train=0"],
            "num_train=0 is invalid: give at least 1 training pair.",
        ),
        (
            ["synthetic", "--output_dir", str(tmp_path / "s"), "--num_eval=-1"],
            "num_eval=-1 is invalid: give 0 eval pairs or more.",
        ),
        (["verify", str(tmp_path / "absent")], "does not exist"),
        (["verify", str(blocker)], "is a file"),
        (["finalize", str(tmp_path)], "holds no conversion parts"),
        (["convert", "--pairs", pairs], "the following arguments are required: --output_dir"),
    ]
    for args, says in cases:
        refused(run_entry("trainer.data", args), says, nothing_at=[tmp_path / "s", "o"])


# --- predict, report, inspect --------------------------------------------------------------


def test_tools_bad_inputs(main_job, data, images, tmp_path):
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    model, run_dir = str(main_job.export_dir), tmp_path / "run"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (run_dir).mkdir()
    (run_dir / "config.json").write_text("{")
    pairs = csv_file(images, "two.csv", "images/0.png,images/1.png,1\n")
    latin = csv_file(images, "latin.csv", "images/0.png,images/\xe9.png,1\n", "latin-1")
    cut_eval = broken(data, tmp_path, cut("eval-00001-of-00002.tfrecord"))
    out = tmp_path / "scores.csv"
    cases = [
        ("trainer.predict", ["--saved_model", model, "--data_dir", cut_eval, "--output", out],
         "eval-00001-of-00002.tfrecord is cut off"),
        ("trainer.predict", ["--saved_model", model, "--pairs", pairs, "--output", f"{blocker}/s"],
         "the folder of --output"),
        ("trainer.predict", ["--saved_model", model, "--pairs", pairs, "--output", tmp_path],
         "is a folder: give a file name"),
        ("trainer.predict", ["--saved_model", str(tmp_path / "none"), "--pairs", pairs,
                             "--output", out],
         f"--saved_model {tmp_path / 'none'} does not exist."),
        # a run's model_dir for its export: the sentence gives the export's path
        ("trainer.predict", ["--saved_model", main_job.model_dir, images / "images/0.png",
                             images / "images/1.png"],
         f"{main_job.model_dir} is a training run's model_dir, not a SavedModel folder: give its "
         f"export, --saved_model={main_job.model_dir / 'export'}."),
        ("trainer.report", ["--saved_model", run_dir, "--pairs", pairs, "--output_dir",
                            tmp_path / "r"], f"{run_dir} is not a SavedModel folder (no "),
        ("trainer.predict", ["--saved_model", model, "--pairs", latin, "--output", out],
         "line 1 is not UTF-8"),
        ("trainer.predict", ["--saved_model", model, "--pairs", pairs, "--output", out,
                             "--batch_size=0"], "--batch_size"),
        # one pair: the sentence names the file that is not an image
        ("trainer.predict", ["--saved_model", model, images / "images/0.png", blocker],
         f"error: image {blocker}: not a PNG or JPEG file."),
        ("trainer.predict", ["--saved_model", model, tmp_path / "gone.png",
                             images / "images/0.png"], "gone.png: file not found."),
        ("trainer.report", ["--saved_model", model, "--pairs", pairs, "--output_dir", blocker],
         "--output_dir " + str(blocker) + " is a file"),
        ("trainer.report", [], "error: --saved_model and --output_dir are missing; usage: "),
        ("trainer.report", ["--saved_model", model, "--pairs", pairs],
         "error: --output_dir is missing; usage: "),
        ("trainer.report", ["--saved_model", model, "--output_dir", out],
         "error: give --pairs or --data_dir; usage: "),
        ("trainer.inspect", ["--model_dir", run_dir, images / "images/0.png",
                             images / "images/1.png"], "config.json is not valid JSON"),
        ("trainer.inspect", ["--model_dir", main_job.model_dir, "--output", f"{blocker}/g.png",
                             images / "images/0.png", images / "images/1.png"],
         "the folder of --output"),
        # inspect names the image as predict does (was TensorFlow's DecodeImage message)
        ("trainer.inspect", ["--model_dir", main_job.model_dir, "--output", out.with_name("g.png"),
                             images / "images/0.png", blocker],
         f"error: image {blocker}: not a PNG or JPEG file."),
    ]  # fmt: skip
    for entry, args, says in cases:
        refused(
            run_entry(entry, [str(a) for a in args]), says, nothing_at=[out, out.with_name("g.png")]
        )
