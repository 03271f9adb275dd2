"""A `launch local` group's faults, with real worker processes: kill -9 restarts the group and
the run finishes exactly, a worker whose peer never comes exits 75 in time, the rendezvous, and
the refusals that start no worker (a bad flag, a model_dir another run trains in, CPU replicas
under multi-worker), a worker refusing its input, the launcher's bad arguments and Ctrl-C."""

import os
import random
import re
import signal
import subprocess
import threading
import time

import pytest
import tensorflow as tf

from launch.local.processes import free_ports
from launch.local.workers import LocalConfig, run
from tests.runs import LOSS, PY, Capture, group_flags
from trainer.run import checkpoint
from trainer.runtime import rendezvous


def _kill_after_random_steps(
    out: Capture, kills: list, rng: random.Random, max_kills: int, done: threading.Event
):
    """on_start hook: SIGKILL a random worker once the group trained a random few steps.

    Waits for progress lines, however long the host takes, until the run is over."""

    def hook(group):
        if len(kills) >= max_kills:
            return
        steps_needed = rng.randint(5, 12)  # past the first checkpoint (every 4 steps)

        def killer():
            start = len(out.text)
            while not done.is_set():
                time.sleep(0.1)
                if len(LOSS.findall(out.text[start:])) >= 2 * steps_needed:
                    victim = rng.randrange(len(group.pids))
                    os.kill(group.pids[victim], signal.SIGKILL)
                    kills.append((victim, steps_needed))
                    return

        threading.Thread(target=killer, daemon=True).start()

    return hook


def test_kill_9_restarts_group_and_finishes_exactly(group_data, tmp_path):
    max_kills = 2  # one restart, then a restart of the restarted group
    out, kills = Capture(), []
    model_dir = tmp_path / "m"
    cfg = LocalConfig(
        workers=2,
        max_restarts=max_kills + 1,
        # Survivors wait in an all-reduce for the dead peer and cannot save; stop them soon.
        # A save cut off by SIGKILL must never be restored (checked below).
        grace_seconds=3,
        trainer_args=group_flags(
            group_data,
            model_dir,
            "--train_steps=30",
            "--global_batch_size=16",
            "--checkpoint_every_steps=4",
            "--keep_checkpoints=3",
        ),
    )
    done = threading.Event()
    try:
        rc = run(
            cfg,
            out=out,
            on_start=_kill_after_random_steps(
                out, kills, random.Random(max_kills), max_kills, done
            ),
        )
    finally:
        done.set()
    assert rc == 0, out.text[-4000:]
    assert len(kills) == max_kills, kills
    assert out.text.count("[launch] starting 2 workers") == max_kills + 1
    # the launcher names each killed worker, and says the last group's end in words
    # A group's line names every worker that had ended when it was seen: a survivor that left
    # within the launcher's poll (peer lost: exit 75) comes first in the same line.
    said = [line for line in out.text.splitlines() if line.startswith("[launch] worker ")]
    named = [w for line in said for w in re.findall(r"worker (\d) was killed by SIGKILL", line)]
    assert named == [str(victim) for victim, _ in kills], (said, kills)
    assert "[launch] done: 2 workers finished (exit 0)" in out.text.split("[launch] starting")[-1]
    assert "resumed from" in out.text
    ckpt_dir = checkpoint.checkpoint_dir(str(model_dir))
    assert tf.train.latest_checkpoint(ckpt_dir).endswith("ckpt-30")
    kept = tf.train.get_checkpoint_state(ckpt_dir).all_model_checkpoint_paths
    assert 1 <= len(kept) <= 3
    assert all(checkpoint.readable(p) for p in kept)


def test_worker_with_unreachable_peer_exits_75_in_time(group_data, tmp_path):
    ports = free_ports(2)  # nobody listens on the second one
    env = {
        **os.environ,
        "JOB_COMPLETION_INDEX": "0",
        "TRAINER_WORKER_HOSTS": f"localhost:{ports[0]},localhost:{ports[1]}",
    }
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "trainer",
            f"--data_dir={group_data}",
            f"--model_dir={tmp_path}/m",
            "--peer_timeout_seconds=4",  # the bound under test: short, it is waited out
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The bound is measured from the moment the worker starts waiting for its peers, so
    # TensorFlow's start-up (slow on a slow host) is not part of it.
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "meeting 1 peer (waiting up to 4s)" in line:
            break
    waiting = time.monotonic()
    rest = proc.stderr.read()
    proc.wait()
    elapsed = time.monotonic() - waiting
    err = "".join(lines) + rest
    assert proc.returncode == 75, err[-2000:]
    assert f"could not meet its peers within 4s (unreachable: ['localhost:{ports[1]}']" in err
    assert 4 <= elapsed < 4 + 30  # the timeout, plus ample slack for the exit
    assert not (tmp_path / "m").exists()


PEER_WAIT = 60


def test_rendezvous_meets_three_peers_and_times_out_alone():
    hosts = [f"localhost:{p}" for p in free_ports(3)]
    took = [None] * 3

    def worker(i, delay):
        time.sleep(delay)
        # Generous: meeting takes ~1 s; the bound only has to outlast a slow, busy host.
        took[i] = rendezvous.meet(hosts, i, timeout=PEER_WAIT)

    threads = [threading.Thread(target=worker, args=(i, 0.5 * i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(t is not None and t < PEER_WAIT for t in took)
    assert took[0] >= 0.9  # worker 0 waited for the late worker 2
    with pytest.raises(rendezvous.RendezvousTimeout, match="within 1s"):
        rendezvous.meet([f"localhost:{p}" for p in free_ports(2)], 0, timeout=1)  # subject


def _group(**config) -> tuple[int, Capture, Capture]:
    """`launch local` with LocalConfig(**config) in this process: (exit status, out, err)."""
    out, err = Capture(), Capture()
    return run(LocalConfig(**config), out=out, err=err), out, err


def test_bad_trainer_flag_is_refused_before_any_worker_starts(group_data, tmp_path):
    rc, out, err = _group(
        workers=2,
        max_restarts=3,
        trainer_args=group_flags(group_data, tmp_path / "m", "--global_batch_size=-2"),
    )
    assert rc == 1
    assert "[launch] starting" not in out.text and not (tmp_path / "m").exists()
    assert err.text.splitlines() == [
        "error: trainer flags: --global_batch_size=-2 is invalid: it must be > 0."
    ]


def test_a_model_dir_another_run_trains_in_is_refused_before_any_worker_starts(
    group_data, tmp_path
):
    """The test holds the folder's claim as a training chief does; launch local starts no
    worker for it (each would load TensorFlow only for its chief to be refused) and writes
    nothing there."""
    from trainer.common import claim

    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    with claim.claimed(str(model_dir)):
        rc, out, err = _group(workers=2, trainer_args=group_flags(group_data, model_dir))
    assert rc == 1
    assert "[launch] starting" not in out.text
    assert err.text.splitlines() == [
        f"error: another run is training in {model_dir} (it holds the folder's lock): "
        "wait until it ends, or give another --model_dir."
    ]
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json"]
    claim.check_unclaimed(str(tmp_path / "none"))  # a missing folder: nobody holds it
    assert not (tmp_path / "none").exists()


def test_a_worker_refusing_its_input_stops_the_group_without_restart(group_data, tmp_path):
    # Only the workers can know this one (the replica count is theirs): exit 1, no retry.
    rc, out, _ = _group(
        workers=2,
        max_restarts=3,
        trainer_args=group_flags(group_data, tmp_path / "m", "--global_batch_size=7"),
    )
    assert rc == 1
    assert out.text.count("[launch] starting") == 1
    assert out.text.count("--global_batch_size=7 does not divide over 2 replicas") == 2


def test_cpu_replicas_per_worker_are_refused_under_multi_worker(group_data, tmp_path):
    rc, out, _ = _group(
        workers=2,
        devices_per_worker=2,
        max_restarts=0,
        trainer_args=group_flags(group_data, tmp_path / "m"),
    )
    assert rc == 1
    assert "--devices_per_worker=2 does not apply to multi_worker on CPU" in out.text
    assert not (tmp_path / "m").exists()


def test_launcher_bad_arguments_and_ctrl_c(group_data, tmp_path):
    r = subprocess.run(
        [PY, "-m", "launch", "local", "--workers", "0"], capture_output=True, text=True
    )
    assert r.returncode == 1 and "--workers: 0 is not an integer >= 1" in r.stderr
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "launch",
            "local",
            "--workers",
            "2",
            "--grace_seconds",
            "300",  # as the pod's: a slow host's workers still save before any SIGKILL
            "--",
            *group_flags(
                group_data,
                tmp_path / "m",
                "--train_steps=100000",
                "--checkpoint_every_steps=100000",
                "--global_batch_size=16",
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if re.search(r"\[worker 1\].*step [3-9]/100000", line):
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate()
    text = "".join(lines) + rest
    assert proc.returncode == 130, text[-3000:]
    assert "interrupted: stopping every worker" in text
    # Each worker saved its position on the way out (SIGTERM: save, exit 75).
    assert "stopped by a signal at step" in text
    assert tf.train.latest_checkpoint(str(tmp_path / "m/checkpoints")) is not None
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "m")], capture_output=True).stdout == b""
