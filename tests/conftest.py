"""Shared test fixtures: quiet TensorFlow, deterministic seeds, the main job run once.

No test bounds training work by wall-clock time: hosts differ by 3x and more (DESIGN.md), so
subprocesses run without a timeout and pytest-timeout's per-test limit (pyproject.toml) is
the only hang protection. Tests whose subject is a time bound measure it from the moment
the bounded work starts, with slack, never from process start.
"""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

PY = sys.executable


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    yield


def run_module(module: str, *args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``python -m module args`` to completion (no time limit: see the module docstring)."""
    return subprocess.run(
        [PY, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


class MainJob:
    """The README's main command, run once per test session in a fresh folder and cache."""

    def __init__(self, root):
        self.root = root
        self.env = {"XDG_CACHE_HOME": str(root / "cache")}
        self.result = run_module("trainer", cwd=root, env=self.env)
        self.model_dir = root / "runs/default"
        self.export_dir = self.model_dir / "export"


@pytest.fixture(scope="session")
def main_job(tmp_path_factory):
    """`trainer` with no flags: trained on the built-in set, checkpoints and an export.

    Tests that only read its model, checkpoints or export share it instead of training
    their own; none of them may write into ``model_dir``.
    """
    return MainJob(tmp_path_factory.mktemp("main_job"))
