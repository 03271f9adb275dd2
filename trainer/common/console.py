"""What a person sees on the console: no TensorFlow start-up noise, log lines read at a glance.

``load_tensorflow``: TensorFlow's C++ libraries log 6-8 lines while they load and find their
devices ("oneDNN custom operations are on", "Could not find cuda drivers", "failed call to
cuInit" on every CPU-only host), written before absl's logging is initialised, so no
TF_CPP_MIN_LOG_LEVEL hides them all. The import and the device scan run with file descriptor
2 pointed at a temporary file; afterwards every line that is not one of those start-up lines
is written out as it came. A user's own TF_CPP_MIN_LOG_LEVEL (set before the trainer started)
turns this off: they see what TensorFlow prints. Either way the import runs with Python's
garbage collector paused and what it made frozen afterwards (a start ~0.5 CPU-seconds cheaper),
and without matplotlib, which Keras' plotting helpers import when it loads (~0.3 CPU-seconds,
a sixth of the import; trainer.report imports it when it draws).

``plain_log_lines``: absl's lines become ``13:53:48.575 step 20/300 loss ...`` (the time of day
to the millisecond, then the message; warnings say ``warning:``), without the level letter,
date, thread id and source location, and without TensorFlow's and Keras' INFO lines.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import logging
import os
import re
import sys
import tempfile
import time

import trainer

STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:. ]+\d+ \S+:\d+\]"  # absl's C++ INFO/WARNING lines
    r"|E\d{4} [\d:. ]+\d+ \S+:\d+\] (failed call to cuInit|Unable to register cu\w+ factory)"
    r"|\d{4}-\d\d-\d\d [\d:.]+: [IW] \S+:\d+\]"  # TensorFlow's own older format
    r"|To enable the following instructions: )"
)


def plural(n: int, noun: str) -> str:
    """``n`` with its noun: "1 replica", "2 replicas" (nouns with a plain -s plural)."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def load_tensorflow():
    """TensorFlow, imported and its physical devices found, without the start-up lines."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    if trainer.TF_LOG_LEVEL_FROM_USER:
        with _collector_paused(), _matplotlib_deferred():
            import tensorflow as tf
        return tf
    with _fd2_kept() as kept, _collector_paused(), _matplotlib_deferred():
        import tensorflow as tf

        # The device scan (cuInit) logs too; it starts no runtime, so thread pools and
        # logical devices can still be set afterwards.
        tf.config.list_physical_devices()
    for line in kept:
        if not STARTUP_NOISE.match(line):
            sys.stderr.write(line)
    return tf


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for the block; afterwards every object alive
    (the block's imports among them) frozen: never collected, never traversed again.

    Why: importing TensorFlow and Keras makes ~520,000 objects, and the allocations keep
    setting off collections that traverse them all again: a quarter of the import's CPU
    (perf: gc_collect_main, visit_decref). Those modules live as long as the process, so
    nothing is lost by freezing them, and later collections (while tracing) skip them too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class _NoMatplotlib(importlib.abc.MetaPathFinder):
    """Answers an import of matplotlib with ImportError, as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("matplotlib is imported when a picture is drawn")
        return None


@contextlib.contextmanager
def _matplotlib_deferred():
    """matplotlib not importable for the block; a later import finds it as usual.

    Why: Keras' image-gallery helpers (keras.visualization, never used here) import
    matplotlib.pyplot when Keras loads, inside ``try: ... except ImportError``. That import
    is ~0.3 CPU-seconds of every trainer, evaluator and pod start; only trainer.report draws,
    and it imports matplotlib itself. In this process those Keras helpers stay without it.
    """
    finder = _NoMatplotlib()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@contextlib.contextmanager
def _fd2_kept():
    """File descriptor 2 into a temporary file for the block; yields the list of its lines
    (filled when the block ends, whether or not it raised)."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines(keepends=True))


class PlainFormatter(logging.Formatter):
    """``HH:MM:SS.mmm message`` (``warning:`` / ``error:`` before the message where due)."""

    LEVELS = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp}.{int(record.msecs):03d} {self.LEVELS.get(record.levelno, '')}"
        text += record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class LibraryInfoFilter(logging.Filter):
    """Drops the libraries' own INFO lines ("Sharding callback duration: 32 microseconds" at
    every checkpoint, matplotlib's "generated new fontManager" when Keras imports it); their
    warnings and errors pass."""

    LIBRARIES = tuple(
        f"{os.sep}{name}{os.sep}" for name in ("tensorflow", "keras", "absl", "matplotlib", "PIL")
    )

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname or ""
        return record.levelno > logging.INFO or not any(lib in path for lib in self.LIBRARIES)


class RestoreNoiseFilter(logging.Filter):
    """What a refused restore (a warm start from another model) leaves behind when its
    checkpoint object is collected: the refusal has said what matters in one sentence."""

    NOISE = (
        "Detecting that an object or model or tf.train.Checkpoint is being deleted",
        "Value in checkpoint could not be found in the restored object",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def plain_log_lines() -> None:
    """absl's handler (the trainer's and the tools' log lines) in the plain format, without
    the libraries' INFO lines."""
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    handler.setFormatter(PlainFormatter())
    if not any(isinstance(f, LibraryInfoFilter) for f in handler.filters):
        handler.addFilter(LibraryInfoFilter())
    tf_logger = logging.getLogger("tensorflow")  # its restore noise, for every handler
    if not any(isinstance(f, RestoreNoiseFilter) for f in tf_logger.filters):
        tf_logger.addFilter(RestoreNoiseFilter())
