"""Where a split's records are: a dataset folder (with dataset.json) or a file pattern.

Resolves the files, their record counts and the image spec every record must match, so the
reader and verify agree on what a dataset is. Paths go through tf.io.gfile.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from trainer.data import schema
from trainer.data.read import decode
from trainer.data.schema import DataError
from trainer.runtime import storage


@dataclasses.dataclass(frozen=True)
class Source:
    """The files of one split and what their records must hold."""

    files: tuple
    counts: tuple  # records per file, in the order of ``files``
    spec: decode.ImageSpec
    compression: str = ""

    @property
    def num_records(self) -> int:
        return int(sum(self.counts))


def is_pattern(data: str) -> bool:
    """A file pattern (or a single file) rather than a dataset folder."""
    return any(ch in data for ch in "*?[") or data.endswith((".tfrecord", ".gz"))


def _storage_outage(e: tf.errors.OpError) -> bool:
    """Cloud Storage out of reach is not bad data: the caller retries the run (exit 75)."""
    found = storage.failure(e)
    return found is not None and found.transient


def resolve_files(pattern: str) -> list[str]:
    """Files matching a pattern (local, gs://, ram://); a clear error when there are none."""
    try:
        files = sorted(tf.io.gfile.glob(pattern))
    except tf.errors.OpError as e:
        if _storage_outage(e):
            raise
        raise DataError(f"cannot list {pattern}: {decode.error_reason(e)}.") from None
    if not files:
        raise DataError(f"no files match {pattern}: check the path (and the bucket's name).")
    return files


def _peek_spec(path: str, compression: str) -> decode.ImageSpec:
    """Reads the first record's declared size and encoding (folders without dataset.json)."""
    try:
        for record in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
            f = tf.io.parse_single_example(record, schema.FEATURES)
            return decode.ImageSpec(
                int(f["height"]),
                int(f["width"]),
                int(f["channels"]),
                f["encoding"].numpy().decode(),
            )
    except tf.errors.OpError as e:
        if _storage_outage(e):
            raise
        raise DataError(f"{path} record 0: {decode.error_reason(e)}.") from None
    raise DataError(f"{path} holds no records: nothing to infer the image size from.")


def count_records(path: str, compression: str) -> int:
    """Records in one file (reads the bytes, decodes nothing)."""
    ds = tf.data.TFRecordDataset(path, compression_type=compression)
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


def open_source(data: str, split: str = "train") -> Source:
    """A dataset folder (with dataset.json) or a file pattern, as a Source.

    Raises DataError for a missing folder, an empty pattern or unreadable metadata.
    """
    info = None
    if is_pattern(data):
        files = resolve_files(data)
    else:
        if not tf.io.gfile.exists(data):
            raise DataError(f"data_dir {data} does not exist.")
        try:
            info = schema.read_info(data)
        except FileNotFoundError as e:
            raise DataError(str(e)) from None
        files = schema.split_files(data, split)
        if not files:
            raise DataError(f"{data} has no {split} shards ({split}-*.tfrecord).")
    if info is not None:
        compression = info.compression
        spec = decode.ImageSpec.from_info(info)
        counts = [info.files.get(f.rsplit("/", 1)[-1]) for f in files]
    else:
        compression = "GZIP" if files[0].endswith(".gz") else ""
        spec = _peek_spec(files[0], compression)
        counts = [None]
    if None in counts:
        counts = [count_records(f, compression) for f in files]
    return Source(tuple(files), tuple(int(c) for c in counts), spec, compression)


def open_splits(data: str) -> tuple[Source, Source]:
    """(train, eval) Sources of a dataset; the training split stands in for a missing eval
    split, with a warning."""
    from absl import logging

    train = open_source(data, "train")
    try:
        return train, open_source(data, "eval")
    except DataError:
        logging.warning("no eval split in %s: evaluating on the training split", data)
        return train, train
