"""Cloud Storage checks before a job is submitted, so no GPU hour burns on a typo.

With google-cloud-storage (which honours STORAGE_EMULATOR_HOST): the model_dir bucket exists
and takes a write and a delete; the data pattern matches files, at least one per worker (else a
warning); a model_dir that holds checkpoints says from which step the job will resume.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import uuid

from google.api_core import exceptions as gexc
from google.cloud import storage

from trainer.common.console import plural


class PreflightError(Exception):
    """A check failed; nothing may be submitted."""


@dataclasses.dataclass
class Report:
    messages: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    resume_step: int | None = None


def split_gs(path: str) -> tuple[str, str]:
    """gs://bucket/some/prefix -> ("bucket", "some/prefix")."""
    if not path.startswith("gs://"):
        raise PreflightError(f"{path} is not a gs:// path.")
    bucket, _, prefix = path[len("gs://") :].partition("/")
    if not bucket:
        raise PreflightError(f"{path} names no bucket.")
    return bucket, prefix.strip("/")


def make_client() -> storage.Client:
    """A client for the real service, or for the emulator at STORAGE_EMULATOR_HOST."""
    import os

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


def _bucket(client, name: str, role: str):
    try:
        bucket = client.lookup_bucket(name)
    except gexc.Forbidden:
        raise PreflightError(
            f"{role} bucket gs://{name} is not accessible with these credentials."
        ) from None
    if bucket is None:
        raise PreflightError(f"{role} bucket gs://{name} does not exist.")
    return bucket


def check_writable(client, model_dir: str) -> None:
    bucket_name, prefix = split_gs(model_dir)
    bucket = _bucket(client, bucket_name, "model_dir")
    probe = bucket.blob(f"{prefix}/.launch-preflight-{uuid.uuid4().hex}".lstrip("/"))
    try:
        # No retries: a refused write is the answer, not a glitch to wait out for minutes.
        probe.upload_from_string(b"probe", retry=None, timeout=30)
        probe.delete(retry=None, timeout=30)
    except gexc.GoogleAPIError as e:
        raise PreflightError(
            f"model_dir bucket gs://{bucket_name} is not writable: {getattr(e, 'message', e)}."
        ) from None


def count_data_files(client, data: str) -> int:
    """Files matching a data folder (its train shards) or a pattern."""
    bucket_name, prefix = split_gs(data)
    bucket = _bucket(client, bucket_name, "data")
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
        text = blob.download_as_text()
    except gexc.NotFound:
        return None
    match = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', text, re.M)
    return int(match.group(1)) if match else None


def run_preflight(client, model_dir: str, data_dir: str, workers: int) -> Report:
    """All checks; raises PreflightError on the first failure, returns what to tell the user."""
    report = Report()
    check_writable(client, model_dir)
    report.messages.append(f"model_dir {model_dir}: bucket exists and is writable")
    if data_dir:
        n = count_data_files(client, data_dir)
        if n == 0:
            raise PreflightError(f"data {data_dir} matches no files.")
        report.messages.append(f"data {data_dir}: {plural(n, 'file')}")
        if n < workers:
            report.warnings.append(
                f"data {data_dir} has {plural(n, 'file')} for {workers} workers: every worker "
                "will read every file (record-level sharding); write at least one shard per worker."
            )
    report.resume_step = resume_step(client, model_dir)
    if report.resume_step is not None:
        report.messages.append(f"will resume from step {report.resume_step}")
    return report
