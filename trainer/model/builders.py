"""The seed's models, built with the Keras Functional API.

The function names are the seed's (``inception_module``, ``create_inception_network``,
``create_inception_subnetwork``, ``create_dual_input_network``) so a reader of the slides finds
them. With the seed configuration the builders reproduce ``shared/seed/summary_tables.md``.
This module builds models only: no data, no training loop, no distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers, ops

from trainer.model.options import HEADS, SEED_FILTERS, STRIDE_PLACEMENTS

CONV_PREFIXES = ("convA_", "convB0_", "convB1_", "convC0_", "convC1_", "convD0_", "concatenate_")


@keras.saving.register_keras_serializable(package="trainer")
class Conv2D(layers.Conv2D):
    """keras.layers.Conv2D, computing a strided 1x1 convolution as sampling then stride 1.

    With a 1x1 kernel and 'same' padding, stride s reads exactly every s-th pixel, so
    sampling (a 1x1 average pool of stride s) then a stride-1 convolution is identical.
    Why: TF 2.21's oneDNN kernels crash (segfault) in the gradient of a strided 1x1
    convolution over few channels on AVX-512 CPUs, measured from 96x96 inputs on (the seed's
    convA and convD0 are such layers). Weights, shapes and names are unchanged.
    """

    def convolution_op(self, inputs, kernel):
        pointwise = tuple(self.kernel_size) == (1, 1) and tuple(self.dilation_rate) == (1, 1)
        if (
            pointwise
            and tuple(self.strides) != (1, 1)
            and self.padding == "same"
            and self.data_format == "channels_last"
        ):
            # A 1x1 average pool with stride s samples every s-th pixel; its gradient is
            # oneDNN's pooling backward, measured ~7% faster per training step at 32x32 than
            # a strided slice (StridedSliceGrad is a slow generic kernel).
            sampled = ops.average_pool(inputs, 1, strides=self.strides, padding="valid")
            return ops.conv(
                sampled,
                kernel,
                strides=1,
                padding="valid",
                data_format=self.data_format,
            )
        return super().convolution_op(inputs, kernel)


def _check_nfilters(nfilters) -> tuple:
    """Returns nfilters as (a, (b0, b1), (c0, c1), d) of positive ints, or raises ValueError."""
    try:
        a, (b0, b1), (c0, c1), d = nfilters
        values = (a, b0, b1, c0, c1, d)
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"nfilters={nfilters!r} is invalid: expected (A, (B0, B1), (C0, C1), D0) of positive "
            "integers, e.g. (10, (10, 10), (10, 10), 10)."
        )
    return (a, (b0, b1), (c0, c1), d)


def _check_activation(activation):
    """Raises ValueError naming the activation if Keras does not know it."""
    if activation is None or callable(activation):
        return activation
    try:
        keras.activations.get(activation)
    except ValueError:
        raise ValueError(
            f"activation={activation!r} is not a Keras activation (try 'elu', 'relu', 'gelu')."
        ) from None
    return activation


def _regularizer(lambda_regularization):
    """L2 kernel regularizer, or None when lambda is 0 or None."""
    if lambda_regularization is None:
        return None
    if (
        not isinstance(lambda_regularization, (int, float))
        or isinstance(lambda_regularization, bool)
        or not math.isfinite(lambda_regularization)
        or lambda_regularization < 0
    ):
        raise ValueError(
            f"lambda_regularization={lambda_regularization!r} is invalid: it must be a finite "
            "number >= 0 (0 or None turns L2 regularization off)."
        )
    if lambda_regularization == 0:
        return None
    return keras.regularizers.L2(float(lambda_regularization))


def _check_stride_placement(stride_placement: str) -> None:
    if stride_placement not in STRIDE_PLACEMENTS:
        raise ValueError(
            f"stride_placement={stride_placement!r} is unknown: use one of {STRIDE_PLACEMENTS}."
        )


def inception_module(
    input_tensor,
    nfilters,
    activation,
    lambda_regularization,
    name: str,
    strides: int = 2,
    stride_placement: str = "branch",
):
    """One Inception module: 1x1 | 1x1->3x3 | 1x1->5x5 | 3x3 max-pool->1x1, concatenated.

    Args:
      input_tensor: a Keras tensor (batch, height, width, channels).
      nfilters: (A, (B0, B1), (C0, C1), D0) filter counts of the four branches.
      activation: activation of every convolution (a Keras activation name or callable).
      lambda_regularization: L2 factor on the kernels; 0 or None turns it off.
      name: suffix of the layer names (``convA_<name>`` ...).
      strides: spatial stride of the module.
      stride_placement: "branch" strides each branch's last layer (the seed's code);
        "after" keeps the module at full resolution and strides with a max-pool after the
        concatenation (the seed's "in my implementation" variant).

    Returns:
      The concatenated output tensor, named ``concatenate_<name>``.
    """
    (a, (b0, b1), (c0, c1), d) = _check_nfilters(nfilters)
    _check_activation(activation)
    _check_stride_placement(stride_placement)
    if not isinstance(strides, int) or strides < 1:
        raise ValueError(f"strides={strides!r} is invalid: it must be an integer >= 1.")
    branch_strides = strides if stride_placement == "branch" else 1

    def conv(filters, kernel, stride, layer_name):
        return Conv2D(
            filters=filters,
            kernel_size=kernel,
            strides=stride,
            padding="same",
            activation=activation,
            kernel_regularizer=_regularizer(lambda_regularization),
            name=f"{layer_name}_{name}",
        )

    conv_b0 = conv(b0, 1, 1, "convB0")(input_tensor)
    conv_c0 = conv(c0, 1, 1, "convC0")(input_tensor)
    max_tensor = layers.MaxPooling2D(pool_size=3, strides=1, padding="same", name=f"MAX_{name}")(
        input_tensor
    )
    conv_a = conv(a, 1, branch_strides, "convA")(input_tensor)
    conv_b1 = conv(b1, 3, branch_strides, "convB1")(conv_b0)
    conv_c1 = conv(c1, 5, branch_strides, "convC1")(conv_c0)
    conv_d0 = conv(d, 1, branch_strides, "convD0")(max_tensor)
    output = layers.Concatenate(name=f"concatenate_{name}")([conv_a, conv_b1, conv_c1, conv_d0])
    if stride_placement == "after" and strides > 1:
        output = layers.MaxPooling2D(
            pool_size=strides, strides=strides, padding="same", name=f"stride_{name}"
        )(output)
    return output


def _check_image(image_size, n_channels, n_modules: int, strides: int) -> tuple[int, int]:
    """Validates (height, width) and channels; the image must survive every stride."""
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"image_size={image_size!r} is invalid: expected (height, width)."
        ) from None
    if not isinstance(n_channels, int) or n_channels < 1:
        raise ValueError(f"n_channels={n_channels!r} is invalid: it must be an integer >= 1.")
    reduction = strides**n_modules
    if min(height, width) < reduction:
        raise ValueError(
            f"image_size={tuple(image_size)!r} is too small for {n_modules} modules of stride "
            f"{strides}: each side must be at least {reduction} pixels."
        )
    return height, width


def _inception_trunk(
    input_tensor, lambda_regularization, activation, filters, stride_placement, head
):
    """The modules i1, i2, ... and the head that flattens them (shared by both builders)."""
    if head not in HEADS:
        raise ValueError(f"head={head!r} is unknown: use one of {HEADS}.")
    tensor = input_tensor
    for i, nfilters in enumerate(filters, start=1):
        tensor = inception_module(
            tensor,
            nfilters,
            activation,
            lambda_regularization,
            name=f"i{i}",
            stride_placement=stride_placement,
        )
    if head == "flatten":
        return layers.Flatten(name="flatten")(tensor)
    return layers.GlobalMaxPooling2D(name="global_max_pooling")(tensor)


def _dense(units, activation, lambda_regularization, name, dtype=None):
    return layers.Dense(
        units=units,
        activation=activation,
        kernel_regularizer=_regularizer(lambda_regularization),
        name=name,
        dtype=dtype,
    )


def _image_to_d1(
    image_size, n_channels, lambda_regularization, activation, filters, stride_placement, head
):
    """Input -> modules -> head -> D1: the part the single-image network and the tower share."""
    _check_activation(activation)
    _check_image(image_size, n_channels, len(filters), 2)
    input_tensor = keras.Input(shape=(*image_size, n_channels), name="input")
    tensor = _inception_trunk(
        input_tensor, lambda_regularization, activation, filters, stride_placement, head
    )
    return input_tensor, _dense(100, activation, lambda_regularization, "D1")(tensor)


def create_inception_network(
    image_size: Sequence[int],
    n_channels: int,
    lambda_regularization,
    activation="elu",
    *,
    filters=SEED_FILTERS,
    stride_placement: str = "branch",
    head: str = "flatten",
    name: str = "inception_network",
) -> keras.Model:
    """The seed's single-image classifier: modules i1, i2, head, D1(100), D2(20), sigmoid output."""
    input_tensor, dense1 = _image_to_d1(
        image_size, n_channels, lambda_regularization, activation, filters, stride_placement, head
    )
    tensor = _dense(20, activation, lambda_regularization, "D2")(dense1)
    # float32 output keeps the probability exact under a mixed-precision policy.
    output = _dense(1, "sigmoid", lambda_regularization, "output", dtype="float32")(tensor)
    return keras.Model(inputs=input_tensor, outputs=output, name=name)


def create_inception_subnetwork(
    image_size: Sequence[int],
    n_channels: int,
    lambda_regularization,
    activation="elu",
    *,
    filters=SEED_FILTERS,
    stride_placement: str = "branch",
    head: str = "flatten",
    name: str = "inception_tower",
) -> keras.Model:
    """The tower: the single-image network cut after D1 (output: a 100-d embedding)."""
    input_tensor, dense1 = _image_to_d1(
        image_size, n_channels, lambda_regularization, activation, filters, stride_placement, head
    )
    return keras.Model(inputs=input_tensor, outputs=dense1, name=name)


def _dual_inputs(image_size, n_channels):
    shape = (*image_size, n_channels)
    return keras.Input(shape=shape, name="input1"), keras.Input(shape=shape, name="input2")


def _dual_head(dense1, dense2, activation, lambda_regularization, auxiliary_output):
    """Concatenation, D3 and the sigmoid output; optionally the auxiliary output too."""
    concatenation = layers.Concatenate(name="concatenate")([dense1, dense2])
    dense3 = _dense(20, activation, lambda_regularization, "D3")(concatenation)
    output = _dense(1, "sigmoid", lambda_regularization, "output", dtype="float32")(dense3)
    if not auxiliary_output:
        return output
    # An auxiliary classifier straight on the joined embeddings (as GoogLeNet's side heads):
    # a second named output, so compiling takes a loss dict and loss_weights.
    aux = _dense(1, "sigmoid", lambda_regularization, "aux_output", dtype="float32")(concatenation)
    return {"output": output, "aux_output": aux}


def create_dual_input_network(
    image_size: Sequence[int],
    n_channels: int,
    lambda_regularization,
    activation="elu",
    *,
    filters=SEED_FILTERS,
    stride_placement: str = "branch",
    head: str = "flatten",
    auxiliary_output: bool = False,
    name: str = "dual_input_network",
) -> keras.Model:
    """Two images through the SAME tower (shared weights), concatenated, D3, sigmoid output.

    Inputs are named ``input1`` and ``input2``; the model accepts them as a list or a dict.
    With ``auxiliary_output=True`` the outputs are a dict ``{"output", "aux_output"}``.
    """
    tower = create_inception_subnetwork(
        image_size,
        n_channels,
        lambda_regularization,
        activation,
        filters=filters,
        stride_placement=stride_placement,
        head=head,
    )
    input1, input2 = _dual_inputs(image_size, n_channels)
    # One model object called twice: both paths use (and train) one set of weights.
    outputs = _dual_head(
        tower(input1), tower(input2), activation, lambda_regularization, auxiliary_output
    )
    return keras.Model(inputs=[input1, input2], outputs=outputs, name=name)


def internal_layer_names(tower: keras.Model) -> list[str]:
    """Names of the tower's convolution and concatenation layers, in build order."""
    return [layer.name for layer in tower.layers if layer.name.startswith(CONV_PREFIXES)]


def create_instrumented_dual_network(
    image_size: Sequence[int],
    n_channels: int,
    lambda_regularization,
    activation="elu",
    **kwargs,
) -> tuple[keras.Model, keras.Model]:
    """The seed's "Magic #3": model A exposes everything, model B (A nested) is trained.

    Returns:
      (model_a, model_b). Model A maps {"input1", "input2"} to a dict holding "output" (the
      prediction) and "<input>/<layer>" for every convolution and concatenation of the tower
      on each input. Model B wraps A and outputs only the prediction; train B, then ask A.
    """
    tower = create_inception_subnetwork(
        image_size, n_channels, lambda_regularization, activation, **kwargs
    )
    names = internal_layer_names(tower)
    # A second view of the same tower layers whose outputs include the internal tensors.
    probe = keras.Model(
        inputs=tower.input,
        outputs={"D1": tower.output, **{n: tower.get_layer(n).output for n in names}},
        name="inception_tower_probe",
    )
    input1, input2 = _dual_inputs(image_size, n_channels)
    seen1, seen2 = probe(input1), probe(input2)
    prediction = _dual_head(seen1["D1"], seen2["D1"], activation, lambda_regularization, False)
    outputs = {"output": prediction}
    for input_name, seen in (("input1", seen1), ("input2", seen2)):
        outputs.update({f"{input_name}/{n}": seen[n] for n in names})
    model_a = keras.Model(
        inputs={"input1": input1, "input2": input2}, outputs=outputs, name="instrumented_A"
    )
    b_input1, b_input2 = _dual_inputs(image_size, n_channels)
    b_outputs = model_a({"input1": b_input1, "input2": b_input2})["output"]
    model_b = keras.Model(
        inputs={"input1": b_input1, "input2": b_input2}, outputs=b_outputs, name="trained_B"
    )
    return model_a, model_b
