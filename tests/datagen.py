"""Tiny real datasets for tests: every pair's pixels encode its id, so order and coverage
can be checked by value."""

import numpy as np
import tensorflow as tf

from trainer.common.paths import join
from trainer.data import schema
from trainer.data.write import shards as writer

SIZE = 8


def pair_pixels(i: int, size: int = SIZE):
    """image_a is grey level i (grey survives JPEG's chroma subsampling); image_b another."""
    assert 0 <= i < 256
    a = np.full((size, size, 3), i, np.uint8)
    b = np.full((size, size, 3), (i * 37) % 256, np.uint8)
    return a, b


def pair_id(image_a) -> int:
    """Recovers the id from a decoded (float [0,1]) image_a."""
    return int(np.rint(np.asarray(image_a).mean() * 255))


def write_pairs(
    directory, n, num_shards, encoding="raw", size=SIZE, split="train", gzip=False, records=None
):
    """Writes n id-coded pairs (or the given serialized records) and dataset.json."""
    tf.io.gfile.makedirs(directory)
    if records is None:
        records = good_records(n, size, encoding, with_ids=True)
    files = writer.write_split(directory, split, iter(records), len(records), num_shards, gzip)
    schema.write_info(
        directory,
        schema.DatasetInfo(
            size, size, 3, encoding, "GZIP" if gzip else "", {split: len(records)}, files
        ),
    )
    return sorted(join(directory, f) for f in files)


def ids_of(dataset, batches):
    """The pair ids of the first ``batches`` batches, one list per batch."""
    out = []
    for inputs, _ in dataset.take(batches):
        out.append([pair_id(img) for img in inputs["input1"].numpy()])
    return out


def good_records(n, size=SIZE, encoding="raw", with_ids=False):
    """n id-coded serialized pairs (labels alternate; their pair_id fields set with
    ``with_ids``): what write_pairs writes, or a list to break one of."""
    return [
        schema.encode_pair(
            writer.encode_image(a, encoding),
            writer.encode_image(b, encoding),
            i % 2,
            size,
            size,
            3,
            encoding,
            pair_id=str(i) if with_ids else "",
        )
        for i, (a, b) in ((i, pair_pixels(i, size)) for i in range(n))
    ]


def corrupt(path, how):
    """A TFRecord file truncated (to two thirds) or with four bytes flipped in a record body
    (its CRC no longer matches)."""
    data = bytearray(open(path, "rb").read())
    if how == "truncated":
        data = data[: len(data) * 2 // 3]
    else:  # flip bytes inside a record body: its CRC no longer matches
        middle = len(data) // 2
        data[middle : middle + 4] = bytes(x ^ 0xFF for x in data[middle : middle + 4])
    open(path, "wb").write(bytes(data))
