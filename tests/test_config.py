"""The config built once: defaults, validate's refusals (each once) and the resolve step.

Pure but for the flag parser (absl, no TensorFlow) and the activation check (Keras).
"""

import dataclasses
import types

import pytest

from trainer import checks
from trainer import config as C
from trainer.resolve import check_activation, resolve

SPEC = types.SimpleNamespace(height=24, width=20, channels=1)  # a dataset's ImageSpec


def test_the_flags_defaults_are_the_dataclasses_defaults():
    from trainer import flags as trainer_flags

    fv = trainer_flags.FLAGS
    fv.unparse_flags()
    fv(["trainer"])
    try:
        built = trainer_flags.config_from_flags()
    finally:
        fv.unparse_flags()
    assert built == C.Config()  # one set of defaults, whichever way a config is made
    assert built.export_path == "runs/default/export"


def test_modes_reading_a_checkpoint_take_the_model_flags_not_given_from_config_json(tmp_path):
    from trainer import flags as trainer_flags
    from trainer.common.files import write_json
    from trainer.run.setup import with_saved_model

    fv = trainer_flags.FLAGS
    fv.unparse_flags()
    fv(["trainer", f"--model_dir={tmp_path}", "--mode=export", "--activation=elu"])
    try:
        config = trainer_flags.config_from_flags()
    finally:
        fv.unparse_flags()
    assert config.model_flags == ("activation",)  # given, even at its default value
    saved = C.ModelConfig(activation="relu", head="global_max", image_size=(8, 8), channels=1)
    assert with_saved_model(config) == (config, False)  # no config.json yet: the flags
    write_json(str(tmp_path / "config.json"), saved.to_json_dict())
    got, found = with_saved_model(config)
    assert found and got.model == dataclasses.replace(saved, activation="elu")
    train = dataclasses.replace(config, mode="train")
    assert with_saved_model(train) == (train, False)  # training's flags are the model


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(train=dict(global_batch_size=0)), "--global_batch_size=0 is invalid: it must be > 0"),
        (
            dict(train=dict(eval_every_steps=-1)),
            "--eval_every_steps=-1 is invalid: it must be >= 0",
        ),
        (dict(train=dict(learning_rate=0.0)), "--learning_rate=0.0 is invalid"),
        (dict(train=dict(learning_rate=float("inf"))), "--learning_rate=inf is invalid: it must"),
        (dict(train=dict(seed=-1)), "--seed=-1 is invalid: use 0 to 4294967295"),
        (dict(train=dict(seed=2**32)), "--seed=4294967296 is invalid"),
        (
            dict(train=dict(train_steps=2**58)),
            "--train_steps=288230376151711744 is too large for --global_batch_size=64",
        ),
        (dict(train=dict(model_dir="")), "--model_dir is empty"),
        (dict(train=dict(jit_compile="maybe")), "--jit_compile='maybe' is unknown"),
        (dict(data=dict(shuffle_buffer=0)), "--shuffle_buffer=0 is invalid"),
        (dict(data=dict(service_address="localhost:5050")), "use grpc://HOST:PORT"),
        (
            dict(data=dict(service_address="grpc://h:1", cache=True)),
            "--cache cannot go with --data_service_address",
        ),
        (dict(model=dict(lambda_regularization=-1.0)), "--lambda_regularization=-1.0 is invalid"),
        (dict(model=dict(lambda_regularization=float("nan"))), "--lambda_regularization=nan is"),
        (dict(model=dict(head="mean")), "--head='mean' is unknown"),
        (dict(runtime=dict(strategy="fast")), "--strategy='fast' is unknown"),
        (dict(runtime=dict(peer_timeout_seconds=0)), "--peer_timeout_seconds=0 is invalid"),
        (dict(evaluation=dict(poll_seconds=0.0)), "--eval_poll_seconds=0.0 is invalid"),
        (dict(evaluation=dict(checkpoint_step=3)), "applies to --mode=evaluate only"),
        (dict(mode="serve"), "--mode='serve' is unknown"),
    ],
)
def test_validate_refuses_each_value_no_run_can_use(change, message):
    config = C.Config()
    for part, values in change.items():
        if isinstance(values, dict):
            values = dataclasses.replace(getattr(config, part), **values)
        config = dataclasses.replace(config, **{part: values})
    with pytest.raises(C.ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        checks.validate(config)
    assert checks.validate(C.Config()) == C.Config()  # and the defaults pass


def test_an_export_that_would_replace_the_runs_own_files_is_refused():
    """The export replaces its folder whole: not the model_dir, a folder holding it, one of
    the run's own folders, or the data (a fresh run's checkpoints were deleted by it)."""

    def refusal(export_dir, model_dir="/r/m", data_dir="/d/pairs", mode="train", export=True):
        config = C.Config(
            mode=mode,
            export_dir=export_dir,
            export=export,
            train=C.TrainConfig(model_dir=model_dir),
            data=C.DataConfig(data_dir=data_dir),
        )
        try:
            checks.validate(config)
        except C.ConfigError as e:
            return str(e)
        return ""

    tail = ": an export replaces its folder whole, so the files there would be deleted; give"
    assert refusal("/r/m/") == f"--export_dir=/r/m/ is the --model_dir{tail} a folder of its " + (
        "own (the default is <model_dir>/export)."
    )
    assert refusal("/r").startswith("--export_dir=/r holds the --model_dir: ")
    assert refusal("gs://bkt/runs", "gs://bkt/runs/exp1//").startswith(
        "--export_dir=gs://bkt/runs holds the --model_dir"
    )
    assert refusal("/r/m/checkpoints").startswith(
        "--export_dir=/r/m/checkpoints is inside a folder the run writes in --model_dir "
        "(checkpoints, tensorboard, eval, export_best)"
    )
    assert "is inside a folder the run writes" in refusal("/r/m/tensorboard/x")
    assert refusal("/d/pairs", mode="export").startswith("--export_dir=/d/pairs is the --data_dir")
    assert refusal("/d").startswith("--export_dir=/d holds the --data_dir")
    # Places of its own pass, and so does any place where nothing is exported.
    for fine in ("", "/r/m/export", "/r/m/export2", "/r/m-export", "/r/mm", "/d/pairs/export"):
        assert refusal(fine) == "", fine
    assert refusal("/r/m", export=False) == "" and refusal("/r/m", mode="evaluate") == ""


def test_flag_forms_are_parsed_once():
    assert checks.parse_steps_per_loop("auto") == 0 and checks.parse_steps_per_loop("25") == 25
    assert checks.parse_profile_steps([]) == () and checks.parse_profile_steps(["3", "9"]) == (3, 9)
    with pytest.raises(C.ConfigError, match="--profile_steps=9,3 is invalid"):
        checks.parse_profile_steps(["9", "3"])


def test_resolve_fills_in_what_the_data_and_devices_decide():
    base = C.Config(train=C.TrainConfig(jit_compile="auto"))
    on_cpu = resolve(base, spec=SPEC, num_gpus=0, replicas=1)
    assert on_cpu.model.image_size == (24, 20) and on_cpu.model.channels == 1
    assert on_cpu.train.steps_per_loop == 10 and on_cpu.train.compile_plan == "none"
    on_gpus = resolve(base, spec=SPEC, num_gpus=4, replicas=4)
    assert on_gpus.train.steps_per_loop == 100 and on_gpus.train.compile_plan == "forward_backward"
    one_gpu = resolve(base, spec=SPEC, num_gpus=1, replicas=1)
    assert one_gpu.train.compile_plan == "whole_step"
    given = dataclasses.replace(base, train=dataclasses.replace(base.train, steps_per_loop=7))
    assert resolve(given, spec=SPEC, num_gpus=8, replicas=8).train.steps_per_loop == 7
    assert base.model.image_size == (32, 32)  # a new Config: the one given is unchanged


def test_resolve_refuses_a_batch_that_does_not_divide_and_an_unknown_activation():
    odd = C.Config(train=C.TrainConfig(global_batch_size=5))
    with pytest.raises(
        C.ConfigError, match="--global_batch_size=5 does not divide over 2 replicas"
    ):
        resolve(odd, spec=SPEC, num_gpus=0, replicas=2)
    assert resolve(odd, spec=SPEC, num_gpus=0, replicas=1).train.global_batch_size == 5
    with pytest.raises(C.ConfigError, match="--activation='wobble' is not a Keras activation"):
        check_activation("wobble")
    check_activation("gelu")


def test_the_largest_values_a_run_can_use_pass():
    edge = C.TrainConfig(seed=2**32 - 1, train_steps=2**57 - 1, global_batch_size=64)
    assert checks.validate(C.Config(train=edge)).train.seed == 2**32 - 1


def test_json_files_hold_no_bare_nan(tmp_path):
    """A NaN AUC (an eval split of one class) is written as null: valid JSON for any reader."""
    import json

    from launch.k8s.status import _figures
    from trainer.common.files import read_json, write_json

    path = str(tmp_path / "eval/last.json")
    write_json(path, {"step": 5, "auc": float("nan"), "loss": float("inf"), "xs": [1.5]})
    text = (tmp_path / "eval/last.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"step": 5, "auc": None, "loss": None, "xs": [1.5]}
    assert read_json(path)["auc"] is None and read_json(str(tmp_path / "none.json")) is None
    shown = _figures({"accuracy": 0.5, "auc": None, "loss": 0.25})
    assert shown == "accuracy 0.5000 auc n/a loss 0.2500"
