"""``launch local --data_workers N``: a tf.data service (dispatcher + N data workers) on loopback.

The processes are ``python -m trainer.data dispatcher|data_worker`` (TensorFlow's own server
classes). The dispatcher journals to a private folder, so a restarted dispatcher resumes its
jobs. Supervision, like the Kubernetes Deployments: a data worker or dispatcher that dies is
started again on the same port and the trainers go on (with dynamic sharding, the records
the dead worker held are not re-read this epoch; see trainer.data.service.client).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from launch.local.processes import free_ports, pump
from trainer.common.console import plural

RESTART_PAUSE_S = 1.0
READY_TIMEOUT_S = 120.0


class LocalService:
    """The dispatcher and data workers of one ``launch local`` run."""

    def __init__(self, workers: int, out=sys.stdout, python: str = sys.executable):
        self.workers, self.out, self.python = workers, out, python
        ports = free_ports(workers + 1)
        self.dispatcher_port, self.worker_ports = ports[0], ports[1:]
        self.address = f"grpc://localhost:{self.dispatcher_port}"
        self.journal = tempfile.mkdtemp(prefix="data-service-")
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self._lock = threading.Lock()

    def _command(self, name: str) -> list[str]:
        base = [self.python, "-m", "trainer.data"]
        if name == "dispatcher":
            return base + [
                "dispatcher",
                f"--port={self.dispatcher_port}",
                f"--work_dir={self.journal}",
                "--worker_timeout_ms=10000",  # a dead worker is dropped after 10 s, not minutes
            ]
        index = int(name.rsplit(" ", 1)[1])
        return base + [
            "data_worker",
            f"--dispatcher_address=localhost:{self.dispatcher_port}",
            f"--port={self.worker_ports[index]}",
        ]

    def _spawn(self, name: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="1")
        env.pop("TF_CONFIG", None)
        proc = subprocess.Popen(
            self._command(name),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()
        threading.Thread(
            target=pump, args=(proc.stdout, f"[{name}]", self.out, ready), daemon=True
        ).start()
        proc.ready = ready
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        """Starts everything and waits until each process says it listens."""
        names = ["dispatcher"] + [f"data worker {i}" for i in range(self.workers)]
        self.out.write(
            f"[launch] starting a tf.data service at {self.address} with "
            f"{plural(self.workers, 'data worker')}\n"
        )
        self.out.flush()
        self._spawn(names[0])
        self._wait_ready(names[:1])
        for name in names[1:]:
            self._spawn(name)
        self._wait_ready(names[1:])

    def _wait_ready(self, names) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name in names:
            proc = self.procs[name]
            while not proc.ready.wait(0.2):
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the {name} did not start (exit code {proc.poll()}): see its lines above."
                    )

    def supervise(self) -> None:
        """Restarts any process that has exited (called from the launcher's poll loop)."""
        with self._lock:
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.out.write(
                    f"[launch] {name} exited with code {code}: starting it again "
                    f"(restart {self.restarts[name]})\n"
                )
                self.out.flush()
                time.sleep(RESTART_PAUSE_S)  # a crash loop does not spin
                self._spawn(name)

    def kill(self, name: str) -> None:
        """SIGKILL one process (tests and drills: the supervisor brings it back)."""
        self.procs[name].kill()

    def stop(self) -> None:
        with self._lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.procs = {}
        shutil.rmtree(self.journal, ignore_errors=True)
