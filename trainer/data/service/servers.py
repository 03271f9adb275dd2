"""The tf.data service's processes: ``trainer-data dispatcher|data_worker`` (importable without TF).

TensorFlow's own server classes (``tf.data.experimental.service.DispatchServer`` and
``WorkerServer``) in a process that prints one "listening" line, serves until SIGTERM or
SIGINT, and exits 0 then. ``launch local --data_workers N`` and the Kubernetes dispatcher
Deployment and worker Deployment run these commands.

A dispatcher given ``--work_dir`` (a local folder or gs://) runs in fault-tolerant mode: it
journals its state there and a restarted dispatcher resumes the jobs it had.
"""

from __future__ import annotations

import signal
import threading

from trainer.common import net

DEFAULT_DISPATCHER_PORT = 5050
DEFAULT_WORKER_PORT = 5051


def check_port(port: int) -> None:
    if not 0 <= port < 65536:
        raise ValueError(f"port {port} is outside 0..65535.")


def _stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set (the process then stops, exit 0)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _serve_until_signal(server, what: str, stop: threading.Event | None = None) -> int:
    stop = stop or _stop_on_signals()
    print(f"{what}", flush=True)
    stop.wait()
    server.stop()
    print("stopped", flush=True)
    return 0


def _dispatcher_answers(target: str, stop: threading.Event, say_every_s: float = 60) -> bool:
    """Waits until the dispatcher's port takes a connection, saying so; False when stopped.

    Why: TensorFlow's WorkerServer registers with the dispatcher inside its constructor and
    retries an unreachable one there forever, silently (a data worker started before its
    dispatcher, or given a wrong address, printed nothing at all)."""
    host, port = net.host_port(target)
    reason = net.try_connect(host, port)
    if not reason:
        return True
    print(f"waiting for the dispatcher at {target} ({reason}), trying every second", flush=True)
    waited = 0.0
    while reason:
        if stop.wait(1.0):
            return False
        waited += 1.0
        reason = net.try_connect(host, port)
        if reason and waited % say_every_s < 1.0:
            print(f"still waiting for the dispatcher at {target} ({reason})", flush=True)
    print(f"the dispatcher at {target} answers", flush=True)
    return True


def run_dispatcher(port: int, work_dir: str = "", worker_timeout_ms: int = 0) -> int:
    import tensorflow as tf

    check_port(port)
    svc = tf.data.experimental.service
    kwargs = {"port": port, "work_dir": work_dir or None, "fault_tolerant_mode": bool(work_dir)}
    if worker_timeout_ms:
        kwargs["worker_timeout_ms"] = worker_timeout_ms
    server = svc.DispatchServer(svc.DispatcherConfig(**kwargs))
    bound = server.target.rsplit(":", 1)[1]
    journal = f", journal in {work_dir}" if work_dir else ", no journal"
    return _serve_until_signal(server, f"dispatcher listening on port {bound}{journal}")


def run_worker(dispatcher: str, port: int, worker_address: str = "") -> int:
    """``worker_address``: what the dispatcher tells trainers to dial (default
    localhost:PORT; on Kubernetes the pod's IP)."""
    check_port(port)
    net.host_port(dispatcher)  # ValueError: one sentence
    target = dispatcher.split("://", 1)[-1]
    if worker_address:
        net.host_port(worker_address)
    stop = _stop_on_signals()
    if not _dispatcher_answers(target, stop):
        print("stopped", flush=True)
        return 0
    import tensorflow as tf

    svc = tf.data.experimental.service
    config = svc.WorkerConfig(
        dispatcher_address=target,
        worker_address=worker_address or "localhost:%port%",
        port=port,
        heartbeat_interval_ms=1000,  # a restarted worker is known to the dispatcher at once
    )
    server = svc.WorkerServer(config)
    bound = server._address.rsplit(":", 1)[1]  # the port taken when --port=0
    return _serve_until_signal(
        server, f"data worker listening on port {bound}, dispatcher {target}", stop
    )


def main(args) -> int:
    if args.command == "dispatcher":
        return run_dispatcher(args.port, args.work_dir, args.worker_timeout_ms)
    return run_worker(args.dispatcher_address, args.port, args.worker_address)
