"""Paths that may be local, ``gs://`` or ``ram://``: joined without os.path, so a scheme
survives. No TensorFlow here."""

from __future__ import annotations

import posixpath


def join(directory: str, name: str) -> str:
    """``directory/name``, keeping ``gs://`` and ``ram://`` schemes intact."""
    if "://" in directory:
        return directory.rstrip("/") + "/" + name
    return posixpath.join(directory.rstrip("/") or "/", name)


def is_gcs(path: str) -> bool:
    return str(path).startswith("gs://")
