"""Converts a CSV of image pairs (``image_a_path,image_b_path,label``) into paired TFRecords.

Every image is checked before anything is written: all missing or unreadable files are
reported together, with their CSV row numbers. Relative paths are relative to the CSV's folder.
"""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np
import tensorflow as tf

from trainer.data import schema, writer
from trainer.data.verify import DataError

KEEP = "keep"


@dataclasses.dataclass(frozen=True)
class Row:
    line: int  # 1-based line in the CSV
    image_a: str  # resolved: relative paths joined to the CSV's folder
    image_b: str
    label: int | None  # None: a CSV without labels (batch prediction)
    given_a: str = ""  # as written in the CSV
    given_b: str = ""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _is_header(number: int, fields: list[str]) -> bool:
    """The first line is a header when its label is not a number or, without a label
    column, when neither field names an image file."""
    if number != 1:
        return False
    if len(fields) == 3:
        return not fields[2].strip().lstrip("-").isdigit()
    return not any(f.strip().lower().endswith(IMAGE_SUFFIXES) for f in fields)


def read_pairs_csv(path: str, labels_required: bool = True) -> list[Row]:
    """Rows of a pairs CSV (``image_a,image_b,label``; the label column may be left out
    when not ``labels_required``, on every row); a header line is allowed. Raises DataError
    naming every bad line."""
    if not tf.io.gfile.exists(path):
        raise DataError(f"pairs file {path} does not exist.")
    with tf.io.gfile.GFile(path, "r") as f:
        lines = list(csv.reader(io.StringIO(f.read())))
    base = path.rsplit("/", 1)[0] if "/" in path else "."
    allowed = (3,) if labels_required else (2, 3)
    rows, problems, width = [], [], None
    for number, fields in enumerate(lines, start=1):
        if not fields or all(not x.strip() for x in fields):
            continue
        if len(fields) not in allowed or (width is not None and len(fields) != width):
            expected = width or " or ".join(map(str, allowed))
            problems.append(f"line {number}: expected {expected} fields, found {len(fields)}")
            continue
        if _is_header(number, fields):
            continue
        width = len(fields)
        a, b = fields[0].strip(), fields[1].strip()
        label = None
        if width == 3:
            text = fields[2].strip()
            if not text.lstrip("-").isdigit():
                problems.append(f"line {number}: label {text!r} is not an integer")
                continue
            label = int(text)
            if label < 0:
                problems.append(f"line {number}: label {label} is negative")
                continue
        rows.append(Row(number, _resolve(base, a), _resolve(base, b), label, a, b))
    if problems:
        raise DataError(f"{path} has {len(problems)} bad lines: " + "; ".join(problems) + ".")
    if not rows:
        raise DataError(f"{path} holds no pairs.")
    return rows


def _resolve(base: str, p: str) -> str:
    return p if p.startswith("/") or "://" in p else schema.join(base, p)


def _load(path: str):
    """(encoded bytes, format, uint8 pixels) of one image; raises ValueError with the reason."""
    if not tf.io.gfile.exists(path):
        raise ValueError("file not found")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    fmt = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg" if data[:2] == b"\xff\xd8" else None
    if fmt is None:
        raise ValueError("not a PNG or JPEG file")
    try:
        pixels = tf.io.decode_image(data, expand_animations=False).numpy()
    except tf.errors.OpError:
        raise ValueError(f"unreadable {fmt.upper()} data") from None
    return data, fmt, pixels


def check_images(rows: list[Row]) -> tuple[tuple, str]:
    """Loads every image once; returns (common shape, common format) or raises with all faults."""
    problems, shapes, formats = [], set(), set()
    for row in rows:
        for column, path in (("image_a", row.image_a), ("image_b", row.image_b)):
            try:
                _, fmt, pixels = _load(path)
            except ValueError as e:
                problems.append(f"row {row.line} {column} {path}: {e}")
                continue
            shapes.add(pixels.shape)
            formats.add(fmt)
    if problems:
        raise DataError(
            f"{len(problems)} images are missing or unreadable, nothing was written: "
            + "; ".join(problems)
            + "."
        )
    return (shapes.pop() if len(shapes) == 1 else None), (
        formats.pop() if len(formats) == 1 else None
    )


def _pixels_for(pixels: np.ndarray, size, channels: int) -> np.ndarray:
    image = tf.convert_to_tensor(pixels)
    if image.shape[-1] != channels:
        image = (
            tf.image.rgb_to_grayscale(image)
            if channels == 1
            else tf.image.grayscale_to_rgb(image[..., :1])
        )
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        image = tf.cast(tf.round(tf.image.resize(image, size, antialias=True)), tf.uint8)
    return image.numpy().astype(np.uint8)


def convert(
    pairs: str,
    output_dir: str,
    eval_pairs: str | None = None,
    eval_fraction: float = 0.1,
    num_shards: int = 4,
    encoding: str = KEEP,
    image_size: int | None = None,
    gzip: bool = False,
    seed: int = 0,
) -> schema.DatasetInfo:
    """Validates every row, then writes train/eval shards and dataset.json (last)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise DataError(f"eval_fraction={eval_fraction} must be in [0, 1).")
    if encoding not in (KEEP, *schema.ENCODINGS):
        raise DataError(f"encoding={encoding!r} is unknown: use keep, raw, png or jpeg.")
    rows = read_pairs_csv(pairs)
    if eval_pairs:
        eval_rows = read_pairs_csv(eval_pairs)
    else:
        order = np.random.default_rng(seed).permutation(len(rows))
        n_eval = int(round(len(rows) * eval_fraction))
        eval_rows = [rows[i] for i in sorted(order[:n_eval])]
        rows = [rows[i] for i in sorted(order[n_eval:])]
    shape, fmt = check_images(rows + eval_rows)
    size = (image_size, image_size) if image_size else None
    if encoding == KEEP and (size is not None or shape is None or fmt is None):
        raise DataError(
            "the images differ in size or format (or --image_size resizes them): choose "
            "--encoding png, jpeg or raw to re-encode, and --image_size for one size."
        )
    if shape is None and size is None:
        raise DataError("the images differ in size: pass --image_size to resize them.")
    height, width = size or shape[:2]
    channels = shape[2] if shape is not None else 3
    out_encoding = fmt if encoding == KEEP else encoding
    writer.prepare_output_dir(output_dir)

    def records(split_rows, split):
        for row in split_rows:
            encoded = []
            for path in (row.image_a, row.image_b):
                data, _, pixels = _load(path)
                if encoding != KEEP:
                    data = writer.encode_image(_pixels_for(pixels, size, channels), out_encoding)
                encoded.append(data)
            yield schema.encode_pair(
                *encoded,
                row.label,
                height,
                width,
                channels,
                out_encoding,
                pair_id=f"{split}:line{row.line}",
            )

    files, counts = {}, {}
    for split, split_rows in (("train", rows), ("eval", eval_rows)):
        if split_rows:
            files.update(
                writer.write_split(
                    output_dir,
                    split,
                    records(split_rows, split),
                    len(split_rows),
                    num_shards,
                    gzip,
                    f"converting {split}",
                )
            )
            counts[split] = len(split_rows)
    num_classes = max(2, 1 + max(r.label for r in rows + eval_rows))
    info = schema.DatasetInfo(
        height=int(height),
        width=int(width),
        channels=int(channels),
        encoding=out_encoding,
        compression="GZIP" if gzip else "",
        counts=counts,
        files=files,
        label_names=tuple(str(i) for i in range(num_classes)),
    )
    schema.write_info(output_dir, info)
    return info
