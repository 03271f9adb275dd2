"""How tests run the package's commands and read what a run leaves, in one home: a command line
in this process (``train_here``) or as a process (``run_module``, ``run_trainer``: only where the
process is the subject, and without a time limit: hosts differ by 3x and more), commands in the
storage namespace (``in_namespace``, ``start_in_namespace``), the flags of a short run, of one
on gs:// and of a `launch local` group's, a checkpoint read back, a SavedModel's outputs,
TensorBoard's steps, a launcher's output captured, and what a refusal must look like."""

import io
import json
import os
import re
import subprocess
import sys
import threading

import tensorflow as tf

from tests import inprocess
from tests.inprocess import run_in_process

PY = sys.executable
LAST_LINE = re.compile(r"^([\w. -]+: )?error: \S")  # argparse names its program first
LOSS = re.compile(r"step (\d+)/\d+ loss ([\d.]+)")  # a progress line's step and loss


def train_here(*flags, env=None) -> subprocess.CompletedProcess:
    """The trainer's command line run in this process (the real flag parsing, config, resolve
    and train_and_evaluate): for tests whose subject is a run's behaviour, not its process."""
    from trainer.__main__ import run_in_process as trainer_main

    return run_in_process(trainer_main, *flags, env=env)


def run_module(module: str, *args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``python -m module args`` to completion (no time limit: see tests/conftest.py)."""
    return subprocess.run(
        [PY, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def run_trainer(*flags, cwd=None, env=None):
    """The trainer as a real process (for tests whose subject is the process)."""
    return run_module("trainer", *flags, cwd=cwd, env=env)


def in_namespace(sb, *calls, env=None) -> list[subprocess.CompletedProcess]:
    """Command lines ((entry, args...) with an entry of tests/inprocess.py) run one after the
    other in one process inside the storage namespace ``sb`` (tests/gcs_sandbox.py): one
    TensorFlow start for all of them."""
    plan = [[entry, [str(a) for a in args]] for entry, *args in calls]
    r = sb.run([PY, inprocess.__file__, json.dumps(plan)], env=env)
    found = [line[len(inprocess.RESULT) :] for line in r.stdout.splitlines()]
    results = [json.loads(line) for line in found if line.startswith("[")]
    assert len(results) == len(plan), r.stderr[-3000:]
    return [subprocess.CompletedProcess(c[0], *res) for c, res in zip(plan, results)]


# The storage namespace's sets (conftest's gcs fixture): the small one most runs train on, and
# one 3 MB shard (32x32) for reads that fail in the middle of an epoch.
GCS_DATA, GCS_BIG = "gs://data/syn", "gs://data/big"
# Short enough that a failing test does not wait out TF's ~195 s per operation.
GCS_QUICK = "--storage_timeout_seconds=20"


def gcs_flags(model_dir, *extra, data=GCS_DATA):
    """A short run's flags on gs://, with a storage timeout a failing test does not wait out."""
    return small_flags(data, model_dir, GCS_QUICK, *extra)


def start_in_namespace(sb, model_dir, *extra, data=GCS_DATA) -> subprocess.Popen:
    """The trainer as a process inside the storage namespace, its stderr piped."""
    return sb.popen(
        [PY, "-m", "trainer", *gcs_flags(model_dir, *extra, data=data)], stderr=subprocess.PIPE
    )


def small_flags(data, model_dir, *extra):
    """A short run's flags on ``data``; ``extra`` adds to them (a later flag wins)."""
    return [
        f"--data_dir={data}",
        f"--model_dir={model_dir}",
        "--global_batch_size=16",
        "--log_every_steps=1",
        # No eval and no export: each has tests of its own, and these runs need checkpoints
        # only (a run's final eval costs ~0.5 CPU-s: its trace and its input pipeline).
        "--eval_every_steps=0",
        "--noexport",
        # SGD: the optimizer is not these runs' subject, and Keras' Adam traces ~40 graph ops
        # per variable: a third of a short run's CPU (1.6 CPU-s against 1.1 with SGD). The
        # tests of the optimizer's state (exact resume, mixed precision, the recipe) ask for
        # theirs; a later flag wins.
        "--optimizer=sgd",
        *extra,
    ]


def group_flags(data, model_dir, *extra):
    """A `launch local` group's short run: its workers' flags; ``extra`` adds to them."""
    return (
        "--data_dir=" + data,
        f"--model_dir={model_dir}",
        "--log_every_steps=1",
        "--eval_every_steps=0",  # no eval: these runs are about steps and checkpoints
        "--peer_timeout_seconds=120",  # generous: a slow, busy host must not look like a lost peer
        "--noexport",  # checkpoints are what these runs are about; one test asks for the export
        "--optimizer=sgd",  # cheaper to trace than Adam (small_flags); the tests that follow
        *extra,  # or converge ask for Adam (a later flag wins)
    )


def read_checkpoint(prefix):
    """{variable name: value} of a checkpoint (its object graph left out)."""
    reader = tf.train.load_checkpoint(prefix)
    return {
        k: reader.get_tensor(k)
        for k in reader.get_variable_to_shape_map()
        if not k.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")
    }


def outputs_of_export(folder, x1, x2):
    """serving_float's probabilities of a SavedModel on the float pairs (x1, x2)."""
    fn = tf.saved_model.load(str(folder)).signatures["serving_float"]
    return fn(input1=tf.constant(x1), input2=tf.constant(x2))["probability"].numpy()[:, 0]


def tensorboard_steps(folder, tag="eval/loss") -> list[int]:
    """The steps of a scalar's events in a TensorBoard folder, in file order."""
    steps = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


class Capture(io.TextIOBase):
    """A launcher's output, kept for assertions and watched by the tests' kill threads."""

    def __init__(self):
        self.text = ""
        self.lock = threading.Lock()

    def write(self, s):
        with self.lock:
            self.text += s
        return len(s)


def refused(r, says: str, *, nothing_at=(), unchanged=None):
    """Exit 1, ``says`` in the one-sentence last line of stderr, no traceback, and no path of
    ``nothing_at`` written (``unchanged``: (folder, its listing before))."""
    text = r.stdout + r.stderr
    assert r.returncode == 1, (r.returncode, text[-2000:])
    assert "Traceback" not in text and "stopped on an unexpected" not in text, text[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert LAST_LINE.match(last) and says in last, last
    assert len(last) < 700, len(last)
    for path in nothing_at:
        assert not os.path.exists(path), f"{path} was written"
    if unchanged:
        folder, before = unchanged
        assert sorted(os.listdir(folder)) == before
