"""Converter throughput on a real-photo-like workload: serial vs every core, side by side.

Workload (the issue's): pairs of 72-120 px images, half JPEG half PNG, one in six grayscale,
with photo-like content (smooth shading, soft blobs, sensor noise) so neither codec has an
easy time; converted to 64x64 PNG (``--image_size 64``, re-encoded by default).

    python bench/convert.py [--pairs 6000] [--rounds 2]

Prints pairs/s for --parallelism 1 and 0 (every core), interleaved over rounds, the ratio, and
checks that both wrote the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from trainer.data.write import convert  # noqa: E402
from trainer.data.write.synthetic import photo_like_image  # noqa: E402


def write_workload(folder: str, pairs: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = ["image_a,image_b,label"]
    for i in range(pairs):
        names = []
        for side in "ab":
            h, w = rng.integers(72, 121, 2)
            image = photo_like_image(rng, int(h), int(w), gray=rng.random() < 1 / 6)
            if rng.random() < 0.5:
                name, data = f"{i}{side}.jpg", tf.io.encode_jpeg(image, quality=90)
            else:
                name, data = f"{i}{side}.png", tf.io.encode_png(image)
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data.numpy())
            names.append(name)
        lines.append(f"{names[0]},{names[1]},{i % 2}")
    path = os.path.join(folder, "pairs.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def digest(folder: str) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".tfrecord"):
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-convert-")
    try:
        t = time.perf_counter()
        csv = write_workload(work, args.pairs)
        print(
            f"workload: {args.pairs} pairs written in {time.perf_counter() - t:.0f} s; "
            f"cores: {os.cpu_count()}"
        )
        rates = {1: [], 0: []}
        digests = set()
        for r in range(args.rounds):
            for parallelism in (1, 0):
                out = os.path.join(work, f"out-{r}-{parallelism}")
                t = time.perf_counter()
                convert.convert(
                    csv, out, eval_fraction=0.1, num_shards=8, image_size=64,
                    parallelism=parallelism, say=lambda _: None,
                )  # fmt: skip
                rates[parallelism].append(args.pairs / (time.perf_counter() - t))
                digests.add(digest(out))
                shutil.rmtree(out)
        print(f"{'parallelism':>12} {'pairs/s (each round)':>28} {'median':>8}")
        for parallelism, name in ((1, "1 (serial)"), (0, "0 (all)")):
            each = " ".join(f"{x:,.0f}" for x in rates[parallelism])
            print(f"{name:>12} {each:>28} {np.median(rates[parallelism]):>8,.0f}")
        ratio = np.median(rates[0]) / np.median(rates[1])
        print(f"all/serial: {ratio:.2f}; identical records in every run: {len(digests) == 1}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
