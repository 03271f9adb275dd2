"""The seed's models: summary tables, shared tower, inputs, multi-output, instrumentation."""

import pathlib
import re

import keras
import numpy as np
import pytest

from trainer.model import builders as m

TABLES = pathlib.Path(__file__).parent / "data" / "seed_summary_tables.md"
ROW = re.compile(r"^\| ([^|]+?) \((\w+)[^)]*\) \| \(([^)]*)\) \| ([\d,]+) \|")


def sgd():
    """The optimizer of the tests that compile a model: the model is their subject, and with
    Adam in Keras' compiled train step this module took 10.3 CPU-seconds, 4.2 with SGD."""
    return keras.optimizers.SGD(0.05)


def seed_table(heading: str) -> list[tuple[str, str, tuple, int]]:
    """Rows (name, type, shape, params) of one table of the seed's summary file."""
    text = TABLES.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            name, kind, shape, params = match.groups()
            dims = tuple(None if d.strip() == "None" else int(d) for d in shape.split(","))
            rows.append((name.strip(), kind, dims, int(params.replace(",", ""))))
    return rows


def model_rows(model):
    return [
        (layer.name, type(layer).__name__, tuple(layer.output.shape), layer.count_params())
        for layer in model.layers
    ]


def same_name(table_name: str, layer_name: str) -> bool:
    # Keras needs unique layer names; the seed printed Keras' numbered auto-names
    # (concatenate_14, concatenate_15). Ours say which module they close: concatenate_i1.
    return layer_name == table_name or (
        table_name == "concatenate" and re.fullmatch(r"concatenate_i\d", layer_name)
    )


def test_single_image_network_matches_seed_table():
    expected = seed_table("## Single-image network")
    net = m.create_inception_network((32, 32), 3, 0.0)
    got = model_rows(net)
    assert len(got) == len(expected) == 21
    for (tname, tkind, tshape, tparams), (name, kind, shape, params) in zip(expected, got):
        assert same_name(tname, name), (tname, name)
        assert (tkind, tshape, tparams) == (kind, shape, params), name
    assert net.count_params() == 1_090_761
    assert sum(int(np.prod(w.shape)) for w in net.trainable_weights) == 1_090_761


def test_subnetwork_is_network_cut_after_d1():
    expected = seed_table("## Single-image network")[:19]  # up to and including D1
    tower = m.create_inception_subnetwork((32, 32), 3, 0.0)
    got = model_rows(tower)
    assert [(k, s, p) for _, k, s, p in got] == [(k, s, p) for _, k, s, p in expected]
    assert tower.output.shape == (None, 100)
    assert tower.count_params() == 1_088_720


def test_dual_network_matches_seed_table():
    net = m.create_dual_input_network((32, 32), 3, 0.0)
    got = model_rows(net)
    expected = seed_table("## Dual-input classifier")
    assert [r[0] for r in got] == [
        "input1",
        "input2",
        "inception_tower",
        "concatenate",
        "D3",
        "output",
    ]
    assert [r[0] for r in expected] == [
        "input1",
        "input2",
        "the sub-network",
        "concatenate",
        "D3",
        "output",
    ]
    for (_, _, tshape, tparams), (_, _, shape, params) in zip(expected, got):
        assert (tshape, tparams) == (shape, params)
    assert net.count_params() == 1_092_761
    assert len(net.non_trainable_weights) == 0
    # The SAME tower object serves both inputs: one node per call on one layer.
    tower = net.get_layer("inception_tower")
    assert len(tower._inbound_nodes) == 2
    assert {id(v) for v in net.trainable_variables} >= {id(v) for v in tower.trainable_variables}


def test_stride_after_module_builds_and_trains_one_step():
    net = m.create_dual_input_network((32, 32), 3, 1e-4, stride_placement="after")
    tower = net.get_layer("inception_tower")
    # No stride inside the module: every branch keeps the input resolution ...
    assert tower.get_layer("convA_i1").output.shape == (None, 32, 32, 10)
    assert tower.get_layer("convC1_i2").output.shape == (None, 16, 16, 40)
    # ... and a pooling after the concatenation halves it.
    assert tower.get_layer("stride_i2").output.shape == (None, 8, 8, 160)
    net.compile(optimizer=sgd(), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = [rng.random((8, 32, 32, 3), "float32") for _ in range(2)]
    y = rng.integers(0, 2, (8, 1)).astype("float32")
    before = [w.copy() for w in net.get_weights()]
    loss = net.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))


def test_global_max_head_option():
    net = m.create_inception_network((32, 32), 3, None, head="global_max")
    assert net.get_layer("global_max_pooling").output.shape == (None, 160)
    assert net.get_layer("D1").count_params() == 160 * 100 + 100


def test_towers_share_weights():
    """A gradient step on a loss of input2 alone changes what the model says for input1."""
    net = m.create_dual_input_network((32, 32), 3, 0.0)
    tower = net.get_layer("inception_tower")
    rng = np.random.default_rng(1)
    x1 = rng.random((4, 32, 32, 3), "float32")
    x2 = rng.random((4, 32, 32, 3), "float32")
    import tensorflow as tf

    emb1_before = tower(x1).numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(tower(x2)))  # depends on input2's path only
    grads = tape.gradient(loss, tower.trainable_variables)
    keras.optimizers.SGD(0.1).apply(grads, tower.trainable_variables)
    emb1_after = tower(x1).numpy()
    assert np.abs(emb1_after - emb1_before).max() > 1e-4
    # Both calls of the tower read the same variables: the dual model sees the change too.
    out_a = net([x1, x1]).numpy()
    manual = net.get_layer("output")(
        net.get_layer("D3")(np.concatenate([emb1_after, emb1_after], axis=1))
    ).numpy()
    np.testing.assert_allclose(out_a, manual, rtol=1e-5, atol=1e-6)


def test_inputs_as_list_and_as_dict():
    net = m.create_dual_input_network((32, 32), 3, 0.0)
    rng = np.random.default_rng(2)
    x1 = rng.random((3, 32, 32, 3), "float32")
    x2 = rng.random((3, 32, 32, 3), "float32")
    as_list = net.predict([x1, x2], verbose=0)
    as_dict = net.predict({"input2": x2, "input1": x1}, verbose=0)
    swapped = net.predict([x2, x1], verbose=0)
    np.testing.assert_array_equal(as_list, as_dict)
    assert not np.allclose(as_list, swapped)  # the order of the pair matters


def test_multi_output_total_loss_is_weighted_sum():
    lam = 1e-3
    net = m.create_dual_input_network((32, 32), 3, lam, auxiliary_output=True)
    assert set(net.output_names) == {"output", "aux_output"}
    weights = {"output": 1.0, "aux_output": 0.3}
    net.compile(
        optimizer=sgd(),
        loss={"output": "binary_crossentropy", "aux_output": "binary_crossentropy"},
        loss_weights=weights,
    )
    rng = np.random.default_rng(3)
    x = {
        "input1": rng.random((8, 32, 32, 3), "float32"),
        "input2": rng.random((8, 32, 32, 3), "float32"),
    }
    y = rng.integers(0, 2, (8, 1)).astype("float32")
    # Expected total from the weights before the step, computed independently.
    pred = net(x)
    bce = keras.losses.BinaryCrossentropy()
    parts = {k: float(bce(y, pred[k])) for k in weights}
    reg = float(sum(net.losses))
    assert reg > 0
    expected = sum(weights[k] * parts[k] for k in weights) + reg
    logs = net.train_on_batch(x, {"output": y, "aux_output": y}, return_dict=True)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert logs["output_loss"] == pytest.approx(parts["output"], rel=1e-4)
    assert logs["aux_output_loss"] == pytest.approx(parts["aux_output"], rel=1e-4)


def test_instrumentation_a_matches_trained_b():
    model_a, model_b = m.create_instrumented_dual_network((32, 32), 3, 0.0)
    assert model_b.count_params() == 1_092_761
    model_b.compile(optimizer=sgd(), loss="binary_crossentropy")
    rng = np.random.default_rng(4)
    x = {
        "input1": rng.random((16, 32, 32, 3), "float32"),
        "input2": rng.random((16, 32, 32, 3), "float32"),
    }
    y = rng.integers(0, 2, (16, 1)).astype("float32")
    before = model_a(x)["output"].numpy()
    for _ in range(3):
        model_b.train_on_batch(x, y)
    after_b = model_b(x).numpy()
    seen = model_a(x)
    assert np.abs(after_b - before).max() > 1e-5  # training B changed A's prediction too
    np.testing.assert_allclose(seen["output"].numpy(), after_b, rtol=1e-6, atol=1e-7)
    expected_shapes = {
        "convA_i1": (16, 16, 10),
        "convB0_i1": (32, 32, 10),
        "convB1_i1": (16, 16, 10),
        "convC0_i1": (32, 32, 10),
        "convC1_i1": (16, 16, 10),
        "convD0_i1": (16, 16, 10),
        "concatenate_i1": (16, 16, 40),
        "convA_i2": (8, 8, 40),
        "convB0_i2": (16, 16, 40),
        "convB1_i2": (8, 8, 40),
        "convC0_i2": (16, 16, 40),
        "convC1_i2": (8, 8, 40),
        "convD0_i2": (8, 8, 40),
        "concatenate_i2": (8, 8, 160),
    }
    assert set(seen) == {"output"} | {
        f"{i}/{n}" for i in ("input1", "input2") for n in expected_shapes
    }
    for key, value in seen.items():
        if key != "output":
            assert value.shape[1:] == expected_shapes[key.split("/")[1]], key
    # The two towers saw different images, so their activations differ.
    assert not np.allclose(seen["input1/convA_i1"], seen["input2/convA_i1"])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"nfilters": (10, (10,), (10, 10), 10)}, "nfilters=(10, (10,), (10, 10), 10)"),
        ({"nfilters": (10, (10, 10), (10, -1), 10)}, "nfilters="),
        ({"activation": "swishy"}, "activation='swishy'"),
        ({"lambda_regularization": -0.5}, "lambda_regularization=-0.5"),
    ],
)
def test_module_bad_arguments(kwargs, fragment):
    args = {
        "nfilters": (10, (10, 10), (10, 10), 10),
        "activation": "elu",
        "lambda_regularization": 0.0,
        "name": "i1",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        m.inception_module(keras.Input((32, 32, 3)), **args)


@pytest.mark.parametrize(
    "builder",
    [m.create_inception_network, m.create_inception_subnetwork, m.create_dual_input_network],
)
def test_builders_bad_arguments(builder):
    with pytest.raises(ValueError, match=re.escape("image_size=(3, 32)")):
        builder((3, 32), 3, 0.0)
    with pytest.raises(ValueError, match="activation='nope'"):
        builder((32, 32), 3, 0.0, activation="nope")
    with pytest.raises(ValueError, match="lambda_regularization=-1"):
        builder((32, 32), 3, -1)
    with pytest.raises(ValueError, match="stride_placement='middle'"):
        builder((32, 32), 3, 0.0, stride_placement="middle")


def test_strided_pointwise_conv_equals_keras_and_trains_at_128px():
    """Our Conv2D computes a strided 1x1 convolution by sampling; results equal Keras' own,
    and the gradient at 128x128 (which crashes TF 2.21's oneDNN path) runs."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    x = rng.random((2, 33, 32, 3), "float32")  # odd and even sides
    ours = m.Conv2D(4, 1, strides=2, padding="same")
    theirs = keras.layers.Conv2D(4, 1, strides=2, padding="same")
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    assert ours(x).shape == (2, 17, 16, 4)
    big = tf.constant(rng.random((4, 128, 128, 3), "float32"))
    with tf.GradientTape() as tape:
        tape.watch(big)
        loss = tf.reduce_sum(tf.square(ours(big)))
    grads = tape.gradient(loss, [big, ours.kernel])
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    net = m.create_inception_network((32, 32), 3, 0.0)
    assert all(type(layer) is m.Conv2D for layer in net.layers if "conv" in layer.name)
