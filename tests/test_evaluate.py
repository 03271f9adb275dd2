"""Evaluation outside the training loop: a real evaluator process beside a trainer, evaluate
mode, rotated checkpoints, and the best model kept as a SavedModel. Runs whose process is not
the subject go through the trainer's command line in this process (tests.runs.train_here)."""

import json
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from tests.runs import outputs_of_export, tensorboard_steps, train_here

PY = sys.executable


@pytest.fixture
def data(small_data):
    return small_data


def flags(data, model_dir, *extra):
    return [
        f"--data_dir={data}",
        f"--model_dir={model_dir}",
        "--global_batch_size=16",
        "--learning_rate=0.005",
        "--noexport",
        "--optimizer=sgd",  # not these runs' subject, and cheaper to trace (tests.runs.small_flags)
        *extra,
    ]


def eval_lines(text: str) -> list[tuple[int, dict]]:
    """(step, metrics) of every "eval at step" line a run logged, in order."""
    found = re.findall(
        r"eval at step (\d+): loss ([\d.]+) accuracy ([\d.]+) auc ([\d.]+|nan)", text
    )
    return [(int(s), {"loss": float(lo), "accuracy": float(a)}) for s, lo, a, _ in found]


def outputs_of_checkpoint(model_dir, step, x1, x2):
    """The trained model of ckpt-<step>, rebuilt in this process, on (x1, x2)."""
    from trainer.run import checkpoint
    from trainer.run.programs import build_model

    model = build_model(checkpoint.load_model_config(str(model_dir)))
    prefix = f"{checkpoint.checkpoint_dir(str(model_dir))}/ckpt-{step}"
    tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    return model({"input1": x1, "input2": x2}).numpy()[:, 0]


def expected_improvements(record: dict, metric: str) -> list[int]:
    """Steps at which a keeper that replaces only on strict improvement exports."""
    higher = metric != "loss"
    best, steps = None, []
    for step in sorted(record, key=int):
        value = record[step][metric]
        if best is None or (value > best if higher else value < best):
            best, steps = value, steps + [int(step)]
    return steps


def check_best_export(model_dir, record: dict, metric: str, exported_steps: list[int]):
    """export_best holds the weights of the best checkpoint, exported only on improvement."""
    assert exported_steps == expected_improvements(record, metric)
    best = json.loads((model_dir / "export_best/best.json").read_text())
    assert best["step"] == exported_steps[-1] and best["metric"] == metric
    assert best["metrics"][metric] == pytest.approx(record[str(best["step"])][metric], abs=1e-4)
    rng = np.random.default_rng(7)
    x1, x2 = (rng.random([6, 16, 16, 3], dtype=np.float32) for _ in range(2))
    served = outputs_of_export(model_dir / "export_best", x1, x2)
    np.testing.assert_allclose(
        served, outputs_of_checkpoint(model_dir, best["step"], x1, x2), atol=1e-5
    )
    other = next(int(s) for s in record if int(s) != best["step"])
    assert np.abs(served - outputs_of_checkpoint(model_dir, other, x1, x2)).max() > 1e-4


def _evaluator_up(common):
    """``trainer --mode=continuous_eval`` as a real process, once it says it waits or watches:
    (the process, its stderr lines as they come, the thread reading them)."""
    evaluator = subprocess.Popen(
        [PY, "-m", "trainer", *common, "--mode=continuous_eval", "--eval_poll_seconds=0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, up = [], threading.Event()

    def read_stderr():
        for line in evaluator.stderr:
            lines.append(line)
            if "config.json" in line or "watching" in line:
                up.set()
        up.set()  # it ended: the test's assertions say how

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    up.wait()
    return evaluator, lines, reader


def test_evaluator_beside_trainer_evaluates_each_checkpoint_once(data, tmp_path):
    model_dir = tmp_path / "m"
    common = flags(data, model_dir, "--train_steps=12", "--best_metric=loss")
    # The trainer starts once the evaluator is up, before the run has a config.json: the
    # evaluator waits for it and takes the model flag it was not given (--head) from there.
    evaluator, lines, reader = _evaluator_up(common)
    train = train_here(  # the trainer in this process, the evaluator a real one beside it
        *common,
        "--head=global_max",
        "--eval_every_steps=0",
        "--checkpoint_every_steps=3",
        "--keep_checkpoints=10",
        "--log_every_steps=3",
    )
    out = evaluator.stdout.read()
    evaluator.wait()
    reader.join()
    err = "".join(lines)
    assert f"waiting for {model_dir}/config.json, which the trainer writes as it starts" in err
    assert train.returncode == 0, train.stderr[-3000:]
    assert evaluator.returncode == 0, err[-3000:]
    # --eval_every_steps=0: the trainer evaluated nothing and kept no best model itself.
    assert not eval_lines(train.stderr) and "eval:" not in train.stdout
    assert "new best" not in train.stderr

    on_disk = sorted(int(p.name[5:-6]) for p in (model_dir / "checkpoints").glob("*.index"))
    assert on_disk == [3, 6, 9, 12]
    record = json.loads((model_dir / "eval/evaluated.json").read_text())
    assert sorted(map(int, record)) == on_disk
    assert [s for s, _ in eval_lines(err)] == on_disk  # each once, oldest first
    for step, logged in eval_lines(err):
        assert logged["loss"] == pytest.approx(record[str(step)]["loss"], abs=1e-4)
    assert tensorboard_steps(model_dir / "tensorboard/eval") == on_disk
    assert "evaluated the checkpoint of step 12: done" in err
    assert "evaluated 4 checkpoints this run, 4 in all" in out
    last = json.loads((model_dir / "eval/last.json").read_text())
    assert last["step"] == 12  # what `launch k8s status` shows
    exported = [int(s) for s in re.findall(r"new best loss [\d.]+ at step (\d+)", err)]
    check_best_export(model_dir, record, "loss", exported)

    # A restarted evaluator redoes nothing and changes nothing.
    before = (model_dir / "eval/evaluated.json").read_bytes()
    again = train_here(*common, "--mode=continuous_eval")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "was evaluated before: nothing to do" in again.stderr
    assert not eval_lines(again.stderr) and "evaluated 0 checkpoints this run" in again.stdout
    assert (model_dir / "eval/evaluated.json").read_bytes() == before
    assert tensorboard_steps(model_dir / "tensorboard/eval") == on_disk


def test_an_evaluator_whose_run_never_starts_says_so_after_its_timeout(data, tmp_path):
    """No config.json within --eval_timeout_seconds: one sentence, exit 75 (an evaluator Job
    admitted before its workers retries, and waits again). Bad data is said before the wait."""
    never = tmp_path / "never"
    wait = ("--mode=continuous_eval", "--eval_timeout_seconds=1", "--eval_poll_seconds=0.2")
    r = train_here(*flags(data, never), *wait)
    assert r.returncode == 75, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: --mode=continuous_eval: no training run started in {never} within 1 s "
        "(--eval_timeout_seconds; it writes config.json as it starts): check --model_dir. "
        "Exit 75: rerun once it is up."
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    r = train_here(*flags(str(empty), never), *wait)
    assert r.returncode == 1 and "holds no dataset" in r.stderr and "waiting" not in r.stderr


def test_evaluator_skips_a_rotated_checkpoint_and_names_the_steps_there_are(
    main_job, tmp_path, capsys
):
    assert main_job.result.returncode == 0, main_job.result.stderr[-2000:]
    model_dir = tmp_path / "m"
    shutil.copytree(main_job.model_dir, model_dir)
    steps = sorted(int(p.name[5:-6]) for p in (model_dir / "checkpoints").glob("*.index"))
    old, last = steps[0], steps[-1]
    # Mid-rotation: CheckpointManager has deleted the data file, the index is still there.
    for path in (model_dir / "checkpoints").glob(f"ckpt-{old}.data-*"):
        path.unlink()
    # --mode=evaluate of a step that is not there: one sentence naming the steps that are
    # (checked in this process: the refusal comes before any model is built).
    from trainer.config import ConfigError
    from trainer.run.continuous import CheckpointEvaluator

    never = CheckpointEvaluator(
        model_dir=str(model_dir), model_cfg=None, restore=None, evaluate=None
    )
    with pytest.raises(ConfigError, match=rf"at that step \(it has steps {old}, {last}\)"):
        never.evaluate_one(old + 1)
    assert not (model_dir / "eval/evaluated.json").exists()
    r = train_here(f"--model_dir={model_dir}", "--mode=continuous_eval", env=main_job.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"skipping checkpoint ckpt-{old}: it was rotated away by the trainer" in r.stderr
    record = json.loads((model_dir / "eval/evaluated.json").read_text())
    assert list(record) == [str(last)]
    # The same weights the training run evaluated at its last step: the same figures.
    trained = json.loads((main_job.model_dir / "eval/last.json").read_text())
    assert trained["step"] == last
    for key in ("loss", "accuracy", "auc"):
        assert record[str(last)][key] == pytest.approx(trained[key], abs=1e-6)
    # --mode=evaluate of one step (in this process: the same entry as `trainer` after its
    # flags) prints the figures the evaluator recorded for it.
    from trainer.config import Config, DataConfig, EvalConfig, TrainConfig
    from trainer.run.main import train_and_evaluate

    (data,) = (main_job.root / "cache/inception-pair-trainer").iterdir()
    cfg = Config(
        mode="evaluate",
        data=DataConfig(data_dir=str(data)),
        train=TrainConfig(model_dir=str(model_dir), train_steps=last),
        evaluation=EvalConfig(checkpoint_step=last),
    )
    capsys.readouterr()
    assert train_and_evaluate(cfg) == 0
    m = record[str(last)]
    line = f"eval at step {last}: accuracy {m['accuracy']:.4f} auc {m['auc']:.4f} loss "
    assert line in capsys.readouterr().out


def test_in_loop_eval_keeps_the_best_export(data, tmp_path):
    model_dir = tmp_path / "m"
    r = train_here(
        *flags(data, model_dir, "--train_steps=6", "--eval_every_steps=2"),
        "--checkpoint_every_steps=2",
        "--keep_checkpoints=3",
        "--best_metric=accuracy",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    evals = eval_lines(r.stderr)
    assert [s for s, _ in evals] == [2, 4, 6]
    record = {str(s): m for s, m in evals}
    exported = [int(s) for s in re.findall(r"new best accuracy [\d.]+ at step (\d+)", r.stderr)]
    check_best_export(model_dir, record, "accuracy", exported)
