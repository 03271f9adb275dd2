"""Cloud Storage failing under a training run, for real (tests/gcs_sandbox.py; conftest's
``gcs``): a kill -9 and a save cut off by an outage, each resumed bitwise exactly; reads that
fail in the middle of an epoch, absorbed when short and exit 75 when lasting. The trainer is
a process of its own in each (the process's end is the subject); the storage's other uses
are in test_gcs.py.
"""

import re
import signal
import time

import numpy as np

from tests.runs import GCS_BIG, gcs_flags, in_namespace, read_checkpoint, start_in_namespace

# ---- a run cut off: kill -9, a save cut by an outage ---------------------------------------


def test_resume_on_gs_is_bitwise_exact_after_kill_9_and_after_a_cut_save(gcs, tmp_path):
    common = ["--deterministic", "--checkpoint_every_steps=2", "--augment", "--train_steps=8"]
    # kill -9 right after the checkpoint of step 2 is saved
    proc = start_in_namespace(gcs, "gs://models/b", *common)
    for line in proc.stderr:
        if "saved checkpoint gs://models/b/checkpoints/ckpt-2" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # the rerun resumes; the storage goes away in the middle of the save of step 6 (the data
    # file is written, its index is not): exit 75 naming the upload, within the bound
    gcs.go_down_at("b/checkpoints/ckpt-6_temp/part-00000-of-00001.index")
    proc = start_in_namespace(gcs, "gs://models/b", *common, "--storage_timeout_seconds=6")
    down = gcs.wait_down(proc, "save of step 6")
    _, err = proc.communicate()
    waited = time.monotonic() - down
    gcs.come_back()
    assert proc.returncode == 75, err[-3000:]
    assert re.search(r"resumed from \S+ckpt-[24] at step [24]", err), err[-3000:]
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1, err[-3000:]
    assert "Cloud Storage failed" in message[0]
    assert "gs://models/b/checkpoints/ckpt-6_temp/part-00000-of-00001.index" in message[0]
    assert "(retried within --storage_timeout_seconds=6)" in message[0]
    # The flag bounds the wait (TF's own retries: ~195 s per operation, three operations for
    # a failed write), with slack for a slow host.
    assert waited < 60, waited
    names = gcs.names("models", "b/checkpoints/")
    assert any("ckpt-6_temp/part-00000-of-00001.data" in n for n in names)  # cut mid-write
    assert "b/checkpoints/ckpt-6.index" not in names

    # storage back: the rerun resumes from step 4, never from the cut save; the straight
    # run it must equal shares its process (neither process is the subject)
    rest, straight = in_namespace(
        gcs,
        ("trainer", *gcs_flags("gs://models/b", *common)),
        ("trainer", *gcs_flags("gs://models/a", *common)),
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "at step 4" in rest.stderr and "ckpt-6" not in rest.stderr.split("resumed")[1][:80]
    a = read_checkpoint(gcs.download("models", "a/checkpoints/", tmp_path / "a") + "/ckpt-8")
    b = read_checkpoint(gcs.download("models", "b/checkpoints/", tmp_path / "b") + "/ckpt-8")
    assert a.keys() == b.keys() and len(a) > 40
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---- reads failing in the middle of an epoch -----------------------------------------------


def test_reads_short_outage_is_absorbed_lasting_one_exits_75(gcs):
    # GCS_BIG's one 3 MB shard: the reader fetches it in 1 MB requests, so the second request of
    # an epoch falls in its middle.
    big, shard = GCS_BIG, "/data/big/train-00000-of-00001.tfrecord"
    # 20 steps of 64: 2.5 epochs, each reading the shard again after the outage.
    quiet = ["--train_steps=20", "--log_every_steps=1000", "--checkpoint_every_steps=1000"]

    gcs.go_down_at(shard, nth=2)
    proc = start_in_namespace(
        gcs, "gs://models/r1", *quiet, "--storage_timeout_seconds=60", data=big
    )
    gcs.wait_down(proc, "second read")
    time.sleep(3)
    gcs.come_back()
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "step 20/20" in err
    assert any(shard.split("/")[-1] in d and d.startswith("GET") for d in gcs.dropped())

    gcs.go_down_at(shard, nth=2)
    proc = start_in_namespace(
        gcs, "gs://models/r2", *quiet, "--storage_timeout_seconds=6", data=big
    )
    down = gcs.wait_down(proc, "second read")
    _, err = proc.communicate()
    waited = time.monotonic() - down
    gcs.come_back()
    assert proc.returncode == 75, err[-3000:]
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "peer" not in message[0], err[-3000:]
    assert "Cloud Storage failed reading gs:/" + shard in message[0]
    assert waited < 60, waited
