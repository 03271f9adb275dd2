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


def _serve_until_signal(server, what: str) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"{what}", flush=True)
    stop.wait()
    server.stop()
    print("stopped", flush=True)
    return 0


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
    import tensorflow as tf

    check_port(port)
    net.host_port(dispatcher)  # ValueError: one sentence
    target = dispatcher.split("://", 1)[-1]
    if worker_address:
        net.host_port(worker_address)
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
        server, f"data worker listening on port {bound}, dispatcher {target}"
    )


def main(args) -> int:
    if args.command == "dispatcher":
        return run_dispatcher(args.port, args.work_dir, args.worker_timeout_ms)
    return run_worker(args.dispatcher_address, args.port, args.worker_address)
