"""Training pairs/s: (a) Keras model.fit on numpy, (b) our trainer on in-memory tensors,
(c) our trainer streaming TFRecords; plus achieved FLOP/s over a matmul peak measured now.

All of (a), (b), (c) and the matmul peaks take turns in every round, and each ratio is the
median of the ratios taken round by round: this host's speed drifts by tens of percent over
minutes, and a ratio of two figures measured minutes apart would mostly measure the drift.

    python bench/train_throughput.py [--steps 40] [--rounds 5] [--out FILE.json]
"""

import argparse
import functools
import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench import harness  # noqa: E402
from bench.harness import (  # noqa: E402
    dataset_dir,
    forward_flops_per_pair,
    in_memory_dataset,
    keras_fit_runner,
    matmul_peak,
    paired_ratio,
    print_table,
    streaming_dataset,
    train_flops_per_pair,
    trainer_rates,
    write_json,
)

CASES = [(64, "float32"), (256, "float32"), (256, "mixed_bfloat16"), (512, "mixed_bfloat16")]
SEED = (64, "float32")  # the seed's settings: Keras fit there is the yardstick of "best flags"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40, help="timed steps per round at batch 64")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--out", default="bench/out/train_throughput.json")
    args = p.parse_args()
    size = args.size
    data = dataset_dir(size, "raw", 8192)
    flops = train_flops_per_pair(size)
    rows, results = [], []
    seed_keras = keras_fit_runner(size, SEED[0], SEED[1], args.steps)
    for batch, precision in CASES:
        steps = max(5, args.steps * 64 // batch)
        others = {
            "keras": keras_fit_runner(size, batch, precision, steps),
            "peak_float32": functools.partial(matmul_peak, tf.float32),
        }
        if (batch, precision) != SEED:
            others["keras_seed"] = seed_keras
        if precision != "float32":
            others["peak_bfloat16"] = functools.partial(matmul_peak, tf.bfloat16)
        peak_name = "peak_float32" if precision == "float32" else "peak_bfloat16"
        rates = trainer_rates(
            {"memory": in_memory_dataset(size, batch), "stream": streaming_dataset(data, batch)},
            size,
            batch,
            precision,
            False,
            steps,
            rounds=args.rounds,
            others=others,
        )
        a, b, c = rates["keras"], rates["memory"], rates["stream"]
        b_over_a, c_over_b = paired_ratio("memory", "keras"), paired_ratio("stream", "memory")
        b_over_seed = (
            b_over_a if (batch, precision) == SEED else paired_ratio("memory", "keras_seed")
        )
        util = flops * paired_ratio("memory", peak_name)
        util_f32 = flops * paired_ratio("memory", "peak_float32")
        results.append(
            dict(
                batch=batch,
                precision=precision,
                keras_fit=a,
                trainer_memory=b,
                trainer_stream=c,
                b_over_a=b_over_a,
                c_over_b=c_over_b,
                b_over_keras_float32_batch64=b_over_seed,
                achieved_flops=b * flops,
                matmul_peak=rates[peak_name],
                utilization=util,
                float32_matmul_peak=rates["peak_float32"],
                utilization_of_float32_peak=util_f32,
                rounds=dict(harness.ROUNDS),
            )
        )
        rows.append(
            [
                batch,
                precision,
                f"{a:,.0f}",
                f"{b:,.0f}",
                f"{c:,.0f}",
                f"{b_over_a:.2f}",
                f"{c_over_b:.3f}",
                f"{b_over_seed:.2f}",
                f"{b * flops / 1e9:,.1f}",
                f"{rates[peak_name] / 1e9:,.1f}",
                f"{100 * util:.0f}%",
                f"{100 * util_f32:.0f}%",
                f"±{50 * max(harness.SPREAD[k] for k in ('keras', 'memory', 'stream')):.0f}%",
            ]
        )
    print(
        f"model: {forward_flops_per_pair(size) / 1e6:.1f} MFLOP forward per pair, "
        f"{flops / 1e6:.1f} MFLOP per trained pair; {args.rounds} rounds"
    )
    print_table(
        f"training throughput, {size}x{size} pairs/s (one process, one CPU device); "
        "ratios are medians of per-round ratios",
        [
            "batch",
            "precision",
            "(a) keras fit",
            "(b) ours mem",
            "(c) ours stream",
            "b/a",
            "c/b",
            "b / keras f32 b64",
            "GFLOP/s (b)",
            "matmul peak (same precision)",
            "b / peak",
            "b / float32 peak",
            "noise (half spread)",
        ],
        rows,
    )
    write_json(args.out, {"size": size, "steps": args.steps, "results": results})


if __name__ == "__main__":
    main()
