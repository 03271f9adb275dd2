"""Files that appear whole or not at all, on a local disk, ``gs://`` or ``ram://``.

Each write goes to ``<path>.tmp`` through TensorFlow's file system layer and is renamed over
``path`` when complete, so a reader (``launch k8s status``, a restarted evaluator, the
trainer) never sees half a file; ``folder_written_whole`` does the same for a folder (a
SavedModel), written beside the one it replaces and swapped in; ``folder_made_once`` for a
local cache folder that several processes may ask for at once (the built-in set, bench sets).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil

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


def beside(final: str, tag: str) -> str:
    """A hidden sibling of the folder ``final`` (``runs/x/.export.new``) for writing its
    replacement whole. Not ``final + tag``: a name that ``final`` is a prefix of would be
    taken for ``final`` by file systems that match names by prefix (TensorFlow's ram://)."""
    if "://" not in final:  # a local "." or "export" has a parent too
        final = os.path.abspath(final)
    parent, _, name = final.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.{tag}"


@contextlib.contextmanager
def folder_written_whole(final: str):
    """``with folder_written_whole(final) as new:`` write the folder's contents into ``new``;
    it replaces ``final`` when the block ends without an error, so a write cut off leaves
    ``final`` as it was (a leftover ``new`` from an earlier cut is cleared first)."""
    import tensorflow as tf

    new = beside(final, "new")
    if tf.io.gfile.exists(new):
        tf.io.gfile.rmtree(new)
    yield new
    replace_folder(new, final)


def replace_folder(new: str, final: str) -> None:
    """Puts the folder ``new`` (written whole, ``beside(final, "new")``) in place of
    ``final`` by two renames, the old one removed after. On a local disk a reader sees the old
    or the new folder, never a half-written one; on gs:// a folder rename copies object by
    object (Cloud Storage has no folder rename), so a reader may briefly find it missing or
    partly copied."""
    import tensorflow as tf

    old = beside(final, "old")
    if tf.io.gfile.exists(old):
        tf.io.gfile.rmtree(old)
    if tf.io.gfile.exists(final):
        try:
            _rename_folder(final, old)
        except tf.errors.FailedPreconditionError:  # EBUSY: a mount point (a volume's root)
            _copy_into(new, final)
            return
    _rename_folder(new, final)
    if tf.io.gfile.exists(old):
        tf.io.gfile.rmtree(old)


def _copy_into(new: str, final: str) -> None:
    """``final``'s contents replaced by ``new``'s, file by file (not atomic: for a folder no
    rename can move), and ``new`` removed."""
    import tensorflow as tf

    for name in tf.io.gfile.listdir(final):
        path = join(final, name.rstrip("/"))
        (tf.io.gfile.rmtree if tf.io.gfile.isdir(path) else tf.io.gfile.remove)(path)
    base = new.rstrip("/")
    for folder, _, files in tf.io.gfile.walk(base):
        target = final.rstrip("/") + folder.rstrip("/")[len(base) :]
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(f"{folder.rstrip('/')}/{name}", f"{target}/{name}", overwrite=True)
    tf.io.gfile.rmtree(base)


def _rename_folder(src: str, dst: str) -> None:
    """One rename on a local disk; elsewhere file by file (what TensorFlow's gs:// client does
    for a folder; its ram:// file system renames only the folder's own entry)."""
    import tensorflow as tf

    if "://" not in src:
        tf.io.gfile.rename(src, dst)
        return
    base = src.rstrip("/")
    for folder, _, files in tf.io.gfile.walk(base):
        folder = folder.rstrip("/")  # gs:// walks name folders with their slash
        target = dst.rstrip("/") + folder[len(base) :]
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.rename(f"{folder}/{name}", f"{target}/{name}", overwrite=True)
    tf.io.gfile.rmtree(base)


def folder_made_once(final: str, make) -> str:
    """The local folder ``final``, made by ``make(tmp)`` into a hidden sibling of its own and
    renamed into place unless it is there already. Another process making it at the same
    time wins or loses the rename; the loser's copy is removed and the winner's used. A
    ``make`` that fails leaves nothing behind."""
    if os.path.isdir(final):
        return final
    os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
    tmp = beside(final, f"tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # a pid's leftover from a run killed mid-make
    try:
        make(tmp)
        os.rename(tmp, final)
    except OSError:
        if not os.path.isdir(final):  # not a lost race: the make itself failed
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # gone when renamed; the loser's copy otherwise
    return final


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
