"""--jit_compile on, off and auto, per precision: the trainer's step on in-memory tensors.

python bench/xla.py [--steps 30] [--out bench/out/xla.json]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tensorflow as tf  # noqa: E402

from bench.harness import in_memory_dataset, print_table, trainer_rate, write_json  # noqa: E402
from trainer.runtime.strategy import use_jit  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default="bench/out/xla.json")
    args = p.parse_args()
    gpus = len(tf.config.list_physical_devices("GPU"))
    rows, results = [], []
    for precision in ("float32", "mixed_bfloat16"):
        rates = {}
        for flag in ("false", "true", "auto"):
            jit = use_jit(flag, gpus)
            rates[flag] = trainer_rate(
                in_memory_dataset(32, args.batch), 32, args.batch, precision, jit, args.steps
            )
        results.append(dict(precision=precision, **rates))
        rows.append(
            [
                precision,
                *(f"{rates[f]:,.0f}" for f in ("false", "true", "auto")),
                f"{rates['true'] / rates['false']:.2f}",
            ]
        )
    print_table(
        f"--jit_compile, 32x32, batch {args.batch}, pairs/s ({gpus} GPUs; auto = "
        f"{'on' if use_jit('auto', gpus) else 'off'} here)",
        ["precision", "off", "on", "auto", "on/off"],
        rows,
    )
    write_json(args.out, {"batch": args.batch, "steps": args.steps, "results": results})


if __name__ == "__main__":
    main()
