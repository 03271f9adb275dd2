"""Training pairs/s: (a) Keras model.fit on numpy, (b) our trainer on in-memory tensors,
(c) our trainer streaming TFRecords; plus achieved FLOP/s over a matmul peak measured now.

    python bench/train_throughput.py [--steps 40] [--out bench/out/train_throughput.json]
"""

import argparse
import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench import harness  # noqa: E402
from bench.harness import (  # noqa: E402
    dataset_dir,
    forward_flops_per_pair,
    in_memory_dataset,
    keras_fit_rate,
    matmul_peak,
    print_table,
    streaming_dataset,
    train_flops_per_pair,
    trainer_rates,
    write_json,
)

CASES = [(64, "float32"), (256, "mixed_bfloat16")]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--out", default="bench/out/train_throughput.json")
    args = p.parse_args()
    size = args.size
    data = dataset_dir(size, "raw", 8192)
    flops = train_flops_per_pair(size)
    peaks = {"float32": matmul_peak(tf.float32), "mixed_bfloat16": matmul_peak(tf.bfloat16)}
    rows, results = [], []
    for batch, precision in CASES:
        a = keras_fit_rate(size, batch, precision, args.steps)
        rates = trainer_rates(
            {"memory": in_memory_dataset(size, batch), "stream": streaming_dataset(data, batch)},
            size,
            batch,
            precision,
            False,
            args.steps,
        )
        b, c = rates["memory"], rates["stream"]
        util = b * flops / peaks[precision]
        results.append(
            dict(
                batch=batch,
                precision=precision,
                keras_fit=a,
                trainer_memory=b,
                trainer_stream=c,
                b_over_a=b / a,
                c_over_b=c / b,
                achieved_flops=b * flops,
                matmul_peak=peaks[precision],
                utilization=util,
                spread_memory=harness.SPREAD["memory"],
                spread_stream=harness.SPREAD["stream"],
            )
        )
        rows.append(
            [
                batch,
                precision,
                f"{a:,.0f}",
                f"{b:,.0f}",
                f"{c:,.0f}",
                f"{b / a:.2f}",
                f"{c / b:.3f}",
                f"{b * flops / 1e9:,.1f}",
                f"{peaks[precision] / 1e9:,.1f}",
                f"{100 * util:.0f}%",
            ]
        )
    print(
        f"model: {forward_flops_per_pair(size) / 1e6:.1f} MFLOP forward per pair, "
        f"{flops / 1e6:.1f} MFLOP per trained pair; {args.steps} timed steps per cell"
    )
    print_table(
        f"training throughput, {size}x{size} pairs/s (one process, one CPU device)",
        [
            "batch",
            "precision",
            "(a) keras fit",
            "(b) ours mem",
            "(c) ours stream",
            "b/a",
            "c/b",
            "GFLOP/s (b)",
            "matmul peak",
            "b / peak",
        ],
        rows,
    )
    write_json(args.out, {"size": size, "steps": args.steps, "results": results})


if __name__ == "__main__":
    main()
