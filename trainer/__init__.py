"""Trainer for the seed's dual-input Inception classifier (README.md's "Architecture" is the map).

Importing the package loads no TensorFlow; its C++ INFO/WARNING lines (oneDNN notices, missing
CUDA) drown the trainer's own progress output on CPU hosts, so they are off unless the user
set TF_CPP_MIN_LOG_LEVEL; errors still print.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
