"""The built-in synthetic pair set: "are these two consecutive frames?" (the seed's example).

Each sequence is a coloured shape falling over fresh noise: it moves down (and a little
sideways) from one frame to the next. A pair is labelled 1 when image_b is the frame that
follows image_a; 0 when the two are in reversed order or come from different sequences. A
model must compare the two images (colour, shape, which one is lower) to solve it, which is
what the dual-input network is for. Everything is a pure function of the seed.
"""

from __future__ import annotations

import numpy as np

from trainer.data import schema
from trainer.data.write import shards as writer

KINDS = ("follows", "reversed", "different")


def _shape_mask(size: int, kind: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean size x size mask: 0 square, 1 disc, 2 cross."""
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    if kind == 0:
        return np.ones((size, size), bool)
    if kind == 1:
        return (yy - centre) ** 2 + (xx - centre) ** 2 <= (size / 2) ** 2
    bar = max(1, size // 3)
    lo = (size - bar) // 2
    mask = np.zeros((size, size), bool)
    mask[lo : lo + bar, :] = True
    mask[:, lo : lo + bar] = True
    return mask


def _sequence(image_size: int, channels: int, rng: np.random.Generator):
    """Two consecutive frames of one sequence (uint8 HxWxC each)."""
    s = image_size
    size = int(rng.integers(max(3, s // 5), max(4, s // 3) + 1))
    mask = _shape_mask(size, int(rng.integers(0, 3)), rng)
    colour = rng.integers(128, 256, channels).astype(np.uint8)
    dy = int(rng.integers(max(1, s // 8), max(2, s // 4) + 1))  # always downward
    dx = int(rng.integers(-(s // 10), s // 10 + 1))
    y0 = int(rng.integers(0, s - size - dy + 1))
    x0 = int(rng.integers(max(0, -dx), s - size - max(0, dx) + 1))
    frames = []
    for y, x in ((y0, x0), (y0 + dy, x0 + dx)):
        frame = rng.integers(0, 96, (s, s, channels)).astype(np.uint8)  # fresh noise per frame
        frame[y : y + size, x : x + size][mask] = colour
        frames.append(frame)
    return frames


def make_pair(image_size: int, channels: int, seed: int, index: int):
    """Pair ``index`` of the set with ``seed``: (image_a, image_b, label, kind)."""
    rng = np.random.default_rng([seed, index])
    roll = rng.random()
    first, second = _sequence(image_size, channels, rng)
    if roll < 0.5:
        return first, second, 1, "follows"
    if roll < 0.75:
        return second, first, 0, "reversed"
    _, other_next = _sequence(image_size, channels, rng)
    return first, other_next, 0, "different"


def _records(split_seed: int, n: int, image_size: int, channels: int, encoding: str, split: str):
    for i in range(n):
        a, b, label, kind = make_pair(image_size, channels, split_seed, i)
        yield schema.encode_pair(
            writer.encode_image(a, encoding),
            writer.encode_image(b, encoding),
            label,
            image_size,
            image_size,
            channels,
            encoding,
            pair_id=f"synthetic/{split}/{i}/{kind}",
        )


def write_synthetic(
    output_dir: str,
    *,
    num_train: int = 16384,
    num_eval: int = 1024,
    image_size: int = 32,
    channels: int = 3,
    encoding: str = "raw",
    num_shards: int = 4,
    gzip: bool = False,
    seed: int = 0,
) -> schema.DatasetInfo:
    """Writes the synthetic set (train and eval shards, then dataset.json) to ``output_dir``."""
    if num_train < 1:
        raise ValueError(f"num_train={num_train} is invalid: give at least 1 training pair.")
    if num_eval < 0:
        raise ValueError(f"num_eval={num_eval} is invalid: give 0 eval pairs or more.")
    if image_size < 8:
        raise ValueError(f"image_size={image_size} is too small: use at least 8 pixels.")
    if encoding not in schema.ENCODINGS:
        raise ValueError(f"encoding={encoding!r} is unknown: use one of {schema.ENCODINGS}.")
    writer.prepare_output_dir(output_dir)
    files, counts = {}, {}
    for split, n, split_seed in (("train", num_train, seed), ("eval", num_eval, seed + 1_000_003)):
        if n == 0:
            continue
        records = _records(split_seed, n, image_size, channels, encoding, split)
        files.update(
            writer.write_split(
                output_dir, split, records, n, num_shards, gzip, f"synthetic {split}"
            )
        )
        counts[split] = n
    info = schema.DatasetInfo(
        height=image_size,
        width=image_size,
        channels=channels,
        encoding=encoding,
        compression="GZIP" if gzip else "",
        counts=counts,
        files=files,
    )
    schema.write_info(output_dir, info)
    return info


def photo_like_image(rng: np.random.Generator, height: int, width: int, gray: bool) -> np.ndarray:
    """uint8 HxWx3 (or x1 when ``gray``): smooth shading, a few soft blobs and noise, so it
    compresses like a photo, not like a flat colour (the converter's tests and bench)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3) + rng.uniform(-0.6, 0.6, 3) * (x[..., None] + y[..., None])
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(6, 30)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
        base = base + blob[..., None] * rng.uniform(-90, 90, 3)
    coarse = rng.normal(0, 12, (height // 8 + 1, width // 8 + 1, 3))
    base = base + np.kron(coarse, np.ones((8, 8, 1)))[:height, :width]
    image = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    if gray:
        image = image.mean(axis=2, keepdims=True).astype(np.uint8)
    return image


BUILTIN_VERSION = "synthetic-v3-16px-8k"
# The built-in set, sized for the main job to finish in about two minutes on a slow 2-core
# host: at 16x16 a pair costs a quarter of a 32x32 one, and the default 300 steps of 64
# (19,200 pairs, 2.3 epochs) reached eval accuracy 0.959-0.981 over three seeds, where
# 400 steps of 32 at 32x32 (three times the compute) reached 0.932-0.964 (bench/RESULTS.md).
BUILTIN_SET = dict(num_train=8192, num_eval=1024, image_size=16, channels=3)


def builtin_data_dir(cache_dir: str) -> str:
    """The built-in synthetic set, generated once (whole, then renamed) into ``cache_dir``."""
    import os

    from absl import logging

    from trainer.common.files import folder_made_once

    final = os.path.join(cache_dir, BUILTIN_VERSION)
    if not os.path.exists(os.path.join(final, "dataset.json")):
        logging.info("generating the built-in synthetic pair set into %s (once)", final)
    return folder_made_once(final, lambda tmp: write_synthetic(tmp, **BUILTIN_SET))
