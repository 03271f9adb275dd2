"""The converter's image work on every core: a header survey, then one decode/encode pass.

Both passes are ``Dataset.map(..., num_parallel_calls=P, deterministic=True)`` over the paths
in CSV order, so the records come out in the serial order whatever P is (tests compare P=1
with the default). Reading, decoding, resizing and encoding are TensorFlow kernels that run
on tf.data's threads outside the GIL; Python receives batches and only serializes the pairs.

1. ``survey`` reads every file and parses its header only (PNG's IHDR, JPEG's frame header):
   size, channels, format. Missing files and files that are not PNG or JPEG are found here,
   before anything is written, and the sizes and formats decide the output encoding.
2. ``encoded_pairs`` decodes every image (also when its bytes are kept: that validates them),
   resizes and re-encodes when asked, and yields (index, a, b). A pair whose image fails to
   decode is left out (``ignore_errors``): the caller sees the gap in the indices, and the
   few failures are re-read one by one for their reason, so the common case pays for no
   per-image Python.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import tensorflow as tf

from trainer.common.errors import first_line
from trainer.common.graph import graph_fn
from trainer.common.progress import Progress

AUTOTUNE = tf.data.AUTOTUNE
BATCH = 64  # elements handed to Python at a time (one at a time costs ~100 us each)
PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8"
# PNG colour type -> channels that decode_png gives (0 grey, 2 RGB, 3 palette, 4 grey+alpha,
# 6 RGBA); a palette image decodes to RGB.
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
# zlib level 1: measured on 64 px photo-like images, encoding took 130 us instead of 700 us at
# the default level (6) for files 18% larger (6.1 kB against 5.2 kB); decoding costs the same.
PNG_LEVEL = 1


def load_image(path: str):
    """(encoded bytes, format, uint8 pixels) of one image; raises ValueError with the reason."""
    if not tf.io.gfile.exists(path):
        raise ValueError("file not found")
    if tf.io.gfile.isdir(path):
        raise ValueError("a folder, not an image")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except tf.errors.OpError as e:
        raise ValueError(f"unreadable ({first_line(e, 120)})") from None
    fmt = "png" if data[:8] == PNG_MAGIC else "jpeg" if data[:2] == JPEG_MAGIC else None
    if fmt is None:
        raise ValueError("not a PNG or JPEG file")
    try:
        pixels = tf.io.decode_image(data, expand_animations=False).numpy()
    except tf.errors.OpError:
        raise ValueError(f"unreadable {fmt.upper()} data") from None
    return data, fmt, pixels


def fault_of(path: str) -> str:
    """Why one image failed in a pass (re-read alone)."""
    try:
        load_image(path)
    except ValueError as e:
        return str(e)
    return "unreadable"  # failed in the pass only (e.g. its size differs from its header)


@dataclasses.dataclass(frozen=True)
class Survey:
    """What the header survey found: shapes and formats of the good images, faults of the bad."""

    shapes: dict  # (height, width, channels) -> number of images
    formats: frozenset  # "png", "jpeg"
    faults: dict  # path -> reason


def _options(parallelism: int) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    if parallelism:
        options.threading.private_threadpool_size = parallelism
    return options


def _calls(parallelism: int):
    return parallelism or AUTOTUNE


def _header(data):
    """(format 0 PNG / 1 JPEG, [height, width, channels]) from the header bytes alone."""
    png = tf.equal(tf.strings.substr(data, 0, 8), PNG_MAGIC)
    jpeg = tf.equal(tf.strings.substr(data, 0, 2), JPEG_MAGIC)
    with tf.control_dependencies(
        [tf.debugging.Assert(tf.logical_or(png, jpeg), ["not a PNG or JPEG file"])]
    ):
        fmt = tf.where(png, 0, 1)

    def png_shape():
        ihdr = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 10), tf.uint8), tf.int32)
        big_endian = lambda b: b[0] * 2**24 + b[1] * 2**16 + b[2] * 2**8 + b[3]  # noqa: E731
        table = tf.constant([PNG_CHANNELS.get(t, 0) for t in range(7)], tf.int32)
        channels = tf.gather(table, tf.minimum(ihdr[9], 6))
        return tf.stack([big_endian(ihdr[4:8]), big_endian(ihdr[0:4]), channels])

    shape = tf.cond(png, png_shape, lambda: tf.io.extract_jpeg_shape(data, tf.int32))
    return fmt, shape


def survey(paths: list[str], parallelism: int = 0, label: str = "checking images") -> Survey:
    """Reads every file's header, in parallel; never raises for a bad image."""

    def check(i, path):
        return (i, *_header(tf.io.read_file(path)))

    ds = (
        tf.data.Dataset.from_tensor_slices(paths)
        .enumerate()
        .map(graph_fn(check), num_parallel_calls=_calls(parallelism))
        .ignore_errors()
        .batch(BATCH)
        .prefetch(AUTOTUNE)
        .with_options(_options(parallelism))
    )
    shapes, formats, seen = collections.Counter(), set(), set()
    progress = Progress(len(paths), label, unit="images")
    for index, fmt, shape in ds.as_numpy_iterator():
        seen.update(index.tolist())
        shapes.update(map(tuple, shape.tolist()))
        formats.update(("png", "jpeg")[f] for f in set(fmt.tolist()))
        progress.update(len(seen))
    progress.update(len(paths))
    bad = [paths[i] for i in sorted(set(range(len(paths))) - seen)]
    return Survey(dict(shapes), frozenset(formats), {p: fault_of(p) for p in bad})


def resize(pixels, size):
    """uint8 [h, w, c] to ``size``, rounded. Shrinking uses the area filter (each pixel the mean
    of the ones it covers: no aliasing), measured at 20 us against 300 us for
    ``antialias=True`` on 72-120 px images; growing uses bilinear, where aliasing cannot arise."""
    shape = tf.shape(pixels)
    shrink = tf.logical_and(shape[0] >= size[0], shape[1] >= size[1])
    resized = tf.cond(
        shrink,
        lambda: tf.image.resize(pixels, size, method="area"),
        lambda: tf.image.resize(pixels, size, method="bilinear"),
    )
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def encoded_pairs(
    paths_a: list[str],
    paths_b: list[str],
    encoding: str | None,
    size: tuple | None,
    channels: int,
    parallelism: int = 0,
):
    """(index, bytes a, bytes b) per good pair in input order. ``encoding`` None keeps the
    files' bytes (after checking that they decode to ``size``); else each image is decoded to
    ``channels``, resized to ``size`` when given (``resize``), and encoded as png
    (``PNG_LEVEL``), jpeg (quality 95) or raw uint8 bytes."""

    def image(path):
        data = tf.io.read_file(path)
        pixels = tf.io.decode_image(data, channels=channels, expand_animations=False)
        if encoding is None:  # kept: it must decode, at the dataset's size
            same = tf.reduce_all(tf.equal(tf.shape(pixels)[:2], size))
            with tf.control_dependencies([tf.debugging.Assert(same, ["size differs"])]):
                return tf.identity(data)
        if size is not None:
            pixels = resize(pixels, size)
        if encoding == "png":
            return tf.io.encode_png(pixels, compression=PNG_LEVEL)
        if encoding == "jpeg":
            return tf.io.encode_jpeg(pixels, quality=95)
        return pixels  # raw: the bytes are taken on the host (no op makes them in-graph)

    ds = (
        tf.data.Dataset.from_tensor_slices((paths_a, paths_b))
        .enumerate()
        .map(
            graph_fn(lambda i, ab: (i, image(ab[0]), image(ab[1]))),
            num_parallel_calls=_calls(parallelism),
        )
        .ignore_errors()
        .batch(BATCH)
        .prefetch(AUTOTUNE)
        .with_options(_options(parallelism))
    )
    for index, batch_a, batch_b in ds.as_numpy_iterator():
        if encoding == "raw":
            batch_a = [np.ascontiguousarray(x).tobytes() for x in batch_a]
            batch_b = [np.ascontiguousarray(x).tobytes() for x in batch_b]
        yield from zip(index.tolist(), batch_a, batch_b)
