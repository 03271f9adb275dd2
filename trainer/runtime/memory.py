"""glibc's malloc thresholds put back where glibc itself would have taken them, after
TensorFlow pins them low.

Why: TensorFlow 2.21, on Python 3.11 and newer, calls ``mallopt(M_MMAP_THRESHOLD, 128 KiB)``
the first time a GeneratorDataset kernel is built (``ApplyPython311MemoryPatch``, seen with
gdb), and tf.distribute builds one for every distributed iterator (its multi-device
iterator's per-device generators), so every training run gets it. The call also turns off
glibc's own rule that raises the threshold to the size of what was freed (up to 32 MiB), so
thereafter every tensor of 128 KiB or more is a fresh mmap and munmap: an activation of
this model's step is 0.16-26 MB, and a 100-step CPU run made ~300 mmap/munmap pairs a step,
2.4 million page faults and spent a third of its CPU time in the kernel zeroing pages
(bench/RESULTS.md). Setting the thresholds glibc's dynamic rule converges to (32 MiB, the
trim threshold twice that) takes those tensors from the heap again.

Idempotent and cheap: the callers run it after each distributed iterator is made (TensorFlow
pinned the threshold by then). A no-op off glibc (macOS, musl).
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for its dynamic threshold on 64-bit hosts
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # the trim threshold glibc pairs with it

_mallopt = None


def _glibc_mallopt():
    global _mallopt
    if _mallopt is None:
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            _mallopt = False
        else:
            _mallopt = ctypes.CDLL(None).mallopt
            _mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return _mallopt


def unpin_malloc_thresholds() -> bool:
    """Sets glibc's mmap and trim thresholds to what its dynamic rule would reach; returns
    whether it could (False off glibc)."""
    mallopt = _glibc_mallopt()
    if not mallopt:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
