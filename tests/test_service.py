"""The tf.data service: what trainers receive through it, and the trainer's refusals.

Real servers over loopback gRPC: TensorFlow's DispatchServer and WorkerServer, in this
process. The training run through ``launch local --data_workers`` (processes) is in
test_distributed.py.
"""

import collections
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from launch.local.workers import LocalConfig, run
from tests.datagen import pair_pixels, write_pairs
from tests.runs import Capture
from trainer.config import DataConfig
from trainer.data.read.source import open_source
from trainer.data.service import client as service
from trainer.data.write.synthetic import write_synthetic

N, FILES, BATCH = 96, 6, 8


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("svc") / "data")
    write_pairs(path, N, FILES, encoding="png")
    return open_source(path)


@pytest.fixture(scope="module")
def cluster():
    """A dispatcher and two data workers, in this process."""
    svc = tf.data.experimental.service
    dispatcher = svc.DispatchServer(svc.DispatcherConfig(port=0))
    address = dispatcher.target.split("://")[1]
    workers = [svc.WorkerServer(svc.WorkerConfig(dispatcher_address=address)) for _ in range(2)]
    yield dispatcher.target
    for w in workers:
        w.stop()
    dispatcher.stop()


def _probe(source, target, name, first_epoch=0, shuffle_buffer=8):
    ds = service.worker_pipeline(source, BATCH, 3, shuffle_buffer, first_epoch, probe=True)
    return service.distributed(ds, target, name)


def _count(batches, into):
    for a, b, label, epoch, ids in batches:
        for image_a, image_b, y, e, i in zip(a, b, label, epoch, ids):
            k = int(i)
            # The data workers decoded what the record holds (ids are grey levels, datagen).
            expect_a, expect_b = pair_pixels(k)
            assert np.array_equal(image_a, expect_a) and np.array_equal(image_b, expect_b)
            assert int(y) == k % 2
            into[(int(e), k)] += 1


def test_every_record_once_per_epoch_over_two_data_workers_and_two_trainers(source, cluster):
    # Two consumers of one job, as two trainer workers of a run: each batch reaches one.
    seen = [collections.Counter(), collections.Counter()]
    its = [iter(_probe(source, cluster, "shared").as_numpy_iterator()) for _ in range(2)]
    both = collections.Counter()

    def complete():
        return all(sum(1 for e, _ in both if e == epoch) == N for epoch in (0, 1))

    # Read until epochs 0 and 1 are whole (later ones may still be in flight: each data worker
    # interleaves up to 6 files and buffers batches, and one may run ahead of the other), at
    # most twenty epochs' worth.
    for _ in range(20 * N // BATCH // 2):
        for it, counter in zip(its, seen):
            _count([next(it)], counter)
        both = seen[0] + seen[1]
        if complete():
            break
    for epoch in (0, 1):
        ids = sorted(k for e, k in both if e == epoch)
        assert ids == list(range(N)), (epoch, len(ids))
        assert {both[(epoch, k)] for k in ids} == {1}
    assert min(sum(s.values()) for s in seen) > 0  # both trainers were fed
    assert not set(seen[0]) & set(seen[1])  # no pair of an epoch went to both trainers


def test_a_resumed_stream_starts_at_its_epoch(source, cluster):
    seen = collections.Counter()
    batches = _probe(source, cluster, "resume", first_epoch=7).take(N // BATCH)
    _count(batches.as_numpy_iterator(), seen)
    assert min(e for e, _ in seen) == 7
    # Trainer workers of one attempt share a job; another checkpoint or run gets its own.
    assert service.job_name("gs://bkt/m", 0, 640) == service.job_name("gs://bkt/m", 0, 640)
    assert service.job_name("gs://bkt/m", 0, 640) != service.job_name("gs://bkt/m", 0, 704)
    assert service.job_name("gs://bkt/m", 0, 640) != service.job_name("gs://bkt/n", 0, 640)


def test_trainer_side_gets_model_inputs(source, cluster):
    config = DataConfig(seed=1, augment=True)
    ds = service.train_stream(
        source,
        config,
        batch_size=BATCH,
        address=cluster,
        name="inputs",
        examples_seen=0,
        start_step=0,
    )
    inputs, label = next(iter(ds))
    assert inputs["input1"].dtype == tf.float32 and inputs["input1"].shape == (BATCH, 8, 8, 3)
    assert (
        0.0
        <= float(tf.reduce_min(inputs["input1"]))
        <= float(tf.reduce_max(inputs["input1"]))
        <= 1.0
    )
    assert label.shape == (BATCH,)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("syn") / "syn")
    write_synthetic(path, num_train=256, num_eval=32, image_size=16, num_shards=2, seed=5)
    return path


# Training through the service with a data worker killed mid-run, to the accuracy target, is
# tests/test_distributed.py::test_two_workers_converge_..._through_two_data_workers.


def test_data_workers_and_a_service_address_are_refused_together(tmp_path):
    out, err = Capture(), Capture()
    rc = run(
        LocalConfig(
            workers=1,
            data_workers=1,
            trainer_args=("--data_service_address=grpc://localhost:1", f"--model_dir={tmp_path}"),
        ),
        out=out,
        err=err,
    )
    assert rc == 1 and "drop --data_service_address" in err.text
    assert not out.text and not list(tmp_path.iterdir())


def test_a_data_worker_says_it_waits_for_its_dispatcher_and_stops_on_sigterm():
    """Started before its dispatcher (or given a wrong address), a data worker says what it
    waits for (TensorFlow's WorkerServer would retry inside its constructor, silently), and
    SIGTERM stops it with exit 0 while it waits."""
    import signal

    from launch.local.processes import free_ports

    (port,) = free_ports(1)  # nothing listens there
    address = f"--dispatcher_address=grpc://localhost:{port}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "trainer.data", "data_worker", address, "--port=0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = worker.stdout.readline()
    assert first == (
        f"waiting for the dispatcher at localhost:{port} (Connection refused), trying every "
        "second\n"
    ), first
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate()
    assert worker.returncode == 0 and out == "stopped\n", (worker.returncode, out, err)
    assert "Traceback" not in err


def test_an_unreachable_dispatcher_or_a_bad_address_writes_nothing(synthetic, tmp_path):
    from launch.local.processes import free_ports
    from tests.runs import run_module

    (port,) = free_ports(1)  # nothing listens there
    model_dir = tmp_path / "m"
    common = [f"--data_dir={synthetic}", f"--model_dir={model_dir}", "--train_steps=5"]
    r = run_module(
        "trainer", *common, f"--data_service_address=grpc://localhost:{port}",
        "--peer_timeout_seconds=2",
    )  # fmt: skip
    assert r.returncode == 75, r.stderr[-2000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert f"dispatcher at grpc://localhost:{port} did not answer within 2 s" in line
    for bad, why in (
        ("localhost:5050", "use grpc://HOST:PORT"),
        ("grpc://localhost", "use grpc://HOST:PORT"),
    ):
        r = run_module("trainer", *common, f"--data_service_address={bad}")
        assert r.returncode == 1 and why in r.stderr, r.stderr[-2000:]
    r = run_module("trainer", *common, "--data_service_address=grpc://h:1", "--deterministic")
    assert r.returncode == 1
    assert "--deterministic cannot go with --data_service_address" in r.stderr
    assert not model_dir.exists()
