"""``python -m trainer.inspect --model_dir DIR --output grid.png A.png B.png``: the seed's Magic #3.

Restores the latest checkpoint into the instrumentation model (model A, which exposes every
convolution and concatenation of both towers) and writes a PNG grid: one row per layer and
input, the first channels of each activation side by side.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import flags

from trainer.common import cli
from trainer.common.errors import first_line

FLAGS = flags.FlagValues()  # this tool's own flags only
flags.DEFINE_string(
    "model_dir", "", "The training run's model_dir (local or gs://).", flag_values=FLAGS
)
flags.DEFINE_string("output", "activations.png", "Where the PNG grid goes.", flag_values=FLAGS)
flags.DEFINE_integer("grid_channels", 8, "Channels shown per layer.", flag_values=FLAGS)
USAGE = "usage: python -m trainer.inspect --model_dir DIR [--output grid.png] A.png B.png"


def instrumented_from_checkpoint(model_dir: str):
    """(model A, model config dict) with the weights of model_dir's latest checkpoint."""
    import tensorflow as tf

    from trainer.model import builders as model_lib
    from trainer.run import checkpoint
    from trainer.run.programs import build_model

    cfg = checkpoint.load_model_config(model_dir)
    if cfg is None:
        raise FileNotFoundError(f"{model_dir} has no {checkpoint.CONFIG_FILE}.")
    trained = build_model(cfg)
    latest = tf.train.latest_checkpoint(checkpoint.checkpoint_dir(model_dir))
    if latest is None:
        raise FileNotFoundError(f"{model_dir} has no checkpoint.")
    tf.train.Checkpoint(model=trained).restore(latest).expect_partial()
    checkpoint.apply_moving_average(trained, latest)  # what the run's own export serves
    model_a, _ = model_lib.create_instrumented_dual_network(**cfg.builder_kwargs())
    tower = trained.get_layer("inception_tower")
    probe = model_a.get_layer("inception_tower_probe")
    for layer in tower.layers:
        if layer.weights:
            probe.get_layer(layer.name).set_weights(layer.get_weights())
    for name in ("D3", "output"):
        model_a.get_layer(name).set_weights(trained.get_layer(name).get_weights())
    return model_a, cfg


def activation_grid(outputs: dict, channels: int, cell: int = 32) -> np.ndarray:
    """uint8 image: a row per (input, layer), ``channels`` tiles per row, each min-max scaled."""
    rows = []
    for key in sorted(k for k in outputs if k != "output"):
        act = np.asarray(outputs[key])[0]
        tiles = []
        for c in range(min(channels, act.shape[-1])):
            a = act[..., c]
            a = (a - a.min()) / (np.ptp(a) or 1.0)
            reps = max(1, cell // a.shape[0])
            tiles.append(np.kron(a, np.ones((reps, reps)))[:cell, :cell])
        tiles += [np.zeros((cell, cell))] * (channels - len(tiles))
        rows.append(np.concatenate([np.pad(t, 1, constant_values=1.0) for t in tiles], 1))
    return (np.concatenate(rows, 0) * 255).astype(np.uint8)[..., None]


def _main(argv) -> int:
    import tensorflow as tf

    paths = argv[1:]
    if not FLAGS.model_dir or len(paths) != 2:
        sys.stderr.write(f"error: {USAGE}\n")
        return 1
    from trainer.data.write.image_pass import load_image
    from trainer.runtime import storage

    storage.check_output_file(FLAGS.output, "--output")  # before the model is loaded
    try:
        encoded = []
        for p in paths:  # the images first: a bad one is named before the model is built
            try:
                encoded.append(load_image(p)[0])
            except ValueError as e:
                sys.stderr.write(f"error: image {p}: {e}.\n")  # predict's sentence
                return 1
        model_a, cfg = instrumented_from_checkpoint(FLAGS.model_dir)
        images = []
        for data in encoded:
            img = tf.io.decode_image(data, channels=cfg.channels, expand_animations=False)
            images.append(tf.image.resize(tf.cast(img, tf.float32), cfg.image_size)[None] / 255)
    except (FileNotFoundError, tf.errors.OpError) as e:
        said = storage.failure_exit(e)  # a storage that did not answer: its sentence, 75
        if said is not None:
            sys.stderr.write(said[0] + "\n")
            return said[1]
        sys.stderr.write(f"error: {first_line(getattr(e, 'message', e))}\n")
        return 1
    outputs = model_a({"input1": images[0], "input2": images[1]})
    grid = activation_grid({k: v.numpy() for k, v in outputs.items()}, FLAGS.grid_channels)
    tf.io.write_file(FLAGS.output, tf.io.encode_png(grid))
    print(f"probability {float(outputs['output'][0, 0]):.6f}; activations: {FLAGS.output}")
    return 0


def main(argv: list[str]) -> int:
    """``python -m trainer.inspect ARGV`` in this process; the exit status."""
    return cli.call(_main, FLAGS, argv)
