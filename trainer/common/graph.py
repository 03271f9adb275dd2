"""Functions traced into TensorFlow graphs without AutoGraph.

tf.data's map functions and tf.function bodies go through AutoGraph's source transformation
by default. Ours hold no Python control flow on tensors (a Python ``if`` on a setting is
fine; tensor conditions use tf.cond / tf.where, loops tf.while_loop), so the transformation
only costs time: about a second of CPU at every trainer start (bench/RESULTS.md,
"Start-up"). Importing this module loads no TensorFlow.
"""

from __future__ import annotations


def graph_fn(fn):
    """``fn``, marked for tracing as written (AutoGraph's do_not_convert)."""
    import tensorflow as tf

    return tf.autograph.experimental.do_not_convert(fn)
