"""The training recipe (issue 24): the rate schedule against its formula and against what a run
logged, exact resume with every recipe flag at once, the export serving the moving average,
early stopping, warm start. Runs go through the trainer's command line in this process."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tests.runs import (
    outputs_of_export,
    read_checkpoint,
    small_flags,
    tensorboard_steps,
    train_here,
)
from trainer.checks import validate
from trainer.config import Config, ConfigError, RecipeConfig, TrainConfig
from trainer.run import recipe as recipe_lib

RECIPE = [  # every recipe flag at once
    "--lr_schedule=cosine",
    "--warmup_steps=3",
    "--lr_min_ratio=0.1",
    "--lr_decay_steps=8",  # the schedule of the 8-step run also in the one stopped at 5
    "--optimizer=adamw",
    "--weight_decay=0.01",
    "--clip_norm=0.5",
    "--ema_decay=0.9",
    "--grad_accum_steps=2",
]


def test_the_schedule_is_its_formula_in_python_and_in_tensorflow():
    peak, steps = 1e-2, 110
    cosine = RecipeConfig(lr_schedule="cosine", warmup_steps=10, lr_min_ratio=0.1)
    linear = RecipeConfig(lr_schedule="linear", warmup_steps=10, lr_min_ratio=0.1)
    flat = RecipeConfig(lr_schedule="constant", warmup_steps=10)
    # by hand: warmup 0 -> peak over 10 steps, then 100 steps of decay to peak/10
    expected = {
        cosine: {0: 0.0, 5: 5e-3, 10: 1e-2, 35: 1e-2 * (0.45 * (1 + math.cos(math.pi / 4)) + 0.1),
                 60: 1e-2 * 0.55, 110: 1e-3, 200: 1e-3},
        linear: {5: 5e-3, 10: 1e-2, 35: 1e-2 * (1 - 0.9 * 0.25), 60: 1e-2 * 0.55, 110: 1e-3},
        flat: {0: 0.0, 5: 5e-3, 10: 1e-2, 60: 1e-2, 110: 1e-2},
    }  # fmt: skip
    for recipe, at in expected.items():
        rate = recipe_lib.rate_fn(peak=peak, recipe=recipe, train_steps=steps)
        for step, value in at.items():
            got = recipe_lib.rate_at(step, peak=peak, recipe=recipe, train_steps=steps)
            assert got == pytest.approx(value, rel=1e-9, abs=1e-15), (recipe, step)
            # Keras' CosineDecay / PolynomialDecay behind the warmup give the same number
            assert float(rate(tf.constant(step, tf.int64))) == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"weight_decay": 0.1}, "--weight_decay=0.1 needs --optimizer=adamw"),
        ({"momentum": 0.5}, "--momentum=0.5 applies to --optimizer=sgd only"),
        ({"warmup_steps": 300}, "--warmup_steps=300 is invalid: it must be below"),
        ({"ema_decay": 1.0}, "--ema_decay=1.0 is invalid: use 0 to below 1"),
        ({"lr_min_ratio": 2.0}, "--lr_min_ratio=2.0 is invalid"),
        ({"grad_accum_steps": 0}, "--grad_accum_steps=0 is invalid"),
        ({"clip_norm": float("nan")}, "--clip_norm=nan is invalid"),
        ({"lr_schedule": "step"}, "--lr_schedule='step' is unknown"),
    ],
)
def test_recipe_values_are_checked_before_anything_runs(changes, says):
    config = Config(train=TrainConfig(recipe=RecipeConfig(**changes)))
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace("?", r"\?")):
        validate(config)
    with pytest.raises(ConfigError, match="needs evaluations in the run"):
        validate(Config(train=TrainConfig(early_stop_metric="auc", eval_every_steps=0)))


def _scalars(folder, tag):
    values = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if v.tag == tag:
                    values[event.step] = float(tf.make_ndarray(v.tensor))
    return values


def test_the_run_logs_the_rate_of_each_update(small_data, tmp_path):
    flags = ["--train_steps=12", "--steps_per_loop=3", "--log_every_steps=2", "--warmup_steps=4"]
    r = train_here(*small_flags(small_data, tmp_path / "m", "--lr_schedule=cosine", *flags))
    assert r.returncode == 0, r.stderr[-3000:]
    logged = _scalars(tmp_path / "m/tensorboard", "train/learning_rate")
    assert sorted(logged) == [2, 4, 6, 8, 10, 12]
    cosine = RecipeConfig(lr_schedule="cosine", warmup_steps=4)
    for step, value in logged.items():  # the update that made step N ran at step N - 1
        want = recipe_lib.rate_at(step - 1, peak=2e-3, recipe=cosine, train_steps=12)
        assert value == pytest.approx(want, rel=1e-5), step
    assert len(set(logged.values())) == 6  # warmup and decay: the rate moved every time


def test_exact_resume_is_bitwise_equal_with_the_whole_recipe(small_data, tmp_path):
    # As tests/test_trainer.py's exact resume, with every recipe flag: stopped at 5 of 8
    # (each step one update of two batches: checkpoints lie on update boundaries).
    common = ["--deterministic", "--checkpoint_every_steps=4", "--steps_per_loop=3", *RECIPE]
    straight = train_here(*small_flags(small_data, tmp_path / "a", "--train_steps=8", *common))
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "effective batch 32" in straight.stderr
    half = train_here(*small_flags(small_data, tmp_path / "b", "--train_steps=5", *common))
    rest = train_here(*small_flags(small_data, tmp_path / "b", "--train_steps=8", *common))
    assert half.returncode == 0 and rest.returncode == 0, rest.stderr[-3000:]
    a = read_checkpoint(str(tmp_path / "a/checkpoints/ckpt-8"))
    b = read_checkpoint(str(tmp_path / "b/checkpoints/ckpt-8"))
    assert a.keys() == b.keys()
    for key in a:
        if not key.startswith("save_counter"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the checkpoint holds the moving average (AdamW's two moments and the average: three
    # copies of every trainable variable) and the pairs seen count the two batches a step
    trainable = sum(1 for k in a if k.startswith("optimizer/_trainable_variables/"))
    optimizer_vars = sum(1 for k in a if k.startswith("optimizer/_variables/"))
    assert trainable > 10 and optimizer_vars == 3 * trainable
    assert a["examples_seen/.ATTRIBUTES/VARIABLE_VALUE"] == 8 * 2 * 16


def test_the_export_serves_the_moving_average(small_data, tmp_path):
    from trainer.config import ModelConfig
    from trainer.run import checkpoint
    from trainer.run.programs import build_model_and_optimizer

    flags = ["--train_steps=6", "--ema_decay=0.8", "--export", "--learning_rate=1e-2"]
    flags.append("--eval_every_steps=6")
    r = train_here(*small_flags(small_data, tmp_path / "m", *flags))
    assert r.returncode == 0, r.stderr[-3000:]
    saved = checkpoint.load_model_config(str(tmp_path / "m"))
    model, optimizer = build_model_and_optimizer(  # as small_flags trains: SGD
        tf.distribute.get_strategy(), saved, 1e-2, RecipeConfig(optimizer="sgd", ema_decay=0.8)
    )
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(
        str(tmp_path / "m/checkpoints/ckpt-6")
    ).expect_partial()
    rng = np.random.default_rng(0)
    x1, x2 = (rng.random((8, 16, 16, 3), dtype=np.float32) for _ in range(2))
    raw = model({"input1": x1, "input2": x2}).numpy()[:, 0]
    with recipe_lib.averaged_weights(model, optimizer):
        averaged = model({"input1": x1, "input2": x2}).numpy()[:, 0]
    after = model({"input1": x1, "input2": x2}).numpy()[:, 0]
    served = outputs_of_export(tmp_path / "m/export", x1, x2)
    np.testing.assert_allclose(served, averaged, atol=1e-5)
    assert np.abs(served - raw).max() > 1e-3  # the average is not the trained weights
    np.testing.assert_array_equal(after, raw)  # and the trained weights came back
    assert isinstance(saved, ModelConfig)
    # --mode=export and --mode=evaluate of the checkpoint, and trainer.inspect's model, read
    # its average too: the checkpoint decides, so without --ema_decay as well
    again = tmp_path / "again"
    base = [f"--model_dir={tmp_path / 'm'}", f"--data_dir={small_data}"]
    r = train_here(*base, "--mode=export", f"--export_dir={again}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "using the moving average of the weights that " in r.stderr
    np.testing.assert_allclose(outputs_of_export(again, x1, x2), averaged, atol=1e-5)
    r = train_here(*base, "--mode=evaluate", "--global_batch_size=16", "--ema_decay=0.8")
    assert r.returncode == 0, r.stderr[-3000:]
    last = json.loads((tmp_path / "m/eval/last.json").read_text())  # training's own eval
    assert f"loss {last['loss']:.4f} accuracy {last['accuracy']:.4f}" in r.stdout + r.stderr
    from trainer.tools.activations import instrumented_from_checkpoint

    probe, _ = instrumented_from_checkpoint(str(tmp_path / "m"))
    with recipe_lib.averaged_weights(model, optimizer):
        expected = model.get_layer("output").get_weights()
    for got, want in zip(probe.get_layer("output").get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_an_average_the_checkpoint_does_not_keep_is_refused(small_data, tmp_path):
    """--ema_decay given to --mode=export or evaluate of a run trained without it: one
    sentence each, nothing written."""
    plain = tmp_path / "plain"
    r = train_here(*small_flags(small_data, plain, "--train_steps=2"))
    assert r.returncode == 0, r.stderr[-3000:]
    flags = [f"--model_dir={plain}", f"--data_dir={small_data}", "--ema_decay=0.8"]
    r = train_here(*flags, "--mode=export", f"--export_dir={tmp_path / 'none'}")
    assert r.returncode == 1 and not (tmp_path / "none").exists(), r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: --ema_decay=0.8: {plain}/checkpoints/ckpt-2 keeps no moving average of the "
        "weights (its run trained without --ema_decay): rerun without the flag to export its "
        "weights."
    )
    r = train_here(*flags, "--mode=evaluate", "--global_batch_size=16")  # not "unreadable"
    assert r.returncode == 1 and "rerun without the flag to evaluate" in r.stderr, r.stderr
    assert not (plain / "eval/evaluated.json").exists()


def test_early_stopping_at_the_expected_step_and_across_a_resume(small_data, tmp_path):
    # A rate too small to move a float32 weight: every eval is the same, so the first one
    # stays the best and the run must stop after `patience` more evaluations.
    common = ["--learning_rate=1e-30", "--eval_every_steps=2", "--checkpoint_every_steps=2"]
    common += ["--early_stop_metric=loss", "--early_stop_patience=2"]
    first = train_here(*small_flags(small_data, tmp_path / "m", "--train_steps=4", *common))
    assert first.returncode == 0 and "early stop" not in first.stderr, first.stderr[-3000:]
    record = json.loads((tmp_path / "m/eval/early_stop.json").read_text())
    assert (record["best_step"], record["since"], record["stopped_at"]) == (2, 1, None)
    # resumed with a longer run: it goes on counting (eval 6 is the second without gain)
    rest = train_here(*small_flags(small_data, tmp_path / "m", "--train_steps=20", *common))
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "early stop at step 6: loss has not improved for 2 evaluations" in rest.stderr
    assert "at step 2" in rest.stderr.split("early stop at step 6", 1)[1].splitlines()[0]
    assert tf.train.latest_checkpoint(str(tmp_path / "m/checkpoints")).endswith("ckpt-6")
    again = train_here(*small_flags(small_data, tmp_path / "m", "--train_steps=20", *common))
    assert again.returncode == 0 and "stopped early at step 6 before" in again.stderr
    assert tf.train.latest_checkpoint(str(tmp_path / "m/checkpoints")).endswith("ckpt-6")


def test_warm_start_begins_where_the_source_ended_and_refuses_another_model(small_data, tmp_path):
    source = train_here(*small_flags(small_data, tmp_path / "a", "--train_steps=6",
                                     "--eval_every_steps=6"))  # fmt: skip
    assert source.returncode == 0, source.stderr[-3000:]
    last = json.loads((tmp_path / "a/eval/last.json").read_text())
    init = f"--init_from={tmp_path / 'a'}"
    warm = train_here(*small_flags(small_data, tmp_path / "b", "--train_steps=4",
                                   "--eval_every_steps=4", init))  # fmt: skip
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert "a fresh optimizer, step 0" in warm.stderr
    assert tensorboard_steps(tmp_path / "b/tensorboard") == [0, 4]
    first = next(line for line in warm.stderr.splitlines() if "eval at step 0:" in line)
    assert f"loss {last['loss']:.4f} accuracy {last['accuracy']:.4f}" in first
    b = read_checkpoint(str(tmp_path / "b/checkpoints/ckpt-4"))
    assert b["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"] == 4  # fresh: 4 updates
    # a second run of b resumes from b's own checkpoint, and says that --init_from is unused
    again = train_here(*small_flags(small_data, tmp_path / "b", "--train_steps=4", init))
    assert "not used: the run resumes from its own checkpoint" in again.stderr
    other = train_here(*small_flags(small_data, tmp_path / "c", "--head=global_max", init))
    assert other.returncode == 1 and not (tmp_path / "c").exists()
    last_line = other.stderr.strip().splitlines()[-1]
    assert "does not match" in last_line and "name D1/kernel" in last_line, last_line
    none = train_here(*small_flags(small_data, tmp_path / "d", f"--init_from={tmp_path}/x"))
    assert none.returncode == 1 and "holds no checkpoint" in none.stderr
    # resuming a (SGD: small_flags) with another optimizer: one sentence, not a traceback
    resumed = small_flags(small_data, tmp_path / "a", "--train_steps=8", "--optimizer=adam")
    adam = train_here(*resumed)
    last_line = adam.stderr.strip().splitlines()[-1]
    assert adam.returncode == 1 and "checkpoint was trained with other --optimizer" in last_line


@pytest.mark.parametrize("name, cls", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD")])
def test_loss_scaling_wraps_whichever_optimizer(name, cls):
    import keras

    from trainer.config import ModelConfig
    from trainer.run.programs import build_model_and_optimizer

    recipe = RecipeConfig(optimizer=name, weight_decay=0.0 if name == "adam" else 0.01)
    model, optimizer = build_model_and_optimizer(
        tf.distribute.get_strategy(),
        ModelConfig(image_size=(16, 16), precision="mixed_float16"),
        1e-3,
        recipe,
    )
    try:
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert type(recipe_lib.inner(optimizer)).__name__ == cls
        if name != "adam":
            assert recipe_lib.inner(optimizer).weight_decay == pytest.approx(0.01)
    finally:
        keras.mixed_precision.set_global_policy("float32")
