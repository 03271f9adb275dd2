"""The input pipeline alone vs the model's consumption, and training streaming vs in-memory,
at 32x32 raw, 32x32 PNG and 128x128 JPEG.

In-memory means the same decoded pixels held as tensors; --cache is the reader's option that
decodes the worker's shard once and serves later epochs from memory. Next to the measured ratio
the table prints the ratio the CPU allows: on a machine whose cores the model already keeps
busy, every CPU-second the pipeline spends is taken from the model, so streaming / in-memory
cannot exceed model CPU per pair / (model CPU per pair + pipeline CPU per pair). Ratios are
medians of the ratios taken round by round.

    python bench/input_pipeline.py [--steps 25] [--rounds 7] [--out bench/out/input_pipeline.json]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench import harness  # noqa: E402
from bench.harness import (  # noqa: E402
    dataset_dir,
    decoded_in_memory,
    paired_ratio,
    pipeline_cpu_per_pair,
    pipeline_rate,
    print_table,
    streaming_dataset,
    trainer_rates,
    write_json,
)

CASES = [(32, "raw", 8192), (32, "png", 8192), (128, "jpeg", 2048)]


COLUMNS = [
    "size",
    "encoding",
    "pipeline alone",
    "model consumes",
    "headroom",
    "pipeline us CPU/pair",
    "model us CPU/pair",
    "CPU bound",
    "train streaming",
    "stream/memory",
    "--cache/memory",
    "noise (half spread)",
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=25, help="timed steps per round at 32x32")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default="bench/out/input_pipeline.json")
    args = p.parse_args()
    results = [measure_case(size=size, encoding=enc, count=n, args=args) for size, enc, n in CASES]
    print_table(
        f"input pipeline (batch {args.batch}, float32, one CPU device, {args.rounds} rounds)",
        COLUMNS,
        [table_row(r) for r in results],
    )
    write_json(args.out, {"batch": args.batch, "steps": args.steps, "results": results})


def measure_case(*, size: int, encoding: str, count: int, args) -> dict:
    """One set: the pipeline alone, its CPU per pair, and the trainer fed from memory, from
    the stream and from the cache, taking turns; the figures and the per-round ratios."""
    path = dataset_dir(size, encoding, count)
    steps = args.steps if size <= 32 else max(4, args.steps // 5)  # ~13x the work per pair
    alone = pipeline_rate(streaming_dataset(path, args.batch), args.batch, 4 * args.steps)
    pipe_cpu = pipeline_cpu_per_pair(path, args.batch, 2 * steps)
    rates = trainer_rates(
        {
            "memory": decoded_in_memory(path, args.batch),
            "stream": streaming_dataset(path, args.batch),
            "cached": streaming_dataset(path, args.batch, cache=True),
        },
        size,
        args.batch,
        "float32",
        False,
        steps,
        rounds=args.rounds,
    )
    model_cpu = harness.CPU_PER_PAIR["memory"]
    return dict(
        size=size,
        encoding=encoding,
        pipeline=alone,
        pipeline_cpu_per_pair=pipe_cpu,
        model_cpu_per_pair=model_cpu,
        cpu_bound_ratio=model_cpu / (model_cpu + pipe_cpu),
        train_memory=rates["memory"],
        train_stream=rates["stream"],
        ratio=paired_ratio("stream", "memory"),
        train_cached=rates["cached"],
        cached_ratio=paired_ratio("cached", "memory"),
        rounds=dict(harness.ROUNDS),
        noise=max(harness.SPREAD[k] for k in rates) / 2,
    )


def table_row(r: dict) -> list:
    return [
        f"{r['size']}x{r['size']}",
        r["encoding"],
        f"{r['pipeline']:,.0f}",
        f"{r['train_memory']:,.0f}",
        f"{r['pipeline'] / r['train_memory']:.0f}x",
        f"{1e6 * r['pipeline_cpu_per_pair']:,.0f}",
        f"{1e6 * r['model_cpu_per_pair']:,.0f}",
        f"{r['cpu_bound_ratio']:.3f}",
        f"{r['train_stream']:,.0f}",
        f"{r['ratio']:.3f}",
        f"{r['cached_ratio']:.3f}",
        f"±{100 * r['noise']:.1f}%",
    ]


if __name__ == "__main__":
    main()
