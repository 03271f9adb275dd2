"""A TCP rendezvous of all workers before TensorFlow's multi-worker start-up.

Why: TF waits for every peer inside a C++ call that holds the GIL and has no timeout we can
reach, so a missing peer (a wrong port, a pod that never starts) would hang a worker forever.
Here each worker listens on its own port and connects to every peer's port, retrying, until it
has both reached every peer and been reached by every peer, or ``timeout`` passes
(RendezvousTimeout: the trainer exits 75). The socket is closed before TF binds the same port.
No TensorFlow import.
"""

from __future__ import annotations

import socket
import threading
import time

from trainer.common import net

HELLO = b"inception-pair-trainer rendezvous\n"


class RendezvousTimeout(Exception):
    """Not every peer was reachable within the timeout."""


def _accept_all(server: socket.socket, expected: int, seen: set, stop: threading.Event):
    server.settimeout(0.2)
    while len(seen) < expected and not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(2)
            try:
                data = conn.recv(256)
            except OSError:
                continue
            if data.startswith(HELLO):
                seen.add(data[len(HELLO) :].strip())


def meet(hosts: list[str], index: int, timeout: float) -> float:
    """Blocks until all ``hosts`` met; returns the seconds it took. Raises RendezvousTimeout."""
    start = time.monotonic()
    if len(hosts) < 2:
        return 0.0
    _, port = net.host_port(hosts[index])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("", port))
    server.listen(len(hosts))
    seen: set = set()
    stop = threading.Event()
    acceptor = threading.Thread(
        target=_accept_all, args=(server, len(hosts) - 1, seen, stop), daemon=True
    )
    acceptor.start()
    pending = [i for i in range(len(hosts)) if i != index]
    try:
        while pending or len(seen) < len(hosts) - 1:
            if time.monotonic() - start > timeout:
                missing = [hosts[i] for i in pending]
                raise RendezvousTimeout(
                    f"worker {index} could not meet its peers within {timeout:g}s "
                    f"(unreachable: {missing or 'none'}; reached us: {len(seen)} of "
                    f"{len(hosts) - 1})"
                )
            for i in list(pending):
                try:
                    with socket.create_connection(net.host_port(hosts[i]), timeout=1) as conn:
                        conn.sendall(HELLO + str(index).encode())
                    pending.remove(i)
                except OSError:
                    pass
            time.sleep(0.2)
        return time.monotonic() - start
    finally:
        stop.set()
        acceptor.join(timeout=2)
        server.close()
