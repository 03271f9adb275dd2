"""Counts a local TFRecord file's records from its frame headers, decoding no record.

A TFRecord frame is a little-endian uint64 length, a uint32 CRC of that length, ``length``
bytes of data and a uint32 CRC of the data. Walking the length fields seeks past the data, so
a file of any size is counted in milliseconds, and a file that ends inside a frame (a copy cut
off, a disk that filled up) is seen before training starts: TFRecordDataset ends quietly there
and the run would fail, or train on less, much later. Files on gs:// are not walked (that
reads every byte over the network); the reader names them if they fail mid-run.
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


def scan(path: str, compression: str = "") -> Frames:
    """The whole records of a local file, and whether it ends inside one."""
    if compression == "GZIP":
        return _scan_stream(path)
    size = os.path.getsize(path)
    records, position = 0, 0
    with open(path, "rb") as f:
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
        with gzip.open(path, "rb") as f:
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
