"""Tools that use a trained model: ``predict`` (one pair or a batch), ``scoring`` (the batch
pipeline), ``metrics`` (exact AUC and F1 maths), ``report`` (metrics and pictures) and
``activations`` (the instrumentation model's grid).

Their command lines keep their names: ``python -m trainer.predict``, ``trainer.report``,
``trainer.inspect`` (thin modules that call these)."""
