"""The outer loop and its actions, driven by a fake train program: pure Python, no TensorFlow.

The fake program records what the controller asked of it (loop lengths, stop flags, saves),
so every assertion is on the schedule the controller followed.
"""

import sys

import pytest

from trainer.run.actions import EvalReport, Profiler, ProgressLog
from trainer.run.controller import (
    Controller,
    GraceBudget,
    LoopResult,
    Preempted,
    Schedule,
    TrainingDiverged,
    Window,
)


class FakeProgram:
    """Steps forward as asked; a loss of 0.5 per step; optional stop vote or divergence."""

    def __init__(self, step=0, stop_at=None, diverge_at=None, votes_from_peer=None):
        self.step = step
        self.loops, self.saves, self.stops_seen, self.limits = [], [], [], []
        self.stop_at, self.diverge_at, self.votes_from_peer = stop_at, diverge_at, votes_from_peer

    def train(self, num_steps, stop, max_seconds=float("inf")):
        self.limits.append(max_seconds)
        self.loops.append((self.step, num_steps))
        self.stops_seen.append(stop)
        diverged = None
        if self.diverge_at is not None and self.step < self.diverge_at <= self.step + num_steps:
            diverged = self.diverge_at - self.step - 1  # index in the loop of the bad step
            num_steps = diverged + 1
        self.step += num_steps
        peer = self.votes_from_peer is not None and self.step >= self.votes_from_peer
        return LoopResult(
            steps=num_steps,
            loss=0.5 * num_steps,
            correct=3.0 * num_steps,
            count=4.0 * num_steps,
            stop_votes=float(stop) + float(peer),
            wait_seconds=0.25 * num_steps,
            seconds=1.0 * num_steps,
            diverged_at=diverged,
            diverged_loss=float("nan") if diverged is not None else 0.0,
            rate=1e-3 * self.step,  # a rate that moves: the window must keep the last one
        )

    def save(self):
        self.saves.append(self.step)
        return f"ckpt-{self.step}"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def schedule(**overrides):
    values = dict(train_steps=250, steps_per_loop=40, log_every=50, checkpoint_every=100)
    return Schedule(**{**values, **overrides})


def test_loops_end_at_every_step_the_host_has_work():
    s = schedule()
    ends, step = [], 0
    while step < s.train_steps:
        step += s.loop_length(step)
        ends.append(step)
    assert ends == [40, 50, 90, 100, 140, 150, 190, 200, 240, 250]
    profiled = schedule(steps_per_loop=1000, profile_steps=(10, 20))
    assert profiled.loop_length(0) == 10 and profiled.loop_length(10) == 10
    assert schedule(steps_per_loop=1).loop_length(247) == 1
    assert schedule(steps_per_loop=100).loop_length(249) == 1
    evals = schedule(steps_per_loop=100, eval_every=30)
    assert evals.loop_length(0) == 30 and evals.loop_length(30) == 20


def test_controller_logs_saves_and_evaluates_on_schedule():
    program = FakeProgram()
    logged, evaluated, boundaries = [], [], []
    metrics = iter([{"auc": 0.1}, {"auc": 0.2}, {"auc": 0.3}])
    final = Controller(
        program=program,
        schedule=schedule(eval_every=100),
        evaluate=lambda: next(metrics),
        on_boundary=[boundaries.append],
        on_log=[lambda step, window: logged.append((step, window.steps, window.mean_loss()))],
        on_eval=[lambda step, m: evaluated.append((step, m["auc"]))],
        clock=Clock(),
    ).train()
    assert program.loops == [(0, 40), (40, 10), (50, 40), (90, 10), (100, 40), (140, 10),
                             (150, 40), (190, 10), (200, 40), (240, 10)]  # fmt: skip
    assert [s for s, _, _ in logged] == [50, 100, 150, 200, 250]
    assert all(n == 50 and loss == 0.5 for _, n, loss in logged)  # the window resets per line
    assert program.saves == [100, 200, 250]
    # in-loop evals at 100 and 200; the final eval after the loop at 250, returned
    assert evaluated == [(100, 0.1), (200, 0.2), (250, 0.3)] and final == {"auc": 0.3}
    assert boundaries == [0, 40, 50, 90, 100, 140, 150, 190, 200, 240, 250]


def test_no_eval_interval_means_no_eval_and_resume_starts_at_the_program_step():
    program = FakeProgram(step=200)
    called = []
    result = Controller(
        program=program, schedule=schedule(), evaluate=lambda: called.append(1) or {}
    ).train()
    assert result is None and not called
    assert program.loops == [(200, 40), (240, 10)] and program.saves == [250]


def test_nothing_to_train_evaluates_once_without_actions():
    program = FakeProgram(step=250)
    reported = []
    result = Controller(
        program=program,
        schedule=schedule(eval_every=100),
        evaluate=lambda: {"auc": 0.9},
        on_eval=[lambda step, m: reported.append(step)],
    ).train()
    assert result == {"auc": 0.9} and program.loops == [] and reported == []


def test_a_stop_request_saves_at_the_loop_end_and_raises_preempted():
    program = FakeProgram()
    asked = iter([False, False, True])
    # The request seen before the third loop travels in a one-step loop (every worker learns
    # it at the same step, at no cost), then the save.
    with pytest.raises(Preempted, match="stopped by a signal at step 51; checkpoint saved"):
        Controller(program=program, schedule=schedule(), stop_requested=lambda: next(asked)).train()
    assert program.stops_seen == [False, False, True] and program.saves == [51]
    assert program.loops == [(0, 40), (40, 10), (50, 1)]


def test_a_peers_stop_vote_stops_this_worker_too():
    program = FakeProgram(votes_from_peer=140)
    with pytest.raises(Preempted, match="at step 140"):
        Controller(program=program, schedule=schedule()).train()
    assert program.saves == [100, 140] and not any(program.stops_seen)


def test_divergence_names_the_step_and_the_checkpoint_kept():
    program = FakeProgram(diverge_at=123)
    with pytest.raises(TrainingDiverged) as raised:
        Controller(program=program, schedule=schedule()).train()
    assert "the loss became nan at step 123" in str(raised.value)
    assert "the last good checkpoint (step 100) is kept" in str(raised.value)
    assert program.saves == [100]  # nothing saved after the bad step
    with pytest.raises(TrainingDiverged, match="no checkpoint was saved"):
        Controller(program=FakeProgram(diverge_at=7), schedule=schedule()).train()


def test_window_sums_and_rates():
    clock = Clock()
    window = Window(clock)  # start = 1
    window.add(FakeProgram().train(10, False))
    window.add(FakeProgram().train(30, False))
    assert window.steps == 40 and window.mean_loss() == 0.5 and window.accuracy() == 0.75
    assert window.input_fraction() == 0.25
    assert window.elapsed() == 1.0  # one tick of the fake clock since the start


def test_progress_line_scalars_and_input_bound_warning():
    lines, warnings, scalars = [], [], []
    progress = ProgressLog(
        global_batch=64,
        train_steps=300,
        scalars=lambda step, values: scalars.append((step, values)),
        log=lines.append,
        warn=warnings.append,
    )
    window = Window(Clock())
    program = FakeProgram()
    window.add(program.train(20, False))
    window.reset()
    window.add(program.train(50, False))  # 50 steps, a quarter of the time waiting
    progress(100, window)  # the window's elapsed: 1 s of the fake clock
    assert lines == [
        "step 100/300 loss 0.5000 accuracy 0.750 3200 pairs/s input wait 25% ETA 4s "
        "(start-up included)"
    ]
    assert warnings == []  # the first window holds the pipeline's warm-up: not judged
    step, values = scalars[0]
    assert step == 100 and values["train/pairs_per_second"] == 3200
    assert values["train/learning_rate"] == 70e-3 and values["train/input_wait"] == 0.25
    progress(100, window)  # the same wait in a later window
    assert lines[-1] == "step 100/300 loss 0.5000 accuracy 0.750 1600 pairs/s input wait 25% ETA 8s"
    assert len(warnings) == 1 and "input-bound: 25%" in warnings[0] and "--cache" in warnings[0]
    assert warnings[0].endswith("(--data_service_address) (said once)")
    assert "share this machine" not in warnings[0]
    progress(150, window)  # still input-bound: the line shows it, the warning is not repeated
    assert lines[-1].startswith("step 150/300") and len(warnings) == 1
    untimed = ProgressLog(
        global_batch=64, train_steps=300, scalars=lambda *a: None,
        log=lines.append, warn=warnings.append, timed=False, service=True,
    )  # fmt: skip
    untimed(100, window)
    untimed(100, window)
    assert "input wait n/a" in lines[-1] and "add data workers" in warnings[-1]
    local = ProgressLog(
        global_batch=64, train_steps=300, scalars=lambda *a: None,
        log=lines.append, warn=warnings.append, local_workers=2,
    )  # fmt: skip
    local(100, window)
    local(150, window)
    assert warnings[-1].startswith(
        "input-bound: 25% of step time waits for the next batch (2 workers share this "
        "machine's cores, so their input pipelines compete with their steps); try --cache"
    )


def test_eval_report_and_profiler_bounds():
    lines, scalars = [], []
    report = EvalReport(
        model_dir="unused",
        scalars=lambda step, values: scalars.append((step, values)),
        log=lines.append,
        write_last=False,
    )
    report(200, {"loss": 0.25, "accuracy": 0.875, "auc": 0.9375, "pairs": 64})
    assert lines == ["eval at step 200: loss 0.2500 accuracy 0.8750 auc 0.9375 (64 pairs)"]
    assert scalars == [(200, {"eval/loss": 0.25, "eval/accuracy": 0.875, "eval/auc": 0.9375})]
    events = []
    profiler = Profiler(
        steps=(10, 20),
        folder="tb",
        log=events.append,
        start=lambda folder: events.append(("start", folder)),
        stop=lambda: events.append("stop"),
    )
    for step in (0, 10, 15, 20, 30):
        profiler(step)
    assert events == [("start", "tb"), "stop", "profile of steps 10..20 written to tb"]


def test_the_controller_and_actions_need_no_tensorflow():
    import subprocess

    code = (
        "import sys; import trainer.run.controller, trainer.run.actions; "
        "sys.exit('tensorflow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_grace_budget_keeps_a_loop_and_a_save_inside_half_of_it():
    # The fake pace: 1 s per step; the fake clock makes each save take 1 s. With 20 s of
    # grace, half (10 s) must hold the loop and the save: 9 steps per loop once both are seen.
    program = FakeProgram()
    grace = GraceBudget(seconds=20)
    s = schedule(train_steps=250, steps_per_loop=40, log_every=0, checkpoint_every=100)
    Controller(program=program, schedule=s, grace=grace, clock=Clock()).train()
    lengths = [n for _, n in program.loops]
    assert lengths[0] == 1  # the pace is not known before the first loop
    before_save = [n for step, n in program.loops[1:] if step < 100]
    assert max(before_save) == 10  # room 10 s, no save seen yet (9: cut at step 100)
    after_save = [n for step, n in program.loops if step >= 100]
    assert max(after_save) == 9 and grace.save_seconds == 1.0
    # and each loop is told the most it may run (the loop ends itself early on its clock)
    assert program.limits[0] == 10.0 and program.limits[-1] == 9.0
    assert sum(lengths) == 250 and program.saves == [100, 200, 250]
    unbounded = FakeProgram()
    Controller(program=unbounded, schedule=s, clock=Clock()).train()
    assert max(n for _, n in unbounded.loops) == 40  # no budget: the schedule's loops
    assert set(unbounded.limits) == {float("inf")}
