"""Shared test fixtures: quiet TensorFlow, deterministic seeds, the main job run once.

No test bounds training work by wall-clock time: hosts differ by 3x and more (DESIGN.md), so
subprocesses run without a timeout and pytest-timeout's per-test limit (pyproject.toml) is
the only hang protection. Tests whose subject is a time bound measure it from the moment
the bounded work starts, with slack, never from process start.
"""

import fcntl
import json
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
    """The README's main command, run once per test session in a fresh folder and cache.

    With pytest-xdist the test processes share one run: the first to need it runs it under
    a file lock and records its result; the others wait for the lock and read the record.
    """

    def __init__(self, root):
        self.root = root
        self.env = {"XDG_CACHE_HOME": str(root / "cache")}
        self.model_dir = root / "runs/default"
        self.export_dir = self.model_dir / "export"
        record = root / "result.json"
        root.mkdir(parents=True, exist_ok=True)
        with open(root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not record.exists():
                r = run_module("trainer", cwd=root, env=self.env)
                record.write_text(json.dumps([r.returncode, r.stdout, r.stderr]))
        code, out, err = json.loads(record.read_text())
        self.result = subprocess.CompletedProcess(["trainer"], code, out, err)


@pytest.fixture(scope="session")
def main_job(tmp_path_factory, worker_id):
    """`trainer` with no flags: trained on the built-in set, checkpoints and an export.

    Tests that only read its model, checkpoints or export share it instead of training
    their own; none of them may write into ``model_dir`` (copy it first).
    """
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # xdist: the workers' temp folders share a parent
        base = base.parent
    return MainJob(base / "main_job")
