"""Process helpers of ``launch local``, shared by the trainer workers (workers) and their
tf.data service (data_service): free loopback ports and copying a child's output."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def pump(stream, prefix: str, out, ready=None) -> None:
    """Copies a child's lines to ``out`` with a prefix; sets ``ready`` (a threading.Event) at
    the first line that says the child is listening."""
    for line in iter(stream.readline, ""):
        out.write(f"{prefix} {line}")
        out.flush()
        if ready is not None and " listening on port " in line:
            ready.set()
