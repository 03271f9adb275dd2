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
