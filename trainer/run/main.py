"""``train_and_evaluate(config)``: runs config.mode and maps every error to its exit code, here
and nowhere else.

Exit codes (trainer.common.errors): 0 done; 1 bad input (a flag, the data, a storage that
refuses), a NaN/Inf loss; 75 stopped by SIGTERM after a checkpoint, a lost peer, an
unreachable tf.data dispatcher, an evaluator's run that has not started or a storage
outage: rerun (the Job does) to resume.
"""

from __future__ import annotations

import os
import sys

import tensorflow as tf

from trainer.common.errors import (
    EXIT_OK,
    EXIT_RETRY,
    EXIT_USAGE,
    NotThereYet,
    UsageError,
    disk_full,
    first_line,
)
from trainer.config import Config
from trainer.data import DataError
from trainer.run import checkpoint, modes, setup
from trainer.run.controller import Preempted, TrainingDiverged
from trainer.runtime import storage
from trainer.runtime.strategy import PEER_ERRORS, is_multi_worker


def train_and_evaluate(config: Config) -> int:
    """Runs config.mode; returns the exit status. Raises nothing a user caused."""
    try:
        setup.prepare_runtime(config)
        if config.mode == "continuous_eval" and modes.evaluated_before(config):
            return EXIT_OK
        return modes.MODES[config.mode](setup.prepare(config))
    except Exception as e:  # noqa: BLE001 - exit_status re-raises what it does not know
        return exit_status(e, config)


def exit_status(error: Exception, config: Config) -> int:
    """One sentence on stderr for ``error`` and the exit status it means; re-raises an
    error that is not one of the run's known failures (a bug: its traceback is wanted)."""
    if isinstance(error, UsageError | DataError | storage.StorageError | TrainingDiverged):
        return _say(f"error: {error}", EXIT_USAGE)
    if isinstance(error, Preempted):
        _say(f"{error} Exit {EXIT_RETRY}: rerun to resume.", EXIT_RETRY)
        if config.runtime.grace_seconds:
            # Inside a grace budget (a Spot node's 15 s) the checkpoint is whole and the
            # scalars are flushed at each write; Python's teardown of TensorFlow took 4 s
            # more here (bench/grace.py), time the budget does not have.
            _leave_now(EXIT_RETRY)
        return EXIT_RETRY
    if isinstance(error, NotThereYet):
        return _say(f"error: {error} Exit {EXIT_RETRY}: rerun once it is up.", EXIT_RETRY)
    if isinstance(error, storage.StartFailed):  # nothing written yet: nothing to flush
        return _storage_failed(error.found, config, leave=False)
    if isinstance(error, tf.errors.OpError) and (found := storage.failure(error)) is not None:
        return _storage_failed(found, config)
    if full := disk_full(error):
        return _say(f"error: {full.rstrip('.')}{_resume_from(config)}.", EXIT_USAGE)
    if isinstance(error, PEER_ERRORS):
        reason = f"{type(error).__name__}: {first_line(error, 300)}"
        if not is_multi_worker(config.runtime.strategy):  # no peer to lose
            return _say(
                f"error: TensorFlow aborted the run ({reason}). Exit {EXIT_RETRY}: rerun to "
                "resume from the last checkpoint.",
                EXIT_RETRY,
            )
        return _say(
            f"error: lost contact with a peer worker ({reason}). Exit {EXIT_RETRY}: restart "
            "the whole group to resume from the last checkpoint.",
            EXIT_RETRY,
        )
    raise error


def _resume_from(config: Config) -> str:
    """What a rerun of a training run starts from, as the end of a sentence."""
    if config.mode != "train":
        return ""
    step = checkpoint.latest_checkpoint_step(config.train.model_dir)
    start = "the start" if step is None else f"its checkpoint of step {step}"
    return f"; a rerun resumes from {start}"


def _say(sentence: str, status: int) -> int:
    sys.stderr.write(sentence + "\n")
    return status


def _storage_failed(found: storage.Failure, config: Config, leave: bool = True) -> int:
    """A storage operation TensorFlow gave up on: 75 when the storage is unreachable."""
    if not found.transient:
        return _say(f"error: {found.sentence()}.", EXIT_USAGE)
    _say(
        f"error: {found.sentence(config.runtime.storage_timeout_seconds)}. Exit {EXIT_RETRY}: "
        "rerun when the storage is reachable; training resumes from the last complete "
        "checkpoint.",
        EXIT_RETRY,
    )
    if not leave:
        return EXIT_RETRY
    # Leave now: Python's teardown would flush the TensorBoard writer to the storage that is
    # gone, each flush waiting out the retries again (measured: four more rounds, a minute at
    # --storage_timeout_seconds=10). The checkpoints hold everything to keep.
    _leave_now(EXIT_RETRY)


def _leave_now(status: int):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
