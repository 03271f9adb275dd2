"""Cloud Storage checks before workers start (``launch local``) or a job is submitted
(``launch k8s submit``), so no worker start or GPU hour burns on a typo.

With google-cloud-storage (which honours STORAGE_EMULATOR_HOST): the model_dir bucket exists
and takes a write and a delete; the data pattern matches files, at least one per worker (else a
warning); a model_dir that holds checkpoints says from which step the job will resume. Missing
credentials and a service that does not answer are one sentence each (PreflightError), after
at most ``answer_s`` seconds of retries, not the client's two minutes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import uuid

import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import storage

from trainer.common.console import plural
from trainer.common.errors import UsageError, first_line
from trainer.common.paths import bucket_of, is_gcs
from trainer.common.paths import split_gs as _split_gs

ANSWER_S = 30  # how long the checks retry a service that does not answer
SKIP = "or pass --skip_preflight to start without the checks"


class PreflightError(UsageError):
    """A check failed; nothing may be started or submitted."""


@dataclasses.dataclass
class Report:
    messages: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    resume_step: int | None = None


def split_gs(path: str) -> tuple[str, str]:
    """gs://bucket/some/prefix -> ("bucket", "some/prefix")."""
    if not path.startswith("gs://"):
        raise PreflightError(f"{path} is not a gs:// path.")
    bucket, prefix = _split_gs(path)
    if not bucket:
        raise PreflightError(f"{path} names no bucket.")
    return bucket, prefix


def make_client() -> storage.Client:
    """A client for the real service, or for the emulator at STORAGE_EMULATOR_HOST."""
    import os

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    try:
        return storage.Client()
    except google.auth.exceptions.DefaultCredentialsError as e:
        raise PreflightError(
            f"no Google Cloud credentials to check Cloud Storage with ({first_line(e, 120)}): "
            "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS, "
            f"{SKIP}."
        ) from None


def _bucket(client, name: str, role: str, answer_s: float):
    try:
        bucket = client.lookup_bucket(name, timeout=answer_s, retry=gretry.Retry(timeout=answer_s))
    except gexc.Forbidden:
        raise PreflightError(
            f"{role} bucket gs://{name} is not accessible with these credentials."
        ) from None
    if bucket is None:
        raise PreflightError(f"{role} bucket gs://{name} does not exist.")
    return bucket


def check_writable(client, path: str, answer_s: float = ANSWER_S, role="model_dir") -> None:
    """The bucket of ``path`` exists and takes a write and a delete under it."""
    bucket_name, prefix = split_gs(path)
    bucket = _bucket(client, bucket_name, role, answer_s)
    probe = bucket.blob(f"{prefix}/.launch-preflight-{uuid.uuid4().hex}".lstrip("/"))
    try:
        # No retries: a refused write is the answer, not a glitch to wait out for minutes.
        probe.upload_from_string(b"probe", retry=None, timeout=30)
        probe.delete(retry=None, timeout=30)
    except gexc.GoogleAPIError as e:
        raise PreflightError(
            f"{role} bucket gs://{bucket_name} is not writable: {getattr(e, 'message', e)}."
        ) from None


def count_data_files(client, data: str, answer_s: float = ANSWER_S) -> int:
    """Files matching a data folder (its train shards) or a pattern."""
    bucket_name, prefix = split_gs(data)
    bucket = _bucket(client, bucket_name, "data", answer_s)
    if any(ch in prefix for ch in "*?["):
        fixed = re.split(r"[*?\[]", prefix, maxsplit=1)[0]
        names = [b.name for b in client.list_blobs(bucket, prefix=fixed)]
        return sum(fnmatch.fnmatchcase(n, prefix) for n in names)
    folder = f"{prefix}/" if prefix else ""
    names = [b.name for b in client.list_blobs(bucket, prefix=folder + "train-")]
    return sum(bool(re.search(r"/?train-\d{5}-of-\d{5}\.tfrecord(\.gz)?$", n)) for n in names)


def resume_step(client, model_dir: str) -> int | None:
    """Step of the newest checkpoint recorded in <model_dir>/checkpoints/checkpoint, or None."""
    bucket_name, prefix = split_gs(model_dir)
    blob = client.bucket(bucket_name).blob(f"{prefix}/checkpoints/checkpoint".lstrip("/"))
    try:
        return checkpoint_step(blob.download_as_text())
    except gexc.NotFound:
        return None


def checkpoint_step(state: str) -> int | None:
    """The newest checkpoint's step named by the text of a checkpoints/checkpoint file (what
    tf.train.latest_checkpoint reads), or None; read here without TensorFlow."""
    match = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', state, re.M)
    return int(match.group(1)) if match else None


def run_preflight(
    *,
    model_dir: str,
    data_dir: str = "",
    workers: int = 1,
    export_dir: str | None = None,
    client=None,
    answer_s: float = ANSWER_S,
) -> Report:
    """The checks of the gs:// paths among these (a local path is the trainer's to check, and
    ``launch k8s`` takes gs:// paths only); raises PreflightError on the first failure, returns
    what to tell the user. The client is made only when a path is on gs://."""
    if not any(is_gcs(p) for p in (model_dir, data_dir, export_dir)):
        return Report()
    try:
        return _checks(
            client or make_client(), model_dir=model_dir, data_dir=data_dir, workers=workers,
            export_dir=export_dir, answer_s=answer_s,
        )  # fmt: skip
    except (
        gexc.RetryError,
        requests.exceptions.RequestException,
        google.auth.exceptions.TransportError,
    ) as e:
        raise PreflightError(
            f"Cloud Storage did not answer within {answer_s:g} s ({_reason(e)}): check the "
            f"network (and STORAGE_EMULATOR_HOST if set), {SKIP}."
        ) from None


def _reason(error: Exception) -> str:
    """The socket's words ("Connection refused") out of requests' long message, or its first
    line."""
    cause = getattr(error, "cause", None) or error
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(cause))
    return found.group(1).strip() if found else first_line(cause, 120)


def _checks(client, *, model_dir, data_dir, workers, export_dir, answer_s) -> Report:
    report = Report()
    for role, path in (("model_dir", model_dir), ("export_dir", export_dir)):
        # an export in the model_dir's bucket was probed with it
        if is_gcs(path) and not (
            role == "export_dir" and is_gcs(model_dir) and bucket_of(path) == bucket_of(model_dir)
        ):
            check_writable(client, path, answer_s, role=role)
            report.messages.append(f"{role} {path}: bucket exists and is writable")
    if is_gcs(data_dir):
        n = count_data_files(client, data_dir, answer_s)
        if n == 0:
            raise PreflightError(f"data {data_dir} matches no files.")
        report.messages.append(f"data {data_dir}: {plural(n, 'file')}")
        if n < workers:
            report.warnings.append(
                f"data {data_dir} has {plural(n, 'file')} for {workers} workers: every worker "
                "will read every file (record-level sharding); write at least one shard per worker."
            )
    if is_gcs(model_dir):
        report.resume_step = resume_step(client, model_dir)
        if report.resume_step is not None:
            report.messages.append(f"will resume from step {report.resume_step}")
    return report
