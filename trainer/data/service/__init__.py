"""The tf.data service: the trainer's input through it (``client``) and the dispatcher and
data-worker processes (``servers``, importable without TensorFlow)."""
