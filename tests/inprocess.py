"""Command lines run in this process, their output captured: the tests' way to call a CLI
whose process is not the subject (one TensorFlow start for many calls).

As a script, ``python tests/inprocess.py CALLS_JSON`` runs several calls in one process and
prints one JSON line per call (exit status, stdout, stderr): tests/runs.py's ``in_namespace``
runs it for the storage namespace's tests, since a command must run inside the namespace but
need not have a process of its own. CALLS_JSON is a list of [entry, [args...]] with entry one
of ENTRIES.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import subprocess
import sys

# entry -> (module, function, whether argv starts with a program name)
ENTRIES = {
    "trainer": ("trainer.__main__", "run_in_process", False),
    "trainer.data": ("trainer.data.__main__", "main", False),
    "trainer.predict": ("trainer.tools.predict", "main", True),
    "trainer.report": ("trainer.tools.report", "main", True),
    "trainer.inspect": ("trainer.tools.activations", "main", True),
    "launch": ("launch.__main__", "main", False),
}
RESULT = "INPROCESS-RESULT "


class _Lines(logging.Handler):
    """Writes log records' messages (absl's and the standard library's) into the captured
    stderr as they come, so stderr reads in the order a process's would."""

    def __init__(self, stream):
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record):
        self.stream.write(record.getMessage() + "\n")


def run_in_process(main, *args, env=None, whole_env=False) -> subprocess.CompletedProcess:
    """``main(argv)`` (a command line's in-process entry, e.g. trainer.__main__.run_in_process)
    with its stdout, stderr and log lines captured, and os.environ as it was afterwards (a run
    sets TensorFlow's GCS_* variables, which later subprocesses must not inherit). ``env`` adds
    to os.environ for the call, or is the call's whole environment with ``whole_env`` (as
    subprocess.run's ``env``: a test may leave a variable out). Shaped like run_module's
    result, so a test reads both alike."""
    from absl import logging as absl_logging

    saved_env = dict(os.environ)
    if whole_env and env is not None:
        os.environ.clear()
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    lines = _Lines(err)
    root = logging.getLogger()
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    root.addHandler(lines)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(map(str, args)))
    finally:
        root.removeHandler(lines)
        absl_logging.set_verbosity(verbosity)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["in-process", *args], code, out.getvalue(), err.getvalue())


def _call(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's usage errors
        return e.code if isinstance(e.code, int) else 1


def run_entry(entry: str, args, env=None) -> subprocess.CompletedProcess:
    """The command line ``entry args`` in this process; ``env``, when given, is its whole
    environment (as a subprocess's)."""
    module, name, with_prog = ENTRIES[entry]
    main = getattr(importlib.import_module(module), name)
    prefix = [entry] if with_prog else []
    return run_in_process(
        lambda argv: _call(main, prefix + argv), *args, env=env, whole_env=env is not None
    )


if __name__ == "__main__":
    import trainer  # noqa: F401  (TensorFlow's log level, marked as the trainer's own)

    for entry, args in json.loads(sys.argv[1]):
        r = run_entry(entry, args)
        print(RESULT + json.dumps([r.returncode, r.stdout, r.stderr]), flush=True)
