"""A bench's measurements in fresh processes (no TensorFlow in the bench's own): a child script
run in a temporary folder, the JSON of its last ``RESULT `` line returned (or the bench ended
with the child's error); rounds that measure every case in turn; the command line and the
Markdown table such a bench shares (bench/startup.py, bench/export.py)."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile

MARK = "RESULT "


def run_child(code: str, *args: str, what: str) -> dict:
    """``python -c code FOLDER args...`` in a fresh temporary FOLDER (removed after); ``what``
    names the measured thing in the message of a failure."""
    folder = tempfile.mkdtemp(prefix="bench-")
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, folder, *args], capture_output=True, text=True, cwd=folder
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [line for line in r.stdout.splitlines() if line.startswith(MARK)]
    if r.returncode or not lines:
        sys.exit(f"{what} failed: {r.stderr[-2000:]}")
    return json.loads(lines[-1][len(MARK) :])


def in_rounds(cases: list[tuple], measure, rounds: int) -> dict:
    """{case: [its result in each round]}: ``measure(*case)`` for every case in turn, ``rounds``
    times, so a drift of the host reaches every case alike; each result said on stderr."""
    found = {case: [] for case in cases}
    for i in range(rounds):
        for case in cases:
            found[case].append(measure(*case))
            print(f"round {i + 1}: {case}: {found[case][-1]}", file=sys.stderr)
    return found


def medians(found: list[dict]) -> dict:
    """{key: its median over one case's rounds} (the results ``in_rounds`` kept for it)."""
    return {key: statistics.median(r[key] for r in found) for key in found[0]}


def trees_parser(doc: str) -> argparse.ArgumentParser:
    """A bench's command line: the source trees it compares and ``--rounds``; the bench adds
    its own options."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("trees", nargs="+", help="source trees (folders holding trainer/)")
    p.add_argument("--rounds", type=int, default=3)
    return p


def print_markdown(header: list[str], rows: list[list[str]]) -> None:
    """The table as bench/RESULTS.md holds it (a header, its rule, a line a row)."""
    for line in (header, ["---"] * len(header), *rows):
        print("| " + " | ".join(line) + " |")
