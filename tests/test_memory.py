"""glibc's malloc thresholds after the trainer makes its input iterators (trainer.runtime.memory):
large buffers come from the heap again, not a fresh mmap (and page faults) each time."""

import ctypes
import platform
import resource

import pytest
import tensorflow as tf

from trainer.data.read.source import open_source
from trainer.run import inputs
from trainer.run.programs import input_options
from trainer.runtime import memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt: the Linux hosts this package trains on and CI runs on",
)
MIB, PAGE = 1 << 20, 4096
ROUNDS = 100


def faults_of_reused_buffers() -> int:
    """Minor page faults of ROUNDS times: malloc 1 MiB, write every page, free. From the heap
    that is a handful in all; through mmap every page of every round faults (256 a round)."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(ROUNDS):
        p = libc.malloc(MIB)
        ctypes.memset(p, 1, MIB)
        libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_the_input_iterators_unpin_what_tensorflow_pinned(small_data):
    every_page = ROUNDS * MIB // PAGE
    # TensorFlow's own call, as ApplyPython311MemoryPatch makes it: every 1 MiB is an mmap.
    ctypes.CDLL(None).mallopt(memory.M_MMAP_THRESHOLD, 128 * 1024)
    pinned = faults_of_reused_buffers()
    assert pinned > 0.9 * every_page, pinned  # the measure sees the difference
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    source = open_source(small_data, "eval")
    it = inputs.eval_iterator(
        strategy, source, per_replica_batch=8, num_batches=2, options=input_options(False)
    )
    next(it)  # the iterator works as before
    unpinned = faults_of_reused_buffers()
    assert unpinned < 0.1 * every_page, (pinned, unpinned)


def test_unpinning_is_idempotent():
    assert memory.unpin_malloc_thresholds() and memory.unpin_malloc_thresholds()
    assert faults_of_reused_buffers() < 0.1 * ROUNDS * MIB // PAGE
