"""A pytest plugin for bench/suite.py: deselects the node ids listed in $SUITE_DESELECT.

The file holds one test a line (an issue number, a tab, pytest's node id; ``#`` lines are
comments). A listed id the suite no longer collects ends the run with its name, so a renamed
test cannot quietly stay in a measurement meant to leave it out.
"""

from __future__ import annotations

import os

import pytest


def _listed(path: str) -> set[str]:
    with open(path) as f:
        lines = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
    return {line.split("\t", 1)[1] for line in lines}


def pytest_collection_modifyitems(config, items):
    path = os.environ.get("SUITE_DESELECT")
    if not path:
        return
    drop = _listed(path)
    gone = [item for item in items if item.nodeid in drop]
    missing = drop - {item.nodeid for item in gone}
    if missing:
        raise pytest.UsageError(f"{path} lists tests this suite lacks: {sorted(missing)[:3]}")
    config.hook.pytest_deselected(items=gone)
    items[:] = [item for item in items if item.nodeid not in drop]
