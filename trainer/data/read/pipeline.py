"""The tf.data input pipeline: a worker's stream of ({"input1", "input2"}, label) batches.

Order contract: a worker's sequence of records is a pure function of (seed, epoch, worker
index, worker count) and the dataset, whatever its batch size, so a resumed run continues at
any pair count by skipping serialized records of one epoch at most, without decoding the
skipped images (trainer.run.resize: what that means when the worker count changes).

Pipeline (train): per epoch, the worker's files in a seeded order -> parallel interleave ->
shuffle of serialized records -> skip (resume) -> batch -> parse_example + one decode map for
both images -> optional identical augmentation of both images -> prefetch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from trainer.common.console import plural
from trainer.common.graph import graph_fn
from trainer.config import DataConfig
from trainer.data.read import decode, verify
from trainer.data.read.source import Source
from trainer.data.schema import FEATURES, DataError

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Shard:
    """A worker's part of a split: its files, or every file with record-level striding."""

    files: tuple
    records_per_epoch: int
    stride: int  # 1 for file-level sharding; num_workers for record-level
    offset: int


def worker_shard(source: Source, worker_index: int, num_workers: int) -> Shard:
    """File-level sharding when there are enough files, else record-level
    (``record_sharding_warning`` says so)."""
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"worker_index={worker_index} is outside [0, {num_workers}).")
    n_files = len(source.files)
    if n_files >= num_workers:
        idx = range(worker_index, n_files, num_workers)
        files = tuple(source.files[i] for i in idx)
        return Shard(files, sum(source.counts[i] for i in idx), 1, 0)
    total = source.num_records
    mine = len(range(worker_index, total, num_workers))
    return Shard(source.files, mine, num_workers, worker_index)


def record_sharding_warning(source: Source, num_workers: int, split: str) -> str | None:
    """The sentence a run logs once for a split with fewer files than workers (each worker
    then reads every file and keeps its stride of records), or None."""
    n_files = len(source.files)
    if num_workers < 2 or n_files >= num_workers:
        return None
    return (
        f"{plural(n_files, split + ' file')} for {num_workers} workers: sharding by record "
        f"(every worker reads every file); write at least {num_workers} shards to read less."
    )


def _record_seed(seed: int, salt: int) -> int:
    """The record shuffle's seed. A Python int: tf.data refuses a tensor seed in traced code.
    The same seed every epoch still gives a new order, since the epoch's file order differs."""
    return (seed * 1_000_003 + salt * 7919) % (2**31 - 1)


def _plain_records(compression: str):
    return graph_fn(
        lambda path: tf.data.TFRecordDataset(
            path, compression_type=compression, buffer_size=1 << 20
        )
    )


def _interleaved(files, shard: Shard, cycle: int, records, expected: int):
    """Records of ``files`` read in parallel, in a fixed order, then strided for this worker."""
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        records,
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if shard.stride > 1:
        ds = ds.shard(shard.stride, shard.offset)
    # A cut-off file ends quietly in TFRecordDataset: fail loudly instead, since a short
    # epoch would shift every later batch (and a resumed run's position).
    return ds.apply(tf.data.experimental.assert_cardinality(expected))


def _skip_filter(bad_keys: list, readable: dict, compression: str):
    """A per-file record function that leaves out the records a scan found bad."""
    keys = bad_keys or ["\0"]
    bad = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones([len(keys)], tf.int64)), 0
    )
    paths = list(readable) or ["\0"]
    limit = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            paths, tf.constant([readable.get(p, -1) for p in paths], tf.int64)
        ),
        -1,
    )

    def records(path):
        ds = tf.data.TFRecordDataset(path, compression_type=compression)
        ds = ds.take(limit.lookup(path)).enumerate()  # take(-1) keeps every record
        key = lambda i: tf.strings.join([path, tf.strings.as_string(i)], "#")  # noqa: E731
        return ds.filter(graph_fn(lambda i, r: tf.equal(bad.lookup(key(i)), 0))).map(
            graph_fn(lambda i, r: r)
        )

    return graph_fn(records)


def _epoch_records(source, shard, config, epoch, shuffle: bool, skip_plan=None):
    """Serialized records of one epoch for this worker, in the epoch's seeded order."""
    files = tf.constant(shard.files)
    if shuffle:
        keys = tf.random.stateless_uniform(
            [len(shard.files)],
            seed=tf.stack([tf.cast(config.seed, tf.int64), tf.cast(epoch, tf.int64)]),
        )
        files = tf.gather(files, tf.argsort(keys))
    cycle = max(1, min(config.cycle_length, len(shard.files)))
    if skip_plan is None:
        ds = _interleaved(
            files, shard, cycle, _plain_records(source.compression), shard.records_per_epoch
        )
    else:
        records, expected = skip_plan
        ds = _interleaved(files, shard, cycle, records, expected)
    if shuffle:
        ds = ds.shuffle(config.shuffle_buffer, seed=_record_seed(config.seed, shard.offset))
    return ds


def to_model_inputs(image_a, image_b, label):
    scale = 1.0 / 255.0
    return (
        {
            "input1": tf.cast(image_a, tf.float32) * scale,
            "input2": tf.cast(image_b, tf.float32) * scale,
        },
        label,
    )


def _augment(step, batch, seed: int):
    """The same random flip and brightness shift for both images of each pair."""
    inputs, label = batch
    n = tf.shape(label)[0]
    key = tf.stack([tf.cast(seed, tf.int64), step])
    flip = tf.random.stateless_uniform([n, 1, 1, 1], seed=key) < 0.5
    delta = tf.random.stateless_uniform([n, 1, 1, 1], seed=key + 1, minval=-0.1, maxval=0.1)

    def apply(image):
        image = tf.where(flip, tf.reverse(image, axis=[2]), image)
        return tf.clip_by_value(image + delta, 0.0, 1.0)

    return {k: apply(v) for k, v in inputs.items()}, label


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # Workers shard themselves (above); tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.experimental_optimization.map_parallelization = True
    return options


def skip_plan_for(source: Source, shard: Shard):
    """Scans the shard's files for skip_corrupt.

    Returns (per-file record function, records per epoch left for this worker, one line per
    skipped record or unreadable file tail).
    """
    bad_keys, readable, skipped, good = [], {}, [], 0
    for path in shard.files:
        declared = source.counts[source.files.index(path)]
        report = verify.scan_file(path, source.spec, source.compression, declared=declared)
        for i, reason in sorted(report.bad.items()):
            bad_keys.append(f"{path}#{i}")
            skipped.append(f"{path} record {i}: {reason}")
        if report.truncated_at is not None:
            readable[path] = report.truncated_at
            skipped.append(
                f"{path} records {report.truncated_at} onwards: unreadable "
                f"({report.truncated_reason})"
            )
        good += report.records - len(report.bad)
    # Record-level striding applies after the filter, so this worker's count is exact.
    per_epoch = len(range(shard.offset, good, shard.stride))
    return _skip_filter(bad_keys, readable, source.compression), per_epoch, skipped


def train_dataset(
    source: Source,
    config: DataConfig,
    *,
    batch_size: int,
    worker_index: int = 0,
    num_workers: int = 1,
    start_step: int = 0,
    start_pairs: int | None = None,
):
    """An endless stream of batches of ``batch_size`` (this worker's share of the global
    batch) for one worker, positioned at ``start_pairs`` of its stream (default: after
    ``start_step`` batches); ``start_step`` keys the augmentation.

    Returns (dataset, skipped) where ``skipped`` lists the records that ``skip_corrupt``
    leaves out (empty otherwise).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: it must be >= 1.")
    shard, plan, per_epoch, skipped = _worker_plan(source, config, worker_index, num_workers)
    position = start_step * batch_size if start_pairs is None else start_pairs
    first_epoch, offset = divmod(position, per_epoch)

    spec = source.spec
    if config.cache:
        ds = _cached_epochs(source, shard, config, plan, per_epoch, first_epoch)
        ds = ds.skip(offset).batch(batch_size, drop_remainder=True)
        ds = ds.map(graph_fn(to_model_inputs), num_parallel_calls=AUTOTUNE)
    else:
        # Skipped records are still serialized bytes here: resuming decodes none of them.
        ds = _record_stream(source, shard, config, plan, first_epoch).skip(offset)
        ds = ds.batch(batch_size, drop_remainder=True).map(
            graph_fn(lambda s: to_model_inputs(*parse_batch(s, spec))), num_parallel_calls=AUTOTUNE
        )
    return finish_train_stream(ds, config, start_step), skipped


def _worker_plan(source: Source, config: DataConfig, worker_index: int, num_workers: int):
    """(shard, skip plan or None, readable records per epoch, skipped lines) of one worker."""
    shard = worker_shard(source, worker_index, num_workers)
    plan, per_epoch, skipped = None, shard.records_per_epoch, []
    if config.skip_corrupt:
        records, per_epoch, skipped = skip_plan_for(source, shard)
        plan = (records, per_epoch)
    if per_epoch < 1:
        raise DataError(f"worker {worker_index} has no readable training records.")
    return shard, plan, per_epoch, skipped


def _record_stream(source, shard, config, plan, first_epoch: int):
    """The worker's serialized training records, epoch after epoch from ``first_epoch``."""
    return tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(
        graph_fn(lambda e: _epoch_records(source, shard, config, e, shuffle=True, skip_plan=plan))
    )


def next_pair_ids(
    source: Source,
    config: DataConfig,
    *,
    worker_index: int,
    num_workers: int,
    start_pairs: int,
    count: int,
) -> list[str] | None:
    """The pair ids of the ``count`` training pairs a worker reads from ``start_pairs`` on,
    from the same record stream train_dataset decodes (None under --cache, whose order
    lives in decoded memory)."""
    if config.cache:
        return None
    shard, plan, per_epoch, _ = _worker_plan(source, config, worker_index, num_workers)
    first_epoch, offset = divmod(start_pairs, per_epoch)
    records = _record_stream(source, shard, config, plan, first_epoch).skip(offset).take(count)
    feature = {"pair_id": FEATURES["pair_id"]}
    return [tf.io.parse_single_example(r, feature)["pair_id"].numpy().decode() for r in records]


def finish_train_stream(ds, config: DataConfig, start_step: int):
    """The last stages of every training stream (local or from the tf.data service): the
    optional augmentation keyed by step, prefetch, options."""
    if config.augment:
        ds = tf.data.Dataset.zip(tf.data.Dataset.range(start_step, np.iinfo(np.int64).max), ds).map(
            graph_fn(lambda step, b: _augment(step, b, config.seed)), num_parallel_calls=AUTOTUNE
        )
    return ds.prefetch(AUTOTUNE).with_options(_options(True))


def _cached_epochs(source, shard, config, plan, per_epoch: int, first_epoch: int):
    """--cache: the worker's shard is decoded into memory once; each epoch is a stateless
    permutation of it (tf.random.experimental.index_shuffle keyed by seed, epoch, worker)."""
    decoded = (
        _epoch_records(source, shard, config, 0, shuffle=False, skip_plan=plan)
        .batch(256)
        .map(graph_fn(lambda s: parse_batch(s, source.spec)), num_parallel_calls=AUTOTUNE)
    )
    parts = [tf.concat(t, 0) for t in zip(*[tuple(b) for b in decoded])]
    image_a, image_b, label = parts
    n = int(label.shape[0])
    if n != per_epoch:
        raise DataError(f"worker shard holds {n} readable records, expected {per_epoch}.")

    def epoch_elements(epoch):
        # index_shuffle takes a 2-element seed (it pads it to the op's 3).
        key = tf.stack([tf.cast(_record_seed(config.seed, shard.offset), tf.int64), epoch])

        def pick(i):
            j = tf.random.experimental.index_shuffle(i, key, tf.cast(n - 1, tf.int64))
            return image_a[j], image_b[j], label[j]

        return tf.data.Dataset.range(n).map(graph_fn(pick))

    return tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(
        graph_fn(epoch_elements)
    )


def parse_batch(serialized, spec: decode.ImageSpec):
    return decode.parse_pair_batch(serialized, spec)


def records_in_order(source: Source):
    """Every serialized record of a split, file after file (batch scoring, in input order)."""
    shard = worker_shard(source, 0, 1)
    ds = tf.data.Dataset.from_tensor_slices(list(shard.files)).flat_map(
        _plain_records(source.compression)
    )
    return ds.apply(tf.data.experimental.assert_cardinality(shard.records_per_epoch))


def eval_dataset(source: Source, batch_size: int, worker_index: int = 0, num_workers: int = 1):
    """One pass over this worker's part of a split, in file order, last batch kept."""
    shard = worker_shard(source, worker_index, num_workers)
    ds = _epoch_records(source, shard, DataConfig(), 0, shuffle=False)
    ds = ds.batch(batch_size).map(
        graph_fn(lambda s: to_model_inputs(*parse_batch(s, source.spec))),
        num_parallel_calls=AUTOTUNE,
    )
    return ds.prefetch(AUTOTUNE).with_options(_options(True))
