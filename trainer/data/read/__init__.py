"""Reading paired-image TFRecords: a dataset folder as a ``Source`` (``source``), record
decoding (``decode``), the training and eval tf.data pipelines (``pipeline``) and record
checks (``verify``)."""
