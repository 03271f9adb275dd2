"""A run's faults and what it leaves: a real full disk, an export into a volume's root, SIGTERM
with a pod's grace or Spot's budget, a truncated newest checkpoint, a model_dir another run
trains in, a NaN loss. Real processes where the process is the subject (its exit and message
under a private mount, a signal); the rest through the command line in this process."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
import yaml

from tests.runs import PY, small_flags, train_here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pod_grace_seconds() -> int:
    """The pod's terminationGracePeriodSeconds in k8s/base: the SIGTERM test's budget."""
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


def test_a_second_run_in_a_model_dir_that_is_training_is_refused(small_data, tmp_path):
    """The test holds the model_dir's claim as a training run's chief does (an flock on the
    folder, which conflicts between open files in one process as between processes); a run
    started there meanwhile is refused before it reads or writes anything, and runs once it
    is free. (That the kernel frees it when a chief is killed: the kill -9 tests of
    test_group_faults.py, whose restarted chiefs must take it.)"""
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
