"""Trainer for the seed's dual-input Inception classifier (see README.md for the map)."""

import os

# TensorFlow's C++ INFO/WARNING lines (oneDNN notices, missing CUDA) drown the trainer's own
# progress output on CPU hosts; errors still print. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
