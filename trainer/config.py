"""The trainer's absl flags, collected once into a frozen Config that each part gets a slice of.

Only this module reads FLAGS; the rest of the trainer receives plain dataclasses. Checks of
values a user can get wrong live here too, each raising ConfigError with one sentence.
"""

from __future__ import annotations

import dataclasses
import os
import re

from absl import flags

from trainer.model import options
from trainer.runtime import storage

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
MODES = ("train", "export", "evaluate", "continuous_eval")
BEST_METRICS = ("none", "auc", "accuracy", "loss")
JIT = ("auto", "true", "false")

_F = flags
_F.DEFINE_string(
    "data_dir",
    "",
    "Dataset folder or file pattern (local or gs://); empty: the "
    "built-in synthetic pair set, generated once into a cache.",
)
_F.DEFINE_string(
    "model_dir",
    "runs/default",
    "Checkpoints, config.json and TensorBoard logs "
    "(local or gs://). Training resumes from here by itself.",
)
_F.DEFINE_string("export_dir", "", "Where the SavedModel goes (default: <model_dir>/export).")
_F.DEFINE_boolean(
    "export",
    True,
    "Export the SavedModel when training ends (--noexport: checkpoints only, e.g. for a "
    "sweep; export any time later with --mode=export).",
)
_F.DEFINE_enum(
    "mode",
    "train",
    MODES,
    "train (then export); export: the latest checkpoint; evaluate: one checkpoint "
    "(--checkpoint_step, default the latest); continuous_eval: every new checkpoint in "
    "<model_dir>/checkpoints once, until the one of --train_steps.",
)
_F.DEFINE_enum(
    "strategy",
    "auto",
    STRATEGIES,
    "tf.distribute strategy; auto: multi_worker "
    "with TF_CONFIG or Indexed-Job variables, mirrored with >1 GPU, else one device.",
)
_F.DEFINE_integer("global_batch_size", 64, "Pairs per step over all replicas.")
_F.DEFINE_integer("train_steps", 300, "Total optimizer steps.")
_F.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.")
_F.DEFINE_string("activation", "elu", "Activation of the convolutions and dense layers.")
_F.DEFINE_float("lambda_regularization", 0.0, "L2 factor on kernels (0: off).")
_F.DEFINE_enum(
    "stride_placement",
    "branch",
    options.STRIDE_PLACEMENTS,
    "branch: the seed's code; after: stride after each module.",
)
_F.DEFINE_enum(
    "head", "flatten", options.HEADS, "Tower head: the seed's Flatten or global max pooling."
)
_F.DEFINE_enum(
    "jit_compile",
    "auto",
    JIT,
    "XLA; auto: on with GPUs, off on CPU. What it compiles: the whole step (forward, backward, "
    "optimizer update) with one GPU replica; the forward/backward pass on CPU and with several "
    "GPU replicas (the all-reduce and update outside).",
)
_F.DEFINE_enum("precision", "float32", PRECISIONS, "Keras dtype policy.")
_F.DEFINE_string(
    "steps_per_loop",
    "auto",
    "Training steps per compiled loop (one host round trip; the iterator runs inside): a "
    "number, or auto (10 on CPU, 100 with GPUs). Loops end at every log, checkpoint, eval and "
    "profile step and at --train_steps; SIGTERM and the stop vote take effect at a loop's end.",
)
_F.DEFINE_integer("checkpoint_every_steps", 200, "Save every N steps (and at the end).")
_F.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in <model_dir>/checkpoints.")
_F.DEFINE_integer(
    "eval_every_steps",
    200,
    "Evaluate every N steps (and at the end); 0: no evaluation in the training loop (a "
    "--mode=continuous_eval process evaluates instead).",
)
_F.DEFINE_integer(
    "checkpoint_step", 0, "--mode=evaluate: the checkpoint's step; 0: the latest checkpoint."
)
_F.DEFINE_integer(
    "eval_timeout_seconds",
    3600,
    "--mode=continuous_eval: stop when no new checkpoint appeared for this long.",
)
_F.DEFINE_float(
    "eval_poll_seconds", 5.0, "--mode=continuous_eval: how often to look for a new checkpoint."
)
_F.DEFINE_enum(
    "best_metric",
    "none",
    BEST_METRICS,
    "Keep <model_dir>/export_best (a SavedModel with best.json) of the checkpoint with the "
    "best eval value of this metric (auc and accuracy: higher, loss: lower); none: off.",
)
_F.DEFINE_integer("log_every_steps", 50, "Progress line every N steps.")
_F.DEFINE_integer("seed", 0, "Seed of weights, data order and augmentation.")
_F.DEFINE_boolean("deterministic", False, "Bitwise-reproducible ops and input order.")
_F.DEFINE_boolean("augment", False, "Random flip/brightness, identical on both images.")
_F.DEFINE_boolean("cache", False, "Keep decoded training pairs in memory after epoch 1.")
_F.DEFINE_boolean("skip_corrupt", False, "Skip (and report) corrupt records instead of failing.")
_F.DEFINE_string(
    "data_service_address",
    "",
    "grpc://HOST:PORT of a tf.data service dispatcher: its data workers read, decode and "
    "batch the training pairs (empty: this process does).",
)
_F.DEFINE_integer("shuffle_buffer", 4096, "Serialized records in the shuffle buffer.")
_F.DEFINE_integer(
    "devices_per_worker",
    0,
    "Split this host's CPU into N logical devices "
    "(MirroredStrategy without GPUs); 0: leave devices as they are.",
)

_F.DEFINE_integer(
    "intra_op_threads",
    0,
    "Threads one TensorFlow op may split its work over; 0: auto (1 without GPUs, where this "
    "model's parallel Inception branches keep the cores busy through inter-op threads "
    "instead; see bench/RESULTS.md), TensorFlow's default with GPUs or when "
    "TF_NUM_INTRAOP_THREADS is set.",
)
_F.DEFINE_integer(
    "inter_op_threads",
    0,
    "Threads running independent ops at once; 0: TensorFlow's default (one per core).",
)
_F.DEFINE_integer(
    "peer_timeout_seconds",
    300,
    "multi_worker: a lost or unreachable peer makes the others exit 75 after this long "
    "instead of hanging.",
)

_F.DEFINE_integer(
    "storage_timeout_seconds",
    storage.DEFAULT_TIMEOUT_S,
    "gs:// paths: a Cloud Storage operation that keeps failing is retried (exponential "
    "backoff) for about this long, then the run exits 75 naming the operation and path. "
    "Sets TensorFlow's GCS_RETRY_CONFIG_* and GCS_REQUEST_*_TIMEOUT_SECS variables unless "
    "they are set already.",
)

_F.DEFINE_list(
    "profile_steps",
    [],
    "A,B: write a TensorBoard profile of steps A..B (chief only) to <model_dir>/tensorboard.",
)

FLAGS = flags.FLAGS


class ConfigError(ValueError):
    """A flag value the user must change; the message is one sentence naming it."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Model-defining values: a checkpoint only restores into the same ones."""

    activation: str
    lambda_regularization: float
    stride_placement: str
    head: str
    precision: str
    image_size: tuple = (32, 32)  # filled from the dataset
    channels: int = 3

    def builder_kwargs(self) -> dict:
        """Keyword arguments of the trainer.model.builders builders for this configuration."""
        return dict(
            image_size=self.image_size,
            n_channels=self.channels,
            lambda_regularization=self.lambda_regularization,
            activation=self.activation,
            stride_placement=self.stride_placement,
            head=self.head,
        )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    data_dir: str
    seed: int
    augment: bool
    cache: bool
    skip_corrupt: bool
    shuffle_buffer: int
    deterministic: bool
    service_address: str = ""  # --data_service_address


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    global_batch_size: int
    train_steps: int
    learning_rate: float
    jit_compile: str
    checkpoint_every_steps: int
    keep_checkpoints: int
    eval_every_steps: int
    log_every_steps: int
    seed: int
    deterministic: bool
    profile_steps: tuple = ()
    best_metric: str = "none"
    steps_per_loop: str = "auto"  # a number or "auto" (trainer.runtime.strategy.steps_per_loop)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """--mode=evaluate / continuous_eval."""

    checkpoint_step: int = 0  # 0: the latest
    timeout_seconds: int = 3600
    poll_seconds: float = 5.0


@dataclasses.dataclass(frozen=True)
class Config:
    mode: str
    strategy: str
    export_dir: str
    devices_per_worker: int
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    peer_timeout_seconds: int = 300
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    storage_timeout_seconds: int = storage.DEFAULT_TIMEOUT_S
    evaluation: EvalConfig = EvalConfig()
    export: bool = True  # at the end of training (--mode=export always exports)


def _positive(name: str, value: int, allow_zero=False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f"--{name}={value} is invalid: it must be {'>= 0' if allow_zero else '> 0'}."
        )


def _profile_steps(values: list) -> tuple:
    """--profile_steps=A,B as (A, B) with 0 <= A < B, or () when not given."""
    if not values:
        return ()
    try:
        first, last = (int(v) for v in values)
    except ValueError:
        first = last = -1
    if not 0 <= first < last:
        raise ConfigError(
            f"--profile_steps={','.join(values)} is invalid: use A,B with 0 <= A < B, e.g. 10,20."
        )
    return (first, last)


def _check_service(f) -> None:
    """--data_service_address: its form, and the flags that cannot go with it."""
    address = f.data_service_address
    if not address:
        return
    if not re.match(r"^grpc://[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$", address):
        raise ConfigError(
            f"--data_service_address={address} is invalid: use grpc://HOST:PORT "
            "(e.g. grpc://localhost:5050), or leave it empty."
        )
    for name, why in (
        ("deterministic", "the service's dynamic sharding gives no fixed input order"),
        ("cache", "the data workers decode every epoch; a trainer-side cache has no place"),
        ("skip_corrupt", "the scan runs in the trainer; run verify and fix the data instead"),
    ):
        if getattr(f, name):
            raise ConfigError(f"--{name} cannot go with --data_service_address: {why}.")


def _check_activation(name: str) -> None:
    """Needs Keras (TensorFlow), so it runs after the checks that do not."""
    from trainer.model import builders as model_lib

    try:
        model_lib._check_activation(name)
    except ValueError as e:
        raise ConfigError(f"--{e}") from None


def from_flags(f=FLAGS) -> Config:
    """Reads the parsed flags once; raises ConfigError for values no run can use."""
    for name in (
        "global_batch_size",
        "train_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "log_every_steps",
        "eval_timeout_seconds",
        "shuffle_buffer",
    ):
        _positive(name, getattr(f, name))
    _positive("eval_every_steps", f.eval_every_steps, allow_zero=True)
    _positive("checkpoint_step", f.checkpoint_step, allow_zero=True)
    if f.checkpoint_step and f.mode != "evaluate":
        raise ConfigError(
            f"--checkpoint_step={f.checkpoint_step} applies to --mode=evaluate only: drop it."
        )
    if not f.eval_poll_seconds > 0:
        raise ConfigError(f"--eval_poll_seconds={f.eval_poll_seconds} is invalid: it must be > 0.")
    _positive("devices_per_worker", f.devices_per_worker, allow_zero=True)
    _positive("intra_op_threads", f.intra_op_threads, allow_zero=True)
    _positive("inter_op_threads", f.inter_op_threads, allow_zero=True)
    _positive("peer_timeout_seconds", f.peer_timeout_seconds)
    _positive("storage_timeout_seconds", f.storage_timeout_seconds)
    if not f.learning_rate > 0:
        raise ConfigError(f"--learning_rate={f.learning_rate} is invalid: it must be > 0.")
    if not f.lambda_regularization >= 0:
        raise ConfigError(
            f"--lambda_regularization={f.lambda_regularization} is invalid: it must be >= 0."
        )
    if not f.model_dir:
        raise ConfigError("--model_dir is empty: give a local path or gs://bucket/path.")
    profile_steps = _profile_steps(f.profile_steps)
    if f.steps_per_loop != "auto" and not (f.steps_per_loop.isdigit() and int(f.steps_per_loop)):
        raise ConfigError(
            f"--steps_per_loop={f.steps_per_loop} is invalid: use a number > 0 or auto."
        )
    _check_service(f)
    _check_activation(f.activation)  # last: it loads TensorFlow
    model = ModelConfig(
        f.activation, f.lambda_regularization, f.stride_placement, f.head, f.precision
    )
    data = DataConfig(
        f.data_dir,
        f.seed,
        f.augment,
        f.cache,
        f.skip_corrupt,
        f.shuffle_buffer,
        f.deterministic,
        f.data_service_address,
    )
    train = TrainConfig(
        f.model_dir,
        f.global_batch_size,
        f.train_steps,
        f.learning_rate,
        f.jit_compile,
        f.checkpoint_every_steps,
        f.keep_checkpoints,
        f.eval_every_steps,
        f.log_every_steps,
        f.seed,
        f.deterministic,
        profile_steps,
        f.best_metric,
        f.steps_per_loop,
    )
    export_dir = f.export_dir or f.model_dir.rstrip("/") + "/export"
    return Config(
        f.mode,
        f.strategy,
        export_dir,
        f.devices_per_worker,
        model,
        data,
        train,
        f.peer_timeout_seconds,
        f.intra_op_threads,
        f.inter_op_threads,
        f.storage_timeout_seconds,
        EvalConfig(f.checkpoint_step, f.eval_timeout_seconds, f.eval_poll_seconds),
        f.export,
    )


def default_cache_dir() -> str:
    """Where the built-in synthetic set is generated once."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "inception-pair-trainer")
