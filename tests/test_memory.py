"""glibc's malloc thresholds after the trainer makes its input iterators (trainer.runtime.memory):
large buffers come from the heap again, not a fresh mmap (and page faults) each time."""

import ctypes
import json
import pathlib
import platform
import resource
import subprocess
import sys

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


def pinned_then_through_the_trainers_iterator(data: str) -> tuple[int, int]:
    """(faults pinned, faults after the trainer's eval iterator is made), in this process."""
    # TensorFlow's own call, as ApplyPython311MemoryPatch makes it: every 1 MiB an mmap.
    ctypes.CDLL(None).mallopt(memory.M_MMAP_THRESHOLD, 128 * 1024)
    pinned = faults_of_reused_buffers()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    it = inputs.eval_iterator(
        strategy,
        open_source(data, "eval"),
        per_replica_batch=8,
        num_batches=2,
        options=input_options(False),
    )
    next(it)  # the iterator works as before
    return pinned, faults_of_reused_buffers()


def test_the_input_iterators_unpin_what_tensorflow_pinned(small_data):
    """In a fresh process (the subject is a process's allocator: a test process that has
    trained holds large free chunks that serve 1 MiB without any mmap, pinned or not)."""
    code = (  # TensorFlow loaded as the trainer loads it (trainer.common.console)
        "import json, sys; from trainer.common import console; console.load_tensorflow(); "
        "from tests import test_memory as t; "
        "print(json.dumps(t.pinned_then_through_the_trainers_iterator(sys.argv[1])))"
    )
    root = pathlib.Path(__file__).parent.parent
    r = subprocess.run(
        [sys.executable, "-c", code, small_data], capture_output=True, text=True, cwd=root
    )
    assert r.returncode == 0, r.stderr[-2000:]
    pinned, unpinned = json.loads(r.stdout.strip().splitlines()[-1])
    every_page = ROUNDS * MIB // PAGE
    assert pinned > 0.9 * every_page, pinned  # the measure sees the difference
    assert unpinned < 0.1 * every_page, (pinned, unpinned)


def test_unpinning_is_idempotent():
    assert memory.unpin_malloc_thresholds() and memory.unpin_malloc_thresholds()
