"""Names of the model's choices, importable without TensorFlow.

The flag parser (trainer.config) needs them before TensorFlow loads, so that a bad flag is
answered in a fraction of a second; trainer.model.builders checks its arguments against the
same names.
"""

STRIDE_PLACEMENTS = ("branch", "after")
HEADS = ("flatten", "global_max")
