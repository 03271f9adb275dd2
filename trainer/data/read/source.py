"""Where a split's records are: a dataset folder (with dataset.json) or a file pattern.

Resolves the files, their record counts and the image spec every record must match, so the
reader and verify agree on what a dataset is. Paths go through tf.io.gfile.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from google.protobuf.message import DecodeError

from trainer.common.paths import join
from trainer.data import CONVERT, is_pattern, no_match, no_such_folder, not_a_folder, schema
from trainer.data.read import decode, frames
from trainer.data.schema import DataError
from trainer.runtime import storage


@dataclasses.dataclass(frozen=True)
class Source:
    """The files of one split and what their records must hold."""

    files: tuple
    counts: tuple  # records per file, in the order of ``files``
    spec: decode.ImageSpec
    compression: str = ""

    @property
    def num_records(self) -> int:
        return int(sum(self.counts))


def _storage_outage(e: tf.errors.OpError) -> bool:
    """Cloud Storage out of reach is not bad data: the caller retries the run (exit 75)."""
    found = storage.failure(e)
    return found is not None and found.transient


def resolve_files(pattern: str) -> list[str]:
    """Files matching a pattern (local, gs://, ram://); a clear error when there are none."""
    try:
        files = sorted(tf.io.gfile.glob(pattern))
    except tf.errors.OpError as e:
        if _storage_outage(e):
            raise
        raise DataError(f"cannot list {pattern}: {decode.error_reason(e)}.") from None
    if not files:
        raise no_match(pattern)
    return files


def _peek_spec(path: str, compression: str) -> decode.ImageSpec:
    """The first record's declared size and encoding, read as a protocol buffer (no
    TensorFlow op: the runtime must not start before the strategy)."""
    try:
        data = frames.first_record(path, compression)
    except tf.errors.OpError as e:
        if _storage_outage(e):
            raise
        raise DataError(f"{path}: {decode.error_reason(e)}.") from None
    if data is None:
        raise DataError(f"{path} holds no whole record: nothing to read the image size from.")
    try:
        f = tf.train.Example.FromString(data).features.feature
        return decode.ImageSpec(
            int(f["height"].int64_list.value[0]),
            int(f["width"].int64_list.value[0]),
            int(f["channels"].int64_list.value[0]),
            f["encoding"].bytes_list.value[0].decode(),
        )
    except (DecodeError, IndexError, KeyError, UnicodeDecodeError):
        raise DataError(
            f"{path} record 0 is not a pair record (see DESIGN.md's schema): convert the "
            "images with `trainer-data convert`."
        ) from None


def _truncated(path: str, frames_seen: frames.Frames, declared, skip_corrupt) -> DataError:
    expected = f" of its {declared}" if declared is not None else ""
    hint = {
        None: "",
        False: f", or pass --skip_corrupt to use its {frames_seen.records} whole records",
    }.get(skip_corrupt, "")
    return DataError(
        f"{path} is cut off or damaged at record {frames_seen.records}{expected}: copy or "
        f"convert it again{hint}."
    )


def _counted(files, declared, compression: str, skip_corrupt) -> list[int]:
    """Each file's records: local files walked frame by frame (agreeing with ``declared``,
    dataset.json's counts, where there are some), others walked where nothing declares them."""
    counts = []
    for path, said in zip(files, declared):
        if said is not None and not frames.is_local(path):
            counts.append(said)  # walking a gs:// file reads it all: the reader checks it
            continue
        seen = frames.scan(path, compression)
        short = seen.truncated or (said is not None and seen.records < said)  # cut at a frame
        if short and skip_corrupt is not True:
            raise _truncated(path, seen, said, skip_corrupt)
        if said is not None and not short and seen.records != said:
            raise DataError(
                f"{path} holds {seen.records} records but dataset.json says {said}: the "
                "metadata is not this folder's; run `trainer-data finalize` or convert again."
            )
        counts.append(said if said is not None else seen.records)
    return counts


def _listed_files(data: str, info: schema.DatasetInfo, split: str, files) -> list:
    """dataset.json's count of each file; the folder and dataset.json must name the same
    shards, and the split's count must be their sum."""
    present = {f.rsplit("/", 1)[-1] for f in files}
    listed = {n for n in info.files if n.startswith(split + "-")}
    if listed - present:
        raise DataError(
            f"{data} lacks {sorted(listed - present)[0]}, which dataset.json lists: copy the "
            "whole folder again."
        )
    if present - listed:
        raise DataError(
            f"{join(data, sorted(present - listed)[0])} is not in dataset.json (a shard of "
            "another conversion?): remove it or convert again."
        )
    total = sum(info.files[n] for n in listed)
    if split in info.counts and info.counts[split] != total:
        raise DataError(
            f"{join(data, schema.METADATA_FILE)} says {info.counts[split]} {split} pairs but "
            f"its files add up to {total}: rewrite it (`trainer-data finalize`) or convert again."
        )
    return [info.files[f.rsplit("/", 1)[-1]] for f in files]


def _agree(data: str, spec: decode.ImageSpec, first: decode.ImageSpec, path: str) -> None:
    said = (spec.height, spec.width, spec.channels, spec.encoding)
    held = (first.height, first.width, first.channels, first.encoding)
    if said != held:
        raise DataError(
            f"{join(data, schema.METADATA_FILE)} says {'x'.join(map(str, said[:3]))} "
            f"{said[3]} images but {path} record 0 holds {'x'.join(map(str, held[:3]))} "
            f"{held[3]}: the metadata is not this folder's; convert again."
        )


def open_source(data: str, split: str = "train", *, skip_corrupt: bool | None = None) -> Source:
    """A dataset folder (with dataset.json) or a file pattern, as a Source, checked before
    anything reads it for training: dataset.json well-formed and agreeing with the files
    (names, counts, image size, channels, encoding), no local file cut off.

    ``skip_corrupt``: True lets a cut-off file through (the reader skips its tail); False
    names the flag in the refusal; None (a tool without the flag) does not.
    Raises DataError for all of these, a missing folder or an empty pattern.
    """
    if is_pattern(data):
        files = resolve_files(data)
        compression = "GZIP" if files[0].endswith(".gz") else ""
        spec = _peek_spec(files[0], compression)
        counts = _counted(files, [None] * len(files), compression, skip_corrupt)
        return Source(tuple(files), tuple(counts), spec, compression)
    if not tf.io.gfile.exists(data):
        raise no_such_folder(data)
    if not tf.io.gfile.isdir(data):
        raise not_a_folder(data)
    try:
        info = schema.read_info(data)
    except FileNotFoundError as e:
        if not any(schema.split_files(data, split) for split in schema.SPLITS):
            raise DataError(
                f"data_dir {data} holds no dataset (no dataset.json, no shards): "
                f"{CONVERT.format('PAIRS.csv')}."
            ) from None
        raise DataError(str(e)) from None  # shards without dataset.json: half written
    files = schema.split_files(data, split)
    if not files:
        raise DataError(f"{data} has no {split} shards ({split}-*.tfrecord).")
    spec = decode.ImageSpec.from_info(info)
    declared = _listed_files(data, info, split, files)
    _agree(data, spec, _peek_spec(files[0], info.compression), files[0])
    counts = _counted(files, declared, info.compression, skip_corrupt)
    return Source(tuple(files), tuple(counts), spec, info.compression)


def open_splits(data: str, *, skip_corrupt: bool = False) -> tuple[Source, Source]:
    """(train, eval) Sources of a dataset; the training split stands in for a missing eval
    split (a pattern has no splits), with a warning."""
    from absl import logging

    train = open_source(data, "train", skip_corrupt=skip_corrupt)
    if not is_pattern(data) and schema.split_files(data, "eval"):
        # --skip_corrupt skips training records only: a cut-off eval file is refused, and
        # without the flag's name (an evaluation of part of a split would not say so).
        return train, open_source(data, "eval", skip_corrupt=None)
    logging.warning("no eval split in %s: evaluating on the training split", data)
    return train, train
