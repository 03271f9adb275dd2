"""Writes pairs into sharded TFRecord files and finishes the folder with ``dataset.json``.

Shards are written under temporary names and renamed when whole; ``dataset.json`` is written
last, so a reader never mistakes a half-written folder for a dataset.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from trainer import storage
from trainer.data import schema


class Progress:
    """A one-line progress bar on stderr for long writes (quiet when total is small)."""

    def __init__(self, total: int, label: str, stream=sys.stderr, min_total: int = 200):
        self.total, self.label, self.stream = total, label, stream
        self.enabled = total >= min_total
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.5 and done < self.total):
            return
        self.last = now
        frac = done / max(self.total, 1)
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "#" * int(30 * frac)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {done}/{self.total} {rate:,.0f} pairs/s ETA {eta:,.0f}s"
        )
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def encode_image(image: np.ndarray, encoding: str, jpeg_quality: int = 95) -> bytes:
    """uint8 HxWxC pixels to the record's bytes for ``encoding``."""
    if encoding == "raw":
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    if encoding == "png":
        return tf.io.encode_png(image).numpy()
    if encoding == "jpeg":
        return tf.io.encode_jpeg(image, quality=jpeg_quality).numpy()
    raise ValueError(f"encoding={encoding!r} is unknown: use one of {schema.ENCODINGS}.")


def write_split(
    output_dir: str,
    split: str,
    records: Iterable[bytes],
    num_records: int,
    num_shards: int,
    gzip: bool,
    progress_label: str | None = None,
) -> dict:
    """Writes serialized records in contiguous blocks over ``num_shards`` files.

    Returns {file name: record count}; the reader shuffles files and records, so the blocks
    need no mixing here.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards} is invalid: it must be >= 1.")
    num_shards = max(1, min(num_shards, num_records)) if num_records else 1
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    bounds = np.linspace(0, num_records, num_shards + 1).astype(int)
    counts = {}
    progress = Progress(num_records, progress_label or f"writing {split}")
    iterator = iter(records)
    done = 0
    for index in range(num_shards):
        name = schema.shard_name(split, index, num_shards, gzip)
        path = schema.join(output_dir, name)
        tmp = path + ".tmp"
        n = int(bounds[index + 1] - bounds[index])
        with tf.io.TFRecordWriter(tmp, options) as writer:
            for _ in range(n):
                writer.write(next(iterator))
                done += 1
                progress.update(done)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        counts[name] = n
    return counts


def prepare_output_dir(output_dir: str) -> None:
    """Creates the folder; refuses one that already holds a dataset, so nothing is mixed."""
    storage.require_bucket(output_dir, "output_dir")  # before makedirs: see trainer/storage.py
    if tf.io.gfile.exists(output_dir):
        existing = [n for n in tf.io.gfile.listdir(output_dir) if schema.SHARD_RE.match(n)]
        if existing or tf.io.gfile.exists(schema.join(output_dir, schema.METADATA_FILE)):
            raise FileExistsError(
                f"output_dir {output_dir} already holds a dataset ({len(existing)} shard files): "
                "choose an empty folder."
            )
    tf.io.gfile.makedirs(output_dir)
