"""Shared test fixtures: quiet TensorFlow, deterministic seeds, the main job run once, the sets
more than one module trains on, the storage namespace, the kubectl stub; the tests' order. The
helpers tests share are in tests/runs.py (commands, flags, what a run leaves) and
tests/kube.py (manifests).

No test bounds training work by wall-clock time: hosts differ by 3x and more (DESIGN.md), so
subprocesses run without a timeout and pytest-timeout's per-test limit (pyproject.toml) is
the only hang protection. Tests whose subject is a time bound measure it from the moment
the bounded work starts, with slack, never from process start.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import pytest  # noqa: E402

import trainer  # noqa: E402, F401  (TensorFlow's log level, marked as the trainer's own)

PY = sys.executable


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    yield
    # A run in this process may have left a mixed-precision policy behind.
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _environment_as_it_was():
    """Each test leaves os.environ as it found it: a tool or trainer run in this process sets
    TensorFlow's GCS_* retry variables, which a later test's subprocess would take for a
    user's own (and so keep, over its --storage_timeout_seconds)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


MAIN_JOB = "main_job"


def pytest_configure(config):
    """A process that runs tests loads TensorFlow the trainer's way before collecting them
    (quiet, its import frozen out of the garbage collector: trainer.common.console); xdist's
    controller runs none and never loads it."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        from trainer.common import console

        console.load_tensorflow()


def pytest_collection_modifyitems(config, items):
    """Heaviest modules first, heaviest tests first within each, by the durations measured
    in tests/durations.json (a scheduling hint only; unknown tests count 1 s).

    Why: xdist's worksteal hands each process a contiguous half of this list and moves work
    only from the end of a queue (the last two never move), so a heavy test near the end
    of a half kept one process busy minutes after the other had finished. Within a module,
    tests that read the main job come last: it trains in the background meanwhile."""
    table = json.loads((pathlib.Path(__file__).with_name("durations.json")).read_text())
    module_total: dict = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        module_total[module] = module_total.get(module, 0.0) + table.get(item.nodeid, 1.0)
    items.sort(
        key=lambda item: (
            -module_total[item.nodeid.split("::")[0]],
            item.nodeid.split("::")[0],
            MAIN_JOB in item.fixturenames,
            -table.get(item.nodeid, 1.0),
        )
    )


def _main_job_root(config):
    """<session base temp>/main_job: the same folder for the controller and every xdist worker
    (a worker's base temp is <session base temp>/popen-gwN)."""
    base = config._tmp_path_factory.getbasetemp()
    if hasattr(config, "workerinput"):
        base = base.parent
    return base / MAIN_JOB


def pytest_sessionstart(session):
    """Starts the README's main command in the background as the session begins, from the
    process that runs no tests (xdist's controller) or, without xdist, from the only one, so
    no test process sits idle waiting for it later. Its output lands in result.json."""
    config = session.config
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller started it
    root = _main_job_root(config)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache")}
    script = (
        "import json, os, subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'trainer'], capture_output=True, text=True)\n"
        "open('result.json.tmp', 'w').write(json.dumps([r.returncode, r.stdout, r.stderr]))\n"
        "os.rename('result.json.tmp', 'result.json')\n"
    )
    config._main_job = subprocess.Popen([PY, "-c", script], cwd=root, env=env)


def pytest_sessionfinish(session):
    proc = getattr(session.config, "_main_job", None)
    if proc is not None and proc.poll() is None:  # the session ended first (e.g. -x, -k)
        proc.kill()
        proc.wait()


class MainJob:
    """The README's main command, run once per test session in a fresh folder and cache
    (started in the background by pytest_sessionstart); its result, once it is there."""

    def __init__(self, root):
        self.root = root
        self.env = {"XDG_CACHE_HOME": str(root / "cache")}
        self.model_dir = root / "runs/default"
        self.export_dir = self.model_dir / "export"
        record = root / "result.json"
        while not record.exists():  # no time limit here: pytest-timeout is the hang guard
            time.sleep(0.5)
        code, out, err = json.loads(record.read_text())
        self.result = subprocess.CompletedProcess(["trainer"], code, out, err)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """A small synthetic set (512 training and 64 eval pairs of 16x16 images in 4 shards),
    written once per test process for every test that trains a few steps on it."""
    from trainer.data.write.synthetic import write_synthetic

    path = str(tmp_path_factory.mktemp("data") / "syn")
    write_synthetic(path, num_train=512, num_eval=64, image_size=16, num_shards=4, seed=3)
    return path


@pytest.fixture(scope="session")
def group_data(tmp_path_factory):
    """The `launch local` groups' set (tests/test_distributed.py, test_group_faults.py): 8,192
    training and 256 eval pairs of 8x8 images in 4 shards."""
    from trainer.data.write.synthetic import write_synthetic

    path = str(tmp_path_factory.mktemp("group_data") / "syn")
    # 8,192 training pairs: the convergence run's 300 steps of 64 are ~2.3 epochs of it. With
    # 4,096 pairs and 500 steps of a constant rate (8 epochs) the run overfit (training loss
    # 0.02-0.04) and its eval accuracy spread from 0.914 to 0.957 over three runs, once 0.898
    # under its 0.9; with 8,192: 0.957-0.973. Those figures were at 16x16; at 8x8 a step costs
    # half the CPU and the set is learnt as well or better: 500 constant-rate steps 0.973-0.988
    # over four runs, the 300 cosine steps 0.961-0.977 over four (bench/RESULTS.md).
    write_synthetic(path, num_train=8192, num_eval=256, image_size=8, num_shards=4, seed=5)
    return path


@pytest.fixture(scope="session")
def main_job(request):
    """`trainer` with no flags: trained on the built-in set, checkpoints and an export.

    Tests that only read its model, checkpoints or export share it instead of training
    their own; none of them may write into ``model_dir`` (copy it first).
    """
    return MainJob(_main_job_root(request.config))


@pytest.fixture(scope="session")
def gcs():
    """The storage namespace (tests/gcs_sandbox.py) with buckets data, models and raw, and
    tests/runs.py's GCS_DATA (512 training, 64 eval pairs of 16x16) and GCS_BIG (one 3 MB
    shard of 32x32) written in one process; once per test process. Where this host cannot make
    the namespace it fails with one line saying why: the gs:// tests never skip."""
    from tests.gcs_sandbox import Sandbox
    from tests.runs import GCS_BIG, GCS_DATA, in_namespace

    sandbox = Sandbox()
    try:
        for bucket in ("data", "models", "raw"):
            sandbox.client.create_bucket(bucket)
        results = in_namespace(
            sandbox,
            ("trainer.data", "synthetic", "--output_dir", GCS_DATA, "--num_train", "512",
             "--num_eval", "64", "--image_size", "16", "--seed", "3"),
            ("trainer.data", "synthetic", "--output_dir", GCS_BIG, "--num_train", "512",
             "--num_eval", "32", "--image_size", "32", "--num_shards", "1"),
        )  # fmt: skip
        for r in results:
            assert r.returncode == 0, r.stderr[-2000:]
        yield sandbox
    finally:
        sandbox.close()


@pytest.fixture
def stub_kubectl(tmp_path, monkeypatch):
    """kubectl on PATH is the named stub (tests/stubs/kubectl: no API server can run here),
    the real one behind it for `kubectl kustomize`; returns a function that lists the calls it
    logged (argv and stdin), oldest first."""
    from tests.kube import STUBS

    log = tmp_path / "kubectl.log"
    monkeypatch.setenv("REAL_KUBECTL", shutil.which("kubectl"))  # before the stub shadows it
    monkeypatch.setenv("PATH", f"{STUBS}:{os.environ['PATH']}")
    monkeypatch.setenv("KUBECTL_STUB_LOG", str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls
