"""``python -m trainer.predict --saved_model DIR A.png B.png``: the probability that B follows A.

Uses only the exported SavedModel's ``serving_default`` signature (image bytes in).
"""

from __future__ import annotations

import sys

from absl import app, flags

flags.DEFINE_string("saved_model", None, "Exported SavedModel folder (local or gs://).")
FLAGS = flags.FLAGS


def predict(saved_model: str, image_a: bytes, image_b: bytes) -> float:
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model)
    out = loaded.signatures["serving_default"](
        input1=tf.constant([image_a]), input2=tf.constant([image_b])
    )
    return float(out["probability"].numpy()[0, 0])


def _main(argv) -> int:
    import tensorflow as tf

    paths = argv[1:]
    if not FLAGS.saved_model or len(paths) != 2:
        sys.stderr.write("error: usage: python -m trainer.predict --saved_model DIR A.png B.png\n")
        return 1
    if not tf.io.gfile.exists(FLAGS.saved_model + "/saved_model.pb"):
        sys.stderr.write(f"error: {FLAGS.saved_model} is not a SavedModel folder.\n")
        return 1
    images = []
    for p in paths:
        if not tf.io.gfile.exists(p):
            sys.stderr.write(f"error: image {p} does not exist.\n")
            return 1
        with tf.io.gfile.GFile(p, "rb") as f:
            images.append(f.read())
    try:
        prob = predict(FLAGS.saved_model, *images)
    except tf.errors.InvalidArgumentError:
        sys.stderr.write(f"error: {paths[0]} or {paths[1]} is not a PNG or JPEG image.\n")
        return 1
    print(f"{prob:.6f}")
    return 0


if __name__ == "__main__":
    app.run(_main)
