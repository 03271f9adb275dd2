"""The model: the seed's Keras builders (``builders``), their choices (``options``, importable
without TensorFlow) and the SavedModel export (``export``)."""
