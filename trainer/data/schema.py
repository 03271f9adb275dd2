"""The paired-image record schema, shard file names and ``dataset.json`` (see DESIGN.md).

Everything that knows how a record or a dataset folder looks lives here, so the writer, the
reader and ``verify`` cannot drift apart. Paths go through tf.io.gfile (local, gs://, ram://).
"""

from __future__ import annotations

import dataclasses
import json
import re

import tensorflow as tf

from trainer.common.errors import UsageError
from trainer.common.files import read_json, write_atomic
from trainer.common.paths import join
from trainer.data import DataError  # noqa: F401  (schema.DataError: one name for both)

ENCODINGS = ("raw", "png", "jpeg")


SPLITS = ("train", "eval")
METADATA_FILE = "dataset.json"
SHARD_RE = re.compile(r"^(train|eval)-(\d{5})-of-(\d{5})\.tfrecord(\.gz)?$")

FEATURES = {
    "image_a": tf.io.FixedLenFeature([], tf.string),
    "image_b": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "channels": tf.io.FixedLenFeature([], tf.int64),
    "encoding": tf.io.FixedLenFeature([], tf.string),
    "pair_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def shard_name(split: str, index: int, count: int, gzip: bool) -> str:
    """``train-00003-of-00016.tfrecord[.gz]``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord" + (".gz" if gzip else "")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says of a dataset folder."""

    height: int
    width: int
    channels: int
    encoding: str
    compression: str  # "" or "GZIP"
    counts: dict  # split -> number of pairs
    files: dict  # shard file name -> number of pairs
    label_names: tuple = ("different", "follows")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def read_info(directory: str) -> DatasetInfo:
    """Reads ``dataset.json``; FileNotFoundError if the folder is missing it (half written?),
    DataError naming the file and the field if it is not what the writers write."""
    path = join(directory, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: {directory} is not a finished dataset folder (convert or "
            "synthetic writes dataset.json last; rerun it)."
        )
    try:
        raw = read_json(
            path, "rewrite it (`trainer-data finalize` for a converted set) or convert again"
        )
    except UsageError as e:
        raise DataError(str(e)) from None
    problem = _info_problem(raw)
    if problem:
        raise DataError(f"{path}: {problem}; rewrite it or convert again.")
    raw["label_names"] = tuple(raw.get("label_names", ("different", "follows")))
    return DatasetInfo(**raw)


def _counted(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and type(n) is int and n >= 0 for k, n in value.items()
    )


_FIELDS = {
    "height": (lambda v: type(v) is int and v > 0, "a positive whole number"),
    "width": (lambda v: type(v) is int and v > 0, "a positive whole number"),
    "channels": (lambda v: v in (1, 3), "1 or 3"),
    "encoding": (lambda v: v in ENCODINGS, " or ".join(ENCODINGS)),
    "compression": (lambda v: v in ("", "GZIP"), '"" or "GZIP"'),
    "counts": (_counted, "an object of split -> number of pairs"),
    "files": (_counted, "an object of shard file name -> number of pairs"),
}


def _info_problem(raw) -> str | None:
    """What is wrong with dataset.json's parsed value, or None."""
    if not isinstance(raw, dict):
        return "holds no JSON object"
    for name, (ok, wanted) in _FIELDS.items():
        if name not in raw:
            return f'has no "{name}"'
        if not ok(raw[name]):
            return f'"{name}" is {json.dumps(raw[name])[:40]}, it must be {wanted}'
    names = raw.get("label_names", ["different", "follows"])
    if not isinstance(names, list) or len(names) < 2:
        return '"label_names" must list the two classes'
    unknown = sorted(set(raw) - set(_FIELDS) - {"label_names"})
    if unknown:
        return f'has an unknown field "{unknown[0]}"'
    return None


def write_info(directory: str, info: DatasetInfo) -> None:
    """Writes ``dataset.json`` through a temporary name, so it appears whole or not at all."""
    write_atomic(join(directory, METADATA_FILE), info.to_json())


def split_files(directory: str, split: str) -> list[str]:
    """The shard files of one split in a dataset folder, sorted."""
    names = tf.io.gfile.listdir(directory)
    return sorted(join(directory, n) for n in names if SHARD_RE.match(n) and n.startswith(split))


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_pair(
    image_a: bytes,
    image_b: bytes,
    label: int,
    height: int,
    width: int,
    channels: int,
    encoding: str,
    pair_id: str = "",
) -> bytes:
    """One serialized tf.train.Example holding a pair."""
    feature = {
        "image_a": _bytes(image_a),
        "image_b": _bytes(image_b),
        "label": _int(label),
        "height": _int(height),
        "width": _int(width),
        "channels": _int(channels),
        "encoding": _bytes(encoding.encode()),
        "pair_id": _bytes(pair_id.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
