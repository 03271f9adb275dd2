"""Writes pairs into sharded TFRecord files and finishes the folder with ``dataset.json``.

Shards are written under temporary names and renamed when whole; ``dataset.json`` is written
last, so a reader never mistakes a half-written folder for a dataset.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from trainer.common.paths import join
from trainer.common.progress import Progress
from trainer.data import schema
from trainer.runtime import storage


def encode_image(image: np.ndarray, encoding: str, jpeg_quality: int = 95) -> bytes:
    """uint8 HxWxC pixels to the record's bytes for ``encoding``."""
    if encoding == "raw":
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    if encoding == "png":
        return tf.io.encode_png(image).numpy()
    if encoding == "jpeg":
        return tf.io.encode_jpeg(image, quality=jpeg_quality).numpy()
    raise ValueError(f"encoding={encoding!r} is unknown: use one of {schema.ENCODINGS}.")


def shard_plan(
    split: str, num_records: int, num_shards: int, gzip: bool, num_workers=1, worker_index=0
) -> list[tuple[str, int, int]]:
    """(file name, first record, end) of each shard that worker ``worker_index`` of
    ``num_workers`` writes: the records are cut into ``num_shards`` contiguous blocks (fewer
    when there are fewer records) and each worker takes a contiguous run of whole blocks, so
    the union over the workers is, name for name and byte for byte, what one worker writes."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards} is invalid: it must be >= 1.")
    count = max(1, min(num_shards, num_records)) if num_records else 1
    bounds = np.linspace(0, num_records, count + 1).astype(int)
    first, last = count * worker_index // num_workers, count * (worker_index + 1) // num_workers
    return [
        (schema.shard_name(split, i, count, gzip), int(bounds[i]), int(bounds[i + 1]))
        for i in range(first, last)
    ]


def write_shards(
    output_dir: str,
    plan: list[tuple[str, int, int]],
    records: Iterable[bytes],
    gzip: bool,
    progress_label: str,
) -> dict:
    """Writes the records (exactly the plan's, in order) into the plan's files, each under a
    temporary name renamed when whole. Returns {file name: record count}."""
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    total = sum(stop - start for _, start, stop in plan)
    progress = Progress(total, progress_label)
    iterator = iter(records)
    counts, done = {}, 0
    for name, start, stop in plan:
        path = join(output_dir, name)
        tmp = path + ".tmp"
        with tf.io.TFRecordWriter(tmp, options) as writer:
            for _ in range(stop - start):
                writer.write(next(iterator))
                done += 1
                progress.update(done)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        counts[name] = stop - start
    return counts


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
    plan = shard_plan(split, num_records, num_shards, gzip)
    return write_shards(output_dir, plan, records, gzip, progress_label or f"writing {split}")


def prepare_output_dir(output_dir: str, allow_shards: bool = False) -> None:
    """Creates the folder; refuses one that already holds a dataset, so nothing is mixed
    (``allow_shards``: other workers' shards of the same conversion may be there)."""
    storage.check_local_folder(output_dir, "output_dir")  # not a file, nor under one
    storage.require_bucket(output_dir, "output_dir")  # before makedirs (see runtime/storage.py)
    if tf.io.gfile.exists(output_dir):
        existing = [n for n in tf.io.gfile.listdir(output_dir) if schema.SHARD_RE.match(n)]
        if allow_shards:
            existing = []
        if existing or tf.io.gfile.exists(join(output_dir, schema.METADATA_FILE)):
            raise FileExistsError(
                f"output_dir {output_dir} already holds a dataset ({len(existing)} shard files): "
                "choose an empty folder."
            )
    tf.io.gfile.makedirs(output_dir)
