"""Files that appear whole or not at all, on a local disk, ``gs://`` or ``ram://``.

Each write goes to ``<path>.tmp`` through TensorFlow's file system layer and is renamed over
``path`` when complete, so a reader (``launch k8s status``, a restarted evaluator, the
trainer) never sees half a file.
"""

from __future__ import annotations

import json
import math

from trainer.common.errors import UsageError
from trainer.common.paths import join


def write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary name and a rename; makes the folder."""
    import tensorflow as tf

    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if folder and not tf.io.gfile.exists(folder):
        tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(text)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def finite(value):
    """``value`` with every NaN or infinite float replaced by None: JSON has no NaN (Python
    would write a bare ``NaN``, which other readers refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_json(path: str, value, **dump_kwargs) -> None:
    """``value`` as JSON at ``path`` (non-finite numbers as null), written whole."""
    write_atomic(path, json.dumps(finite(value), allow_nan=False, **dump_kwargs))


def read_json(path: str, what_to_do: str = "restore it, or remove it (the run rewrites it)"):
    """The JSON at ``path``, or None when there is no such file; UsageError naming the file,
    line and column when it is not JSON (a hand edit, a disk that filled up), ending with
    ``what_to_do``."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        text = f.read()
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno} column {e.colno}" if hasattr(e, "lineno") else ""
        raise UsageError(f"{path} is not valid JSON{where}: {what_to_do}.") from None


__all__ = ["finite", "join", "read_json", "write_atomic", "write_json"]
