"""Trainer for the seed's dual-input Inception classifier (see README.md for the map)."""

import os

# TensorFlow's C++ INFO/WARNING lines (oneDNN notices, missing CUDA) drown the trainer's own
# progress output on CPU hosts; errors still print. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Exit codes (DESIGN.md; the Job controller and `launch local` act on them): done; bad input
# or usage, do not retry; preempted or a peer lost after a checkpoint, retry the group.
EXIT_OK, EXIT_USAGE, EXIT_RETRY = 0, 1, 75
