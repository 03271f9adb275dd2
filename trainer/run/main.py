"""``train_and_evaluate(config)``: data source, strategy, training run, export.

Called by ``python -m trainer`` after the flags became a Config. Returns the process exit
status (0 done, 1 bad input or divergence, 75 preempted: retry the group).
"""

from __future__ import annotations

import os
import sys

import tensorflow as tf
from absl import logging

from trainer import EXIT_OK, EXIT_RETRY, EXIT_USAGE
from trainer.common.paths import join
from trainer.config import Config, ConfigError, default_cache_dir
from trainer.data import DataError
from trainer.data.read.source import open_source
from trainer.data.service import servers as dataservice
from trainer.run import checkpoint
from trainer.runtime import storage
from trainer.runtime import strategy as distribute

SYNTHETIC_VERSION = "synthetic-v3-16px-8k"
# The built-in set, sized for the main job to finish in about two minutes on a slow 2-core
# host: at 16x16 a pair costs a quarter of a 32x32 one, and the default 300 steps of 64
# (19,200 pairs, 2.3 epochs) reached eval accuracy 0.959-0.981 over three seeds, where
# 400 steps of 32 at 32x32 (three times the compute) reached 0.932-0.964 (bench/RESULTS.md).
BUILTIN_SET = dict(num_train=8192, num_eval=1024, image_size=16)


def synthetic_data_dir() -> str:
    """The built-in synthetic set, generated once (atomically) into the user's cache."""
    from trainer.data.write.synthetic import write_synthetic

    final = os.path.join(default_cache_dir(), SYNTHETIC_VERSION)
    if os.path.exists(os.path.join(final, "dataset.json")):
        return final
    os.makedirs(default_cache_dir(), exist_ok=True)
    tmp = f"{final}.tmp-{os.getpid()}"
    logging.info("generating the built-in synthetic pair set into %s (once)", final)
    write_synthetic(tmp, **BUILTIN_SET)
    try:
        os.rename(tmp, final)
    except OSError:  # another worker finished first: use theirs
        tf.io.gfile.rmtree(tmp)
    return final


def _sources(data_dir: str):
    data_dir = data_dir or synthetic_data_dir()
    train = open_source(data_dir, "train")
    try:
        evaluation = open_source(data_dir, "eval")
    except DataError:
        logging.warning("no eval split in %s: evaluating on the training split", data_dir)
        evaluation = train
    return data_dir, train, evaluation


def check_storage(config: Config) -> None:
    """Before anything is read or written: the gs:// buckets exist and the ones the run
    writes to take a write (StorageError otherwise, exit 1)."""
    model_dir, export_dir = config.train.model_dir, config.export_dir
    storage.require_bucket(config.data.data_dir, "data")
    storage.require_bucket(model_dir, "model_dir")
    if config.mode != "export":  # training and evaluation write into model_dir
        storage.check_writable(model_dir, "model_dir")
    if storage.is_gcs(export_dir) and (
        config.mode == "export" or storage.bucket_of(export_dir) != storage.bucket_of(model_dir)
    ):
        storage.check_writable(export_dir, "export_dir")


def _storage_failed(e: tf.errors.OpError, config: Config) -> int | None:
    """Exit status and one sentence for a storage operation TensorFlow gave up on."""
    found = storage.failure(e)
    if found is None:
        return None
    if found.transient:
        sys.stderr.write(
            f"error: {found.sentence(config.storage_timeout_seconds)}. Exit {EXIT_RETRY}: "
            "rerun when the storage is reachable; training resumes from the last complete "
            "checkpoint.\n"
        )
        # Leave now: Python's teardown would flush the TensorBoard writer to the storage that
        # is gone, each flush waiting out the retries again (measured: four more rounds, a
        # minute at --storage_timeout_seconds=10). The checkpoints hold everything to keep.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_RETRY)
    sys.stderr.write(f"error: {found.sentence()}.\n")
    return EXIT_USAGE


EVAL_MODES = ("evaluate", "continuous_eval")


def _print_eval(prefix: str, metrics: dict) -> None:
    print(
        f"{prefix} accuracy {metrics['accuracy']:.4f} auc {metrics['auc']:.4f} "
        f"loss {metrics['loss']:.4f} on {metrics['pairs']} pairs"
    )


def _best_keeper(config: Config, model_cfg, build_model):
    """The keeper of export_best for --best_metric (None: off)."""
    if config.train.best_metric == "none":
        return None
    from trainer.model.export import export_saved_model
    from trainer.run.best import BestKeeper

    def export(model, path):
        export_saved_model(model, model_cfg, path, build_model)

    return BestKeeper(config.train.model_dir, config.train.best_metric, export)


def _evaluated_before(config: Config) -> bool:
    """A restarted evaluator whose work is done says so before building anything."""
    from trainer.run.evaluate import RECORD_FILE, finished, load_record

    record = load_record(config.train.model_dir)
    if not finished(record, config.train.train_steps):
        return False
    logging.info(
        "the checkpoint of step %d (--train_steps) was evaluated before: nothing to do "
        "(%d checkpoints in %s)",
        max(record),
        len(record),
        join(config.train.model_dir, RECORD_FILE),
    )
    print(
        f"continuous eval: evaluated 0 checkpoints this run, {len(record)} in all "
        f"(steps {', '.join(map(str, sorted(record)))})"
    )
    return True


def _evaluate(config: Config, trainer, model_cfg) -> int:
    """--mode=evaluate (one checkpoint) or --mode=continuous_eval (each new one)."""
    from trainer.run.evaluate import Evaluator

    evaluator = Evaluator(trainer, model_cfg, config.train.model_dir, config.train.train_steps)
    if config.mode == "evaluate":
        step, metrics = evaluator.evaluate_one(config.evaluation.checkpoint_step)
        _print_eval(f"eval at step {step}:", metrics)
        return EXIT_OK
    count = evaluator.run_continuous(
        config.evaluation.timeout_seconds, config.evaluation.poll_seconds
    )
    print(
        f"continuous eval: evaluated {count} checkpoints this run, "
        f"{len(evaluator.record)} in all (steps {', '.join(map(str, sorted(evaluator.record)))})"
    )
    return EXIT_OK


def train_and_evaluate(config: Config) -> int:
    """Runs config.mode; returns the exit status. Raises nothing a user caused."""
    from trainer.run.control import Preempted, TrainingDiverged
    from trainer.run.train import Trainer, build_model

    workers = 0  # known once the strategy is built
    try:
        distribute.configure_threads(config.intra_op_threads, config.inter_op_threads)
        distribute.split_cpu(config.devices_per_worker)
        check_storage(config)
        if config.mode == "continuous_eval" and _evaluated_before(config):
            return EXIT_OK
        data_dir, train_src, eval_src = _sources(config.data.data_dir)
        if config.mode == "train" and config.data.service_address:
            dataservice.wait_for(config.data.service_address, config.peer_timeout_seconds)
        strategy, name, index, workers, gpus = distribute.make_strategy(
            config.strategy,
            peer_timeout_s=config.peer_timeout_seconds,
            devices_per_worker=config.devices_per_worker,
            evaluator=config.mode in EVAL_MODES,
        )
        spec = train_src.spec
        model_cfg = config.model.__class__(
            **{
                **config.model.__dict__,
                "image_size": (spec.height, spec.width),
                "channels": spec.channels,
            }
        )
        replicas = strategy.num_replicas_in_sync
        if config.train.global_batch_size % replicas:
            raise ConfigError(
                f"--global_batch_size={config.train.global_batch_size} does not divide over "
                f"{replicas} replicas: use a multiple of {replicas}."
            )
        if (
            config.mode == "export"
            and checkpoint.latest_checkpoint_step(config.train.model_dir) is None
        ):
            raise ConfigError(f"--mode=export: {config.train.model_dir} has no checkpoint.")
        training_chief = index == 0 and config.mode == "train"
        checkpoint.check_model_config(config.train.model_dir, model_cfg, write=training_chief)
        if config.train.deterministic:
            tf.config.experimental.enable_op_determinism()
        tf.keras.utils.set_random_seed(config.train.seed)
        logging.info(
            "strategy %s: %d replicas, worker %d of %d, data %s",
            name,
            strategy.num_replicas_in_sync,
            index,
            workers,
            data_dir,
        )
        trainer = Trainer(
            strategy,
            model_cfg,
            config.train,
            config.data,
            train_src,
            eval_src,
            index,
            workers,
            compile_plan=distribute.compile_plan(
                distribute.use_jit(config.train.jit_compile, gpus),
                gpus,
                strategy.num_replicas_in_sync,
            ),
            fetch_to_device=distribute.fetch_to_device(gpus),
            steps_per_loop=distribute.steps_per_loop(config.train.steps_per_loop, gpus),
            summary_dir=join(config.train.model_dir, "tensorboard/eval")
            if config.mode in EVAL_MODES
            else None,
            best=_best_keeper(config, model_cfg, build_model),
        )
        if config.mode in EVAL_MODES:
            return _evaluate(config, trainer, model_cfg)
        trainer.restore()
        if config.mode == "train":
            from trainer.run.control import StopSignal

            with StopSignal() as stop:
                metrics = trainer.fit(stop)
            if metrics is not None:
                _print_eval("eval:", metrics)
        if index == 0:
            print(f"checkpoints: {checkpoint.checkpoint_dir(config.train.model_dir)}")
        if index == 0 and (config.export or config.mode == "export"):
            from trainer.model.export import export_saved_model

            export_saved_model(trainer.model.builders, model_cfg, config.export_dir, build_model)
            print(f"exported SavedModel: {config.export_dir}")
        return EXIT_OK
    except (ConfigError, DataError, storage.StorageError, TrainingDiverged) as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USAGE
    except Preempted as e:
        sys.stderr.write(f"{e} Exit {EXIT_RETRY}: rerun to resume.\n")
        return EXIT_RETRY
    except dataservice.Unreachable as e:
        sys.stderr.write(f"error: {e} Exit {EXIT_RETRY}: rerun once it is up.\n")
        return EXIT_RETRY
    except distribute.PEER_ERRORS as e:
        if isinstance(e, tf.errors.OpError) and (code := _storage_failed(e, config)) is not None:
            return code
        reason = (
            f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        )
        if workers == 1:  # no peer to lose: say what TensorFlow said
            sys.stderr.write(
                f"error: TensorFlow aborted the run ({reason}). Exit {EXIT_RETRY}: rerun to "
                "resume from the last checkpoint.\n"
            )
            return EXIT_RETRY
        sys.stderr.write(
            f"error: lost contact with a peer worker ({reason}). Exit {EXIT_RETRY}: "
            "restart the whole group to resume from the last checkpoint.\n"
        )
        return EXIT_RETRY
    except tf.errors.OpError as e:
        if (code := _storage_failed(e, config)) is not None:
            return code
        raise
