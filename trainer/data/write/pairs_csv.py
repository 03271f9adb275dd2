"""The pairs CSV (``image_a,image_b,label``; the label column may be left out for prediction):
its rows read and checked, each bad line named, and every image it names surveyed once before
anything is written (trainer.data.write.convert, the scoring tools). Relative paths are read
from the CSV's folder.
"""

from __future__ import annotations

import csv
import dataclasses
import io

import tensorflow as tf

from trainer.common.console import plural
from trainer.common.paths import join
from trainer.data.read.verify import DataError
from trainer.data.write import image_pass as images

LABELS = (0, 1)  # the model is binary (a sigmoid output): 0 different, 1 follows


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
    with tf.io.gfile.GFile(path, "rb") as f:
        lines = list(csv.reader(io.StringIO(_text(path, f.read()))))
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
            if label not in LABELS:
                problems.append(
                    f"line {number}: label {label} is not 0 or 1 (the model is binary: 0 "
                    "different, 1 follows)"
                )
                continue
        rows.append(Row(number, _resolve(base, a), _resolve(base, b), label, a, b))
    if problems:
        raise DataError(f"{path} has {plural(len(problems), 'bad line')}: {some(problems)}.")
    if not rows:
        raise DataError(f"{path} holds no pairs.")
    return rows


def _text(path: str, data: bytes) -> str:
    """The CSV's bytes as text (UTF-8, with or without a byte-order mark); DataError naming
    the first line that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path} line {line} is not UTF-8 text (byte 0x{data[e.start]:02x} at column "
            f"{column}): save the CSV as UTF-8."
        ) from None


def some(problems: list[str], shown: int = 10) -> str:
    """The first ``shown`` problems and how many more: a message stays a few lines long."""
    more = len(problems) - shown
    return "; ".join(problems[:shown]) + (f"; and {more} more" if more > 0 else "")


def _resolve(base: str, p: str) -> str:
    return p if _absolute(p) else join(base, p)


def check_images(rows: list[Row], parallelism: int) -> images.Survey:
    """Surveys every image of ``rows`` once; raises naming every fault, with its CSV row."""
    paths = list(dict.fromkeys(p for r in rows for p in (r.image_a, r.image_b)))
    found = images.survey(paths, parallelism)
    problems = [
        f"row {row.line} {column} {path}: {found.faults[path]}"
        for row in rows
        for column, path in (("image_a", row.image_a), ("image_b", row.image_b))
        if path in found.faults
    ]
    if problems:
        missing = {p for p, fault in found.faults.items() if fault == "file not found"}
        relative = [
            given
            for r in rows
            for given, path in ((r.given_a, r.image_a), (r.given_b, r.image_b))
            if not _absolute(given) and path in missing
        ]
        where = (
            f" (relative paths are read from the CSV's folder, e.g. {relative[0]!r} as "
            f"{_resolve_in(rows, relative[0])})"
            if relative
            else ""
        )
        counted = "1 image is" if len(problems) == 1 else f"{len(problems)} images are"
        raise DataError(
            f"{counted} missing or unreadable, nothing was written{where}: {some(problems)}."
        )
    return found


def _absolute(path: str) -> bool:
    return path.startswith("/") or "://" in path


def _resolve_in(rows: list[Row], given: str) -> str:
    """The path a row's given (relative) path was read from."""
    for r in rows:
        if r.given_a == given:
            return r.image_a
        if r.given_b == given:
            return r.image_b
    return given
