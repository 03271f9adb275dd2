"""Everything a mode needs before it builds a model, in order, each step once.

``prepare_runtime``: thread pools and logical devices (only possible before TensorFlow's
runtime starts), then the Cloud Storage start checks. ``prepare``: the data's splits, the
tf.data service's dispatcher (waited for), the strategy (TF_CONFIG derived, peers met), the
resolve step (trainer.resolve), determinism and seeds. The modes that read a checkpoint take
the model flags not given from its config.json. Nothing here writes into model_dir.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf
from absl import logging

from trainer.common import net
from trainer.common.console import plural
from trainer.common.errors import NotThereYet
from trainer.common.paths import bucket_of
from trainer.config import EVAL_MODES, Config, ConfigError, default_cache_dir
from trainer.data.read.decode import ImageSpec
from trainer.data.read.source import Source, open_splits
from trainer.data.write.synthetic import BUILTIN_SET, builtin_data_dir
from trainer.resolve import check_activation, resolve
from trainer.run import checkpoint, continuous
from trainer.runtime import storage, threads
from trainer.runtime import strategy as strategy_lib


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setup:
    config: Config  # resolved: image size, channels, steps per loop, XLA plan
    placement: strategy_lib.Placement
    data_dir: str
    train_source: Source | None  # None: an export that reads no data
    eval_source: Source | None


def check_storage(config: Config) -> None:
    """Before anything is read or written: the local folders the run writes to are folders
    (or can be made) and writable; the gs:// buckets exist and the ones the run writes to
    take a write (StorageError otherwise, exit 1)."""
    model_dir, export_dir = config.train.model_dir, config.export_path
    storage.check_local_outputs(model_dir, config.written_export_path)
    storage.require_bucket(config.data.data_dir, "data")
    storage.require_bucket(model_dir, "model_dir")
    if config.mode != "export":  # training and evaluation write into model_dir
        storage.check_writable(model_dir, "model_dir")
    if storage.is_gcs(export_dir) and (
        config.mode == "export" or bucket_of(export_dir) != bucket_of(model_dir)
    ):
        storage.check_writable(export_dir, "export_dir")
    if storage.is_gcs(export_dir) and config.written_export_path:
        found = tf.io.gfile.isdir(export_dir)
        storage.check_export_folder(export_dir, tf.io.gfile.listdir(export_dir) if found else None)


def prepare_runtime(config: Config) -> None:
    """Activation name, thread pools, logical CPU devices, storage checks."""
    check_activation(config.model.activation)
    r = config.runtime
    threads.configure_threads(r.intra_op_threads, r.inter_op_threads)
    strategy_lib.split_cpu(r.devices_per_worker)
    check_storage(config)


def wait_for_dispatcher(address: str, timeout: float) -> None:
    """TensorFlow's client retries an unreachable dispatcher forever inside one call, where
    even SIGTERM cannot stop it, so the trainer asks first (a dispatcher still starting gets
    ``timeout`` seconds)."""
    host, port = net.host_port(address)
    _, reason = net.wait_for_port(host, port, timeout)
    if reason:
        raise NotThereYet(
            f"the tf.data service dispatcher at {address} did not answer within {timeout:.0f} "
            f"s ({reason}): start it (or check --data_service_address); "
            "--peer_timeout_seconds sets the wait."
        )


def with_saved_model(config: Config) -> tuple[Config, bool]:
    """For the modes that read a checkpoint: the model of its config.json, with the model
    flags given on the command line over it (one that differs is then refused by the model
    check, as in training), and whether there was one. Unchanged where there is none (a
    model_dir without a run: export and evaluate then find no checkpoint either)."""
    if config.mode == "train":
        return config, False
    saved = checkpoint.load_model_config(config.train.model_dir)
    if saved is None:
        return config, False
    given = {name: getattr(config.model, name) for name in config.model_flags}
    return dataclasses.replace(config, model=dataclasses.replace(saved, **given)), True


def _data_of(config: Config, saved: bool):
    """(data folder, training split, eval split, image spec). An export given no --data_dir
    of a model_dir with a config.json reads no data (the model is config.json's), so it does
    not make the built-in set just to export."""
    if config.mode == "export" and saved and not config.data.data_dir:
        m = config.model
        return (
            "none (the model of config.json)",
            None,
            None,
            ImageSpec(*m.image_size, m.channels, ""),
        )
    if not config.data.data_dir:
        check_builtin_fits(config.train.model_dir)
    data_dir = config.data.data_dir or builtin_data_dir(default_cache_dir())
    train_source, eval_source = open_splits(data_dir, skip_corrupt=config.data.skip_corrupt)
    return data_dir, train_source, eval_source, train_source.spec


def check_builtin_fits(model_dir: str) -> None:
    """Without --data_dir a run reads the built-in set: a model_dir whose config.json holds a
    model of another image size or channels is refused before that set is made (the model
    check would refuse it afterwards, once the 9,216 pairs were generated into the cache)."""
    saved = checkpoint.load_model_config(model_dir)
    size, channels = BUILTIN_SET["image_size"], BUILTIN_SET["channels"]
    if saved is None or (tuple(saved.image_size), saved.channels) == ((size, size), channels):
        return
    (h, w), c = saved.image_size, saved.channels
    raise ConfigError(
        f"{model_dir} holds a model of {h}x{w} images with {c} channels, and without "
        f"--data_dir the run reads the built-in set ({size}x{size}, {channels} channels): "
        "give the --data_dir of the model's data."
    )


def _model_and_data(config: Config):
    """(config with the run's model where a mode reads one, the data of ``_data_of``)."""
    if config.mode in ("export", "evaluate"):  # before any data is read or anything written
        continuous.checkpoint_to_read(
            config.train.model_dir, config.mode, config.evaluation.checkpoint_step
        )
    if config.mode == "continuous_eval":  # the data first: a bad --data_dir is said at once
        data = _data_of(config, False)
        e = config.evaluation
        continuous.wait_for_config(
            config.train.model_dir, timeout_s=e.timeout_seconds, poll_s=e.poll_seconds
        )
        return with_saved_model(config)[0], data
    config, saved = with_saved_model(config)
    return config, _data_of(config, saved)


def prepare(config: Config) -> Setup:
    """The data, the strategy and the resolved config (see the module docstring)."""
    config, (data_dir, train_source, eval_source, spec) = _model_and_data(config)
    if config.mode == "train" and config.train.recipe.init_from:
        from trainer.run.recipe import checkpoint_of

        checkpoint_of(config.train.recipe.init_from)  # there, before anything is built
    r = config.runtime
    if config.mode == "train" and config.data.service_address:
        wait_for_dispatcher(config.data.service_address, r.peer_timeout_seconds)
    placement = strategy_lib.make_strategy(
        r.strategy,
        peer_timeout_s=r.peer_timeout_seconds,
        devices_per_worker=r.devices_per_worker,
        evaluator=config.mode in EVAL_MODES,
    )
    config = resolve(
        config,
        spec=spec,
        num_gpus=placement.num_gpus,
        replicas=placement.replicas,
    )
    _determinism(config.train.deterministic)
    keras.utils.set_random_seed(config.train.seed)
    logging.info(
        "strategy %s: %s, worker %d of %d, data %s",
        placement.name,
        plural(placement.replicas, "replica"),
        placement.worker_index,
        placement.num_workers,
        data_dir,
    )
    return Setup(
        config=config,
        placement=placement,
        data_dir=data_dir,
        train_source=train_source,
        eval_source=eval_source,
    )


def _determinism(on: bool) -> None:
    """Op determinism as the run asks. It is process-wide state, so a run without
    --deterministic turns it off again (a run called in-process after one with it)."""
    from tensorflow.python.framework import config as tf_config

    if on:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
