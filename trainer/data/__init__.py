"""Paired-image TFRecords: the schema (``schema``), reading (``read``), writing (``write``)
and the tf.data service (``service``). Importing this package loads no TensorFlow.

Command line: ``python -m trainer.data synthetic|convert|finalize|verify|dispatcher|data_worker``.
"""

from trainer.common.errors import UsageError


class DataError(UsageError):
    """A bad record or data folder; the message names the file (and record index)."""
