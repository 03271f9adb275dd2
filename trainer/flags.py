"""The trainer's absl flags and the one function that reads them: ``config_from_flags``.

The only module that touches FLAGS for training. Each tool (trainer-data, predict, report,
inspect) defines its own flags in its own module. A flag's value is checked by
trainer.checks.validate (and what depends on the data and devices by trainer.resolve), never
here, so a Config made in code gets the same checks.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from trainer import checks
from trainer import config as C
from trainer.model import options

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
    C.MODES,
    "train (then export); export: the latest checkpoint; evaluate: one checkpoint "
    "(--checkpoint_step, default the latest); continuous_eval: every new checkpoint in "
    "<model_dir>/checkpoints once, until the one of --train_steps.",
)
_F.DEFINE_enum(
    "strategy",
    "auto",
    C.STRATEGIES,
    "tf.distribute strategy; auto: multi_worker "
    "with TF_CONFIG or Indexed-Job variables, mirrored with >1 GPU, else one device.",
)
_F.DEFINE_integer("global_batch_size", 64, "Pairs per step over all replicas.")
_F.DEFINE_integer("train_steps", 300, "Total optimizer steps.")
_F.DEFINE_float("learning_rate", 2e-3, "Peak learning rate (after --warmup_steps).")
_F.DEFINE_enum(
    "lr_schedule",
    "constant",
    C.LR_SCHEDULES,
    "The rate over --train_steps after the warmup: constant, cosine or linear decay to "
    "--learning_rate * --lr_min_ratio. A pure function of the global step.",
)
_F.DEFINE_integer("warmup_steps", 0, "Steps of linear warmup from 0 to --learning_rate.")
_F.DEFINE_float("lr_min_ratio", 0.0, "cosine/linear: the final rate over the peak rate.")
_F.DEFINE_integer(
    "lr_decay_steps",
    0,
    "The step at which cosine/linear reach their end (then stay there); 0: --train_steps. "
    "Set it to keep the schedule when a run is stopped early or extended.",
)
_F.DEFINE_enum("optimizer", "adam", C.OPTIMIZERS, "Keras 3 optimizer: adam, adamw or sgd.")
_F.DEFINE_float("momentum", 0.9, "--optimizer=sgd: momentum.")
_F.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (adamw, sgd); 0: off.")
_F.DEFINE_float(
    "clip_norm", 0.0, "Clip the gradient to this global norm (over every replica); 0: off."
)
_F.DEFINE_integer(
    "grad_accum_steps",
    1,
    "Batches whose gradients make one update: a step is then N batches of "
    "--global_batch_size (the effective batch N times it); --train_steps counts updates.",
)
_F.DEFINE_enum(
    "early_stop_metric",
    "none",
    C.BEST_METRICS,
    "End the run (exit 0) once this eval metric has not improved for --early_stop_patience "
    "evaluations in a row (every --eval_every_steps); none: train to --train_steps.",
)
_F.DEFINE_integer("early_stop_patience", 5, "Evaluations without improvement before stopping.")
_F.DEFINE_string(
    "init_from",
    "",
    "Warm start: the weights of another run's model_dir (its newest checkpoint) or of a "
    "checkpoint prefix (.../ckpt-300), local or gs://; optimizer fresh, step 0. Only while "
    "--model_dir has no checkpoint of its own (then the run resumes, and says so).",
)
_F.DEFINE_float(
    "ema_decay",
    0.0,
    "Keep an exponential moving average of the weights with this decay (e.g. 0.999): eval, "
    "the best-model export and the final export use it. 0: off.",
)
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
    C.JIT,
    "XLA; auto: on with GPUs, off on CPU. What it compiles: the whole step (forward, backward, "
    "optimizer update) with one GPU replica; the forward/backward pass on CPU and with several "
    "GPU replicas (the all-reduce and update outside).",
)
_F.DEFINE_enum("precision", "float32", C.PRECISIONS, "Keras dtype policy.")
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
    C.BEST_METRICS,
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
    C.DEFAULT_STORAGE_TIMEOUT_S,
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


EVAL_FLAGS = (("timeout_seconds", "eval_timeout_seconds"), ("poll_seconds", "eval_poll_seconds"))


def _from_flags(cls, f, renamed=(), **given):
    """``cls`` (a config dataclass) from the flags named like its fields (``renamed``: field
    -> flag pairs where the flag's name differs), plus the ``given`` values."""
    flag_of = dict(renamed)
    values = {}
    for field in dataclasses.fields(cls):
        flag = flag_of.get(field.name, field.name)
        if field.name not in given and flag in f:
            values[field.name] = f[flag].value
    return cls(**values, **given)


def _grace_seconds() -> float:
    """TRAINER_GRACE_SECONDS, which launch k8s sets to the pod's grace period (--spot: 15)."""
    import os

    text = os.environ.get("TRAINER_GRACE_SECONDS", "").strip()
    try:
        return float(text) if text else 0.0
    except ValueError:
        raise C.ConfigError(
            f"TRAINER_GRACE_SECONDS={text!r} is not a number of seconds: fix or unset it."
        ) from None


def config_from_flags(f=FLAGS) -> C.Config:
    """The Config of the parsed flags, validated (ConfigError: one sentence)."""
    train = _from_flags(
        C.TrainConfig,
        f,
        steps_per_loop=checks.parse_steps_per_loop(f.steps_per_loop),
        profile_steps=checks.parse_profile_steps(f.profile_steps),
        recipe=_from_flags(C.RecipeConfig, f, [("decay_steps", "lr_decay_steps")]),
    )
    return checks.validate(
        _from_flags(
            C.Config,
            f,
            model=_from_flags(C.ModelConfig, f),
            data=_from_flags(C.DataConfig, f, [("service_address", "data_service_address")]),
            train=train,
            evaluation=_from_flags(
                C.EvalConfig,
                f,
                [
                    ("timeout_seconds", "eval_timeout_seconds"),
                    ("poll_seconds", "eval_poll_seconds"),
                ],
            ),
            runtime=_from_flags(C.RuntimeConfig, f, grace_seconds=_grace_seconds()),
            model_flags=tuple(
                field.name
                for field in dataclasses.fields(C.ModelConfig)
                if field.name in f and f[field.name].present
            ),
        )
    )


def check_args(args) -> C.Config:
    """Trainer flags as a launcher passes them on (``launch local``, ``launch k8s``), parsed by
    a copy of the trainer's own flags and checked by the same validate, before any process
    starts or any manifest is printed; UsageError (one sentence) otherwise. No TensorFlow."""
    import copy

    from absl import app, logging  # noqa: F401  (their flags are the trainer's too)

    from trainer.common.cli import flag_sentence
    from trainer.common.errors import UsageError

    fv = copy.deepcopy(FLAGS)
    fv.unparse_flags()
    try:
        rest = fv(["trainer", *args])
    except flags.Error as e:
        raise UsageError(f"trainer flags: {flag_sentence(e)}.") from None
    if len(rest) > 1:
        raise UsageError(
            f"trainer flags: unexpected arguments {rest[1:]}: flags look like --name=value."
        )
    try:
        return config_from_flags(fv)
    except C.ConfigError as e:
        raise UsageError(f"trainer flags: {e}") from None
