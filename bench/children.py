"""A bench's measurement in a fresh process (no TensorFlow in the bench's own): runs a child
script in a temporary folder and returns the JSON of its last ``RESULT `` line, or ends the
bench with the child's error (bench/startup.py, bench/export.py)."""

from __future__ import annotations

import json
import shutil
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
