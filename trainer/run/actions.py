"""The actions the controller runs at its intervals (orbit's ``actions``): progress lines and
TensorBoard scalars at each log step, the eval report (log line, scalars, ``eval/last.json``)
and the best-model export after each eval, and the profiler at the --profile_steps bounds.

Each action is a small callable with its collaborators passed in (a scalar writer, a log
function, an export function), so the logic is tested without TensorFlow; the TensorFlow
pieces (SummaryWriter, the profiler calls) are imported only when used.
"""

from __future__ import annotations

from collections.abc import Callable

from trainer.common.paths import join
from trainer.run.controller import Window

INPUT_BOUND_FRACTION = 0.1  # above this share of step time waiting for input: a warning
LAST_EVAL_FILE = "eval/last.json"  # the newest eval's step, time and metrics

Scalars = Callable[[int, dict], None]  # (step, {tag: value})
Log = Callable[[str], None]


class SummaryWriter:
    """TensorBoard scalars into ``folder`` (a no-op writer where ``enabled`` is False: only
    the chief writes). Callable as a Scalars."""

    def __init__(self, folder: str, enabled: bool = True):
        import tensorflow as tf

        self._tf = tf
        self.writer = (
            tf.summary.create_file_writer(folder) if enabled else tf.summary.create_noop_writer()
        )

    def __call__(self, step: int, values: dict) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                self._tf.summary.scalar(name, value)
        self.writer.flush()


class ProgressLog:
    """At each log step: one line with loss, accuracy, pairs/s, input wait and ETA, the same
    figures as scalars, and a warning the first time the input is the bottleneck (from the
    second window on; the lines go on showing the wait). ``local_workers`` > 1: that many
    workers share this machine's cores (``launch local``), which the warning says."""

    def __init__(
        self,
        *,
        global_batch: int,
        train_steps: int,
        scalars: Scalars,
        log: Log,
        warn: Log,
        timed: bool = True,
        service: bool = False,
        local_workers: int = 0,
    ):
        self.global_batch, self.train_steps = global_batch, train_steps  # pairs per step
        self.scalars, self.log, self.warn = scalars, log, warn
        self.timed, self.service, self.local_workers = timed, service, local_workers
        self.warned = False  # said once: the progress lines show the wait from then on
        # The first window of a process holds the pipeline's warm-up (its first batches wait
        # for the files to open and the buffers to fill), which a steady run never pays
        # again: a short debugging run would be told it is input-bound. Its line still
        # shows the wait; the warning judges the windows after it.
        self.warmed_up = False

    def __call__(self, step: int, window: Window) -> None:
        loss, acc, wait = window.mean_loss(), window.accuracy(), window.input_fraction()
        rate = window.steps * self.global_batch / max(window.elapsed(), 1e-9)
        eta = (self.train_steps - step) * self.global_batch / max(rate, 1e-9)
        shown = f"{100 * wait:.0f}%" if self.timed else "n/a"  # no timestamps when deterministic
        # the first window's rate and ETA hold the tracing (and compiling) of the first loop
        startup = "" if self.warmed_up else " (start-up included)"
        self.log(
            f"step {step}/{self.train_steps} loss {loss:.4f} accuracy {acc:.3f} "
            f"{rate:.0f} pairs/s input wait {shown} ETA {eta:.0f}s{startup}"
        )
        if wait > INPUT_BOUND_FRACTION and self.warmed_up and not self.warned:
            self.warn(self._input_bound(wait))
            self.warned = True
        self.warmed_up = True
        self.scalars(
            step,
            {
                "train/loss": loss,
                "train/accuracy": acc,
                "train/pairs_per_second": rate,
                "train/input_wait": wait,
                "train/learning_rate": window.rate,  # the rate of the last update
            },
        )

    def _input_bound(self, wait: float) -> str:
        hint = (
            "add data workers to the tf.data service"
            if self.service
            else "try --cache, raw encoding, more shards, fewer augmentations or the "
            "tf.data service (--data_service_address)"
        )
        shared = (
            f" ({self.local_workers} workers share this machine's cores, so their input "
            "pipelines compete with their steps)"
            if self.local_workers > 1
            else ""
        )
        return (
            f"input-bound: {100 * wait:.0f}% of step time waits for the next batch{shared}; "
            f"{hint} (said once)"
        )


def eval_line(step: int, metrics: dict) -> str:
    return (
        f"eval at step {step}: loss {metrics['loss']:.4f} accuracy {metrics['accuracy']:.4f} "
        f"auc {metrics['auc']:.4f} ({metrics['pairs']} pairs)"
    )


class EvalReport:
    """After each eval: its log line, its scalars and (chief) ``<model_dir>/eval/last.json``,
    what `launch k8s status` shows."""

    def __init__(self, *, model_dir: str, scalars: Scalars, log: Log, write_last: bool):
        self.model_dir, self.scalars, self.log, self.write_last = (
            model_dir,
            scalars,
            log,
            write_last,
        )

    def __call__(self, step: int, metrics: dict) -> None:
        self.log(eval_line(step, metrics))
        self.scalars(step, {f"eval/{k}": v for k, v in metrics.items() if k != "pairs"})
        if self.write_last:
            write_last_eval(self.model_dir, step, metrics)


def write_last_eval(model_dir: str, step: int, metrics: dict) -> None:
    """<model_dir>/eval/last.json, replaced whole."""
    import time

    from trainer.common.files import write_json

    record = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
    write_json(join(model_dir, LAST_EVAL_FILE), record, sort_keys=True)


class BestExport:
    """After each eval: offers the model (holding that step's weights) to the BestKeeper of
    ``<model_dir>/export_best`` (trainer.run.best)."""

    def __init__(self, keeper, model):
        self.keeper, self.model = keeper, model

    def __call__(self, step: int, metrics: dict) -> None:
        self.keeper.offer(step, metrics, self.model)


class Profiler:
    """TensorBoard's profiler from the first to the last of --profile_steps (chief only)."""

    def __init__(self, *, steps: tuple, folder: str, log: Log, start=None, stop=None):
        self.first, self.last = steps
        self.folder, self.log = folder, log
        self._start, self._stop = start, stop  # injectable; TensorFlow's by default
        self.active = False

    def __call__(self, step: int) -> None:
        if step == self.first and not self.active:
            (self._start or _profiler_start)(self.folder)
            self.active = True
        elif step == self.last and self.active:
            (self._stop or _profiler_stop)()
            self.active = False
            self.log(f"profile of steps {self.first}..{self.last} written to {self.folder}")


def _profiler_start(folder: str) -> None:
    import tensorflow as tf

    tf.profiler.experimental.start(folder)


def _profiler_stop() -> None:
    import tensorflow as tf

    tf.profiler.experimental.stop()
