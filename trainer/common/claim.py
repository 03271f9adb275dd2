"""A training run's claim on a local model_dir: an exclusive lock (flock) on the folder.

Why: two runs in one model_dir (a second terminal, a forgotten background run, a second
``launch local``) would save over each other's checkpoints and export. The trainer's chief
holds the claim while it trains (``claimed``); ``launch local`` asks first
(``check_unclaimed``), so it starts no worker for a folder that is taken. The kernel drops
the lock when the process ends however it ends (kill -9 too), so a restarted run takes it at
once. gs:// and ram:// folders have no locks: there, one run per model_dir is the user's rule
(launch k8s --replace deletes the old run first). No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

from trainer.common.errors import UsageError, first_line

log = logging.getLogger(__name__)


class Claimed(UsageError):
    """Another process holds the model_dir's claim."""

    def __init__(self, model_dir: str):
        super().__init__(
            f"another run is training in {model_dir} (it holds the folder's lock): wait "
            "until it ends, or give another --model_dir."
        )


def _lock(fd: int, model_dir: str) -> None:
    """Takes the lock on the open folder ``fd`` (a warning on a file system without locks)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Claimed(model_dir) from None
    except OSError as e:  # a file system without locks (some network mounts)
        log.warning("%s cannot be locked (%s): a second run there would not be stopped",
                    model_dir, first_line(e))  # fmt: skip


@contextlib.contextmanager
def claimed(model_dir: str):
    """The claim on a local model_dir for the block (made if need be, so nothing is written
    for it); Claimed when another process holds it. A folder made for the claim and still
    empty afterwards (a run refused before it wrote) is taken away again."""
    if "://" in model_dir:
        yield
        return
    made = not os.path.isdir(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    fd = os.open(model_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _lock(fd, model_dir)
        yield
    finally:
        os.close(fd)  # and with it the lock
        if made and not os.listdir(model_dir):
            os.rmdir(model_dir)


def check_unclaimed(model_dir: str) -> None:
    """Claimed when a run holds ``model_dir`` now; takes and drops the lock, makes nothing.
    (A run may still take it in between: its chief then refuses the second, as before.)"""
    if "://" in model_dir or not os.path.isdir(model_dir):
        return  # no folder: no run holds it
    fd = os.open(model_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _lock(fd, model_dir)
    finally:
        os.close(fd)
