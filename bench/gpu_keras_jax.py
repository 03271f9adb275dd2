"""GPU compute ceiling of the seed model: Keras 3 on the JAX backend (the lent GPU machine has
JAX but no TensorFlow; see DESIGN.md). Not the trainer's figure: the trainer needs TensorFlow.

Times pairs/s of a jit-compiled train step at several batch sizes, float32 and bfloat16, and
splits step time into input (host->device copy) and compute.
    KERAS_BACKEND=jax python bench/gpu_keras_jax.py --out $OUT/gpu.json
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from trainer.model.builders import create_dual_input_network  # noqa: E402


def measure(batch: int, precision: str, steps: int) -> dict:
    keras.mixed_precision.set_global_policy(precision)
    model = create_dual_input_network((32, 32), 3, 0.0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", jit_compile=True
    )
    rng = np.random.default_rng(0)
    x = [rng.random((batch, 32, 32, 3), dtype=np.float32) for _ in range(2)]
    y = rng.integers(0, 2, (batch, 1)).astype(np.float32)
    for _ in range(3):
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        dx = [jax.device_put(a) for a in x]
        jax.block_until_ready(dx)
    copy = (time.perf_counter() - t0) / steps
    dx = [jax.device_put(a) for a in x]
    dy = jax.device_put(y)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(dx, dy)
    float(np.asarray(loss))
    compute = (time.perf_counter() - t0) / steps
    keras.mixed_precision.set_global_policy("float32")
    return dict(
        batch=batch,
        precision=precision,
        pairs_per_s=batch / (compute + copy),
        compute_pairs_per_s=batch / compute,
        input_ms=1e3 * copy,
        compute_ms=1e3 * compute,
        allreduce_ms=0.0,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out", default="bench/out/gpu.json")
    args = p.parse_args()
    print("devices:", jax.devices())
    rows = []
    for precision in ("float32", "mixed_bfloat16"):
        for batch in (64, 256, 1024, 4096):
            r = measure(batch, precision, args.steps)
            rows.append(r)
            print(
                f"{precision:15s} batch {batch:5d}: {r['pairs_per_s']:10,.0f} pairs/s "
                f"(compute {r['compute_ms']:.2f} ms, input copy {r['input_ms']:.2f} ms, "
                "all-reduce 0: one GPU)",
                flush=True,
            )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
