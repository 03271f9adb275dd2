"""SavedModel export: encoded-image serving, float-image and embedding signatures.

The exported graph decodes, resizes and scales inside, so a client sends PNG/JPEG bytes and
needs neither this package nor Keras: ``tf.saved_model.load`` or ``saved_model_cli`` suffice.
Export copies the weights into a fresh float32 model built outside any distribution strategy.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging as absl_logging

from trainer.config import ModelConfig


def _float_copy(model: keras.Model, model_cfg: ModelConfig, build) -> keras.Model:
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clean = build(model_cfg)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clean.set_weights([w.numpy() if hasattr(w, "numpy") else w for w in model.get_weights()])
    return clean


def image_decoder(height: int, width: int, channels: int):
    """PNG/JPEG bytes -> float image in [0, 1] at the model's size: the serving signature's
    own decoding, shared with batch prediction so both score a pair alike."""

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), [height, width], antialias=True)
        return tf.ensure_shape(image / 255.0, [height, width, channels])

    return decode


def _decoder(height: int, width: int, channels: int):
    decode = image_decoder(height, width, channels)

    def decode_batch(images):
        return tf.map_fn(
            decode, images, fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32)
        )

    return decode_batch


def export_saved_model(model: keras.Model, model_cfg: ModelConfig, export_dir: str, build):
    """Writes the SavedModel to ``export_dir``; returns the float32 model it exported.

    TensorFlow's own writer, not Keras' ExportArchive: the archive keeps each variable twice
    in the SavedModel (``_all_variables`` and ``variables``: 2.6 MB for the 1.3 MB of
    weights) and traces each endpoint in two contexts; this writes the weights once in half
    the CPU, the same three signatures and their names (bench/RESULTS.md)."""
    clean = _float_copy(model, model_cfg, build)
    (h, w), c = model_cfg.image_size, model_cfg.channels
    tower = clean.get_layer("inception_tower")
    decode_batch = _decoder(h, w, c)
    image_spec = [None, h, w, c]

    # The model is traced once, for float images; the bytes signature decodes and calls that
    # same function rather than tracing the model a second time.
    serve_float = tf.function(
        lambda input1, input2: {"probability": clean({"input1": input1, "input2": input2})},
        input_signature=[
            tf.TensorSpec(image_spec, tf.float32, "input1"),
            tf.TensorSpec(image_spec, tf.float32, "input2"),
        ],
        autograph=False,
    )
    serve_bytes = tf.function(
        lambda input1, input2: serve_float(decode_batch(input1), decode_batch(input2)),
        input_signature=[
            tf.TensorSpec([None], tf.string, name="input1"),
            tf.TensorSpec([None], tf.string, name="input2"),
        ],
        autograph=False,
    )
    embed = tf.function(
        lambda image: {"embedding": tower(image)},
        input_signature=[tf.TensorSpec(image_spec, tf.float32, "image")],
        autograph=False,
    )
    root = tf.Module()
    root.weights = list(clean.variables)  # what the functions read, saved once
    # The signatures, also as the loaded object's functions (as Keras' archive had them).
    root.serving_default, root.serving_float, root.embedding = serve_bytes, serve_float, embed
    signatures = {"serving_default": serve_bytes, "serving_float": serve_float, "embedding": embed}
    # TF logs every renamed signature input at INFO; they are internal names, not news.
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        tf.saved_model.save(root, export_dir, signatures=signatures)
    finally:
        absl_logging.set_verbosity(verbosity)
    return clean
