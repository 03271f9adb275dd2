"""Walks a TFRecord file's frames: counts its records and reads its first, decoding nothing.

A TFRecord frame is a little-endian uint64 length, a uint32 CRC of that length, ``length``
bytes of data and a uint32 CRC of the data. Walking the length fields seeks past the data, so
a local file of any size is counted in milliseconds, and a file that ends inside a frame (a
copy cut off, a disk that filled up) is seen before training starts: TFRecordDataset ends
quietly there and the run would fail, or train on less, much later. A gs:// file is walked
only where nothing declares its count (a file pattern): that reads every byte. Nothing here
starts TensorFlow's runtime (the strategy must come first).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import zlib

HEADER = 12  # length (8) + its CRC (4)
FOOTER = 4  # the data's CRC


@dataclasses.dataclass(frozen=True)
class Frames:
    records: int  # whole records
    truncated: bool  # the file ends inside record ``records`` (or is not a TFRecord file)


def is_local(path: str) -> bool:
    return "://" not in path


def _open(path: str):
    """A local file through Python (fastest), anything else through TensorFlow's file system
    layer (gs://, ram://). Neither starts TensorFlow's runtime, which must wait for the
    strategy (collective ops are configured before the first op)."""
    if is_local(path):
        return open(path, "rb")
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


def _size(path: str) -> int:
    if is_local(path):
        return os.path.getsize(path)
    import tensorflow as tf

    return tf.io.gfile.stat(path).length


def scan(path: str, compression: str = "") -> Frames:
    """The whole records of a file, and whether it ends inside one."""
    if compression == "GZIP":
        return _scan_stream(path)
    size = _size(path)
    records, position = 0, 0
    with _open(path) as f:
        while position < size:
            header = f.read(HEADER)
            if len(header) < HEADER:
                return Frames(records, True)
            (length,) = struct.unpack("<Q", header[:8])
            position += HEADER + length + FOOTER
            if position > size:
                return Frames(records, True)
            f.seek(position)
            records += 1
    return Frames(records, False)


def _scan_stream(path: str) -> Frames:
    """A gzip file cannot seek without decompressing: read through it, frame by frame."""
    records = 0
    try:
        with _open(path) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
            while header := f.read(HEADER):
                if len(header) < HEADER:
                    return Frames(records, True)
                (length,) = struct.unpack("<Q", header[:8])
                end = f.tell() + length + FOOTER
                if f.seek(end) < end:  # seeking forward decompresses, and stops at the end
                    return Frames(records, True)
                records += 1
    except (EOFError, OSError, zlib.error):  # a cut-off or damaged gzip stream
        return Frames(records, True)
    return Frames(records, False)


def first_record(path: str, compression: str = "") -> bytes | None:
    """The data of a file's first record (None: the file holds none whole)."""
    with _open(path) as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if compression == "GZIP" else raw
        try:
            header = f.read(HEADER)
            if len(header) < HEADER:
                return None
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(min(length, 1 << 30))
        except (EOFError, OSError, zlib.error):
            return None
        return data if len(data) == length else None
