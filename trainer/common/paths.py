"""Paths that may be local, ``gs://`` or ``ram://``: joined without os.path, so a scheme
survives. No TensorFlow here."""

from __future__ import annotations

import posixpath
import re

# Cloud Storage's bucket names: lowercase letters, digits, '-', '_' and '.', starting and
# ending with a letter or digit; 3-63 characters, or up to 222 in dot-separated parts of 63.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")
BUCKET_RULE = (
    "3 to 63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)


def join(directory: str, name: str) -> str:
    """``directory/name``, keeping ``gs://`` and ``ram://`` schemes intact."""
    if "://" in directory:
        return directory.rstrip("/") + "/" + name
    return posixpath.join(directory.rstrip("/") or "/", name)


def is_gcs(path: str) -> bool:
    return str(path).startswith("gs://")


def split_gs(path: str) -> tuple[str, str]:
    """gs://bucket/some/prefix/ -> ("bucket", "some/prefix"): the one reading of a gs:// path
    (a path not on gs:// is the caller's to refuse)."""
    bucket, _, prefix = str(path)[len("gs://") :].partition("/")
    return bucket, prefix.strip("/")


def bucket_of(path: str) -> str:
    """gs://bucket/a/b -> bucket."""
    return split_gs(path)[0]


def bucket_problem(path: str, role: str) -> str:
    """'' when ``path`` is not on gs:// or names a bucket Cloud Storage accepts; else the
    sentence (without its full stop) saying what is wrong, for ``role`` (e.g. "--model_dir").
    Pure: a name no bucket can have is said before anything asks the service."""
    if not is_gcs(path):
        return ""
    bucket = bucket_of(path)
    if not bucket:
        return f"{role} {path} names no bucket"
    parts = bucket.split(".")
    if (
        not _BUCKET.fullmatch(bucket)
        or len(bucket) > (222 if len(parts) > 1 else 63)
        or len(bucket) < 3
        or any(not p or len(p) > 63 for p in parts)
    ):
        return f"{role} {path}: {bucket!r} is not a Cloud Storage bucket name ({BUCKET_RULE})"
    if bucket.startswith("goog") or "google" in bucket:
        return (
            f"{role} {path}: {bucket!r} is not a Cloud Storage bucket name (no name may begin "
            "with 'goog' or contain 'google')"
        )
    return ""
