"""The run's configuration: keyword-only dataclasses with defaults, and the checks of each value.

Built once, from the flags (trainer.flags) or by keyword in code (``Config(train=TrainConfig(
train_steps=5))``, ``dataclasses.replace`` on a small default). Each part of the trainer gets
its own slice (``config.model``, ``config.data``, ...), never FLAGS. Values that depend on the
data and the devices (image size, channels, steps per loop, XLA plan) are filled in once by
trainer.resolve; until then they hold their "not yet known" defaults.

trainer.checks.validate makes every check that needs neither TensorFlow nor the data, once,
raising this module's ConfigError with one sentence. No TensorFlow and no absl here: the flag
parser answers a bad flag before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import os

from trainer.common.errors import UsageError

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
MODES = ("train", "export", "evaluate", "continuous_eval")
EVAL_MODES = ("evaluate", "continuous_eval")
BEST_METRICS = ("none", "auc", "accuracy", "loss")
JIT = ("auto", "true", "false")
LR_SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd")
DEFAULT_STORAGE_TIMEOUT_S = 300
MAX_SEED = 2**32 - 1  # numpy's (np.random.seed, which Keras' set_random_seed calls)
MAX_PAIRS = 2**63 - 1  # the checkpoint's pairs-seen counter is an int64


class ConfigError(UsageError):
    """A configuration value the user must change; the message is one sentence naming it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Model-defining values (config.json): a checkpoint only restores into the same ones."""

    activation: str = "elu"
    lambda_regularization: float = 0.0
    stride_placement: str = "branch"
    head: str = "flatten"
    precision: str = "float32"
    image_size: tuple = (32, 32)  # from the dataset (trainer.resolve)
    channels: int = 3  # from the dataset (trainer.resolve)

    def builder_kwargs(self) -> dict:
        """Keyword arguments of the trainer.model.builders functions for this configuration."""
        return dict(
            image_size=self.image_size,
            n_channels=self.channels,
            lambda_regularization=self.lambda_regularization,
            activation=self.activation,
            stride_placement=self.stride_placement,
            head=self.head,
        )

    def to_json_dict(self) -> dict:
        """What config.json holds (image_size as a list, as JSON reads it back)."""
        return {**dataclasses.asdict(self), "image_size": list(self.image_size)}

    @classmethod
    def from_json_dict(cls, saved, path: str = "config.json") -> ModelConfig:
        """The config.json at ``path``'s values (a field it lacks takes its default);
        ConfigError naming the file when they are not a ModelConfig's."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - names) if isinstance(saved, dict) else ["(not an object)"]
        size = saved.get("image_size", [32, 32]) if isinstance(saved, dict) else None
        if unknown or not _pair_of_ints(size):
            what = f"unknown field {unknown[0]}" if unknown else f"image_size {size!r}"
            raise ConfigError(
                f"{path} is not this trainer's model record ({what}): restore it, or use a "
                "new --model_dir."
            )
        return cls(**{**saved, "image_size": tuple(size)})


def _pair_of_ints(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """The input: where it is and how each worker reads it (trainer.data.read.pipeline)."""

    data_dir: str = ""  # empty: the built-in synthetic set
    service_address: str = ""  # grpc://HOST:PORT of a tf.data service dispatcher
    seed: int = 0
    shuffle_buffer: int = 4096  # serialized records
    cycle_length: int = 8  # files read at once
    augment: bool = False
    cache: bool = False
    skip_corrupt: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecipeConfig:
    """How the weights move (trainer.run.recipe): the rate schedule, the optimizer, gradient
    clipping and the weights' moving average. All of it is model state a resume carries."""

    lr_schedule: str = "constant"  # constant | cosine | linear, over train_steps
    warmup_steps: int = 0  # linear from 0 to the peak --learning_rate
    lr_min_ratio: float = 0.0  # cosine/linear end at learning_rate * this
    decay_steps: int = 0  # the schedule's horizon; 0: train_steps
    optimizer: str = "adam"  # adam | adamw | sgd
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0  # decoupled (adamw, sgd)
    clip_norm: float = 0.0  # clip by the global norm over every replica's gradient; 0: off
    ema_decay: float = 0.0  # moving average of the weights for eval and export; 0: off
    grad_accum_steps: int = 1  # batches per update (a step is one update of N batches)
    init_from: str = ""  # warm start: another run's model_dir or a checkpoint (weights only)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training run: its length, its intervals, its optimizer, where it writes."""

    model_dir: str = "runs/default"
    global_batch_size: int = 64
    train_steps: int = 300
    learning_rate: float = 2e-3
    seed: int = 0
    deterministic: bool = False
    jit_compile: str = "auto"
    steps_per_loop: int = 0  # 0: auto (trainer.resolve: 10 on CPU, 100 with GPUs)
    compile_plan: str = ""  # what XLA compiles; filled by trainer.resolve
    checkpoint_every_steps: int = 200
    keep_checkpoints: int = 3
    eval_every_steps: int = 200  # 0: no eval in the training loop
    log_every_steps: int = 50
    profile_steps: tuple = ()  # (first, last) or ()
    best_metric: str = "none"
    early_stop_metric: str = "none"  # none | auc | accuracy | loss
    early_stop_patience: int = 5  # evaluations without improvement
    recipe: RecipeConfig = RecipeConfig()


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """--mode=evaluate / continuous_eval."""

    checkpoint_step: int = 0  # 0: the latest
    timeout_seconds: int = 3600
    poll_seconds: float = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Where the run executes: strategy, devices, threads, peers, storage."""

    strategy: str = "auto"
    devices_per_worker: int = 0
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    peer_timeout_seconds: int = 300
    storage_timeout_seconds: int = DEFAULT_STORAGE_TIMEOUT_S
    grace_seconds: float = 0.0  # the pod's SIGTERM budget (TRAINER_GRACE_SECONDS); 0: none


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    mode: str = "train"
    export_dir: str = ""  # empty: <model_dir>/export
    export: bool = True  # at the end of training (--mode=export always exports)
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    # The model flags given on the command line: the modes that read a checkpoint take the
    # others from its config.json (trainer.run.setup.with_saved_model), not from defaults.
    model_flags: tuple = ()

    @property
    def export_path(self) -> str:
        return self.export_dir or self.train.model_dir.rstrip("/") + "/export"

    @property
    def written_export_path(self) -> str | None:
        """Where the run writes its SavedModel (export mode, or training with --export); None
        where it writes none."""
        writes = self.mode == "export" or (self.mode == "train" and self.export)
        return self.export_path if writes else None


def default_cache_dir() -> str:
    """Where the built-in synthetic set is generated once."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "inception-pair-trainer")
