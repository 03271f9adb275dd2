"""TensorFlow's thread pools for this host: how many (a pure rule) and setting them before the
runtime starts."""

from __future__ import annotations

import os

from absl import logging


def thread_counts(intra_flag: int, inter_flag: int, num_gpus: int, env=None) -> tuple[int, int]:
    """(intra-op, inter-op) pool sizes for TensorFlow; 0 leaves TensorFlow's own choice.

    Auto intra-op is 1 without GPUs. This model's towers and Inception branches are
    independent ops, so the inter-op pool (one thread per core) already keeps the cores busy
    with whole ops; splitting each op over threads as well (TensorFlow's default) measured no
    faster on 2 cores, with or without a busy neighbour, and spent more time in the kernel
    handing work between threads (bench/threads.py, bench/RESULTS.md). An explicit flag, or
    TF_NUM_INTRAOP_THREADS in the environment, wins.
    """
    env = os.environ if env is None else env
    intra = intra_flag
    if intra == 0 and num_gpus == 0 and not env.get("TF_NUM_INTRAOP_THREADS"):
        intra = 1
    return intra, inter_flag


def configure_threads(intra_flag: int, inter_flag: int) -> tuple[int, int]:
    """Sets TensorFlow's thread pools (before the runtime starts); returns what was set."""
    import tensorflow as tf

    num_gpus = len(tf.config.list_physical_devices("GPU"))
    intra, inter = thread_counts(intra_flag, inter_flag, num_gpus)
    pools = tf.config.threading
    try:
        if intra and pools.get_intra_op_parallelism_threads() != intra:
            pools.set_intra_op_parallelism_threads(intra)
        if inter and pools.get_inter_op_parallelism_threads() != inter:
            pools.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # the runtime already started (train_and_evaluate in-process)
        logging.warning("thread pools stay as they are: TensorFlow had already started")
    logging.info(
        "TensorFlow thread pools: intra-op %d, inter-op %d (0: TensorFlow's choice)",
        pools.get_intra_op_parallelism_threads(),
        pools.get_inter_op_parallelism_threads(),
    )
    return intra, inter
