"""``launch local``: N trainer processes on loopback, supervised like the Kubernetes Job.

Each worker gets the Indexed-Job environment (JOB_COMPLETION_INDEX, TRAINER_WORKER_HOSTS with
free localhost ports), so the trainer derives TF_CONFIG by the same rule as on the cluster.
With --data_workers N, a tf.data service runs beside them (launch.local.data_service).
When a worker exits 75 or dies, the others are stopped and the whole group restarts (at most
--max_restarts times); the workers resume from the latest checkpoint. Exit 1 from any worker
ends the run at once (bad input: a retry cannot help). Never imports the trainer's model or loop.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

from launch.local.processes import free_ports, pump
from trainer import flags as trainer_flags
from trainer.common import claim
from trainer.common.console import plural
from trainer.common.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RETRY,
    EXIT_USAGE,
    UsageError,
)
from trainer.data import check_local_data
from trainer.runtime import cluster as tfconfig
from trainer.runtime import storage


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalConfig:
    workers: int
    devices_per_worker: int = 0
    max_restarts: int = 3
    grace_seconds: float = 60.0
    trainer_args: tuple = ()
    python: str = sys.executable
    data_workers: int = 0  # > 0: a tf.data service on loopback (launch.local.data_service)
    skip_preflight: bool = False  # no Cloud Storage checks of gs:// paths before the start


def worker_env(base: dict, index: int, hosts: list[str]) -> dict:
    """The environment of worker ``index``: the Indexed-Job variables, no inherited TF_CONFIG."""
    env = {k: v for k, v in base.items() if k != "TF_CONFIG"}
    env[tfconfig.INDEX_VAR] = str(index)
    env[tfconfig.HOSTS_VAR] = ",".join(hosts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_command(cfg: LocalConfig) -> list[str]:
    cmd = [cfg.python, "-m", "trainer", *cfg.trainer_args]
    if cfg.workers > 1 and not any(a.startswith("--strategy") for a in cfg.trainer_args):
        cmd.append("--strategy=multi_worker")
    if cfg.devices_per_worker:
        cmd.append(f"--devices_per_worker={cfg.devices_per_worker}")
    return cmd


class Group:
    """One start of the N workers."""

    def __init__(self, cfg: LocalConfig, attempt: int, out):
        hosts = [f"localhost:{p}" for p in free_ports(cfg.workers)]
        self.procs, self.threads = [], []
        for i in range(cfg.workers):
            proc = subprocess.Popen(
                worker_command(cfg),
                env=worker_env(dict(os.environ), i, hosts),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the launcher, which stops them cleanly
            )
            t = threading.Thread(target=pump, args=(proc.stdout, f"[worker {i}]", out), daemon=True)
            t.start()
            self.procs.append(proc)
            self.threads.append(t)
        self.pids = [p.pid for p in self.procs]

    def poll(self) -> list:
        return [p.poll() for p in self.procs]

    def stop(self, grace: float) -> None:
        """SIGTERM (workers save and exit 75), then SIGKILL after ``grace`` seconds."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in self.threads:
            t.join(timeout=5)


def _outcome(codes: list) -> str | None:
    """'done', 'fail', 'retry' or None (still running) for the exit codes of a group."""
    if any(c is not None and c != 0 for c in codes):
        if any(c == EXIT_USAGE for c in codes):
            return "fail"
        return "retry"  # 75, or killed by a signal (negative), or any other crash
    if all(c == 0 for c in codes):
        return "done"
    return None


def _exit_words(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    meaning = {EXIT_USAGE: " (bad input)", EXIT_RETRY: " (stopped, to be resumed)"}
    return f"exited {code}{meaning.get(code, '')}"


def group_summary(outcome: str, first: list, final: list) -> str:
    """The launcher's line when a group ends, in words: who ended it and how (``first``: the
    exit codes when that was seen; ``final``: after the others were stopped)."""
    if outcome == "done":
        return f"[launch] done: {plural(len(final), 'worker')} finished (exit 0)"
    ended = [f"worker {i} {_exit_words(c)}" for i, c in enumerate(first) if c not in (None, 0)]
    then = "no restart: a retry cannot mend that" if outcome == "fail" else "the group stops"
    return f"[launch] {', '.join(ended)}: {then}; exit codes {final}"


def run(cfg: LocalConfig, out=sys.stdout, on_start=None, err=None) -> int:
    """Runs the group (and its data service, if any) to completion; returns the exit status.

    ``on_start(group)`` is called after each start (tests use it to kill a worker; the data
    service is ``group.data``). Bad trainer flags (the trainer's own parser and checks), local
    paths the workers would refuse (a --data_dir that is not there, a --model_dir or export
    folder that cannot be one, a --model_dir another run is training in), gs:// paths the
    preflight refuses (unless ``cfg.skip_preflight``) and the launcher's own errors go to
    ``err`` (stderr), before any process starts.
    """
    err = err or sys.stderr
    if cfg.data_workers and any(a.startswith("--data_service_address") for a in cfg.trainer_args):
        err.write(
            "error: --data_workers starts its own tf.data service: drop "
            "--data_service_address from the trainer flags.\n"
        )
        return EXIT_USAGE
    try:
        checked = trainer_flags.check_args(worker_command(cfg)[3:])
        # what the workers would refuse first, known here without TensorFlow
        check_local_data(checked.data.data_dir)
        storage.check_local_outputs(checked.train.model_dir, checked.written_export_path)
        if checked.mode == "train":  # a run training there now would refuse the chief later
            claim.check_unclaimed(checked.train.model_dir)
        if not cfg.skip_preflight:
            _check_cloud_storage(cfg, checked, out, err)
    except UsageError as e:  # the preflight's too
        err.write(f"error: {e}\n")
        return EXIT_USAGE
    data = None
    if cfg.data_workers:
        from launch.local.data_service import LocalService

        data = LocalService(cfg.data_workers, out, cfg.python)
        try:
            data.start()
        except RuntimeError as e:
            err.write(f"error: {e}\n")
            return EXIT_RETRY
        cfg = dataclasses.replace(
            cfg, trainer_args=(*cfg.trainer_args, f"--data_service_address={data.address}")
        )
    try:
        return _run_groups(cfg, out, on_start, data)
    finally:
        if data is not None:
            data.stop()


def _check_cloud_storage(cfg: LocalConfig, checked, out, err) -> None:
    """launch.preflight on the run's gs:// paths (none: nothing imported, nothing said)."""
    paths = (checked.train.model_dir, checked.data.data_dir, checked.written_export_path)
    if not any(storage.is_gcs(p) for p in paths):
        return
    from launch import preflight

    report = preflight.run_preflight(
        model_dir=checked.train.model_dir, data_dir=checked.data.data_dir,
        workers=cfg.workers, export_dir=checked.written_export_path,
    )  # fmt: skip
    for line in report.messages:
        out.write(f"[launch] preflight: {line}\n")
    for line in report.warnings:
        err.write(f"warning: {line}\n")


def _run_groups(cfg: LocalConfig, out, on_start, data) -> int:
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        for attempt in range(cfg.max_restarts + 1):
            out.write(
                f"[launch] starting {plural(cfg.workers, 'worker')} (attempt {attempt + 1} of "
                f"{cfg.max_restarts + 1})\n"
            )
            out.flush()
            group = Group(cfg, attempt, out)
            group.data = data
            if on_start:
                on_start(group)
            outcome = None
            while outcome is None and not interrupted.is_set():
                time.sleep(0.2)
                if data is not None:
                    data.supervise()
                outcome = _outcome(group.poll())
            if interrupted.is_set():
                out.write("[launch] interrupted: stopping every worker\n")
                group.stop(cfg.grace_seconds)
                return EXIT_INTERRUPTED
            codes = group.poll()
            if outcome != "done":
                group.stop(cfg.grace_seconds)
            for t in group.threads:
                t.join(timeout=5)
            out.write(group_summary(outcome, codes, group.poll()) + "\n")
            if outcome == "done":
                return EXIT_OK
            if outcome == "fail":
                return EXIT_USAGE
        out.write(f"[launch] giving up after {cfg.max_restarts} restarts\n")
        return EXIT_RETRY
    finally:
        signal.signal(signal.SIGINT, previous)
