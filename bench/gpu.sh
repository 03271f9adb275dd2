#!/usr/bin/env bash
# One prepared script for a session lent an NVIDIA GPU (the device tool), run from the repository
# root there:  bash bench/gpu.sh   (results go to $OUT, default bench/out).
# The GPU machine has JAX (and PyTorch) but no TensorFlow, and a TensorFlow wheel is too big to
# carry (DESIGN.md). So it measures the seed model itself with Keras 3 on the JAX backend: the
# GPU compute ceiling for this model, recorded as that, not as the trainer's figure.
# Carry the keras wheel along:  pip download --no-deps keras==3.15.1 -d bench/wheels
set -euo pipefail
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu-info.txt"
python -c "import jax; print('jax', jax.__version__, jax.devices())"
if ! python -c "import keras, sys; sys.exit(0 if keras.__version__.startswith('3.') else 1)" 2>/dev/null; then
  python -m pip install --no-deps --target /tmp/keras-pkg bench/wheels/keras-*.whl
  export PYTHONPATH=/tmp/keras-pkg${PYTHONPATH:+:$PYTHONPATH}
fi
KERAS_BACKEND=jax timeout 500 python bench/gpu_keras_jax.py --out "$OUT/gpu.json" | tee "$OUT/gpu.txt"

# The trainer itself on the GPU, the day this machine has TensorFlow: steps per host round trip
# (issue 15; 1 vs 10 vs 100, beside Keras fit) and what XLA compiles (whole step vs split).
if python -c "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" 2>/dev/null; then
  python -m pip install -q --no-deps -e . 2>/dev/null || true
  timeout 900 python bench/steps_per_loop.py --rounds 3 --out "$OUT/steps_per_loop_gpu.json" | tee "$OUT/steps_per_loop_gpu.txt"
  timeout 600 python bench/compile_plans.py --steps 200 --steps_per_loop 100 --out "$OUT/compile_plans_gpu.json" | tee "$OUT/compile_plans_gpu.txt"
  timeout 600 python bench/compile_plans.py --precision mixed_bfloat16 --steps 200 --steps_per_loop 100 --out "$OUT/compile_plans_gpu_bf16.json" | tee "$OUT/compile_plans_gpu_bf16.txt"
else
  echo "no TensorFlow with a GPU here: bench/steps_per_loop.py and bench/compile_plans.py (the trainer's own GPU figures) wait for a machine that has it" | tee "$OUT/tf-gpu.txt"
fi
