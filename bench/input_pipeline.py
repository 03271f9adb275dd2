"""The input pipeline alone vs the model's consumption, and training streaming vs in-memory,
at 32x32 raw, 32x32 PNG and 128x128 JPEG.

    python bench/input_pipeline.py [--steps 30] [--out bench/out/input_pipeline.json]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench import harness  # noqa: E402
from bench.harness import (  # noqa: E402
    dataset_dir,
    in_memory_dataset,
    pipeline_rate,
    print_table,
    streaming_dataset,
    trainer_rates,
    write_json,
)

CASES = [(32, "raw", 8192), (32, "png", 8192), (128, "jpeg", 2048)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default="bench/out/input_pipeline.json")
    args = p.parse_args()
    rows, results = [], []
    for size, encoding, n in CASES:
        path = dataset_dir(size, encoding, n)
        alone = pipeline_rate(streaming_dataset(path, args.batch), args.batch, 4 * args.steps)
        rates = trainer_rates(
            {
                "memory": in_memory_dataset(size, args.batch),
                "stream": streaming_dataset(path, args.batch),
            },
            size,
            args.batch,
            "float32",
            False,
            args.steps,
        )
        memory, stream = rates["memory"], rates["stream"]
        results.append(
            dict(
                size=size,
                encoding=encoding,
                pipeline=alone,
                train_memory=memory,
                train_stream=stream,
                ratio=stream / memory,
                spread_memory=harness.SPREAD["memory"],
                spread_stream=harness.SPREAD["stream"],
            )
        )
        rows.append(
            [
                f"{size}x{size}",
                encoding,
                f"{alone:,.0f}",
                f"{memory:,.0f}",
                f"{alone / memory:.1f}x",
                f"{stream:,.0f}",
                f"{stream / memory:.3f}",
                f"±{50 * max(harness.SPREAD['memory'], harness.SPREAD['stream']):.1f}%",
            ]
        )
    print_table(
        f"input pipeline (batch {args.batch}, float32, one CPU device)",
        [
            "size",
            "encoding",
            "pipeline alone",
            "model consumes",
            "headroom",
            "train streaming",
            "stream/memory",
            "noise (half spread)",
        ],
        rows,
    )
    write_json(args.out, {"batch": args.batch, "steps": args.steps, "results": results})


if __name__ == "__main__":
    main()
