"""Conversions split over machines: each worker's part record, and ``finalize``.

``convert --num_workers W --worker_index I`` writes worker I's shards (their names are those one
run would write: trainer.data.write.shards.shard_plan) and then ``parts/part-0000I-of-0000W.json``:
the image spec it wrote and its files. ``finalize`` - run by whichever worker finds every part
there when it ends, or by ``python -m trainer.data finalize DIR`` - checks that the parts agree
and that their files exist, and writes ``dataset.json`` from them; until then the folder is
not a dataset (the reader asks for dataset.json).
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow as tf

from trainer.common.files import write_atomic
from trainer.common.paths import join
from trainer.data import schema
from trainer.data.schema import DataError

PARTS_DIR = "parts"
SPEC_FIELDS = ("height", "width", "channels", "encoding", "compression", "label_names")


def part_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.json"


def part_path(output_dir: str, index: int, count: int) -> str:
    return join(join(output_dir, PARTS_DIR), part_name(index, count))


def write_part(output_dir: str, index: int, count: int, info: schema.DatasetInfo) -> None:
    """Worker ``index``'s record, written whole (temporary name, then rename)."""
    write_atomic(part_path(output_dir, index, count), info.to_json())


def parts_present(output_dir: str, count: int) -> list[int]:
    return [i for i in range(count) if tf.io.gfile.exists(part_path(output_dir, i, count))]


def _part_count(output_dir: str) -> int:
    folder = join(output_dir, PARTS_DIR)
    names = tf.io.gfile.listdir(folder) if tf.io.gfile.isdir(folder) else []
    counts = {n.rsplit("-of-", 1)[1].split(".")[0] for n in names if n.endswith(".json")}
    if not counts:
        raise DataError(f"{output_dir} holds no conversion parts ({PARTS_DIR}/part-*.json).")
    if len(counts) > 1:
        raise DataError(
            f"{output_dir}/{PARTS_DIR} holds parts of runs with different --num_workers "
            f"({', '.join(sorted(counts))}): convert into an empty folder."
        )
    return int(counts.pop())


def finalize(output_dir: str) -> schema.DatasetInfo:
    """Merges every worker's part into ``dataset.json``; DataError names what is missing or
    differs, and nothing is written then."""
    meta = join(output_dir, schema.METADATA_FILE)
    if tf.io.gfile.exists(meta):
        raise DataError(f"{meta} exists already: the dataset is finalized.")
    count = _part_count(output_dir)
    missing = sorted(set(range(count)) - set(parts_present(output_dir, count)))
    if missing:
        raise DataError(
            f"parts of workers {', '.join(map(str, missing))} (of {count}) are missing in "
            f"{output_dir}/{PARTS_DIR}: those workers have not finished."
        )
    infos = []
    for i in range(count):
        with tf.io.gfile.GFile(part_path(output_dir, i, count), "r") as f:
            raw = json.load(f)
        raw["label_names"] = tuple(raw["label_names"])
        infos.append(schema.DatasetInfo(**raw))
    for field in SPEC_FIELDS:
        values = {i: getattr(info, field) for i, info in enumerate(infos)}
        if len(set(values.values())) > 1:
            found = ", ".join(f"worker {i}: {v}" for i, v in values.items())
            raise DataError(
                f"the parts disagree on {field} ({found}): rerun the workers with the same "
                "--encoding and --image_size (re-encoding makes every slice alike)."
            )
    files, counts = {}, {}
    for info in infos:
        files.update(info.files)
        for split, n in info.counts.items():
            counts[split] = counts.get(split, 0) + n
    absent = [n for n in files if not tf.io.gfile.exists(join(output_dir, n))]
    if absent:
        raise DataError(f"files named by the parts are missing: {', '.join(sorted(absent))}.")
    merged = dataclasses.replace(infos[0], counts=counts, files=dict(sorted(files.items())))
    schema.write_info(output_dir, merged)
    return merged
