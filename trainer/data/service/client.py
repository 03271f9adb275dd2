"""The training input through the tf.data service: data workers decode, the trainer trains.

Processing mode: dynamic sharding (``ShardingPolicy.DYNAMIC``, "distributed epoch"). The
dispatcher hands out *files* one at a time from an endless, seeded sequence - epoch e is every
training file once, in the order ``index_shuffle(seed, e)`` - and each data worker reads the
files it is given, shuffles their records, parses, decodes and batches them. Every trainer
worker of a run reads from one shared job, so each batch goes to exactly one trainer.

What that guarantees (and what it does not), stated in README.md too:

- Each training record is delivered at most once per epoch, and exactly once while no data
  worker is lost: nothing is dropped at an epoch's end, since a worker's records run on into
  the next epoch's files without a partial batch. A data worker that dies takes the records it
  held (its files in flight and its buffers) with it; training goes on with the others.
- The order is not reproducible: which worker gets which file, and whose batch arrives first,
  depends on timing. ``--deterministic`` is refused with the service.
- A resumed run restores model, optimizer and step exactly (the checkpoint), and restarts the
  input at the beginning of the epoch it had reached: the pairs it had already seen of that
  epoch come again. (With the service off, the exact-resume contract of
  trainer.data.read.pipeline is unchanged.)

Batches travel as uint8 pixels (a quarter of float32's bytes); the trainer scales them to
[0, 1] and applies the optional augmentation, which are cheap elementwise ops on a decoded
batch - the decode stays on the data workers.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import tensorflow as tf

from trainer.common.graph import graph_fn
from trainer.config import DataConfig
from trainer.data.read import decode, pipeline
from trainer.data.read.source import Source

AUTOTUNE = tf.data.AUTOTUNE


def job_name(model_dir: str, seed: int, examples_seen: int) -> str:
    """One name for every trainer worker of a run attempt (they then share one stream);
    a resume from another checkpoint gets a new job, so it starts a fresh epoch."""
    digest = hashlib.sha256(model_dir.encode()).hexdigest()[:12]
    return f"train-{digest}-s{seed}-at{examples_seen}"


def _file_splits(source: Source, seed: int, first_epoch: int):
    """(epoch, file) for split i = epoch * F + j: an endless sequence the dispatcher hands out.

    Only a Range and maps before the interleave, so dynamic sharding splits by file."""
    # The data workers open these paths, maybe from another folder: no relative paths.
    files = tf.constant([f if "://" in f else os.path.abspath(f) for f in source.files])
    n = len(source.files)

    def file_of(i):
        epoch, j = i // n, i % n
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        k = tf.random.experimental.index_shuffle(j, key, tf.constant(n - 1, tf.int64))
        return epoch, files[k]

    return tf.data.Dataset.range(first_epoch * n, np.iinfo(np.int64).max).map(graph_fn(file_of))


def worker_pipeline(
    source: Source, batch_size: int, seed: int, shuffle_buffer: int, first_epoch: int, probe=False
):
    """What each data worker runs: files -> records -> shuffle -> batch -> parse and decode.

    Elements: (image_a uint8, image_b uint8, label int32), plus (epoch, pair_id) per pair when
    ``probe`` (tests count what the trainer receives with it)."""
    compression = source.compression
    spec = source.spec

    def records(epoch, path):
        ds = tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=1 << 20)
        return ds.map(graph_fn(lambda r: (epoch, r)))

    ds = _file_splits(source, seed, first_epoch).interleave(
        graph_fn(records), cycle_length=min(8, len(source.files)), num_parallel_calls=AUTOTUNE
    )
    ds = ds.shuffle(shuffle_buffer).batch(batch_size, drop_remainder=True)

    def parse(epoch, serialized):
        image_a, image_b, label = decode.parse_pair_batch(serialized, spec)
        if not probe:
            return image_a, image_b, label
        ids = tf.io.parse_example(
            serialized, {"pair_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
        )["pair_id"]
        return image_a, image_b, label, epoch, ids

    return ds.map(graph_fn(parse), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def distributed(dataset, address: str, name: str):
    """``dataset`` run by the service at ``address`` as job ``name`` (dynamic sharding).

    No compression: decoded pixels barely shrink, and decompressing would cost the trainer's
    CPU, which is what the service is there to spare."""
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=address,
            job_name=name,
            compression=None,
        )
    )


def train_stream(
    source: Source,
    config: DataConfig,
    *,
    batch_size: int,
    address: str,
    name: str,
    examples_seen: int,
    start_step: int,
):
    """A trainer worker's endless batches of ``batch_size`` from the service, from the start
    of the epoch that ``examples_seen`` falls in."""
    first_epoch = examples_seen // source.num_records
    ds = worker_pipeline(source, batch_size, config.seed, config.shuffle_buffer, first_epoch)
    ds = distributed(ds, address, name).map(
        graph_fn(pipeline.to_model_inputs), num_parallel_calls=AUTOTUNE
    )
    return pipeline.finish_train_stream(ds, config, start_step)
