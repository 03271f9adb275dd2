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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=25, help="timed steps per round at 32x32")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default="bench/out/input_pipeline.json")
    args = p.parse_args()
    rows, results = [], []
    for size, encoding, n in CASES:
        path = dataset_dir(size, encoding, n)
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
        memory, stream, cached = rates["memory"], rates["stream"], rates["cached"]
        ratio, cached_ratio = paired_ratio("stream", "memory"), paired_ratio("cached", "memory")
        model_cpu = harness.CPU_PER_PAIR["memory"]
        bound = model_cpu / (model_cpu + pipe_cpu)
        noise = max(harness.SPREAD[k] for k in rates) / 2
        results.append(
            dict(
                size=size,
                encoding=encoding,
                pipeline=alone,
                pipeline_cpu_per_pair=pipe_cpu,
                model_cpu_per_pair=model_cpu,
                cpu_bound_ratio=bound,
                train_memory=memory,
                train_stream=stream,
                ratio=ratio,
                train_cached=cached,
                cached_ratio=cached_ratio,
                rounds=dict(harness.ROUNDS),
            )
        )
        rows.append(
            [
                f"{size}x{size}",
                encoding,
                f"{alone:,.0f}",
                f"{memory:,.0f}",
                f"{alone / memory:.0f}x",
                f"{1e6 * pipe_cpu:,.0f}",
                f"{1e6 * model_cpu:,.0f}",
                f"{bound:.3f}",
                f"{stream:,.0f}",
                f"{ratio:.3f}",
                f"{cached_ratio:.3f}",
                f"±{100 * noise:.1f}%",
            ]
        )
    print_table(
        f"input pipeline (batch {args.batch}, float32, one CPU device, {args.rounds} rounds)",
        [
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
        ],
        rows,
    )
    write_json(args.out, {"batch": args.batch, "steps": args.steps, "results": results})


if __name__ == "__main__":
    main()
