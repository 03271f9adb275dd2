"""Addresses and ports: ``HOST:PORT`` parsing and waiting until a port accepts connections.
Shared by the trainer (its tf.data dispatcher, its peers) and the launcher. No TensorFlow."""

from __future__ import annotations

import socket
import time


def host_port(address: str) -> tuple[str, int]:
    """``grpc://host:port``, ``host:port`` or ``[v6]:port`` -> (host, port); ValueError in
    one sentence otherwise."""
    bare = address.split("://", 1)[1] if "://" in address else address
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT (e.g. localhost:5050).")
    return host.strip("[]"), int(port)


def try_connect(host: str, port: int, timeout: float = 2.0) -> str:
    """'' when ``host:port`` accepts a TCP connection now, else the reason it did not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as e:
        return e.strerror or type(e).__name__


def wait_for_port(host: str, port: int, timeout: float, poll: float = 0.5) -> tuple[float, str]:
    """Waits until ``host:port`` accepts a connection or ``timeout`` seconds pass; returns
    (seconds waited, '' on success or the last reason it failed)."""
    start = time.monotonic()
    while True:
        reason = try_connect(host, port)
        if not reason or time.monotonic() - start >= timeout:
            return time.monotonic() - start, reason
        time.sleep(poll)
