"""Cloud Storage as the trainer meets it: how long to wait, what to check first, what to say.

- ``retry_env``: TensorFlow's gs:// client retries a failing request with exponential backoff,
  by default 10 times from 1 s doubling to 32 s (about 195 s per operation, and a failed write
  is three operations: ~10 min, measured), and it reads its GCS_* variables once, when
  TensorFlow loads. ``--storage_timeout_seconds`` maps onto them (a variable the user set
  wins); ``apply_retry_env`` must run before that import.
- ``require_bucket`` / ``check_writable``: start checks. They matter beyond a nicer message:
  ``tf.io.gfile.makedirs`` under a bucket that does not exist loops forever in TF 2.21
  (measured: it repeats GET /storage/v1/b/<bucket> -> 404 without end).
- ``failure``: reads a TensorFlow error for a storage operation that failed after its retries
  and says, in one sentence, which operation on which gs:// path and why.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Mapping

from trainer.common.errors import EXIT_RETRY, EXIT_USAGE, UsageError, first_line
from trainer.common.paths import bucket_of, bucket_problem, is_gcs

# The variables TensorFlow 2.21's GCS filesystem reads (strings in libtensorflow_framework).
RETRY_VARS = (
    "GCS_RETRY_CONFIG_MAX_RETRIES",
    "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US",
    "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US",
    "GCS_REQUEST_CONNECTION_TIMEOUT_SECS",
    "GCS_REQUEST_IDLE_TIMEOUT_SECS",
)


class StorageError(UsageError):
    """The storage is there but refuses what the run needs (missing bucket, no write access):
    the user must act; exit 1."""


class StartFailed(Exception):
    """A start check that TensorFlow's client gave up on (the endpoint did not answer, its
    name did not resolve): the Failure, which trainer.run.main turns into its sentence."""

    def __init__(self, found: Failure):
        super().__init__(found.sentence())
        self.found = found


# A write TensorFlow gives up on costs it three storage operations, each retried in full:
# the upload, deleting its temporary object, and the upload again when the file is closed
# (measured: a checkpoint save cut off by an outage). Each operation gets a third of the
# budget, so no outage keeps a run waiting much longer than --storage_timeout_seconds.
OPERATIONS_PER_FAILED_WRITE = 3
# TensorFlow's retry loop (tsl::RetryingUtils::CallWithRetries) sleeps min(init << k, max)
# plus a uniform random 0 to 1 s before its k-th retry: counted at its mean, or a small budget
# is overrun several-fold (measured before: the trainer, its start included, took 17 s to
# refuse an unwritable bucket under --storage_timeout_seconds=3; 8 s with the mean counted).
RETRY_JITTER_MEAN_S = 0.5


def retry_env(timeout_s: float, environ: Mapping[str, str]) -> dict[str, str]:
    """GCS_* settings under which the run gives up on an unreachable Cloud Storage after
    about ``timeout_s`` seconds. Variables present in ``environ`` are left out.

    One operation's budget is a third of it (see OPERATIONS_PER_FAILED_WRITE). Backoff starts
    at 1 s (less for small budgets) and doubles up to a quarter of the operation's budget (at
    most TF's 32 s), with as many retries as it takes for the waits, TensorFlow's random
    addition to each included (RETRY_JITTER_MEAN_S), to fill that budget: one at least. A
    request that hangs instead of failing gives up after a tenth of it per attempt (at least
    5 s; at most TF's defaults, 120 s to connect and 60 s without progress).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s} must be > 0")
    budget = timeout_s / OPERATIONS_PER_FAILED_WRITE
    first = min(1.0, budget / 10)
    longest = min(32.0, max(first, budget / 4))
    retries, waited, delay = 0, 0.0, first
    while waited < budget:
        waited += min(delay, longest) + RETRY_JITTER_MEAN_S
        delay *= 2
        retries += 1
    attempt = max(5, int(budget // 10))
    values = {
        "GCS_RETRY_CONFIG_MAX_RETRIES": retries,
        "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": int(first * 1e6),
        "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": int(longest * 1e6),
        "GCS_REQUEST_CONNECTION_TIMEOUT_SECS": min(120, attempt),
        "GCS_REQUEST_IDLE_TIMEOUT_SECS": min(60, attempt),
    }
    return {k: str(v) for k, v in values.items() if k not in environ}


def apply_retry_env(timeout_s: float) -> dict[str, str]:
    """Sets retry_env() in this process (before TensorFlow loads); returns what it set."""
    values = retry_env(timeout_s, os.environ)
    os.environ.update(values)
    return values


def bound_tool_retries() -> dict[str, str]:
    """The trainer's default bound on storage waits (--storage_timeout_seconds' default) for
    the tools (trainer.data, predict, report, inspect), which have no such flag: without it
    TensorFlow retries ~195 s per operation, 10 minutes for one failed write. Before
    TensorFlow loads; GCS_* variables set by the user win."""
    from trainer.config import DEFAULT_STORAGE_TIMEOUT_S

    return apply_retry_env(DEFAULT_STORAGE_TIMEOUT_S)


# ---- reading TensorFlow's errors ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Failure:
    """A storage operation TensorFlow gave up on."""

    operation: str  # "reading metadata of", "initiating an upload to", ...
    path: str  # gs://...
    cause: str  # "libcurl code 7: Couldn't connect to server", "HTTP 503", ...
    transient: bool  # the endpoint did not answer (or answered 5xx/429): retry later

    def sentence(self, timeout_s: float | None = None) -> str:
        waited = f" (retried within --storage_timeout_seconds={timeout_s:g})" if timeout_s else ""
        where = f" {self.path}" if self.path else ""
        return f"Cloud Storage failed {self.operation}{where}{waited}: {self.cause}"


_PATH = r"(gs://[^\s'\"]+?)[.,;:]?(?=[\s'\"]|$)"
_OPERATION = re.compile(r"\bwhen ([a-z][a-z ]*?) " + _PATH, re.M)
_UPLOAD = re.compile(r"\bUpload to " + _PATH, re.M)
_CURL = re.compile(r"libcurl code (\d+) meaning '([^']*)'(?:, error details: ([^\n]*))?")
_HTTP = re.compile(r"HTTP response code (\d{3})")


def failure(error: BaseException | str, at: tuple[str, str] | None = None) -> Failure | None:
    """The storage failure inside a TensorFlow error message, or None if it is not one.
    ``at`` (operation, path): what the caller asked for, where the message names no path
    (a bucket's lookup says only "Error executing an HTTP request: ...")."""
    text = str(error)
    if not ("Error executing an HTTP request" in text or "retry attempts failed" in text):
        return None
    op, up = _OPERATION.search(text), _UPLOAD.search(text)
    if op:
        operation, path = op.group(1), op.group(2)
    elif up:
        operation, path = "uploading", up.group(1)
    elif at is not None:
        operation, path = at
    else:
        return None
    curl, http = _CURL.search(text), _HTTP.search(text)
    if curl:
        details = (curl.group(3) or "").strip()
        cause = f"libcurl code {curl.group(1)} ({curl.group(2)}{', ' + details if details else ''})"
        transient = True
    elif http:
        status = int(http.group(1))
        cause = f"HTTP {status}"
        transient = status >= 500 or status in (408, 429)
    else:
        cause, transient = first_line(text), True
    return Failure(operation.strip(), path, cause, transient)


def failure_exit(error: BaseException) -> tuple[str, int] | None:
    """The sentence and exit status for a Cloud Storage failure inside ``error`` that no caller
    turned into words (75 when the endpoint did not answer: rerun; 1 when it refused), or
    None when ``error`` is no storage failure. A message naming no path still says it was the
    storage (a bucket's lookup without a network)."""
    if isinstance(error, StartFailed):
        found = error.found
    else:
        found = failure(error) or failure(error, at=("to answer", ""))
    if found is None:
        return None
    if not found.transient:
        return f"error: {found.sentence()}.", EXIT_USAGE
    rerun = f"Exit {EXIT_RETRY}: rerun when the storage is reachable."
    return f"error: {found.sentence()}. {rerun}", EXIT_RETRY


# ---- start checks (TensorFlow's own client, as the run will use it) -----------------------


def require_bucket(path: str, role: str) -> None:
    """Raises StorageError when ``path`` is on gs:// and its bucket does not exist."""
    if not is_gcs(path):
        return
    import tensorflow as tf

    if problem := bucket_problem(path, role):
        raise StorageError(f"{problem}.")
    bucket = bucket_of(path)
    try:
        found = tf.io.gfile.exists(f"gs://{bucket}")
    except tf.errors.PermissionDeniedError:
        raise StorageError(
            f"{role} bucket gs://{bucket} is not accessible with these credentials (they need "
            "storage.buckets.get besides object access)."
        ) from None
    except tf.errors.OpError as e:
        unanswered = failure(e, at=(f"looking up the {role} bucket", f"gs://{bucket}"))
        if unanswered is None:
            raise
        raise StartFailed(unanswered) from None
    if not found:
        raise StorageError(f"{role} bucket gs://{bucket} does not exist.")


def check_writable(folder: str, role: str, tag: str = "") -> None:
    """Raises StorageError unless an object can be written into and deleted from ``folder``'s
    bucket (gs:// only; local folders are made by the run itself). A storage outage is
    raised as TensorFlow's own error, for the caller's retry handling."""
    if not is_gcs(folder):
        return
    import tensorflow as tf

    require_bucket(folder, role)
    probe = f"{folder.rstrip('/')}/.write-probe-{tag}{uuid.uuid4().hex[:12]}"
    try:
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("probe")
        tf.io.gfile.remove(probe)
    except tf.errors.OpError as e:
        found = failure(e)
        if found is not None and found.transient:
            raise
        reason = found.cause if found else first_line(e)
        raise StorageError(
            f"{role} bucket gs://{bucket_of(folder)} is not writable ({reason})."
        ) from None


def check_output_file(path: str, role: str) -> None:
    """StorageError unless local ``path`` can be written as a file: its folder exists and
    takes a write, and ``path`` is not a folder (gs:// paths: the bucket is checked when it
    is written). Writes nothing."""
    if "://" in path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise StorageError(f"{role} {path} is a folder: give a file name.")
    if not os.path.isdir(parent):
        where = "is a file" if os.path.exists(parent) else "does not exist"
        raise StorageError(f"the folder of {role} {path} {where}: give a path in a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"{role} {path}: its folder {parent} is not writable.")


def check_local_outputs(model_dir: str, export_dir: str | None) -> None:
    """A run's local output folders (``export_dir`` None: it exports nothing), checked with
    plain file calls: the trainer before it reads anything, `launch local` before it starts
    any worker."""
    check_local_folder(model_dir, "model_dir")
    if export_dir is not None and "://" not in export_dir:
        check_local_folder(export_dir, "export_dir")
        if os.path.isdir(export_dir):
            _check_replaceable(export_dir)


def _check_replaceable(export_dir: str) -> None:
    """An existing local export folder the export can replace: an earlier export (or empty),
    in a folder that takes the new one beside it."""
    check_export_folder(export_dir, os.listdir(export_dir))
    parent = os.path.dirname(os.path.abspath(export_dir))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(
            f"export_dir {export_dir} cannot be replaced: {parent} takes no write (the export "
            "is written beside the folder, then swapped in): give another folder."
        )


SAVED_MODEL_FILE = "saved_model.pb"


def check_export_folder(path: str, listing: list[str] | None) -> None:
    """Refuses an export folder that holds other things than a SavedModel (``listing``: the
    names in it, None where there is no folder; pure). The export replaces the whole folder
    (written beside it, then swapped in), so the files of a folder given by mistake would be
    lost; an empty folder or an earlier export is fine."""
    if listing and SAVED_MODEL_FILE not in listing:
        names = sorted(name.rstrip("/") for name in listing)
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise StorageError(
            f"export_dir {path} holds other files ({shown}), not a SavedModel: the export "
            "replaces the whole folder, so give an empty or new folder."
        )


def check_local_folder(path: str, role: str) -> None:
    """Raises StorageError unless local ``path`` is a folder, or can be made one, that takes a
    write: a file in its place, a file above it, or a read-only or foreign folder would
    otherwise fail the run late (after training, for an export folder). Writes nothing.
    Paths with a scheme (gs://, ram://) are not local: check_writable covers gs://."""
    if "://" in path:
        return
    target = os.path.abspath(path)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == target else f"cannot be made: {existing} is a file"
        raise StorageError(f"{role} {path} {where}: give a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(
            f"{role} {path} is not writable ({existing}: no write permission, or a read-only "
            "filesystem)."
        )
