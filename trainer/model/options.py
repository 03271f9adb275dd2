"""Names of the model's choices, importable without TensorFlow.

The flag parser (trainer.config) needs them before TensorFlow loads, so that a bad flag is
answered in a fraction of a second; trainer.model.builders checks its arguments against the
same names.
"""

STRIDE_PLACEMENTS = ("branch", "after")
HEADS = ("flatten", "global_max")


# The seed's filters: module i1 then module i2, each (A, (B0, B1), (C0, C1), D0).
SEED_FILTERS = ((10, (10, 10), (10, 10), 10), (40, (40, 40), (40, 40), 40))
D1_UNITS = 100  # the tower's first dense layer (the seed's D1)
MODULE_STRIDE = 2


def d1_parameters(image_size, head: str, filters=SEED_FILTERS) -> int:
    """Weights of the tower's first dense layer, the one that grows with the image: with the
    flatten head it sees every position of the last module ('same' padding: each stride-2
    module rounds the side up), with global max pooling only its channels."""
    a, (_, b1), (_, c1), d = filters[-1]
    features = a + b1 + c1 + d
    if head == "flatten":
        height, width = image_size
        for _ in filters:
            height, width = -(-height // MODULE_STRIDE), -(-width // MODULE_STRIDE)
        features *= height * width
    return features * D1_UNITS + D1_UNITS
