"""The one guard every entry point runs under (trainer/common/guard.py): pure, no TensorFlow."""

import re

import pytest

from trainer.common.errors import UsageError
from trainer.common.guard import SHOW, guarded


def boom():
    return 1 / 0


def test_an_unexpected_error_is_one_sentence_naming_its_traceback_file(capsys, monkeypatch):
    monkeypatch.delenv(SHOW, raising=False)
    assert guarded(boom, program="trainer") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    found = re.search(r"unexpected ZeroDivisionError \(division by zero\); the full traceback "
                      r"is in (\S+) \(or rerun with TRAINER_TRACEBACK=1", err)  # fmt: skip
    assert found, err
    with open(found.group(1)) as f:
        saved = f.read()
    assert "Traceback" in saved and "in boom" in saved and "ZeroDivisionError" in saved


def test_user_errors_broken_pipes_and_the_developer_switch(capsys, monkeypatch):
    def refuse():
        raise UsageError("--x=1 is invalid: use 2.")

    def pipe():
        raise BrokenPipeError

    assert guarded(refuse, program="trainer") == 1
    assert capsys.readouterr().err == "error: --x=1 is invalid: use 2.\n"
    assert guarded(pipe, program="trainer") == 1
    assert capsys.readouterr().err == ""  # nobody is left to read it
    assert guarded(lambda a: a + 1, 41, program="trainer") == 42
    monkeypatch.setenv(SHOW, "1")
    with pytest.raises(ZeroDivisionError):
        guarded(boom, program="trainer")


def test_a_storage_failure_no_caller_caught_is_the_storages_sentence(capsys, monkeypatch):
    # TensorFlow's messages (TF 2.21) when the endpoint is gone, when it refuses, and when a
    # bucket's lookup names no path (no network)
    from trainer.runtime.storage import Failure, StartFailed

    monkeypatch.delenv(SHOW, raising=False)
    cases = [
        ("Error executing an HTTP request: libcurl code 52 meaning 'Server returned nothing', "
         "error details: Empty reply from server\n\t when reading metadata of gs://b/f.txt", 75,
         "error: Cloud Storage failed reading metadata of gs://b/f.txt: libcurl code 52 (Server "
         "returned nothing, Empty reply from server). Exit 75: rerun when the storage is "
         "reachable."),
        ("Error executing an HTTP request: HTTP response code 403 with body 'no'\n\t when "
         "reading gs://b/x", 1, "error: Cloud Storage failed reading gs://b/x: HTTP 403."),
        ("Error executing an HTTP request: libcurl code 6 meaning 'Could not resolve hostname', "
         "error details: Could not resolve host: www.googleapis.com", 75,
         "error: Cloud Storage failed to answer: libcurl code 6 (Could not resolve hostname, "
         "Could not resolve host: www.googleapis.com). Exit 75: rerun when the storage is "
         "reachable."),
    ]  # fmt: skip
    for text, status, said in cases:

        def fail(text=text):
            raise RuntimeError(text)  # an OpError's text: the guard reads only the text

        assert guarded(fail, program="trainer-data") == status
        assert capsys.readouterr().err == said + "\n"

    def start():
        raise StartFailed(Failure("looking up the data bucket", "gs://b", "HTTP 503", True))

    assert guarded(start, program="trainer-data") == 75
    assert capsys.readouterr().err.startswith(
        "error: Cloud Storage failed looking up the data bucket gs://b: HTTP 503. Exit 75"
    )


def test_a_full_disk_is_the_machines_sentence_not_a_bug(capsys, monkeypatch):
    import errno

    from trainer.common.errors import disk_full

    monkeypatch.delenv(SHOW, raising=False)

    class ResourceExhaustedError(Exception):  # TensorFlow's, by name: the guard loads no TF
        pass

    tf_text = ("{{function_node __wrapped__SaveV2}} /d/m/checkpoints/ckpt-4_temp/part-0.data-0"
               "; No space left on device [Op:SaveV2]")  # fmt: skip
    assert disk_full(ResourceExhaustedError(tf_text)) == (
        "the disk is full (No space left on device) writing into /d/m/checkpoints/ckpt-4_temp: "
        "free space there, or write elsewhere."
    )
    assert disk_full(ResourceExhaustedError("OOM when allocating tensor")) is None  # memory
    assert disk_full(OSError(errno.EACCES, "Permission denied", "/d/x")) is None

    def write():
        raise OSError(errno.EDQUOT, "Disk quota exceeded", "/d/out/train-00003.tfrecord")

    assert guarded(write, program="trainer-data") == 1
    assert capsys.readouterr().err == (
        "error: the disk is full (Disk quota exceeded) writing into /d/out: free space there, "
        "or write elsewhere.\n"
    )
