"""Trainer for the seed's dual-input Inception classifier (README.md's "Architecture" is the map).

Importing the package loads no TensorFlow; its C++ INFO/WARNING lines (oneDNN notices, missing
CUDA) drown the trainer's own progress output on CPU hosts, so they are off unless the user
set TF_CPP_MIN_LOG_LEVEL (the lines it logs while loading, which no level hides, are kept
back by trainer.common.console); errors still print. NumPy's OpenBLAS gets one thread unless the
user chose (OPENBLAS_NUM_THREADS): see below.
"""

import os

# Whether TF_CPP_MIN_LOG_LEVEL is the user's (trainer.common.console then shows TensorFlow's
# start-up lines) or was set here, also in a parent such as `launch local` (the marker).
TF_LOG_LEVEL_FROM_USER = (
    "TF_CPP_MIN_LOG_LEVEL" in os.environ and os.environ.get("TRAINER_TF_LOG_LEVEL_SET") != "1"
)
if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ["TRAINER_TF_LOG_LEVEL_SET"] = "1"

# NumPy's OpenBLAS starts a pool of one thread per core when NumPy loads, and its own import
# check (a dot product) wakes them to spin-wait: ~0.1 CPU-s in every trainer, data-service and
# tool process here, and 95 idle threads per process on a 96-core GPU node. Nothing in this
# package multiplies matrices with NumPy (TensorFlow's kernels have their own pools), so the
# pool is waste; a user's own setting wins (bench/RESULTS.md, "NumPy's BLAS pool").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
