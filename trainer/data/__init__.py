"""Paired-image TFRecords: the schema (``schema``), reading (``read``), writing (``write``)
and the tf.data service (``service``). Importing this package loads no TensorFlow.

Command line: ``python -m trainer.data synthetic|convert|finalize|verify|dispatcher|data_worker``.
"""

from __future__ import annotations

import glob
import os

from trainer.common.errors import UsageError


class DataError(UsageError):
    """A bad record or data folder; the message names the file (and record index)."""


def is_pattern(data: str) -> bool:
    """A file pattern (or a single file) rather than a dataset folder."""
    return any(ch in data for ch in "*?[") or data.endswith((".tfrecord", ".gz"))


def no_such_folder(data: str) -> DataError:
    return DataError(f"data_dir {data} does not exist.")


def no_match(pattern: str) -> DataError:
    return DataError(f"no files match {pattern}: check the path (and the bucket's name).")


def check_local_data(data: str) -> None:
    """Raises the reader's refusal of a --data_dir that is not there, where a plain file check
    can tell without TensorFlow: a local folder that does not exist, or a local pattern
    matching no file. Passes what is there, the empty default (the built-in set) and paths
    with a scheme (gs://, ram://: only the reader can look). `launch local` asks before it
    starts any worker, each of which would load TensorFlow only to say it."""
    if not data or "://" in data:
        return
    if is_pattern(data):
        if not glob.glob(data):
            raise no_match(data)
    elif not os.path.exists(data):
        raise no_such_folder(data)
