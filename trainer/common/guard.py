"""The one guard every entry point runs under (trainer, trainer-data, predict, report, inspect,
launch): nothing a user can cause shows a traceback.

A UsageError (and so a DataError or StorageError) that reaches it is the one sentence it
carries; a Cloud Storage failure TensorFlow gave up on is the storage's sentence (exit 75
when the endpoint did not answer); a write that found its disk full says so (exit 1).
Anything else is a bug or something no check foresaw: one sentence that names the error and
the file holding the full traceback, exit 1 (TRAINER_TRACEBACK=1 lets it through instead, for
a developer). Ctrl-C and SystemExit pass untouched.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable

from trainer.common.errors import EXIT_USAGE, UsageError, disk_full, first_line

SHOW = "TRAINER_TRACEBACK"


def guarded(main: Callable[..., int], *args, program: str) -> int:
    """``main(*args)``'s exit status; an unexpected error is one sentence and exit 1."""
    try:
        return main(*args)
    except BrokenPipeError:  # the reader went away (`| head`): nobody is left to tell
        _silence_stdout()
        return EXIT_USAGE
    except UsageError as error:  # what the user must change (data and storage errors too)
        sys.stderr.write(f"error: {error}\n")
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - the one place that catches everything
        if os.environ.get(SHOW, "") not in ("", "0"):
            raise
        from trainer.runtime.storage import failure_exit  # text only: loads no TensorFlow

        storage = failure_exit(error)
        if storage is not None:  # the network or the endpoint, not a bug
            sys.stderr.write(storage[0] + "\n")
            return storage[1]
        if full := disk_full(error):  # the machine, not a bug
            sys.stderr.write(f"error: {full}\n")
            return EXIT_USAGE
        sys.stderr.write(internal_error(error, program=program) + "\n")
        return EXIT_USAGE


def internal_error(error: BaseException, *, program: str) -> str:
    """The sentence for an unexpected error, after writing its traceback to a file."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    where = _write_traceback(program, text)
    kept = (
        f"the full traceback is in {where}"
        if where
        else "the traceback could not be written to a file"
    )
    return (
        f"error: {program} stopped on an unexpected {type(error).__name__} "
        f"({first_line(error, 160)}); {kept} (or rerun with {SHOW}=1 to print it): please "
        "report it with that file."
    )


def _silence_stdout() -> None:
    """Python would report the broken pipe again when it flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (captured in tests)
        pass


def _write_traceback(program: str, text: str) -> str | None:
    try:
        fd, path = tempfile.mkstemp(prefix=f"{program.replace(' ', '-')}-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    except OSError:
        return None
