"""The trainer end to end on tiny real TFRecords: the main job, exact resume, precision and XLA,
profiling, bad flags and folders. Runs go through the real command line in this process
(tests.runs.train_here: flag parsing, config, resolve, train_and_evaluate); a real process only
where the process is the subject (the main job, logical devices made before TensorFlow starts).
A run's faults are in test_faults.py, its export in test_export.py, a process's start in
test_startup.py."""

import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.runs import read_checkpoint, run_trainer, small_flags, train_here
from trainer.config import ModelConfig
from trainer.data.write.synthetic import write_synthetic
from trainer.run.programs import build_model


def test_main_job_without_flags_learns_and_exports(main_job):
    """The README's main command: no flags at all, built-in synthetic data."""
    from trainer import flags as trainer_flags

    r = main_job.result
    assert r.returncode == 0, r.stderr[-3000:]
    # What a person sees: no TensorFlow start-up lines, progress as "HH:MM:SS.mmm step ...".
    assert not re.search(r"absl::InitializeLog|cuInit|oneDNN|cuda drivers", r.stderr), r.stderr
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} step 300/300 loss [\d.]+ ", r.stderr, re.M)
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line) for line in r.stderr.splitlines())
    assert "strategy one_device: 1 replica, worker 0 of 1" in r.stderr
    assert "global batch 64 over 1 replica, " in r.stderr
    acc = float(re.search(r"eval: accuracy ([\d.]+)", r.stdout).group(1))
    assert acc >= 0.9, r.stdout
    assert (main_job.export_dir / "saved_model.pb").exists()
    assert "exported SavedModel: runs/default/export" in r.stdout
    steps = trainer_flags.FLAGS["train_steps"].default
    latest = tf.train.latest_checkpoint(str(main_job.model_dir / "checkpoints"))
    assert latest.endswith(f"-{steps}")
    # the last eval as JSON (what `launch k8s status` shows): the final step's printed figures
    last = json.loads((main_job.model_dir / "eval/last.json").read_text())
    assert last["step"] == steps and f"accuracy {last['accuracy']:.4f}" in r.stdout


def test_exact_resume_is_bitwise_equal(small_data, tmp_path):
    # Loops of 3 steps, cut at the checkpoints (4, 8): the straight run's loops are 0-3, 3-4,
    # 4-7, 7-8; the interrupted run stops at 5, in the middle of its 4-7, and resumes 5-8.
    common = ["--deterministic", "--checkpoint_every_steps=4", "--augment", "--steps_per_loop=3"]
    common += ["--log_every_steps=100", "--optimizer=adam"]  # Adam's slots and bias correction
    straight = train_here(*small_flags(small_data, tmp_path / "a", "--train_steps=8", *common))
    assert straight.returncode == 0, straight.stderr[-3000:]
    half = train_here(*small_flags(small_data, tmp_path / "b", "--train_steps=5", *common))
    assert half.returncode == 0, half.stderr[-3000:]
    rest = train_here(*small_flags(small_data, tmp_path / "b", "--train_steps=8", *common))
    assert rest.returncode == 0 and "at step 5" in rest.stderr, rest.stderr[-3000:]
    assert "exported SavedModel" not in rest.stdout and not (tmp_path / "b/export").exists()
    a = read_checkpoint(str(tmp_path / "a/checkpoints/ckpt-8"))
    b = read_checkpoint(str(tmp_path / "b/checkpoints/ckpt-8"))
    assert a.keys() == b.keys() and len(a) > 40  # model, optimizer slots, step, position
    assert any("optimizer" in k for k in a)
    for key in a:
        if key.startswith("save_counter"):  # how many saves: 4, 8 against 4, 5, 8
            continue
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    five = read_checkpoint(str(tmp_path / "b/checkpoints/ckpt-5"))
    assert any(not np.array_equal(five[k], a[k]) for k in a)  # steps 6..8 did change things


def test_a_checkpoint_saved_before_the_size_was_resumes(small_data, tmp_path):
    """Checkpoints of earlier versions hold no "size" (trainer.run.resize): they still
    resume, with their step, optimizer and pairs seen, and say nothing of a resize."""
    from trainer.config import ModelConfig, RecipeConfig
    from trainer.run.programs import build_model_and_optimizer

    new = train_here(*small_flags(small_data, tmp_path / "new", "--train_steps=2"))
    assert new.returncode == 0, new.stderr[-3000:]
    model_cfg = ModelConfig.from_json_dict(json.loads((tmp_path / "new/config.json").read_text()))
    model, optimizer = build_model_and_optimizer(
        tf.distribute.get_strategy(), model_cfg, 2e-3, RecipeConfig(optimizer="sgd")
    )
    step, seen = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    old = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, examples_seen=seen)
    old.restore(str(tmp_path / "new/checkpoints/ckpt-2")).expect_partial()
    tf.train.CheckpointManager(
        old, str(tmp_path / "old/checkpoints"), 1, checkpoint_name="ckpt"
    ).save(2)
    shutil.copy(tmp_path / "new/config.json", tmp_path / "old/config.json")
    assert "size/.ATTRIBUTES/VARIABLE_VALUE" not in read_checkpoint(
        str(tmp_path / "old/checkpoints/ckpt-2")
    )

    rest = train_here(*small_flags(small_data, tmp_path / "old", "--train_steps=3"))
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "at step 2 (32 pairs seen, the optimizer at update 2)" in rest.stderr
    assert "resumed on" not in rest.stderr and "a step now takes" not in rest.stderr
    saved = read_checkpoint(str(tmp_path / "old/checkpoints/ckpt-3"))
    assert saved["size/.ATTRIBUTES/VARIABLE_VALUE"].tolist() == [1, 16]
    assert saved["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"] == 3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--global_batch_size=-4"], "--global_batch_size=-4 is invalid"),
        (["--strategy=turbo"], "--strategy=turbo is invalid: value should be one of <auto|"),
        (["--learning_rate=0"], "--learning_rate=0.0 is invalid"),
        (["--activation=wobble"], "activation='wobble'"),
        (["--profile_steps=9,3"], "--profile_steps=9,3 is invalid"),
        (["--intra_op_threads=-1"], "--intra_op_threads=-1 is invalid"),
        (["--steps_per_loop=many"], "--steps_per_loop=many is invalid"),
        (["--checkpoint_step=3"], "--checkpoint_step=3 applies to --mode=evaluate only"),
    ],
)
def test_bad_flags_exit_1_and_write_nothing(small_data, tmp_path, flags, message):
    model_dir = tmp_path / "never"
    r = train_here(f"--data_dir={small_data}", f"--model_dir={model_dir}", *flags)
    assert r.returncode == 1
    assert message in r.stderr, r.stderr[-2000:]
    assert not model_dir.exists()


def test_a_batch_that_does_not_divide_over_replicas_exits_1_and_writes_nothing(
    small_data, tmp_path
):
    """A process of its own: logical CPU devices can only be made before TensorFlow starts."""
    model_dir = tmp_path / "never"
    r = run_trainer(
        f"--data_dir={small_data}",
        f"--model_dir={model_dir}",
        "--strategy=mirrored",
        "--devices_per_worker=2",
        "--global_batch_size=5",
    )
    assert r.returncode == 1
    assert "--global_batch_size=5 does not divide over 2 replicas" in r.stderr, r.stderr[-2000:]
    assert not model_dir.exists()


def test_a_destination_that_is_a_file_is_refused_before_any_training(small_data, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a user's file")
    r = train_here(f"--data_dir={small_data}", f"--model_dir={taken}")
    assert r.returncode == 1 and f"error: model_dir {taken} is a file: give a folder." in r.stderr
    r = train_here(f"--data_dir={small_data}", f"--model_dir={taken}/run")
    assert r.returncode == 1 and f"model_dir {taken}/run cannot be made: {taken} is a file" in (
        r.stderr
    )
    # The export folder is checked before training, not when the export fails at the end.
    model_dir = tmp_path / "m"
    r = train_here(f"--data_dir={small_data}", f"--model_dir={model_dir}", f"--export_dir={taken}")
    assert r.returncode == 1 and f"export_dir {taken} is a file" in r.stderr, r.stderr[-2000:]
    assert not model_dir.exists() and taken.read_text() == "a user's file"
    assert not re.search(r"step \d+/", r.stderr)  # no training step ran


def test_missing_data_dir(tmp_path):
    model_dir = tmp_path / "never"
    r = train_here(f"--data_dir={tmp_path / 'nope'}", f"--model_dir={model_dir}")
    assert r.returncode == 1
    assert f"data_dir {tmp_path / 'nope'} does not exist" in r.stderr
    assert not model_dir.exists()


def test_corrupt_training_record_is_named(small_data, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(small_data, data)
    shard = data / "train-00002-of-00004.tfrecord"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 8] = b"\xff" * 8
    shard.write_bytes(bytes(raw))
    r = train_here(*small_flags(str(data), tmp_path / "m", "--train_steps=40"))
    assert r.returncode == 1
    assert f"bad training data: {shard} record " in r.stderr, r.stderr[-2000:]


def test_ram_filesystem_paths_in_process(tmp_path):
    """data_dir, model_dir and export_dir on a non-local TF filesystem (as gs:// would be)."""
    from trainer.config import Config, DataConfig, RuntimeConfig, TrainConfig
    from trainer.run.main import train_and_evaluate

    write_synthetic("ram://d", num_train=64, num_eval=16, image_size=16, num_shards=2)
    cfg = Config(
        export_dir="ram://m/export",
        data=DataConfig(data_dir="ram://d", shuffle_buffer=64),
        train=TrainConfig(
            model_dir="ram://m",
            global_batch_size=16,
            train_steps=3,
            learning_rate=1e-3,
            jit_compile="false",
            checkpoint_every_steps=2,
            keep_checkpoints=2,
            eval_every_steps=100,
            log_every_steps=1,
        ),
        runtime=RuntimeConfig(strategy="one_device"),
    )
    assert train_and_evaluate(cfg) == 0
    assert tf.io.gfile.exists("ram://m/config.json")
    assert tf.train.latest_checkpoint("ram://m/checkpoints").endswith("ckpt-3")
    loaded = tf.saved_model.load("ram://m/export")
    out = loaded.signatures["serving_float"](
        input1=tf.zeros([1, 16, 16, 3]), input2=tf.zeros([1, 16, 16, 3])
    )
    assert 0.0 < float(out["probability"][0, 0]) < 1.0
    assert not (tmp_path / "ram:").exists() and not os.path.exists("ram:")


@pytest.mark.parametrize("precision, jit", [("mixed_bfloat16", "true"), ("mixed_float16", "false")])
def test_mixed_precision_and_xla_train(small_data, tmp_path, precision, jit):
    r = train_here(
        *small_flags(
            small_data,
            tmp_path / "m",
            "--train_steps=4",
            f"--precision={precision}",
            f"--jit_compile={jit}",
            "--optimizer=adam",  # the default users train with, under each precision
        )
    )
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"step \d+/4 loss ([\d.]+)", r.stderr)]
    assert len(losses) == 4 and all(np.isfinite(losses))
    ckpt = read_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "m/checkpoints")))
    # Keras 3 variables are saved once, under the optimizer's list of trainable variables.
    weights = [v for k, v in ckpt.items() if k.startswith("optimizer/_trainable_variables/")]
    assert len(weights) == 30 and all(v.dtype == np.float32 for v in weights)  # float32 masters
    if precision == "mixed_float16":
        assert "optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE" in ckpt  # loss scale saved
    saved = json.loads((tmp_path / "m/config.json").read_text())
    assert saved["precision"] == precision
    if precision == "mixed_float16":  # --mode=export takes the model flags from config.json
        out = tmp_path / "export"
        r = train_here(f"--model_dir={tmp_path / 'm'}", "--mode=export", f"--export_dir={out}")
        assert r.returncode == 0, r.stderr[-3000:]
        assert "data none (the model of config.json)" in r.stderr  # no data read, none made
        model = build_model(ModelConfig.from_json_dict(saved))
        prefix = tf.train.latest_checkpoint(str(tmp_path / "m/checkpoints"))
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
        x = tf.random.uniform([2, 16, 16, 3], seed=1)
        want = model({"input1": x, "input2": x})
        served = tf.saved_model.load(str(out)).signatures["serving_float"](input1=x, input2=x)
        np.testing.assert_allclose(served["probability"], want, atol=1e-3)  # float16 math
        # a model flag given that differs, or data of another size: what to do, in words
        m = tmp_path / "m"
        r = train_here(f"--model_dir={m}", "--mode=export", "--precision=float32")
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == (
            f"error: {m} holds a model with other settings (precision: saved "
            "'mixed_float16', now 'float32'): drop --precision (the model flags not given "
            "come from config.json)."
        ), r.stderr[-2000:]
        other = tmp_path / "other"
        write_synthetic(str(other), num_train=16, num_eval=16, image_size=24, num_shards=1)
        r = train_here(f"--model_dir={m}", "--mode=evaluate", f"--data_dir={other}")
        assert r.returncode == 1 and r.stderr.strip().endswith(
            "now [24, 24]): give a --data_dir of the saved image size and channels."
        ), r.stderr[-2000:]
        keras.mixed_precision.set_global_policy("float32")


def test_profile_steps_and_input_wait(small_data, tmp_path):
    r = train_here(
        *small_flags(
            small_data,
            tmp_path / "m",
            "--train_steps=6",
            "--profile_steps=2,4",
            "--steps_per_loop=4",  # loops 0-2, 2-3, 3-4, 4-6: cut at the profile bounds, logs
            "--log_every_steps=3",
        )
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "profile of steps 2..4 written" in r.stderr
    assert list((tmp_path / "m/tensorboard/plugins/profile").glob("*/*.xplane.pb"))
    waits = [int(w) for w in re.findall(r"input wait (\d+)%", r.stderr)]
    assert len(waits) == 2 and all(0 <= w <= 100 for w in waits)


def test_a_model_of_another_size_is_refused_before_the_built_in_set_is_made(tmp_path):
    # A run trained on the user's 8x8 pairs, then run again without --data_dir: the built-in
    # set (16x16) cannot feed that model, and is not generated just to be refused.
    data, model_dir, cache = str(tmp_path / "d"), tmp_path / "m", tmp_path / "cache"
    write_synthetic(data, num_train=32, num_eval=16, image_size=8, num_shards=1)
    r = train_here(*small_flags(data, model_dir, "--train_steps=1"))
    assert r.returncode == 0, r.stderr[-2000:]
    before = sorted(os.listdir(model_dir / "checkpoints"))
    said = (
        f"error: {model_dir} holds a model of 8x8 images with 3 channels, and without "
        "--data_dir the run reads the built-in set (16x16, 3 channels): give the --data_dir "
        "of the model's data."
    )
    for mode in ("evaluate", "train"):
        flags = (f"--model_dir={model_dir}", f"--mode={mode}", "--train_steps=2", "--noexport")
        r = train_here(*flags, env={"XDG_CACHE_HOME": str(cache)})
        assert r.returncode == 1, r.stderr[-2000:]
        assert r.stderr.strip().splitlines()[-1] == said, mode
        assert not cache.exists(), mode
        assert sorted(os.listdir(model_dir / "checkpoints")) == before, mode


def test_training_and_eval_trace_without_autograph(small_data, tmp_path, monkeypatch):
    """Every function the run traces for training and evaluation (the tf.data maps, the
    loop, the steps) is traced as written, since AutoGraph's source transformation only
    costs CPU there (trainer/common/graph.py). AutoGraph's own transpiler is watched (it
    still runs): any of this package's functions it converts is named."""
    from tensorflow.python.autograph.impl import api

    converted = []
    transform = api._TRANSPILER.transform

    def watched(entity, program_ctx):
        converted.append(f"{getattr(entity, '__module__', '?')}.{entity.__qualname__}")
        return transform(entity, program_ctx)

    monkeypatch.setattr(api._TRANSPILER, "transform", watched)
    r = train_here(
        *small_flags(small_data, tmp_path / "m", "--train_steps=2", "--eval_every_steps=1")
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("eval at step") == 2  # the eval path ran (twice: a fresh dataset each)
    ours = [name for name in converted if name.startswith(("trainer.", "tests."))]
    assert ours == [], ours
