"""The storage sandbox's front, the one part that runs inside the private namespace
(tests/gcs_sandbox.py starts it: ``python gcs_front.py front DIR``; standard library only).

It brings loopback up, bind-mounts ``DIR/hosts`` (the sandbox wrote it: the Google host names
at 127.0.0.1) over /etc/hosts, and serves HTTPS on :443 (``DIR/cert.pem``) and HTTP on :80,
forwarding each request through ``DIR/upstream.sock`` to fake-gcs-server outside. It drops
the hop-by-hop headers (TF's ``Transfer-Encoding: identity``: Go's net/http answers 501) and
rewrites a resumable upload's ``Location`` to the host the client used.

What it shares with the sandbox is files in DIR: ``fault`` (absent: all answered; ``down``:
every connection closed without an answer; ``down-after ID N TEXT``: ``down`` from the N-th
request whose unquoted path holds TEXT) and ``requests.log`` (a line per request: forwarded,
answered or dropped). Prints ``ready`` once serving; runs until its standard input closes.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

# A request the server has not answered hangs only when the server is broken: a limit on the
# sandbox's own plumbing, never on work under test.
UPSTREAM_TIMEOUT_S = 600
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


def _loopback_up() -> None:
    """`ip link set lo up` without iproute2 (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"\0" * 14)
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, 0x8913, req))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 0x1, b"\0" * 14))


def _bind_mount(source: str, target: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_bind = 4096
    if libc.mount(source.encode(), target.encode(), None, ms_bind, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind-mounting {source} over {target}: {os.strerror(err)}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=UPSTREAM_TIMEOUT_S)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def _read_body(handler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


_SEEN: dict[str, int] = {}


def _outage(folder: str, path: str) -> bool:
    """Whether this request falls in an outage. "down-after N TEXT" turns into "down" at the
    N-th request whose path holds TEXT (that request included)."""
    fault = os.path.join(folder, "fault")
    try:
        with open(fault) as f:
            rule = f.read().strip()
    except FileNotFoundError:
        return False
    if rule == "down":
        return True
    if rule.startswith("down-after "):
        _, nth, text = rule[len("down-after ") :].split(" ", 2)  # an id, N, TEXT
        if text in path:
            _SEEN[rule] = _SEEN.get(rule, 0) + 1
            if _SEEN[rule] >= int(nth):
                with open(fault + ".tmp", "w") as f:
                    f.write("down")
                os.replace(fault + ".tmp", fault)
                return True
    return False


def _log(folder: str, line: str) -> None:
    with open(os.path.join(folder, "requests.log"), "a") as f:
        f.write(line + "\n")


def _front_handler(folder: str, scheme: str):
    upstream = os.path.join(folder, "upstream.sock")

    class Front(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Without it every answer waits ~40 ms (Nagle's algorithm against delayed ACKs:
        # measured, 44 ms per request, 2 s per checkpoint save).
        disable_nagle_algorithm = True

        def log_message(self, *args):  # quiet: the tests read the processes' own output
            pass

        def _drop(self):
            _log(folder, f"dropped {self.command} {self.path} at {time.time():.3f}")
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _forward(self):
            if _outage(folder, urllib.parse.unquote(self.path)):
                return self._drop()
            body = _read_body(self)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn = _UnixHTTPConnection(upstream)
            _log(folder, f"> {self.command} {self.path} at {time.time():.3f}")
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError:  # the server is gone: fail as an unreachable endpoint does
                return self._drop()
            finally:
                conn.close()
            _log(folder, f"{self.command} {self.path} {resp.status} at {time.time():.3f}")
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in _HOP_BY_HOP or k.lower() == "content-length":
                    continue
                if k.lower() == "location" and "/upload/" in v:
                    v = f"{scheme}://{self.headers.get('Host')}/upload/" + v.split("/upload/", 1)[1]
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

    return Front


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def front_main(folder: str) -> None:
    """Inside the namespace: loopback, hosts file, the HTTPS and HTTP fronts; runs until its
    standard input closes (the test ended or died)."""
    _loopback_up()
    _bind_mount(os.path.join(folder, "hosts"), "/etc/hosts")
    tls = _Server(("0.0.0.0", 443), _front_handler(folder, "https"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem"))
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    plain = _Server(("0.0.0.0", 80), _front_handler(folder, "http"))
    for server in (tls, plain):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()  # EOF: the owner is gone


if __name__ == "__main__" and sys.argv[1:2] == ["front"]:
    front_main(sys.argv[2])
