"""The four things a user runs (orbit's four outer loops), one short function each:
``train`` (then export), ``export`` (the latest checkpoint), ``evaluate`` (one checkpoint) and
``continuous_eval`` (each new checkpoint, beside a training run). Each gets a prepared Setup
(trainer.run.setup) and returns the exit status; errors go up to trainer.run.main, the one
place that turns them into exit codes and sentences.
"""

from __future__ import annotations

import contextlib
import os

import keras
import tensorflow as tf
from absl import logging

from trainer.common import claim
from trainer.common.console import plural
from trainer.common.errors import EXIT_OK
from trainer.common.files import folder_written_whole
from trainer.common.paths import join
from trainer.config import Config, ConfigError
from trainer.data import DataError
from trainer.run import actions, checkpoint, continuous
from trainer.run.controller import Controller, GraceBudget, Schedule, StopSignal
from trainer.run.programs import EvalProgram, TrainProgram, build_model
from trainer.run.recipe import averaged_weights, warm_start
from trainer.run.setup import Setup
from trainer.runtime import cluster
from trainer.runtime.strategy import fetch_to_device


def schedule_of(config: Config) -> Schedule:
    t = config.train
    return Schedule(
        train_steps=t.train_steps,
        steps_per_loop=t.steps_per_loop,
        log_every=t.log_every_steps,
        checkpoint_every=t.checkpoint_every_steps,
        eval_every=t.eval_every_steps,
        profile_steps=t.profile_steps,
    )


def print_eval(prefix: str, metrics: dict) -> None:
    print(
        f"{prefix} accuracy {metrics['accuracy']:.4f} auc {metrics['auc']:.4f} "
        f"loss {metrics['loss']:.4f} on {metrics['pairs']} pairs"
    )


def export_model(model, config: Config, path: str) -> None:
    """The SavedModel written whole beside ``path`` (``.export.new`` for ``export``), then
    swapped in: an export cut off (a kill, a full disk, an outage) leaves the earlier one."""
    with folder_written_whole(path) as new:
        write_export(model, config, new)


def write_export(model, config: Config, path: str) -> None:
    """The SavedModel of ``model`` written into ``path`` as it goes."""
    from trainer.model.export import export_saved_model

    export_saved_model(model, config.model, path, build_model)


def eval_actions(config: Config, model, *, scalars, chief: bool, optimizer=None) -> list:
    """After each eval: the report (line, scalars, last.json) and, with --best_metric, the
    best model (whoever evaluates keeps it; only the chief writes), exported with the
    weights' moving average where ``optimizer`` keeps one (trainer.run.recipe)."""
    found = [
        actions.EvalReport(
            model_dir=config.train.model_dir, scalars=scalars, log=logging.info, write_last=chief
        )
    ]
    if chief and config.train.best_metric != "none":
        from trainer.run.best import BestKeeper

        def export_best(m, path):  # into the keeper's folder_written_whole
            with averaged_weights(m, optimizer):
                write_export(m, config, path)

        keeper = BestKeeper(config.train.model_dir, config.train.best_metric, export_best)
        found.append(actions.BestExport(keeper, model))
    return found


def _train_controller(
    setup: Setup, program: TrainProgram, stop, early_stop=None, warm: bool = False
) -> Controller:
    cfg, p = setup.config, setup.placement
    folder = join(cfg.train.model_dir, "tensorboard")
    scalars = actions.SummaryWriter(folder, enabled=p.is_chief)  # one event file per run
    evaluate = None
    on_eval = []
    if cfg.train.eval_every_steps:
        program_eval = EvalProgram(
            strategy=p.strategy,
            model=program.model,
            source=setup.eval_source,
            global_batch_size=cfg.train.global_batch_size,
            num_workers=p.num_workers,
            fetch_to_device=fetch_to_device(p.num_gpus),
        ).evaluate

        def evaluate():
            with averaged_weights(program.model, program.optimizer):
                return program_eval()

        on_eval = eval_actions(
            cfg, program.model, scalars=scalars, chief=p.is_chief, optimizer=program.optimizer
        )
    progress = actions.ProgressLog(
        global_batch=cfg.train.global_batch_size * cfg.train.recipe.grad_accum_steps,
        train_steps=cfg.train.train_steps,
        scalars=scalars,
        log=logging.info,
        warn=logging.warning,
        timed=not cfg.train.deterministic,
        service=bool(cfg.data.service_address),
        local_workers=cluster.workers_on_this_host(cluster.derive_tf_config(os.environ)),
    )
    on_boundary = []
    if cfg.train.profile_steps and p.is_chief:
        on_boundary.append(
            actions.Profiler(steps=cfg.train.profile_steps, folder=folder, log=logging.info)
        )
    return Controller(
        program=program,
        schedule=schedule_of(cfg),
        stop_requested=stop,
        evaluate=evaluate,
        on_boundary=on_boundary,
        on_log=[progress],
        on_eval=on_eval,
        stop_after_eval=early_stop,
        evaluate_first=warm,  # what the warm start begins from
        grace=GraceBudget(seconds=cfg.runtime.grace_seconds),
        log=logging.info,
    )


def _batch_words(t) -> str:
    n = t.recipe.grad_accum_steps
    if n == 1:
        return str(t.global_batch_size)
    effective = t.global_batch_size * n
    return f"{t.global_batch_size} x {n} batches per update (effective batch {effective})"


def _log_start(config: Config, program: TrainProgram) -> None:
    t = config.train
    if config.runtime.grace_seconds:
        logging.info(
            "grace budget %.0f s (TRAINER_GRACE_SECONDS): loops are cut so that the one a "
            "SIGTERM arrives in and the save after it take at most half of it",
            config.runtime.grace_seconds,
        )
    if program.step < t.train_steps:
        logging.info(
            "training steps %d..%d, global batch %s over %s, up to %d steps per loop, XLA: %s",
            program.step,
            t.train_steps,
            _batch_words(t),
            plural(program.strategy.num_replicas_in_sync, "replica"),
            t.steps_per_loop,
            t.compile_plan,
        )


def train(setup: Setup) -> int:
    """Trains from the newest checkpoint (or step 0) to --train_steps, then exports."""
    cfg, p = setup.config, setup.placement
    checkpoint.check_model_config(cfg.train.model_dir, cfg.model, write=False)
    # The chief claims the model_dir before it reads a checkpoint there, and holds it through
    # the export: a second run is refused before it says it resumed.
    held = claim.claimed(cfg.train.model_dir) if p.is_chief else contextlib.nullcontext()
    with held:
        return _train_claimed(setup)


def _train_claimed(setup: Setup) -> int:
    cfg, p = setup.config, setup.placement
    program = TrainProgram(
        strategy=p.strategy,
        model=cfg.model,
        train=cfg.train,
        data=cfg.data,
        source=setup.train_source,
        worker_index=p.worker_index,
        num_workers=p.num_workers,
        fetch_to_device=fetch_to_device(p.num_gpus),
    )
    warm = _restore_or_warm_start(cfg, program)  # a refusal here has written nothing
    checkpoint.check_model_config(cfg.train.model_dir, cfg.model, write=p.is_chief)
    _log_start(cfg, program)
    early = _early_stop(cfg, p.is_chief)
    with StopSignal(logging.warning) as stop:
        trained = program.step < cfg.train.train_steps and not (early and early.done)
        try:
            if early and early.done:
                logging.info(
                    "stopped early at step %s before (best %s at step %s): nothing to train",
                    early.stopped_at,
                    early.best,
                    early.best_step,
                )
                metrics = None
            else:
                metrics = _train_controller(setup, program, stop, early, warm).train()
        except DataError as e:  # mid-run: say what of the run is kept
            raise DataError(f"{str(e).rstrip('.')}; {_kept(cfg.train.model_dir)}.") from None
    if trained:
        logging.info(
            "worker %d final weights sha256 %s", p.worker_index, program.weights_fingerprint()
        )
    if metrics is not None:
        print_eval("eval:", metrics)
    with averaged_weights(program.model, program.optimizer):
        return _finish(cfg, p.is_chief, program.model, export=cfg.export)


def _restore_or_warm_start(cfg: Config, program: TrainProgram) -> bool:
    """The run's own newest checkpoint, or else --init_from's weights; True for a warm start."""
    source = cfg.train.recipe.init_from
    if path := program.restore():
        logging.info(
            "resumed from %s at step %d (%s pairs seen, the optimizer at update %d)",
            path,
            program.step,
            f"{int(program.examples_seen.numpy()):,}",
            int(program.optimizer.iterations.numpy()),
        )
        if program.worker_index == 0:  # the same on every worker: the chief says it
            for line in program.resize_lines():
                logging.info("%s", line)
        if source:
            logging.info("--init_from=%s not used: the run resumes from its own checkpoint", source)
        return False
    if not source:
        return False
    path = warm_start(program.model, source)
    logging.info("warm start from %s: its weights, a fresh optimizer, step 0", path)
    return True


def _early_stop(cfg: Config, chief: bool):
    t = cfg.train
    if t.early_stop_metric == "none":
        return None
    from trainer.run.early_stop import EarlyStop

    return EarlyStop(
        model_dir=t.model_dir,
        metric=t.early_stop_metric,
        patience=t.early_stop_patience,
        write=chief,
        log=logging.info,
    )


def _kept(model_dir: str) -> str:
    step = checkpoint.latest_checkpoint_step(model_dir)
    if step is None:
        return "no checkpoint was written yet"
    return (
        f"the checkpoint of step {step} is kept in {checkpoint.checkpoint_dir(model_dir)}: fix "
        "the data and rerun to resume from it"
    )


def _finish(config: Config, chief: bool, model, export: bool) -> int:
    if chief:
        print(f"checkpoints: {checkpoint.checkpoint_dir(config.train.model_dir)}")
    if chief and export:
        export_model(model, config, config.export_path)
        print(f"exported SavedModel: {config.export_path}")
    return EXIT_OK


def _model_alone(setup: Setup):
    """The model of the run under its strategy, without an optimizer (export, evaluation)."""
    keras.mixed_precision.set_global_policy(setup.config.model.precision)
    with setup.placement.strategy.scope():
        return build_model(setup.config.model)


def restore_weights(model, prefix: str, *, ema_decay: float, mode: str) -> None:
    """The model's weights from the checkpoint at ``prefix`` (its optimizer ignored): the
    moving average where the checkpoint keeps one, as the run's own eval and exports use it."""
    status = tf.train.Checkpoint(model=model).restore(prefix)
    status.assert_existing_objects_matched().expect_partial()
    _use_average(model, prefix, ema_decay=ema_decay, mode=mode)


def _use_average(model, prefix: str, *, ema_decay: float, mode: str) -> None:
    """The checkpoint decides, not the flag (a run trained with --ema_decay exports and
    evaluates its average without it); a flag asking for an average that is not there is
    refused rather than answered with the trained weights."""
    used = checkpoint.apply_moving_average(model, prefix)
    if used is None and ema_decay:
        raise ConfigError(
            f"--ema_decay={ema_decay:g}: {prefix} keeps no moving average of the weights (its "
            f"run trained without --ema_decay): rerun without the flag to {mode} its weights."
        )
    if used:
        logging.info("using the moving average of the weights that %s keeps", prefix)


def export(setup: Setup) -> int:
    """Exports the newest whole checkpoint as a SavedModel."""
    cfg = setup.config
    model_dir = cfg.train.model_dir
    continuous.checkpoint_to_read(model_dir, "export")  # setup asked before; it may be gone
    checkpoint.check_model_config(model_dir, cfg.model, write=False, reading=True)
    model = _model_alone(setup)
    restorer = checkpoint.Checkpointer(model_dir, {"model": model}, keep=1)
    if path := restorer.restore_latest(partial=True):
        logging.info("restored %s", path)
        _use_average(model, path, ema_decay=cfg.train.recipe.ema_decay, mode="export")
    return _finish(cfg, setup.placement.is_chief, model, export=True)


def _checkpoint_evaluator(setup: Setup) -> continuous.CheckpointEvaluator:
    cfg, p = setup.config, setup.placement
    checkpoint.check_model_config(cfg.train.model_dir, cfg.model, write=False, reading=True)
    model = _model_alone(setup)
    ema_decay = cfg.train.recipe.ema_decay
    program = EvalProgram(
        strategy=p.strategy,
        model=model,
        source=setup.eval_source,
        global_batch_size=cfg.train.global_batch_size,
        fetch_to_device=fetch_to_device(p.num_gpus),
    )
    scalars = actions.SummaryWriter(join(cfg.train.model_dir, "tensorboard/eval"))
    return continuous.CheckpointEvaluator(
        model_dir=cfg.train.model_dir,
        model_cfg=cfg.model,
        restore=lambda prefix: restore_weights(model, prefix, ema_decay=ema_decay, mode="evaluate"),
        evaluate=program.evaluate,
        on_eval=eval_actions(cfg, model, scalars=scalars, chief=True),
    )


def evaluate(setup: Setup) -> int:
    """Evaluates one checkpoint (--checkpoint_step, default the latest) and prints it."""
    evaluator = _checkpoint_evaluator(setup)
    step, metrics = evaluator.evaluate_one(setup.config.evaluation.checkpoint_step)
    print_eval(f"eval at step {step}:", metrics)
    return EXIT_OK


def continuous_eval(setup: Setup) -> int:
    """Evaluates every new checkpoint once until the one of --train_steps."""
    cfg = setup.config
    evaluator = _checkpoint_evaluator(setup)
    count = evaluator.run_continuous(
        train_steps=cfg.train.train_steps,
        timeout_s=cfg.evaluation.timeout_seconds,
        poll_s=cfg.evaluation.poll_seconds,
    )
    print(continuous.record_summary(count, evaluator.record))
    return EXIT_OK


def evaluated_before(config: Config) -> bool:
    """A restarted evaluator whose work is done says so before building anything."""
    record = continuous.load_record(config.train.model_dir)
    if not continuous.finished(record, config.train.train_steps):
        return False
    logging.info(
        "the checkpoint of step %d (--train_steps) was evaluated before: nothing to do "
        "(%d checkpoints in %s)",
        max(record),
        len(record),
        join(config.train.model_dir, continuous.RECORD_FILE),
    )
    print(continuous.record_summary(0, record))
    return True


MODES = {
    "train": train,
    "export": export,
    "evaluate": evaluate,
    "continuous_eval": continuous_eval,
}
