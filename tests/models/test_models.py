"""fundl.models: parameter counts against the published figures, shapes, and one real run each.

Counts and shapes come from ``jax.eval_shape`` (tracing, no compiling), so even VGG-16's
138 M parameters cost no memory. The numeric checks run tiny configurations.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import fundl
from fundl import losses, models, nn


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _shapes(model, input_shape=None):
    return jax.eval_shape(lambda: model.init_with_state(jax.random.key(0), input_shape))


@pytest.mark.parametrize(
    "build, input_shape, expected",
    [
        # LeCun et al. 1998: "about 60,000" (61,706 with C3 fully connected, counted by hand:
        # 156 + 2,416 + 48,120 + 10,164 + 850)
        (lambda: models.lenet5(), None, 61_706),
        # He et al. 2016, table 6: ResNet-20 0.27 M and ResNet-56 0.85 M (their zero-padding
        # shortcuts; our 1×1 projections add 2,560 weights and 192 BN parameters)
        (lambda: models.resnet20(), None, 272_474),
        (lambda: models.resnet_cifar(56), None, 855_770),
        # Simonyan & Zisserman 2015, table 2: 138 M (torchvision's vgg16: 138,357,544)
        (lambda: models.vgg("vgg16"), None, 138_357_544),
        # Szegedy et al. 2015, block 3a on 28×28×192: 163,696 counted by hand (the paper's
        # table gives 159 K, without biases and rounded)
        (lambda: models.inception_block(64, 96, 128, 16, 32, 32), (28, 28, 192), 163_696),
        # the paper's own 32×32 input with a VALID C1 (3 channels: C1 has 456 parameters)
        (lambda: models.lenet5(c1_padding="VALID", input_shape=(32, 32, 3)), None, 62_006),
    ],
    ids=["lenet5", "resnet20", "resnet56", "vgg16", "inception3a", "lenet5-32x32-valid"],
)
def test_parameter_count_matches_the_published_figure(build, input_shape, expected):
    params, _ = _shapes(build(), input_shape)
    assert _count(params) == expected


def test_resnet20_has_batch_norm_state_and_maps_images_to_logits():
    model = models.resnet20()
    params, state = _shapes(model)
    # 19 batch norms on the main path + 2 on the projections, each with mean and var
    assert len(jax.tree.leaves(state)) == 2 * 21
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    out, new_state = jax.eval_shape(
        lambda p, s, x: model.apply_with_state(p, s, x, train=True), params, state, x
    )
    assert out.shape == (2, 10)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)


def test_stage_widths_and_strides_shape_the_resnet():
    model = models.resnet_cifar(8, widths=(4, 8, 16), input_shape=(16, 16, 3))
    shapes = [(16, 16, 3)]
    for layer in model.layers:
        shapes.append(tuple(layer.output_shape(shapes[-1])))
    # stem, bn, relu, stage 1 (stride 1), stage 2 and 3 (stride 2), pool, dense
    assert shapes[4:7] == [(16, 16, 4), (8, 8, 8), (4, 4, 16)]
    assert shapes[-1] == (10,)


def _lenet_by_hand(params, x, c1_padding="SAME"):
    """LeNet-5 written directly in lax, as an independent reference of the composition."""

    def conv(x, p, padding):
        y = lax.conv_general_dilated(
            x, p["W"], (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + p["b"].reshape(1, 1, 1, -1)

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    x = pool(jax.nn.relu(conv(x, params["conv1"], c1_padding)))
    x = pool(jax.nn.relu(conv(x, params["conv2"], "VALID")))
    x = x.reshape(x.shape[0], -1)
    for name in ("dense1", "dense2"):
        x = jax.nn.relu(x @ params[name]["W"].T + params[name]["b"][None])
    return x @ params["dense3"]["W"].T + params["dense3"]["b"][None]


def test_lenet5_computes_what_its_table_says(x64):
    with x64():
        model = models.lenet5()
        params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), model.init(jax.random.key(1)))
        x = jax.random.uniform(jax.random.key(2), (2, 28, 28, 1), jnp.float64)
        chex.assert_trees_all_close(
            jax.jit(model.apply)(params, x),
            jax.jit(_lenet_by_hand)(params, x),
            rtol=1e-10,
            atol=1e-12,
        )


def test_lenet5_on_32x32_shapes_follow_the_c1_padding():
    # SAME keeps 32×32, so C5 sees 6×6×16; VALID is the paper's 32×32 network (5×5×16)
    for padding, features in (("SAME", 6 * 6 * 16), ("VALID", 5 * 5 * 16)):
        model = models.lenet5(c1_padding=padding, input_shape=(32, 32, 3))
        params, _ = _shapes(model)
        assert params["dense1"]["W"].shape == (120, features)
        x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
        by_hand = jax.eval_shape(functools.partial(_lenet_by_hand, c1_padding=padding), params, x)
        assert jax.eval_shape(model.apply, params, x).shape == by_hand.shape == (2, 10)
    # the smallest sizes the docstring allows: S4 keeps one pixel
    assert models.lenet5(input_shape=(12, 12, 1)).output_shape((12, 12, 1)) == (10,)
    assert models.lenet5(c1_padding="VALID").output_shape((16, 16, 1)) == (10,)
    with pytest.raises(ValueError, match="MaxPool2D"):
        models.lenet5(input_shape=(11, 11, 1)).output_shape((11, 11, 1))


def test_a_small_resnet_gradient_by_hand_equals_autodiff_in_training_mode(x64):
    """Convolutions, batch norm in training mode, projections, pooling: the whole model's
    gradient through fundl's hand-written rules against JAX autodiff of the references,
    in float64 (finite differences and grad-of-grad run per layer in the tables)."""
    with x64():
        model = models.resnet_cifar(8, 3, widths=(2, 3, 3), input_shape=(6, 6, 2))
        params, state = model.init_with_state(jax.random.key(3))
        params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), params)
        state = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), state)
        x = jax.random.normal(jax.random.key(4), (4, 6, 6, 2), jnp.float64)
        y = jnp.array([0, 1, 2, 1])

        def loss(params):
            logits, _ = model.apply_with_state(params, state, x, train=True)
            return losses.softmax_cross_entropy(logits, y)

        hand = jax.jit(jax.grad(loss))(params)
        with fundl.reference_mode():
            reference = jax.jit(jax.grad(loss))(params)
        chex.assert_trees_all_close(hand, reference, rtol=1e-9, atol=1e-12)
        assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(hand))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: models.resnet_cifar(21), r"resnet_cifar: depth must be 6n \+ 2"),
        (lambda: models.resnet_cifar(20, widths=(16, 32)), r"resnet_cifar: widths must be .*three"),
        (lambda: models.resnet_cifar(20, widths=(16, 0, 64)), r"resnet_cifar: widths must be"),
        (lambda: models.vgg("vgg17"), r"vgg: unknown config 'vgg17'"),
        (lambda: models.vgg(None), r"vgg: config must be \(channels, n_convs\) pairs, got None"),
        (lambda: models.vgg(hidden=(64, 0)), r"vgg: hidden must be a positive integer, got 0"),
        (lambda: models.lenet5(pool="sum"), r"lenet5: pool"),
        (lambda: models.lenet5(dropout=1.5), r"lenet5: dropout"),
        (lambda: models.lenet5(c1_padding="same"), r"lenet5: c1_padding must be one of 'SAME'"),
        (lambda: models.inception_block(4, 3, 0, 2, 2, 2), r"inception_block: c3"),
        (lambda: models.basic_block(8, 2), r"basic_block: stride 2 .* pass projection=True"),
    ],
)
def test_bad_configs_are_refused_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_vgg_hidden_must_be_a_tuple_of_widths():
    # an int was iterated over: "TypeError: 'int' object is not iterable", naming nothing
    with pytest.raises(TypeError, match=r"vgg: hidden must be .* a tuple of ints .*got 4096"):
        models.vgg(hidden=4096)


def test_a_block_that_changes_channels_without_projection_says_so():
    block = models.basic_block(8)
    with pytest.raises(ValueError, match="projection"):
        block.init(jax.random.key(0), (8, 8, 4))


def test_batch_norm_after_a_convolution_in_training_and_evaluation(x64):
    """conv → BN: training normalizes each channel over (N, H, W) and moves the running
    statistics toward the batch's; evaluation uses those statistics, whatever the batch."""
    with x64():
        net = nn.Sequential([nn.Conv2D(3, 3, padding="SAME"), nn.BatchNorm(momentum=0.8)])
        params, state = net.init_with_state(jax.random.key(0), (5, 5, 2))
        params, state = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), (params, state))
        params["batch_norm1"]["gamma"] = jnp.array([1.0, 2.0, 0.5])
        params["batch_norm1"]["beta"] = jnp.array([0.0, -1.0, 3.0])
        x = jax.random.normal(jax.random.key(1), (4, 5, 5, 2), jnp.float64) * 3.0 + 1.0
        z = nn.conv2d(x, params["conv1"]["W"], params["conv1"]["b"], padding="SAME")
        mu, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
        y, new_state = net.apply_with_state(params, state, x, train=True)
        gamma, beta = params["batch_norm1"]["gamma"], params["batch_norm1"]["beta"]
        chex.assert_trees_all_close(y.mean(axis=(0, 1, 2)), beta, atol=1e-12)
        chex.assert_trees_all_close(y.std(axis=(0, 1, 2)), gamma * jnp.sqrt(var / (var + 1e-5)))
        n = 4 * 5 * 5
        chex.assert_trees_all_close(new_state["batch_norm1"]["mean"], 0.2 * mu)
        chex.assert_trees_all_close(new_state["batch_norm1"]["var"], 0.8 + 0.2 * var * n / (n - 1))
        s = new_state["batch_norm1"]
        for batch in (x, x[:1] * 10.0):
            z = nn.conv2d(batch, params["conv1"]["W"], params["conv1"]["b"], padding="SAME")
            per_channel = lambda v: v.reshape(1, 1, 1, -1)
            scale = per_channel(gamma / jnp.sqrt(s["var"] + 1e-5))
            expected = (z - per_channel(s["mean"])) * scale + per_channel(beta)
            y_eval, same = net.apply_with_state(params, new_state, batch, train=False)
            chex.assert_trees_all_close(y_eval, expected, rtol=1e-12)
            chex.assert_trees_all_equal(same, new_state)
