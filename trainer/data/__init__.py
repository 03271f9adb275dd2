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


CONVERT = (  # a dataset folder is what the converter writes from a CSV of image pairs
    "convert the image pairs into a dataset folder first (python -m trainer.data convert "
    "--pairs {} --output_dir DIR), then pass --data_dir=DIR"
)


def not_a_folder(data: str) -> DataError:
    """A file given as --data_dir that is not a pattern of shards (a CSV of pairs: how to
    make a dataset of it)."""
    if data.lower().endswith(".csv"):  # image pairs a user brought, not yet records
        return DataError(f"data_dir {data} is a CSV file: {CONVERT.format(data)}.")
    return DataError(f"data_dir {data} is a file: give the dataset's folder (or a pattern).")


def check_local_data(data: str) -> None:
    """Raises the reader's refusal of a --data_dir that is not one, where a plain file check
    can tell without TensorFlow: a local folder that does not exist, a local file that is no
    pattern of shards, or a local pattern matching no file. Passes what may be a dataset, the
    empty default (the built-in set) and paths with a scheme (gs://, ram://: only the reader
    can look). The trainer and `launch local` ask before TensorFlow loads (each worker would
    load it only to say this)."""
    if not data or "://" in data:
        return
    if is_pattern(data):
        if not glob.glob(data):
            raise no_match(data)
    elif not os.path.exists(data):
        raise no_such_folder(data)
    elif not os.path.isdir(data):
        raise not_a_folder(data)
