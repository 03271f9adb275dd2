"""Scores many pairs with an exported SavedModel, from a pairs CSV or from TFRecords.

One tf.data pipeline reads and decodes the images in parallel (with the serving signature's
own decoding, trainer.model.export.image_decoder) and feeds batches to the SavedModel's
``serving_float`` signature, so batch scores equal ``serving_default`` on the same bytes. The
order of the input is kept. A CSV row whose image is missing or unreadable drops out of the
stream (tf.data's ignore_errors) and is named afterwards with its line and reason, in the
same single pass over the data.
"""

from __future__ import annotations

import dataclasses
import heapq
import time

import numpy as np
import tensorflow as tf

from trainer.common.errors import first_line
from trainer.common.graph import graph_fn
from trainer.common.paths import join
from trainer.common.progress import Progress
from trainer.data import schema
from trainer.data.read import pipeline, verify
from trainer.data.read.source import open_source
from trainer.data.schema import DataError
from trainer.data.write import image_pass, pairs_csv
from trainer.model.export import image_decoder

AUTOTUNE = tf.data.AUTOTUNE


class ScoringError(ValueError):
    """Bad input to batch scoring; the message is one sentence."""


@dataclasses.dataclass
class Scored:
    """Scores in input order, for the rows that could be scored."""

    ids: list  # per scored row: (image_a, image_b) as given, or (pair_id,)
    scores: np.ndarray
    labels: np.ndarray | None  # None: the input has no labels
    bad: list  # one line per row that could not be scored
    wrong: list  # the most confidently wrong pairs: dicts with images, when asked for
    seconds: float
    summary: dict | None = None  # the report's figures, once trainer.report computed them

    @property
    def rate(self) -> float:
        return len(self.scores) / max(self.seconds, 1e-9)


def check_saved_model(saved_model: str) -> None:
    """ScoringError unless ``saved_model`` holds a saved_model.pb; the sentence says where
    the SavedModel is when it was given a training run's model_dir."""
    if tf.io.gfile.exists(join(saved_model, "saved_model.pb")):
        return
    if not tf.io.gfile.exists(saved_model):
        raise ScoringError(f"--saved_model {saved_model} does not exist.")
    export = join(saved_model, "export")
    if tf.io.gfile.exists(join(export, "saved_model.pb")):
        raise ScoringError(
            f"{saved_model} is a training run's model_dir, not a SavedModel folder: "
            f"give its export, --saved_model={export}."
        )
    raise ScoringError(f"{saved_model} is not a SavedModel folder (no saved_model.pb).")


def load_model(saved_model: str):
    """(serving_float function, (height, width, channels)) of an exported SavedModel."""
    check_saved_model(saved_model)
    loaded = tf.saved_model.load(saved_model)
    if "serving_float" not in loaded.signatures:
        raise ScoringError(
            f"{saved_model} has no serving_float signature: export it with this trainer."
        )
    fn = loaded.signatures["serving_float"]
    shape = fn.structured_input_signature[1]["input1"].shape
    fn._keep = loaded  # the signature needs its SavedModel object alive
    return fn, tuple(int(d) for d in shape[1:])


class _Wrong:
    """The ``k`` most confidently wrong pairs seen so far (score far on the wrong side)."""

    def __init__(self, k: int):
        self.k, self.heap = k, []

    def add(self, index, scores, labels, images_a, images_b, ids):
        if not self.k:
            return
        wrong = (scores >= 0.5) != (labels == 1)
        for j in np.flatnonzero(wrong):
            item = (abs(float(scores[j]) - 0.5), int(index[j]))
            if len(self.heap) < self.k or item > self.heap[0][:2]:
                entry = item + (
                    {
                        "index": int(index[j]),
                        "id": ids[j],
                        "score": float(scores[j]),
                        "label": int(labels[j]),
                        "image_a": np.asarray(images_a[j]),
                        "image_b": np.asarray(images_b[j]),
                    },
                )
                (heapq.heappush if len(self.heap) < self.k else heapq.heapreplace)(self.heap, entry)

    def worst_first(self) -> list:
        return [e[2] for e in sorted(self.heap, key=lambda e: e[:2], reverse=True)]


def _run(batches, fn, total: int, label_of, ids_of, keep_wrong: int, progress_label: str):
    """Feeds (index, image_a, image_b, label, id) batches to ``fn``; returns index, scores,
    labels, ids (``ids_of(index, id batch)`` per row) and the wrong-pair keeper."""
    progress = Progress(total, progress_label)
    wrong = _Wrong(keep_wrong)
    indices, scores, labels, ids = [], [], [], []
    done = 0
    for index, image_a, image_b, label, tag in batches:
        p = fn(input1=image_a, input2=image_b)["probability"].numpy()[:, 0]
        index = index.numpy()
        batch_ids = ids_of(index, tag.numpy())
        indices.append(index)
        scores.append(p)
        ids.extend(batch_ids)
        if label_of:
            y = label.numpy()
            labels.append(y)
            if keep_wrong:
                wrong.add(index, p, y, image_a.numpy(), image_b.numpy(), batch_ids)
        done += len(p)
        progress.update(done)
    join_ = lambda parts, dtype: (  # noqa: E731
        np.concatenate(parts) if parts else np.zeros([0], dtype)
    )
    return (
        join_(indices, np.int64),
        join_(scores, np.float32),
        join_(labels, np.int64) if label_of else None,
        ids,
        wrong,
    )


def score_csv(
    saved_model: str, pairs: str, batch_size: int, skip_bad_rows=False, keep_wrong=0
) -> Scored:
    """Scores every row of a pairs CSV (``image_a,image_b[,label]``, paths local or gs://)."""
    fn, (h, w, c) = load_model(saved_model)
    try:
        rows = pairs_csv.read_pairs_csv(pairs, labels_required=False)
    except DataError as e:
        raise ScoringError(str(e)) from None
    has_labels = rows[0].label is not None
    decode = image_decoder(h, w, c)
    ds = tf.data.Dataset.from_tensor_slices(
        (
            np.arange(len(rows), dtype=np.int64),
            [r.image_a for r in rows],
            [r.image_b for r in rows],
            np.array([r.label if has_labels else 0 for r in rows], np.int64),
        )
    )
    ds = (
        ds.map(
            graph_fn(
                lambda i, a, b, y: (i, decode(tf.io.read_file(a)), decode(tf.io.read_file(b)), y, i)
            ),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        .ignore_errors()  # a bad row leaves the stream; found below by its missing index
        .batch(batch_size)
        .prefetch(AUTOTUNE)
    )
    start = time.monotonic()
    index, scores, labels, ids, wrong = _run(
        ds,
        fn,
        len(rows),
        has_labels,
        lambda idx, _: [(rows[i].given_a, rows[i].given_b) for i in idx],
        keep_wrong,
        "scoring",
    )
    seconds = time.monotonic() - start
    missing = sorted(set(range(len(rows))) - set(index.tolist()))
    bad = [_why_bad(rows[i]) for i in missing]
    if bad and not skip_bad_rows:
        raise ScoringError(
            f"{len(bad)} of {len(rows)} rows have missing or unreadable images, nothing was "
            f"written: {'; '.join(bad[:20])}{'; ...' if len(bad) > 20 else ''} "
            "(--skip_bad_rows scores the others)."
        )
    if not len(index):
        raise ScoringError(f"no row of {pairs} could be scored: {'; '.join(bad[:5])}.")
    return Scored(ids, scores, labels, bad, wrong.worst_first(), seconds)


def _why_bad(row: pairs_csv.Row) -> str:
    """The CSV line, column, path and reason of a row the pipeline dropped."""
    for column, path, given in (
        ("image_a", row.image_a, row.given_a),
        ("image_b", row.image_b, row.given_b),
    ):
        try:
            image_pass.load_image(path)
        except ValueError as e:
            return f"line {row.line} {column} {given}: {e}"
    return f"line {row.line}: unreadable"


def score_records(saved_model: str, data: str, split: str, batch_size: int, keep_wrong=0) -> Scored:
    """Scores a TFRecord split (a dataset folder or a file pattern), in file order."""
    fn, (h, w, c) = load_model(saved_model)
    try:
        source = open_source(data, split)
    except DataError as e:
        raise ScoringError(str(e)) from None
    spec = source.spec
    if (spec.height, spec.width, spec.channels) != (h, w, c):
        raise ScoringError(
            f"{data} holds {spec.height}x{spec.width}x{spec.channels} images but the model "
            f"takes {h}x{w}x{c}: score a CSV of the image files instead (they are resized)."
        )

    def parse(index, serialized):
        a, b, y = pipeline.parse_batch(serialized, spec)
        pair_id = tf.io.parse_example(serialized, {"pair_id": schema.FEATURES["pair_id"]})
        scale = 1.0 / 255.0
        return (
            index,
            tf.cast(a, tf.float32) * scale,
            tf.cast(b, tf.float32) * scale,
            y,
            (pair_id["pair_id"]),
        )

    ds = (
        pipeline.records_in_order(source)
        .enumerate()
        .batch(batch_size)
        .map(graph_fn(parse), num_parallel_calls=AUTOTUNE)
        .prefetch(AUTOTUNE)
    )
    start = time.monotonic()
    try:
        index, scores, labels, ids, wrong = _run(
            ds,
            fn,
            source.num_records,
            True,
            lambda idx, tags: [(t.decode() or f"record {i}",) for i, t in zip(idx, tags)],
            keep_wrong,
            f"scoring {split}",
        )
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        problem = verify.locate_first_bad(source)
        raise ScoringError(f"bad record: {problem or first_line(e.message, 1000)}.") from None
    seconds = time.monotonic() - start
    return Scored(ids, scores, labels, [], wrong.worst_first(), seconds)
