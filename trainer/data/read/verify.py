"""Finds bad records: every record of every shard is read, parsed and decoded.

Used by ``python -m trainer.data verify DIR``, by the reader's ``skip_corrupt`` option (to know
what to skip, exactly) and by the trainer to name the record behind a tf.data error.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from trainer.data import schema
from trainer.data.read import decode
from trainer.data.read.source import open_source
from trainer.data.schema import DataError


@dataclasses.dataclass
class FileReport:
    path: str
    records: int = 0  # records read (good and bad)
    bytes: int = 0
    bad: dict = dataclasses.field(default_factory=dict)  # record index -> reason
    truncated_at: int | None = None  # index of the first unreadable record (frame/CRC error)
    truncated_reason: str = ""


def _records(path: str, compression: str):
    return tf.data.TFRecordDataset(path, compression_type=compression)


def scan_file(
    path: str, spec: decode.ImageSpec, compression: str, stop_at_first=False, declared=None
):
    """Reads one shard record by record; returns its FileReport.

    TFRecordDataset ends quietly at a cut-off last record, so a file that yields fewer
    records than ``declared`` (dataset.json's count) is reported as truncated there.
    """
    report = FileReport(path=path, bytes=tf.io.gfile.stat(path).length)
    iterator = iter(_records(path, compression).batch(256))
    index = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            break
        except tf.errors.OpError as e:  # framing or CRC: the rest of the file cannot be read
            # Batches are whole or nothing: find the exact record by reading one at a time.
            index = _first_unreadable(path, compression, index)
            report.truncated_at, report.truncated_reason = index, decode.error_reason(e)
            break
        try:
            decode.parse_pair_batch(batch, spec)
        except tf.errors.OpError:
            for offset in range(int(batch.shape[0])):
                try:
                    decode.parse_pair_batch(batch[offset : offset + 1], spec)
                except tf.errors.OpError as e:
                    report.bad[index + offset] = decode.error_reason(e)
                    if stop_at_first:
                        report.records = index + offset + 1
                        return report
        index += int(batch.shape[0])
    report.records = index
    if report.truncated_at is None and declared is not None and index < declared:
        report.truncated_at = index
        report.truncated_reason = f"the file ends after {index} of its {declared} records"
    return report


def _first_unreadable(path: str, compression: str, start: int) -> int:
    index = 0
    try:
        for _ in _records(path, compression):
            index += 1
    except tf.errors.OpError:
        pass
    return max(index, start)


def first_problem(report: FileReport) -> str | None:
    """One sentence for the first bad record of a file, or None."""
    candidates = []
    if report.bad:
        i = min(report.bad)
        candidates.append((i, f"{report.path} record {i}: {report.bad[i]}"))
    if report.truncated_at is not None:
        i = report.truncated_at
        candidates.append(
            (
                i,
                f"{report.path} record {i}: unreadable ({report.truncated_reason}); the file is "
                "truncated or corrupt from here on",
            )
        )
    return min(candidates)[1] if candidates else None


def locate_first_bad(source) -> str | None:
    """The first bad record of a Source (file order), as one sentence; None if all are good."""
    for path, declared in zip(source.files, source.counts):
        report = scan_file(path, source.spec, source.compression, True, declared)
        problem = first_problem(report)
        if problem:
            return problem
    return None


def verify_folder(data: str, out) -> int:
    """Scans every shard of a dataset folder (or pattern); prints a report; 0 when all good."""
    reports, problems = [], []
    for split in schema.SPLITS:
        try:
            source = open_source(data, split, skip_corrupt=True)  # reported below
        except DataError as e:
            if split == "eval" and "has no eval shards" in str(e):
                continue
            raise
        for path, declared in zip(source.files, source.counts):
            report = scan_file(path, source.spec, source.compression, declared=declared)
            reports.append(report)
            bad = len(report.bad) + (report.truncated_at is not None)
            out.write(
                f"{path}: {report.records} records, {report.bytes:,} bytes"
                + (f", {bad} bad" if bad else "")
                + "\n"
            )
            if report.records > declared:
                problems.append(
                    f"{path} holds {report.records} records, dataset.json says {declared}"
                )
            problem = first_problem(report)
            if problem:
                problems.append(problem)
        if "*" in data or "?" in data or data.endswith((".tfrecord", ".gz")):
            break  # a pattern has no splits
    total = sum(r.records for r in reports)
    size = sum(r.bytes for r in reports)
    out.write(f"total: {len(reports)} files, {total} records, {size:,} bytes\n")
    if problems:
        out.write(f"first bad record: {problems[0]}\n")
        out.write(f"{len(problems)} problem{'s' * (len(problems) > 1)} found.\n")
        return 1
    out.write("all records are good.\n")
    return 0
