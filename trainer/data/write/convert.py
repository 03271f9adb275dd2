"""Converts a CSV of image pairs (``image_a_path,image_b_path,label``) into paired TFRecords.

Every image is checked before anything is written (trainer.data.write.pairs_csv): all missing
or unreadable files are reported together, with their CSV row numbers. Relative paths are
relative to the CSV's folder.
The image work runs on every core (trainer.data.write.image_pass) and the records keep the
CSV's order. ``--num_workers W --worker_index I`` converts slice I of W
(trainer.data.write.slices): W machines write one dataset together, shard names and bytes
identical to one run's.
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf

from trainer.common.paths import join
from trainer.data import schema
from trainer.data.read.verify import DataError
from trainer.data.write import image_pass as images
from trainer.data.write import pairs_csv
from trainer.data.write import shards as writer
from trainer.data.write import slices as parts
from trainer.data.write.pairs_csv import Row

KEEP = "keep"  # --encoding keep: the records hold the files' own bytes


def _layout(encoding: str, image_size, found: images.Survey, num_workers: int, say):
    """(records' encoding or None to keep the files' bytes, (height, width), channels).

    ``keep`` re-encodes as PNG (lossless) when it cannot keep, and says so in one line: when
    resizing; when the sizes differ (resized to the most common size, the smaller on a tie,
    unless --image_size says otherwise); when PNG and JPEG are mixed."""
    sizes: dict = {}
    for (h, w, _), n in found.shapes.items():
        sizes[(h, w)] = sizes.get((h, w), 0) + n
    channel_counts = {c for _, _, c in found.shapes}
    channels = channel_counts.pop() if len(channel_counts) == 1 else 3
    size = (image_size, image_size) if image_size else None
    if size is None and len(sizes) > 1:
        if num_workers > 1:
            raise DataError(
                "the images differ in size: pass --image_size, so that every slice writes one."
            )
        size = min(sizes, key=lambda hw: (-sizes[hw], hw[0] * hw[1]))
        why = f"the images come in {len(sizes)} sizes and {size[0]}x{size[1]} is the most common"
        if encoding != KEEP:
            say(f"resizing to {size[0]}x{size[1]}: {why} (--image_size picks another).")
        else:
            say(
                f"re-encoding as PNG at {size[0]}x{size[1]}: {why} (--image_size and --encoding "
                "pick others)."
            )
            return "png", size, channels
    if encoding != KEEP:
        return encoding, size or next(iter(sizes), (0, 0)), channels
    if size is not None:
        say("re-encoding as PNG: --image_size resizes the images (--encoding picks another).")
        return "png", size, channels
    if len(found.formats) > 1:
        say("re-encoding as PNG: the images mix PNG and JPEG (--encoding picks another).")
        return "png", next(iter(sizes)), channels
    return None, next(iter(sizes), (0, 0)), channels


def _split_rows(pairs, eval_pairs, eval_fraction, seed):
    rows = pairs_csv.read_pairs_csv(pairs)
    if eval_pairs:
        return rows, pairs_csv.read_pairs_csv(eval_pairs)
    order = np.random.default_rng(seed).permutation(len(rows))
    n_eval = int(round(len(rows) * eval_fraction))
    return [rows[i] for i in sorted(order[n_eval:])], [rows[i] for i in sorted(order[:n_eval])]


def _check_slicing(num_workers: int, worker_index: int, parallelism: int) -> None:
    if num_workers < 1:
        raise DataError(f"num_workers={num_workers} is invalid: it must be >= 1.")
    if not 0 <= worker_index < num_workers:
        raise DataError(f"worker_index={worker_index} is outside [0, {num_workers}).")
    if parallelism < 0:
        raise DataError(f"parallelism={parallelism} is invalid: it must be >= 0 (0: every core).")


def _prepare(output_dir, num_workers, worker_index) -> bool:
    """One run: an empty folder. A slice: no dataset.json yet, and this worker not finished
    (its part record absent); shards of its own from an attempt that died are rewritten, so
    a retried pod (an Indexed Job's) just runs again. Returns whether the folder was made."""
    created = not tf.io.gfile.exists(output_dir)
    if num_workers == 1:
        writer.prepare_output_dir(output_dir)
        return created
    writer.prepare_output_dir(output_dir, allow_shards=True)
    if tf.io.gfile.exists(parts.part_path(output_dir, worker_index, num_workers)):
        raise FileExistsError(
            f"worker {worker_index} of {num_workers} has finished in {output_dir} already (its "
            f"part record is there): choose an empty folder for a new conversion."
        )
    return created


class _BadPairs(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems


def _records(split: str, rows: list[Row], encoded, spec):
    """Serialized pairs in row order; raises _BadPairs naming every pair the pass left out
    (it drains the pass first, so all of them are named at once)."""
    height, width, channels, encoding = spec
    expected, missing = 0, []
    for index, a, b in encoded:
        missing.extend(range(expected, index))
        expected = index + 1
        if not missing:
            row = rows[index]
            yield schema.encode_pair(
                a, b, row.label, height, width, channels, encoding, f"{split}:line{row.line}"
            )
    missing.extend(range(expected, len(rows)))
    if missing:
        problems = []
        for row in (rows[i] for i in missing):
            for column, path in (("image_a", row.image_a), ("image_b", row.image_b)):
                reason = images.fault_of(path)
                if reason != "unreadable" or column == "image_b":
                    problems.append(f"row {row.line} {column} {path}: {reason}")
                    break
        raise _BadPairs(problems)


def _remove_own(output_dir: str, plans: dict, created: bool) -> None:
    """Deletes this run's shards (whole or temporary) and the folder if this run made it."""
    for plan in plans.values():
        for name, _, _ in plan:
            for path in (join(output_dir, name), join(output_dir, name) + ".tmp"):
                if tf.io.gfile.exists(path):
                    tf.io.gfile.remove(path)
    if created and not tf.io.gfile.listdir(output_dir):
        tf.io.gfile.rmtree(output_dir)


def _check_options(eval_fraction, encoding, image_size, num_workers, worker_index, parallelism):
    if not 0.0 <= eval_fraction < 1.0:
        raise DataError(f"eval_fraction={eval_fraction} must be in [0, 1).")
    if encoding not in (KEEP, *schema.ENCODINGS):
        raise DataError(f"encoding={encoding!r} is unknown: use keep, raw, png or jpeg.")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size={image_size} is invalid: it must be >= 1.")
    _check_slicing(num_workers, worker_index, parallelism)


def _slice_plans(splits: dict, num_shards: int, gzip: bool, num_workers: int, worker_index: int):
    """(this worker's shard plan per split, its rows per split)."""
    plans = {
        split: writer.shard_plan(split, len(rows), num_shards, gzip, num_workers, worker_index)
        for split, rows in splits.items()
        if rows
    }
    if not plans.get("train"):
        raise DataError(
            f"worker {worker_index} of {num_workers} gets no training shard: use --num_shards "
            f">= --num_workers (and at least {num_workers} training pairs)."
        )
    mine = {
        split: [r for _, a, b in plan for r in splits[split][a:b]] for split, plan in plans.items()
    }
    return plans, mine


def _write_splits(output_dir, plans, mine, *, out_encoding, size, spec, gzip, parallelism):
    """Writes every split's shards; returns ({file: records}, {split: pairs})."""
    files, counts = {}, {}
    for split, plan in plans.items():
        rows = mine[split]
        encoded = images.encoded_pairs(
            [r.image_a for r in rows],
            [r.image_b for r in rows],
            out_encoding,
            size,
            spec[2],
            parallelism,
        )
        records = _records(split, rows, encoded, spec)
        files.update(writer.write_shards(output_dir, plan, records, gzip, f"converting {split}"))
        counts[split] = len(rows)
    return files, counts


def _finish(output_dir: str, info: schema.DatasetInfo, num_workers: int, worker_index: int):
    """dataset.json (one worker), or this worker's part and, from the last one, dataset.json."""
    if num_workers == 1:
        schema.write_info(output_dir, info)
        return info
    parts.write_part(output_dir, worker_index, num_workers, info)
    if len(parts.parts_present(output_dir, num_workers)) == num_workers:
        try:
            return parts.finalize(output_dir)
        except DataError as e:
            if "finalized" in str(e):  # another worker finished at the same moment
                return schema.read_info(output_dir)
            raise
    return info


def convert(
    pairs: str,
    output_dir: str,
    *,
    eval_pairs: str | None = None,
    eval_fraction: float = 0.1,
    num_shards: int = 4,
    encoding: str = KEEP,
    image_size: int | None = None,
    gzip: bool = False,
    seed: int = 0,
    num_workers: int = 1,
    worker_index: int = 0,
    parallelism: int = 0,
    say=lambda line: print(line, file=sys.stderr),
) -> schema.DatasetInfo:
    """Validates every row of this worker's slice, then writes its shards and dataset.json
    (last; with several workers, the last one to finish finalizes). Returns the dataset's
    info, or this worker's part when others are still running."""
    _check_options(eval_fraction, encoding, image_size, num_workers, worker_index, parallelism)
    train_rows, eval_rows = _split_rows(pairs, eval_pairs, eval_fraction, seed)
    splits = {"train": train_rows, "eval": eval_rows}
    plans, mine = _slice_plans(splits, num_shards, gzip, num_workers, worker_index)
    found = pairs_csv.check_images([r for rows in mine.values() for r in rows], parallelism)
    out_encoding, (height, width), channels = _layout(encoding, image_size, found, num_workers, say)
    # Kept bytes are checked against the one size; re-encoded images resized only if needed.
    resize = any((h, w) != (height, width) for h, w, _ in found.shapes)
    size = (height, width) if out_encoding is None or resize else None
    created = _prepare(output_dir, num_workers, worker_index)
    out_format = out_encoding or next(iter(found.formats))
    spec = (height, width, channels, out_format)
    try:
        files, counts = _write_splits(
            output_dir,
            plans,
            mine,
            out_encoding=out_encoding,
            size=size,
            spec=spec,
            gzip=gzip,
            parallelism=parallelism,
        )
    except _BadPairs as bad:
        _remove_own(output_dir, plans, created)
        raise DataError(
            f"{len(bad.problems)} images failed to decode, nothing was written: "
            f"{pairs_csv.some(bad.problems)}."
        ) from None
    info = schema.DatasetInfo(
        height=int(height),
        width=int(width),
        channels=int(channels),
        encoding=out_format,
        compression="GZIP" if gzip else "",
        counts=counts,
        files=files,
        label_names=tuple(str(i) for i in pairs_csv.LABELS),
    )
    return _finish(output_dir, info, num_workers, worker_index)
