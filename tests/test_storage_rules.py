"""Cloud Storage's pure rules: TensorFlow's retry settings from --storage_timeout_seconds (and
a user's own left alone), TensorFlow's error messages reduced to the operation, path and cause,
bucket names refused before asking, and gs:// paths and checkpoint state files read one way."""

import pytest


def _waits(env):
    """The mean waits TF's retry loop makes under these settings: tsl's CallWithRetries
    sleeps min(init << k, max) plus a uniform random 0 to 1 s before its k-th retry."""
    delay, longest = (
        int(env["GCS_RETRY_CONFIG_INIT_DELAY_TIME_US"]),
        int(env["GCS_RETRY_CONFIG_MAX_DELAY_TIME_US"]),
    )
    waits = []
    for _ in range(int(env["GCS_RETRY_CONFIG_MAX_RETRIES"])):
        waits.append(min(delay, longest) / 1e6 + 0.5)
        delay *= 2
    return waits


@pytest.mark.parametrize("timeout", [1, 3, 6, 12, 60, 300, 3600])
def test_storage_retry_budget_is_a_third_of_the_timeout_per_operation(timeout):
    from trainer.runtime import storage

    env = storage.retry_env(timeout, {})
    budget = timeout / storage.OPERATIONS_PER_FAILED_WRITE
    waits = _waits(env)
    # the waits fill one operation's budget, and stop as soon as they do (one retry at least)
    assert len(waits) >= 1
    assert budget <= sum(waits) < budget + max(waits)
    assert max(waits) <= 32 + 0.5 and waits[0] <= 1 + 0.5
    attempt = int(env["GCS_REQUEST_CONNECTION_TIMEOUT_SECS"])
    assert 5 <= attempt <= 120 and int(env["GCS_REQUEST_IDLE_TIMEOUT_SECS"]) <= 60


def test_storage_retry_env_leaves_the_users_variables_alone():
    from trainer.runtime import storage

    env = storage.retry_env(300, {"GCS_RETRY_CONFIG_MAX_RETRIES": "2"})
    assert "GCS_RETRY_CONFIG_MAX_RETRIES" not in env and len(env) == len(storage.RETRY_VARS) - 1
    assert set(storage.retry_env(300, {})) == set(storage.RETRY_VARS)
    with pytest.raises(ValueError):
        storage.retry_env(0, {})


# Messages as TensorFlow 2.21 raised them against the sandboxed server (tests/test_gcs.py).
_GONE = (
    "All 5 retry attempts failed. The last failure: Error executing an HTTP request: libcurl "
    "code 52 meaning 'Server returned nothing (no headers, no data)', error details: Empty "
    "reply from server\n\t when reading metadata of gs://b1/f.txt"
)
_LOCKED = (
    "All 2 retry attempts failed. The last failure: Upload to gs://locked/run/x failed, caused "
    "by: Error executing an HTTP request: HTTP response code 404 with body '{\"error\":{}}'\n\t "
    "when resuming upload gs://locked/run/x"
)
_UNAVAILABLE = (
    "Error executing an HTTP request: HTTP response code 503 with body 'busy'\n\t when reading "
    "gs://data/syn/train-00001-of-00004.tfrecord"
)


def test_storage_failure_names_operation_path_and_cause():
    from trainer.runtime import storage

    gone = storage.failure(_GONE)
    assert (gone.operation, gone.path, gone.transient) == (
        "reading metadata of",
        "gs://b1/f.txt",
        True,
    )
    assert gone.cause == (
        "libcurl code 52 (Server returned nothing (no headers, no data), Empty reply from server)"
    )
    assert gone.sentence(12) == (
        "Cloud Storage failed reading metadata of gs://b1/f.txt (retried within "
        f"--storage_timeout_seconds=12): {gone.cause}"
    )
    locked = storage.failure(_LOCKED)
    assert (locked.operation, locked.path, locked.cause, locked.transient) == (
        "resuming upload",
        "gs://locked/run/x",
        "HTTP 404",
        False,
    )
    busy = storage.failure(_UNAVAILABLE)
    assert busy.path == "gs://data/syn/train-00001-of-00004.tfrecord" and busy.transient
    assert storage.failure("Collective ops is aborted by: peer down") is None
    assert storage.failure("Error executing an HTTP request: libcurl code 7 (no gs path)") is None
    # a bucket's lookup names no path: the caller says what it asked for (TF 2.21's message
    # with no network)
    lookup = (
        "Error executing an HTTP request: libcurl code 6 meaning 'Could not resolve hostname', "
        "error details: Could not resolve host: www.googleapis.com"
    )
    assert storage.failure(lookup) is None
    unresolved = storage.failure(lookup, at=("looking up the data bucket", "gs://b"))
    assert (unresolved.operation, unresolved.path, unresolved.transient) == (
        "looking up the data bucket",
        "gs://b",
        True,
    )
    assert unresolved.cause == (
        "libcurl code 6 (Could not resolve hostname, Could not resolve host: www.googleapis.com)"
    )
    assert storage.failure(_GONE, at=("looking up", "gs://other")).path == "gs://b1/f.txt"


@pytest.mark.parametrize(
    "path, bad",
    [
        ("gs://models/runs/exp1", ""),
        ("gs://my-bucket_2/x", ""),
        ("gs://" + "a" * 63 + "." + "b" * 40 + "/x", ""),  # dotted: parts of up to 63
        ("/local/B_ad", ""),  # not on gs://: not a bucket
        ("ram://m", ""),
        ("gs:///x", "names no bucket"),
        ("gs://Models/x", "'Models' is not a Cloud Storage bucket name (3 to 63 lowercase"),
        ("gs://my bucket/x", "'my bucket' is not"),
        ("gs://-models", "'-models' is not"),
        ("gs://models./x", "'models.' is not"),
        ("gs://a..b/x", "'a..b' is not"),
        ("gs://ab/x", "'ab' is not"),
        ("gs://" + "a" * 64, "is not a Cloud Storage bucket name"),
        ("gs://" + "a" * 64 + ".b", "is not a Cloud Storage bucket name"),
        ("gs://goog-models", "'goog-models' is not a Cloud Storage bucket name (no name may"),
        ("gs://team-google-runs", "'team-google-runs' is not"),
    ],
)
def test_a_bucket_name_cloud_storage_refuses_is_said_before_asking_it(path, bad):
    from trainer.common.paths import bucket_problem

    said = bucket_problem(path, "--model_dir")
    assert (bad in said) if bad else said == "", said
    if bad:
        assert said.startswith(f"--model_dir {path}")


def test_a_gs_path_is_read_one_way_and_a_checkpoint_state_file_too():
    """One reading of gs:// paths (trainer.common.paths) serves the trainer's storage checks
    and launch's; the checkpoint state file's step is read alike by preflight and status."""
    from launch.preflight import PreflightError, checkpoint_step, split_gs
    from trainer.common.paths import bucket_of
    from trainer.common.paths import split_gs as parts

    assert parts("gs://models/runs/exp1/") == ("models", "runs/exp1")
    assert parts("gs://models") == ("models", "")
    assert bucket_of("gs://models/a/b") == "models" and bucket_of("gs:///x") == ""
    assert split_gs("gs://models//runs/") == ("models", "runs")
    for path, said in (("/local/m", "is not a gs:// path"), ("gs:///x", "names no bucket")):
        with pytest.raises(PreflightError, match=said):
            split_gs(path)
    state = 'model_checkpoint_path: "ckpt-12"\nall_model_checkpoint_paths: "ckpt-8"\n'
    assert checkpoint_step(state) == 12
    assert checkpoint_step('model_checkpoint_path: "gs://m/r/checkpoints/ckpt-40"\n') == 40
    assert checkpoint_step('all_model_checkpoint_paths: "ckpt-8"\n') is None
    assert checkpoint_step("") is None
