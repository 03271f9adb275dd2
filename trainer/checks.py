"""The checks of a Config's values that need neither TensorFlow nor the data, each made once
(``validate``), and the parsers of the two flags whose text is not their value. Pure: a bad
value raises trainer.config.ConfigError with one sentence, the same for a Config built from
the flags (trainer.flags) as for one made in code. What depends on the data or the devices is
checked by trainer.resolve.
"""

from __future__ import annotations

import math
import os
import re

from trainer.common.paths import bucket_problem
from trainer.config import (
    BEST_METRICS,
    JIT,
    LR_SCHEDULES,
    MAX_PAIRS,
    MAX_SEED,
    MODES,
    OPTIMIZERS,
    PRECISIONS,
    STRATEGIES,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    RecipeConfig,
    RuntimeConfig,
    TrainConfig,
)
from trainer.model.options import HEADS, STRIDE_PLACEMENTS

# What a run writes in its model_dir (trainer.run.checkpoint, actions, continuous, best): an
# export, which replaces its folder whole, must not be any of them.
RUN_FOLDERS = ("checkpoints", "tensorboard", "eval", "export_best")


def _normal(path: str) -> str:
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return scheme + "://" + "/".join(p for p in rest.split("/") if p)
    return os.path.abspath(path)


def _check_export_place(config: Config) -> None:
    """An export replaces its folder whole (trainer.common.files.folder_written_whole): a
    folder that is, or holds, the run's model_dir, one of the run's own folders, or the data
    would be deleted with it."""
    path = config.written_export_path
    if not path:
        return
    export, run = _normal(path), _normal(config.train.model_dir)

    def within(folder: str, other: str) -> bool:
        return other == folder or other.startswith(folder.rstrip("/") + "/")

    data = _normal(config.data.data_dir) if config.data.data_dir else None
    if within(export, run):
        what = "is the --model_dir" if export == run else "holds the --model_dir"
    elif any(within(f"{run}/{name}", export) for name in RUN_FOLDERS):
        what = f"is inside a folder the run writes in --model_dir ({', '.join(RUN_FOLDERS)})"
    elif data and within(export, data):
        what = "is the --data_dir" if export == data else "holds the --data_dir"
    else:
        return
    raise ConfigError(
        f"--export_dir={path} {what}: an export replaces its folder whole, so the files there "
        "would be deleted; give a folder of its own (the default is <model_dir>/export)."
    )


_SERVICE_RE = re.compile(r"^grpc://[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$")
_SERVICE_CONFLICTS = (
    ("deterministic", "the service's dynamic sharding gives no fixed input order"),
    ("cache", "the data workers decode every epoch; a trainer-side cache has no place"),
    ("skip_corrupt", "the scan runs in the trainer; run verify and fix the data instead"),
)


def _at_least(name: str, value, minimum) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= minimum):
        relation = f">= {minimum}" if minimum == 0 else f"> {minimum - 1}"
        raise ConfigError(f"--{name}={value} is invalid: it must be {relation}.")


def _one_of(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"--{name}={value!r} is unknown: use one of {', '.join(choices)}.")


def parse_profile_steps(values) -> tuple:
    """--profile_steps=A,B as (A, B) with 0 <= A < B, or () when not given."""
    if not values:
        return ()
    try:
        first, last = (int(v) for v in values)
    except ValueError:
        first = last = -1
    if not 0 <= first < last:
        raise ConfigError(
            f"--profile_steps={','.join(map(str, values))} is invalid: use A,B with "
            "0 <= A < B, e.g. 10,20."
        )
    return (first, last)


def parse_steps_per_loop(text: str) -> int:
    """--steps_per_loop: 'auto' -> 0 (resolved later), a number > 0 as given."""
    if text == "auto":
        return 0
    if not (text.isdigit() and int(text) > 0):
        raise ConfigError(f"--steps_per_loop={text} is invalid: use a number > 0 or auto.")
    return int(text)


def _check_train(t: TrainConfig) -> None:
    for name in (
        "global_batch_size",
        "train_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "log_every_steps",
    ):
        _at_least(name, getattr(t, name), 1)
    _at_least("eval_every_steps", t.eval_every_steps, 0)
    _at_least("steps_per_loop", t.steps_per_loop, 0)
    if not (math.isfinite(t.learning_rate) and t.learning_rate > 0):
        raise ConfigError(
            f"--learning_rate={t.learning_rate} is invalid: it must be a finite number > 0."
        )
    if not 0 <= t.seed <= MAX_SEED:
        raise ConfigError(f"--seed={t.seed} is invalid: use 0 to {MAX_SEED} (numpy's range).")
    if t.train_steps * t.global_batch_size > MAX_PAIRS:
        raise ConfigError(
            f"--train_steps={t.train_steps} is too large for --global_batch_size="
            f"{t.global_batch_size}: the count of pairs trained on must fit in 64 bits."
        )
    if not t.model_dir:
        raise ConfigError("--model_dir is empty: give a local path or gs://bucket/path.")
    _one_of("jit_compile", t.jit_compile, JIT)
    _one_of("best_metric", t.best_metric, BEST_METRICS)
    _one_of("early_stop_metric", t.early_stop_metric, BEST_METRICS)
    _at_least("early_stop_patience", t.early_stop_patience, 1)
    if t.early_stop_metric != "none" and not t.eval_every_steps:
        raise ConfigError(
            f"--early_stop_metric={t.early_stop_metric} needs evaluations in the run: set "
            "--eval_every_steps."
        )
    if t.profile_steps:
        parse_profile_steps(t.profile_steps)
    _check_recipe(t.recipe, t.train_steps)


def _fraction(name: str, value, *, closed: bool = False) -> None:
    """0 <= value < 1 (<= 1 when ``closed``)."""
    top_ok = value <= 1 if closed else value < 1
    if not (math.isfinite(value) and value >= 0 and top_ok):
        bound = "1" if closed else "below 1"
        raise ConfigError(f"--{name}={value} is invalid: use 0 to {bound}.")


def _check_recipe(r: RecipeConfig, train_steps: int) -> None:
    _one_of("lr_schedule", r.lr_schedule, LR_SCHEDULES)
    _one_of("optimizer", r.optimizer, OPTIMIZERS)
    _at_least("warmup_steps", r.warmup_steps, 0)
    _at_least("grad_accum_steps", r.grad_accum_steps, 1)
    _at_least("lr_decay_steps", r.decay_steps, 0)
    horizon = r.decay_steps or train_steps
    if r.warmup_steps >= horizon:
        which = f"--lr_decay_steps={r.decay_steps}" if r.decay_steps else f"--train_steps={horizon}"
        raise ConfigError(f"--warmup_steps={r.warmup_steps} is invalid: it must be below {which}.")
    _fraction("lr_min_ratio", r.lr_min_ratio, closed=True)
    _fraction("momentum", r.momentum)
    _fraction("ema_decay", r.ema_decay)
    _at_least("weight_decay", r.weight_decay, 0)
    _at_least("clip_norm", r.clip_norm, 0)
    if r.weight_decay and r.optimizer == "adam":
        raise ConfigError(
            f"--weight_decay={r.weight_decay} needs --optimizer=adamw (decoupled decay) or sgd."
        )
    if r.momentum != RecipeConfig.momentum and r.optimizer != "sgd":
        raise ConfigError(f"--momentum={r.momentum} applies to --optimizer=sgd only: drop it.")


def _check_data(d: DataConfig, deterministic: bool) -> None:
    _at_least("shuffle_buffer", d.shuffle_buffer, 1)
    if not d.service_address:
        return
    if not _SERVICE_RE.match(d.service_address):
        raise ConfigError(
            f"--data_service_address={d.service_address} is invalid: use grpc://HOST:PORT "
            "(e.g. grpc://localhost:5050), or leave it empty."
        )
    chosen = {"deterministic": deterministic, "cache": d.cache, "skip_corrupt": d.skip_corrupt}
    for name, why in _SERVICE_CONFLICTS:
        if chosen[name]:
            raise ConfigError(f"--{name} cannot go with --data_service_address: {why}.")


def _check_model(m: ModelConfig) -> None:
    if not (math.isfinite(m.lambda_regularization) and m.lambda_regularization >= 0):
        raise ConfigError(
            f"--lambda_regularization={m.lambda_regularization} is invalid: it must be >= 0."
        )
    _one_of("stride_placement", m.stride_placement, STRIDE_PLACEMENTS)
    _one_of("head", m.head, HEADS)
    _one_of("precision", m.precision, PRECISIONS)


def _check_runtime(r: RuntimeConfig) -> None:
    _one_of("strategy", r.strategy, STRATEGIES)
    for name in ("devices_per_worker", "intra_op_threads", "inter_op_threads"):
        _at_least(name, getattr(r, name), 0)
    _at_least("peer_timeout_seconds", r.peer_timeout_seconds, 1)
    _at_least("storage_timeout_seconds", r.storage_timeout_seconds, 1)
    if not (math.isfinite(r.grace_seconds) and r.grace_seconds >= 0):
        raise ConfigError(
            f"TRAINER_GRACE_SECONDS={r.grace_seconds} is invalid: give the pod's grace period "
            "in seconds (>= 0), or unset it."
        )


def validate(config: Config) -> Config:
    """Every check that needs neither TensorFlow nor the data; returns ``config``."""
    _one_of("mode", config.mode, MODES)
    for role, path in (
        ("--data_dir", config.data.data_dir),
        ("--model_dir", config.train.model_dir),
        ("--export_dir", config.export_dir),
        ("--init_from", config.train.recipe.init_from),
    ):
        if problem := bucket_problem(path, role):
            raise ConfigError(f"{problem}.")
    _check_train(config.train)
    _check_data(config.data, config.train.deterministic)
    _check_model(config.model)
    _check_runtime(config.runtime)
    _check_export_place(config)
    e = config.evaluation
    _at_least("eval_timeout_seconds", e.timeout_seconds, 1)
    _at_least("checkpoint_step", e.checkpoint_step, 0)
    if e.checkpoint_step and config.mode != "evaluate":
        raise ConfigError(
            f"--checkpoint_step={e.checkpoint_step} applies to --mode=evaluate only: drop it."
        )
    if not (math.isfinite(e.poll_seconds) and e.poll_seconds > 0):
        raise ConfigError(f"--eval_poll_seconds={e.poll_seconds} is invalid: it must be > 0.")
    return config
