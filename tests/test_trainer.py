"""The trainer end to end: real TFRecords, checkpoints and SavedModels. Runs go through the real
command line in this process (tests.conftest.train_here: flag parsing, config, resolve,
train_and_evaluate); a real process only where the process is the subject (SIGTERM, the main
job, a bad flag answered before TensorFlow loads, a fresh process without this package)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.conftest import run_in_process, run_module, train_here
from trainer.config import ModelConfig
from trainer.data.write.synthetic import make_pair, write_synthetic
from trainer.run.programs import build_model

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_trainer(*flags, cwd=None, env=None):
    """The trainer as a real process (for tests whose subject is the process)."""
    return run_module("trainer", *flags, cwd=cwd, env=env)


def small_flags(data, model_dir, *extra):
    return [
        f"--data_dir={data}",
        f"--model_dir={model_dir}",
        "--global_batch_size=16",
        "--log_every_steps=1",
        # No eval and no export: each has tests of its own, and these runs need checkpoints
        # only (a run's final eval costs ~0.5 CPU-s: its trace and its input pipeline).
        "--eval_every_steps=0",
        "--noexport",
        # SGD: the optimizer is not these runs' subject, and Keras' Adam traces ~40 graph ops
        # per variable: a third of a short run's CPU (1.6 CPU-s against 1.1 with SGD). The
        # tests of the optimizer's state (exact resume, mixed precision, the recipe) ask for
        # theirs; a later flag wins.
        "--optimizer=sgd",
        *extra,
    ]


def read_checkpoint(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {
        k: reader.get_tensor(k)
        for k in reader.get_variable_to_shape_map()
        if not k.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")
    }


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


def _pod_grace_seconds() -> int:
    with open(os.path.join(ROOT, "k8s/base/job.yaml")) as f:
        job = yaml.safe_load(f)
    return job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def _private_mount() -> list[str]:
    """unshare's arguments for a mount namespace of our own (a user namespace too where this
    host allows one, or as root)."""
    tries = [["unshare", "-Urm"], *([["unshare", "-m"]] if os.geteuid() == 0 else [])]
    for argv in tries:
        if subprocess.run([*argv, "true"], capture_output=True).returncode == 0:
            return argv
    pytest.fail(
        "this host makes no private mount namespace (unshare -Urm): the full-disk test needs one"
    )


def test_a_full_disk_is_one_sentence_and_keeps_the_last_checkpoint(small_data, tmp_path):
    """A real full disk: the model_dir on a 4 MB tmpfs in a private mount namespace holds the
    checkpoint of step 2 (2.6 MB, SGD's) but not the one of step 4. The trainer's exit and message
    are the subject: one sentence naming the folder, exit 1, and the rerun's starting point."""
    disk = tmp_path / "disk"
    disk.mkdir()
    flags = small_flags(small_data, disk / "m", "--train_steps=6", "--checkpoint_every_steps=2")
    script = (
        f"mount -t tmpfs -o size=4m tmpfs {disk} && {sys.executable} -m trainer "
        + " ".join(flags)
        + f"; echo rc=$?; ls {disk}/m/checkpoints"
    )
    r = subprocess.run([*_private_mount(), "sh", "-c", script], capture_output=True, text=True)
    assert "rc=1" in r.stdout, r.stdout + r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: the disk is full (No space left on device) writing into {disk}/m/checkpoints/"
        "ckpt-4_temp: free space there, or write elsewhere; a rerun resumes from its "
        "checkpoint of step 2."
    ), r.stderr[-3000:]
    assert "ckpt-2.index" in r.stdout.split() and "ckpt-4.index" not in r.stdout.split()


def test_an_export_into_a_volumes_root_fills_it(main_job, tmp_path):
    """An --export_dir that is a mount point (a volume's root, as on a pod) cannot be swapped
    by a rename (EBUSY): the export written beside it is copied into it instead, and the
    copy beside it removed. Its own tmpfs in a private mount namespace; the process's exit
    is the subject (a rename of a mount point fails only there)."""
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    vol = tmp_path / "vol"
    vol.mkdir()
    script = (
        f"mount -t tmpfs -o size=32m tmpfs {vol} && {sys.executable} -m trainer --mode=export "
        f"--model_dir={main_job.model_dir} --export_dir={vol}; echo rc=$?; ls -A {vol} "
        f"{vol}/variables {tmp_path}"
    )
    r = subprocess.run([*_private_mount(), "sh", "-c", script], capture_output=True, text=True)
    assert "rc=0" in r.stdout, r.stdout + r.stderr[-3000:]
    listed = r.stdout.split()
    assert {"saved_model.pb", "variables", "variables.index"} <= set(listed), listed
    assert ".vol.new" not in listed and ".vol.old" not in listed, listed


@pytest.mark.parametrize("grace", [0, 15], ids=["pod-grace", "spot-budget"])
def test_sigterm_saves_exits_75_and_rerun_continues(small_data, tmp_path, grace):
    # spot-budget: GKE Spot's 15 s, told through TRAINER_GRACE_SECONDS, and the longest loop
    # --steps_per_loop allows (one loop to the end, uncut): the budget must cut it.
    extra = ["--steps_per_loop=100000"] if grace else []
    flags = small_flags(
        small_data,
        tmp_path / "m",
        "--train_steps=100000",
        "--checkpoint_every_steps=100000",
        *extra,
    )
    # A fresh process is where the thread pools can still be set: the pools TensorFlow
    # reports back are auto intra-op 1 on this CPU-only host and the flag's 3.
    flags.append("--inter_op_threads=3")
    env = {**os.environ, "TRAINER_GRACE_SECONDS": str(grace)} if grace else None
    proc = subprocess.Popen(
        [PY, "-m", "trainer", *flags], stderr=subprocess.PIPE, text=True, env=env
    )
    seen = []
    for line in proc.stderr:  # wait for real training progress
        seen.append(line)
        if re.search(r"step [3-9]/100000", line):
            break
    assert any("TensorFlow thread pools: intra-op 1, inter-op 3" in s for s in seen), seen
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, err = proc.communicate()
    # The subject is a time bound: saved and gone within the pod's grace period (Kubernetes
    # sends SIGKILL after it), measured from the signal, not from process start.
    assert time.monotonic() - signalled < (grace or _pod_grace_seconds())
    assert proc.returncode == 75, err[-2000:]
    step = int(re.search(r"stopped by a signal at step (\d+)", err).group(1))
    assert tf.train.latest_checkpoint(str(tmp_path / "m/checkpoints")).endswith(f"-{step}")
    r = train_here(*small_flags(small_data, tmp_path / "m", f"--train_steps={step + 2}"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"at step {step}" in r.stderr and f"step {step + 1}/{step + 2}" in r.stderr


def _copy_of_main_job(main_job, tmp_path):
    """A private copy of the main job's model_dir: (path, its last step, the save before)."""
    from trainer import flags as trainer_flags

    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    model_dir = tmp_path / "m"
    shutil.copytree(main_job.model_dir, model_dir)
    defaults = trainer_flags.FLAGS
    steps, every = (defaults[f].default for f in ("train_steps", "checkpoint_every_steps"))
    return model_dir, steps, (steps - 1) // every * every  # the last save before the end


def test_truncated_newest_checkpoint_and_changed_flags(main_job, tmp_path):
    model_dir, last, previous = _copy_of_main_job(main_job, tmp_path)
    (data,) = (model_dir / "checkpoints").glob(f"ckpt-{last}.data-*")
    data.write_bytes(data.read_bytes()[:1000])  # cut off mid-write
    r = train_here(f"--model_dir={model_dir}", f"--train_steps={previous + 1}", env=main_job.env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"ckpt-{last} is unreadable" in r.stderr, r.stderr[-2000:]
    assert f"ckpt-{previous} at step {previous}" in r.stderr
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith(f"-{previous + 1}")
    before = sorted(os.listdir(model_dir / "checkpoints"))
    r = train_here(
        f"--model_dir={model_dir}", f"--train_steps={last}", "--activation=relu", env=main_job.env
    )
    assert r.returncode == 1
    assert "activation: saved 'elu', now 'relu'" in r.stderr
    assert sorted(os.listdir(model_dir / "checkpoints")) == before  # nothing written


def _png(image):
    return tf.io.encode_png(image).numpy()


def _served_without_this_package(export, folder, size: int) -> dict:
    """In a fresh process that cannot import this package (only TensorFlow and the
    SavedModel): serving_default's probabilities for the PNG pairs a<i>.png, b<i>.png (i < 4)
    in ``folder``, the embedding's shape, the signature names, and then TensorFlow's own
    ``saved_model_cli show --all`` on it (its console script's main: one TensorFlow start
    for both clients)."""
    script = (
        # The collector paused while TensorFlow loads: 1.3 CPU-s less (trainer.common.console)
        "import gc, sys, json; sys.modules['trainer'] = None; gc.disable()\n"
        "import tensorflow as tf\n"
        "gc.enable()\n"
        f"m = tf.saved_model.load({str(export)!r})\n"
        "f = m.signatures['serving_default']\n"
        f"read = lambda p: open({str(folder)!r} + '/' + p, 'rb').read()\n"
        "a = tf.constant([read(f'a{i}.png') for i in range(4)])\n"
        "b = tf.constant([read(f'b{i}.png') for i in range(4)])\n"
        "out = f(input1=a, input2=b)['probability'].numpy()[:, 0].tolist()\n"
        f"emb = m.signatures['embedding'](image=tf.zeros([2, {size}, {size}, 3]))['embedding']\n"
        "print('SERVED ' + json.dumps({'p': out, 'emb': list(emb.shape),"
        " 'sigs': sorted(m.signatures)}))\n"
        "from tensorflow.python.tools.saved_model_cli import main\n"
        f"sys.argv = ['saved_model_cli', 'show', '--dir', {str(export)!r}, '--all']\n"
        "sys.stdout.flush(); main()\n"
    )
    r = subprocess.run([PY, "-c", script], capture_output=True, text=True, cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    served, cli = r.stdout.split("SERVED ", 1)[1].split("\n", 1)  # what follows: the CLI's
    return {**json.loads(served), "cli": cli}


def test_serving_signature_matches_in_process_model(main_job, tmp_path):
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    model_dir, export = main_job.model_dir, main_job.export_dir
    from trainer.run import checkpoint
    from trainer.run.programs import build_model

    model_cfg = checkpoint.load_model_config(str(model_dir))
    size = model_cfg.image_size[0]
    model = build_model(model_cfg)
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(checkpoint.checkpoint_dir(str(model_dir)))
    ).expect_partial()
    pairs = [make_pair(size, 3, 99, i)[:2] for i in range(4)]
    x1 = np.stack([a for a, _ in pairs]).astype("float32") / 255
    x2 = np.stack([b for _, b in pairs]).astype("float32") / 255
    expected = model({"input1": x1, "input2": x2}).numpy()[:, 0]
    assert np.ptp(expected) > 0.01  # distinct pairs, distinct scores: the comparison bites
    for i, (a, b) in enumerate(pairs):
        (tmp_path / f"a{i}.png").write_bytes(_png(a))
        (tmp_path / f"b{i}.png").write_bytes(_png(b))
    got = _served_without_this_package(export, tmp_path, size)
    np.testing.assert_allclose(got["p"], expected, atol=1e-5)
    assert got["emb"] == [2, 100]
    assert got["sigs"] == ["embedding", "serving_default", "serving_float"]
    assert "serving_default" in got["cli"] and "DT_STRING" in got["cli"]  # saved_model_cli
    # (The predict CLI on image files: tests/test_predict.py, and on gs:// in tests/test_gcs.py.)
    # inspect writes a grid of both towers' activations (its process: tests/test_gcs.py).
    from trainer.tools import activations

    grid = tmp_path / "grid.png"
    i = run_in_process(
        activations.main,
        "trainer.inspect",
        f"--model_dir={model_dir}",
        f"--output={grid}",
        tmp_path / "a0.png",
        tmp_path / "b0.png",
    )
    assert i.returncode == 0, i.stderr[-2000:]
    assert abs(float(i.stdout.split()[1].rstrip(";")) - expected[0]) < 1e-5
    img = tf.io.decode_png(grid.read_bytes()).numpy()
    assert img.shape[0] == 28 * 34  # 14 layers x 2 inputs, 32 px cells + borders


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


def test_bad_flag_is_answered_before_tensorflow_loads():
    script = (
        "import sys, runpy\n"
        "sys.argv = ['trainer', '--global_batch_size=-4']\n"
        "try:\n"
        "    runpy.run_module('trainer', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'tensorflow' in sys.modules)\n"
    )
    r = subprocess.run([PY, "-c", script], capture_output=True, text=True)
    assert r.stdout.split() == ["1", "False"], r.stdout + r.stderr[-2000:]
    assert "--global_batch_size=-4 is invalid" in r.stderr


def test_tensorflow_loads_with_the_collector_paused_and_leaves_it_as_it_was():
    """load_tensorflow freezes what TensorFlow's import made (later collections skip it) and
    turns the collector back on: left off, every reference cycle of a long run would stay.
    It loads Keras without matplotlib, which a later import (trainer.report's) still finds."""
    script = (
        "import gc, sys\n"
        "from trainer.common import console\n"
        "print(gc.isenabled(), gc.get_freeze_count())\n"
        "console.load_tensorflow()\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 100_000, 'tensorflow' in sys.modules)\n"
        "print('keras' in sys.modules, 'matplotlib' in sys.modules)\n"
        "from keras.src.visualization import plot_image_gallery\n"
        "import matplotlib.pyplot\n"
        "print(plot_image_gallery.plt is None, matplotlib.pyplot.figure is not None)\n"
        "gc.disable()\n"
        "with console._collector_paused():\n"
        "    print(gc.isenabled())\n"
        "print(gc.isenabled())\n"
    )
    r = subprocess.run([PY, "-c", script], capture_output=True, text=True)
    assert r.stdout.split() == [
        *("True", "0", "True", "True", "True"),
        *("True", "False", "True", "True"),  # Keras loaded, matplotlib not; found later
        *("False", "False"),
    ], r.stdout + r.stderr[-2000:]


def test_numpy_gets_one_blas_thread_unless_the_user_chose():
    """The package's import sets OPENBLAS_NUM_THREADS before NumPy loads (NumPy's BLAS pool
    would be one spin-waiting thread per core, and nothing here uses it); a user's value wins.
    Threads counted from /proc: the process's own and OpenBLAS's, before TensorFlow loads."""
    script = (
        "import os, trainer, numpy\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    ours = subprocess.run([PY, "-c", script], capture_output=True, text=True, env=env)
    theirs = subprocess.run(
        [PY, "-c", script], capture_output=True, text=True, env={**env, "OPENBLAS_NUM_THREADS": "2"}
    )
    assert ours.stdout.split() == ["1", "1"], ours.stdout + ours.stderr[-2000:]
    setting, threads = theirs.stdout.split()
    assert setting == "2" and int(threads) == min(2, os.cpu_count()), theirs.stdout


def test_a_second_run_in_a_model_dir_that_is_training_is_refused(small_data, tmp_path):
    """The test holds the model_dir's claim as a training run's chief does (an flock on the
    folder, which conflicts between open files in one process as between processes); a run
    started there meanwhile is refused before it reads or writes anything, and runs once it
    is free. (That the kernel frees it when a chief is killed: the kill -9 tests of
    test_distributed.py, whose restarted chiefs must take it.)"""
    from trainer.common import claim

    model_dir = tmp_path / "m"
    with claim.claimed(str(model_dir)):  # a fresh folder: made for the lock
        r = train_here(*small_flags(small_data, model_dir, "--train_steps=2"))
        assert r.returncode == 1 and os.listdir(model_dir) == [], r.stderr[-2000:]
    assert not model_dir.exists()  # the claim on a folder it made, left empty, takes it away
    r = train_here(*small_flags(small_data, model_dir, "--train_steps=2"))
    assert r.returncode == 0, r.stderr[-2000:]
    before = sorted(p.name for p in model_dir.rglob("*"))
    with claim.claimed(str(model_dir)):
        r = train_here(*small_flags(small_data, model_dir, "--train_steps=4"))
        assert r.returncode == 1, r.stderr[-2000:]
        assert r.stderr.strip().splitlines()[-1] == (
            f"error: another run is training in {model_dir} (it holds the folder's lock): "
            "wait until it ends, or give another --model_dir."
        )
        assert "resumed from" not in r.stderr  # refused before it read the checkpoint
        assert sorted(p.name for p in model_dir.rglob("*")) == before  # nothing written
    r = train_here(*small_flags(small_data, model_dir, "--train_steps=4"))
    assert r.returncode == 0 and "resumed from" in r.stderr, r.stderr[-2000:]
    assert (model_dir / "checkpoints/ckpt-4.index").exists()


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


def test_nan_loss_stops_with_exit_1_and_keeps_checkpoint(main_job, tmp_path):
    model_dir, last, _ = _copy_of_main_job(main_job, tmp_path)
    r = train_here(
        f"--model_dir={model_dir}",
        f"--train_steps={last + 200}",
        "--learning_rate=1e30",
        "--checkpoint_every_steps=1000",
        "--steps_per_loop=50",
        env=main_job.env,
    )
    assert r.returncode == 1
    assert "the loss became nan" in r.stderr.lower() or "the loss became inf" in r.stderr
    # The first step's loss is computed before its absurd update: the second one is the first
    # non-finite one, named although it is in the middle of a 50-step loop.
    assert re.search(rf"the loss became \S+ at step {last + 2};", r.stderr), r.stderr[-2000:]
    assert f"the last good checkpoint (step {last}) is kept" in r.stderr
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith(f"-{last}")


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


def test_export_mode_from_latest_checkpoint(main_job, tmp_path, monkeypatch):
    empty, cache = tmp_path / "empty", tmp_path / "cache"
    for mode in ("export", "evaluate"):  # refused before any data is read or anything written
        env = {**main_job.env, "XDG_CACHE_HOME": str(cache)}  # where the built-in set would go
        r = train_here(f"--model_dir={empty}", f"--mode={mode}", env=env)
        assert r.returncode == 1, r.stderr[-2000:]
        said = f"--mode={mode}: {empty} has no checkpoint (the folder does not exist)."
        assert r.stderr.strip().splitlines()[-1] == f"error: {said}"
        assert not empty.exists() and not cache.exists()
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    out = tmp_path / "out"
    before = sorted(os.listdir(main_job.model_dir / "checkpoints"))
    r = train_here(
        f"--model_dir={main_job.model_dir}",
        "--mode=export",
        f"--export_dir={out}",
        env=main_job.env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    steps = json.loads((main_job.model_dir / "eval/last.json").read_text())["step"]
    assert f"restored {main_job.model_dir}/checkpoints/ckpt-{steps}" in r.stderr
    assert not re.search(r"step \d+/", r.stderr)  # no training
    assert sorted(os.listdir(main_job.model_dir / "checkpoints")) == before
    first = tf.saved_model.load(str(main_job.export_dir)).signatures["serving_float"]
    again = tf.saved_model.load(str(out)).signatures["serving_float"]
    size = json.loads((main_job.model_dir / "config.json").read_text())["image_size"][0]
    x = tf.random.uniform([2, size, size, 3], seed=1)
    want = first(input1=x, input2=x)["probability"]
    np.testing.assert_array_equal(want, again(input1=x, input2=x)["probability"])
    export_args = (f"--model_dir={main_job.model_dir}", "--mode=export", f"--export_dir={out}")
    # An export cut off halfway (here: the disk fills) leaves the earlier export as it was:
    # the new one is written beside it and swapped in only when whole.
    from trainer.run import modes

    def cut_off(model, config, path):
        os.makedirs(path)
        (Path(path) / "saved_model.pb").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modes, "write_export", cut_off)
    r = train_here(*export_args, env=main_job.env)
    assert r.returncode != 0 and "No space left on device" in r.stderr, r.stderr[-2000:]
    monkeypatch.undo()
    kept = tf.saved_model.load(str(out)).signatures["serving_float"]
    np.testing.assert_array_equal(want, kept(input1=x, input2=x)["probability"])
    r = train_here(*export_args, env=main_job.env)  # and the next export replaces it whole
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.new, no .out.old
    # A folder of other files is refused before anything is read: the export replaces it.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    r = train_here(*export_args[:2], f"--export_dir={other}", env=main_job.env)
    assert r.returncode == 1 and list(other.iterdir()) == [other / "a.txt"], r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: export_dir {other} holds other files (a.txt), not a SavedModel: the export "
        "replaces the whole folder, so give an empty or new folder."
    )


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
