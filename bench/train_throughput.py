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


COLUMNS = [
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
]


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
    seed_keras = keras_fit_runner(size, SEED[0], SEED[1], args.steps)
    results = [
        measure_case(
            size=size,
            batch=batch,
            precision=precision,
            data=data,
            steps=max(5, args.steps * 64 // batch),
            rounds=args.rounds,
            seed_keras=seed_keras,
        )
        for batch, precision in CASES
    ]
    print(
        f"model: {forward_flops_per_pair(size) / 1e6:.1f} MFLOP forward per pair, "
        f"{flops / 1e6:.1f} MFLOP per trained pair; {args.rounds} rounds"
    )
    print_table(
        f"training throughput, {size}x{size} pairs/s (one process, one CPU device); "
        "ratios are medians of per-round ratios",
        COLUMNS,
        [table_row(r) for r in results],
    )
    write_json(args.out, {"size": size, "steps": args.steps, "results": results})


def measure_case(*, size, batch, precision, data, steps, rounds, seed_keras) -> dict:
    """One (batch, precision) case: Keras fit, the trainer on memory and on a stream, and the
    matmul peaks, taking turns for ``rounds`` rounds; the figures and the per-round ratios."""
    flops = train_flops_per_pair(size)
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
        rounds=rounds,
        others=others,
    )
    b_over_a = paired_ratio("memory", "keras")
    b_over_seed = b_over_a if (batch, precision) == SEED else paired_ratio("memory", "keras_seed")
    return dict(
        batch=batch,
        precision=precision,
        keras_fit=rates["keras"],
        trainer_memory=rates["memory"],
        trainer_stream=rates["stream"],
        b_over_a=b_over_a,
        c_over_b=paired_ratio("stream", "memory"),
        b_over_keras_float32_batch64=b_over_seed,
        achieved_flops=rates["memory"] * flops,
        matmul_peak=rates[peak_name],
        utilization=flops * paired_ratio("memory", peak_name),
        float32_matmul_peak=rates["peak_float32"],
        utilization_of_float32_peak=flops * paired_ratio("memory", "peak_float32"),
        rounds=dict(harness.ROUNDS),
        noise=max(harness.SPREAD[k] for k in ("keras", "memory", "stream")) / 2,
    )


def table_row(r: dict) -> list:
    return [
        r["batch"],
        r["precision"],
        f"{r['keras_fit']:,.0f}",
        f"{r['trainer_memory']:,.0f}",
        f"{r['trainer_stream']:,.0f}",
        f"{r['b_over_a']:.2f}",
        f"{r['c_over_b']:.3f}",
        f"{r['b_over_keras_float32_batch64']:.2f}",
        f"{r['achieved_flops'] / 1e9:,.1f}",
        f"{r['matmul_peak'] / 1e9:,.1f}",
        f"{100 * r['utilization']:.0f}%",
        f"{100 * r['utilization_of_float32_peak']:.0f}%",
        f"±{100 * r['noise']:.0f}%",
    ]


if __name__ == "__main__":
    main()
