"""The programs' input: distributed iterators over the training stream (local tf.data or the
tf.data service) and over the padded eval split, and the one sentence for a bad record.

Position contract: each worker's stream starts at the checkpoint's pairs seen divided by the
number of workers (trainer.data.read.pipeline's order is a pure function of seed, epoch,
worker index and count), so a run resumed on as many workers reads on exactly, whatever its
GPUs per worker; on another number of workers the files are split anew and each worker
starts its new share at that position (trainer.run.resize says so at start). Through the
tf.data service a resume restarts at the beginning of its epoch (trainer.data.service.client).
"""

from __future__ import annotations

import math

import tensorflow as tf
from absl import logging

from trainer.common.graph import graph_fn
from trainer.config import DataConfig
from trainer.data import DataError
from trainer.data.read import pipeline, verify
from trainer.data.service import client as service
from trainer.run import resize
from trainer.runtime import memory

# FailedPrecondition: a file that ends early fails the reader's cardinality check (a gs://
# file the start checks do not walk; see trainer.data.read.frames).
DATA_ERRORS = (
    tf.errors.InvalidArgumentError,
    tf.errors.DataLossError,
    tf.errors.FailedPreconditionError,
)


def data_error(error: tf.errors.OpError, source, split: str) -> Exception:
    """The first bad record of ``source`` as a DataError (or ``error`` itself if none is
    found: then the failure was not the data's)."""
    problem = verify.locate_first_bad(source)
    if problem and split == "eval":  # --skip_corrupt skips training records only
        return DataError(f"bad eval data: {problem} (fix or rewrite the file).")
    if problem:
        return DataError(f"bad {split} data: {problem} (use --skip_corrupt to skip it).")
    return error


def train_iterator(
    strategy,
    source,
    config: DataConfig,
    *,
    per_replica_batch: int,
    replicas_per_worker: int,
    examples_seen: int,
    model_dir: str,
    options: tf.distribute.InputOptions,
    show_position: bool = False,
):
    """The distributed iterator of training batches from the pairs already seen on;
    ``show_position`` logs where this worker reads on and its next pair ids (a resize)."""
    global_batch = per_replica_batch * strategy.num_replicas_in_sync
    start = examples_seen // global_batch * replicas_per_worker  # this worker's batches
    if config.service_address:
        return _service_iterator(
            strategy,
            source,
            config,
            per_replica_batch=per_replica_batch,
            examples_seen=examples_seen,
            start=start,
            name=service.job_name(model_dir, config.seed, examples_seen),
            options=options,
        )
    skipped = []

    def dataset_fn(ctx):  # called once in each worker's process
        at = {"worker_index": ctx.input_pipeline_id, "num_workers": ctx.num_input_pipelines}
        _warn_if(pipeline.record_sharding_warning(source, ctx.num_input_pipelines, "training"))
        start_pairs = examples_seen // ctx.num_input_pipelines
        ds, found = pipeline.train_dataset(
            source,
            config,
            batch_size=per_replica_batch,
            start_step=start,
            start_pairs=start_pairs,
            **at,
        )
        skipped.extend(found)
        if show_position:
            _log_position(
                source,
                config,
                start_pairs=start_pairs,
                count=per_replica_batch * replicas_per_worker,
                **at,
            )
        return ds

    dist = strategy.distribute_datasets_from_function(dataset_fn, options)
    if skipped:
        logging.warning(
            "skipping %d corrupt records or file tails: %s", len(skipped), "; ".join(skipped[:10])
        )
    return _iterate(dist)


def _iterate(dist):
    """``iter(dist)``, then glibc's malloc thresholds unpinned: making it had TensorFlow pin
    them (trainer.runtime.memory says why that cost a third of a CPU run's time)."""
    iterator = iter(dist)
    memory.unpin_malloc_thresholds()
    return iterator


def _service_iterator(
    strategy, source, config, *, per_replica_batch, examples_seen, start, name, options
):
    """Every trainer worker reads one shared job of the tf.data service (its data workers
    decode); see trainer.data.service.client for what a resume reproduces."""
    logging.info("input from the tf.data service at %s, job %s", config.service_address, name)
    return _iterate(
        strategy.distribute_datasets_from_function(
            lambda ctx: service.train_stream(
                source,
                config,
                batch_size=per_replica_batch,
                address=config.service_address,
                name=name,
                examples_seen=examples_seen,
                start_step=start,
            ),
            options,
        )
    )


def _log_position(source, config, *, worker_index, num_workers, start_pairs, count) -> None:
    """Where a resized run's worker reads on, with the ids of its first step's pairs."""
    ids = pipeline.next_pair_ids(
        source,
        config,
        worker_index=worker_index,
        num_workers=num_workers,
        start_pairs=start_pairs,
        count=count,
    )
    per_epoch = pipeline.worker_shard(source, worker_index, num_workers).records_per_epoch
    logging.info(
        "%s",
        resize.worker_line(
            worker=worker_index,
            workers=num_workers,
            start=start_pairs,
            per_epoch=per_epoch,
            ids=ids,
        ),
    )


def _warn_if(sentence: str | None) -> None:
    """Logs the sentence, if there is one (the callers run once per run and process)."""
    if sentence:
        logging.warning("%s", sentence)


def eval_batches(source, per_replica_batch: int, replicas_per_worker: int, workers: int) -> int:
    """Batches every worker runs, so all take part in the same number of collective steps
    (computed once per run, where a split read by record is said once)."""
    _warn_if(pipeline.record_sharding_warning(source, workers, "eval"))
    largest = max(
        pipeline.worker_shard(source, w, workers).records_per_epoch for w in range(workers)
    )
    batches = math.ceil(largest / per_replica_batch)
    return math.ceil(batches / replicas_per_worker) * replicas_per_worker


def _padded_eval(source, batch: int, worker: int, workers: int, num_batches: int):
    """This worker's eval batches with weights, padded with weight-0 pairs to num_batches."""
    spec = source.spec
    real = pipeline.eval_dataset(source, batch, worker, workers).map(
        graph_fn(lambda x, y: (x, y, tf.ones_like(y, tf.float32)))
    )
    zeros = tf.zeros([batch, spec.height, spec.width, spec.channels])
    pad = tf.data.Dataset.from_tensors(
        ({"input1": zeros, "input2": zeros}, tf.zeros([batch], tf.int32), tf.zeros([batch]))
    ).repeat()
    return real.concatenate(pad).take(num_batches)


def eval_iterator(strategy, source, *, per_replica_batch: int, num_batches: int, options):
    """The distributed iterator of padded eval batches (weights mark the real pairs)."""
    return _iterate(
        strategy.distribute_datasets_from_function(
            lambda ctx: _padded_eval(
                source,
                per_replica_batch,
                ctx.input_pipeline_id,
                ctx.num_input_pipelines,
                num_batches,
            ),
            options,
        )
    )
