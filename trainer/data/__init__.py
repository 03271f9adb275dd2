"""Paired-image TFRecords: schema, writers (synthetic, convert), verify and the tf.data reader.

Command line: ``python -m trainer.data synthetic|convert|finalize|verify|dispatcher|data_worker``.
"""

from trainer.data.schema import DataError

__all__ = ["DataError"]
