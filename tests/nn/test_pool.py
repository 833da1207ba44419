"""fundl.nn.pool: pooling against a naive NumPy loop (values, and gradients with the
first-maximum rule) and against autodiff of ``lax.reduce_window``; ties, NaN, global
pooling, flatten, the layers, and every error."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import gradcheck
from fundl.nn import (
    AvgPool1D,
    AvgPool2D,
    BatchNorm,
    Dense,
    Flatten,
    GlobalAvgPool,
    MaxPool1D,
    MaxPool2D,
    Parallel,
    Sequential,
    avg_pool,
    flatten,
    global_avg_pool,
    max_pool,
)
from fundl.nn.pool import _avg_pool, _max_pool


def _normal(seed, shape):
    """float32 test data drawn by NumPy (jax.random would compile a program per shape)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# --- a naive reference: loops over every window ------------------------------------------


def _pairs(padding, spatial, window, stride):
    """(lo, hi) per spatial dim, "SAME" by the XLA/TensorFlow rule."""
    d = len(window)
    if padding == "VALID":
        return [(0, 0)] * d
    if padding == "SAME":
        pairs = []
        for n, k, s in zip(spatial, window, stride):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pairs.append((total // 2, total - total // 2))
        return pairs
    if isinstance(padding, int):
        return [(padding, padding)] * d
    return [tuple(p) if isinstance(p, tuple) else (p, p) for p in padding]


def _naive(x, g, window, stride, padding):
    """{name: (y, dx)} for max pooling and both kinds of average pooling, by loops in
    float64; dx is the VJP with cotangent g. Max: the first maximum of the window's input
    elements in row-major order takes the gradient (padding never wins)."""
    d = len(window)
    stride = window if stride is None else stride
    stride = (stride,) * d if isinstance(stride, int) else stride
    batch_shape = x.shape[: x.ndim - d - 1]
    x = np.asarray(x, np.float64).reshape((-1,) + x.shape[x.ndim - d - 1 :])
    spatial = x.shape[1:-1]
    pads = _pairs(padding, spatial, window, stride)
    out = tuple(
        (n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(spatial, window, stride, pads)
    )
    g = np.asarray(g, np.float64).reshape((x.shape[0],) + out + x.shape[-1:])
    results = {name: (np.zeros(g.shape), np.zeros(x.shape)) for name in ("max", "avg", "avg_real")}
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[-1])):
        for i in np.ndindex(*out):
            cells = []  # the window's input positions, in row-major order
            for f in np.ndindex(*window):
                p = tuple(ii * s + ff - lo for ii, s, ff, (lo, _) in zip(i, stride, f, pads))
                if all(0 <= pp < n for pp, n in zip(p, spatial)):
                    cells.append((b, *p, c))
            values = [x[p] for p in cells]
            at = (b, *i, c)
            first = int(np.argmax(values))  # the first occurrence of the maximum
            results["max"][0][at] = values[first]
            results["max"][1][cells[first]] += g[at]
            for name, divisor in (("avg", math.prod(window)), ("avg_real", len(cells))):
                results[name][0][at] = sum(values) / divisor
                for p in cells:
                    results[name][1][p] += g[at] / divisor
    return {
        name: (y.reshape(batch_shape + y.shape[1:]), dx.reshape(batch_shape + dx.shape[1:]))
        for name, (y, dx) in results.items()
    }


# id, input shape, window, stride, padding, integer inputs (ties everywhere)
CONFIGS = [
    ("1d_valid_odd_size", (2, 7, 3), (2,), None, "VALID", False),
    ("1d_overlapping_padded_ties", (1, 6, 2), (3,), 1, 1, True),
    ("1d_same_stride_2", (2, 6, 1), (3,), 2, "SAME", False),
    ("2d_valid_odd_size", (2, 5, 5, 2), (2, 2), None, "VALID", False),
    ("2d_overlapping_padded", (1, 5, 5, 2), (3, 3), 2, 1, False),
    ("2d_same_mixed_stride", (1, 4, 5, 2), (2, 3), (1, 2), "SAME", False),
    ("2d_pairs_unbatched", (3, 4, 2), (2, 2), 1, ((1, 0), (0, 1)), False),
    ("2d_ties_two_batch_dims", (2, 1, 4, 4, 1), (2, 2), 1, "VALID", True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_against_a_naive_loop_and_autodiff_of_reduce_window(config, x64):
    _, shape, window, stride, padding, ties = config
    rng = np.random.default_rng(len(shape) + sum(shape))
    x_np = rng.integers(0, 3, shape).astype(np.float64) if ties else rng.normal(size=shape)
    pools = {
        "max": lambda x: max_pool(x, window, stride=stride, padding=padding),
        "avg": lambda x: avg_pool(x, window, stride=stride, padding=padding),
        "avg_real": lambda x: avg_pool(
            x, window, stride=stride, padding=padding, count_include_pad=False
        ),
    }

    def run(x, g):  # one compiled program: the hand rules, then autodiff of the references
        hand = {name: jax.vjp(pool, x) for name, pool in pools.items()}
        with fundl.reference_mode():
            ref = {name: jax.vjp(pool, x) for name, pool in pools.items()}
        return (
            {name: (y, pullback(g)[0]) for name, (y, pullback) in hand.items()},
            {name: (y, pullback(g)[0]) for name, (y, pullback) in ref.items()},
        )

    with x64():
        x = jnp.asarray(x_np)
        out_shape = jax.eval_shape(pools["max"], x).shape
        g_np = rng.normal(size=out_shape)
        hand, ref = jax.jit(run)(x, jnp.asarray(g_np))
    expected = _naive(x_np, g_np, window, stride, padding)
    for name in pools:
        assert hand[name][0].dtype == jnp.float64
        np.testing.assert_allclose(hand[name][0], expected[name][0], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(hand[name][1], expected[name][1], rtol=1e-12, atol=1e-12)
        # autodiff breaks ties as the hand rule does (XLA's select-and-scatter)
        np.testing.assert_allclose(hand[name][1], ref[name][1], rtol=1e-12, atol=1e-12)


def test_gradcheck_max_pool_1d_same_and_avg_pool_2d_without_padding_counts():
    x1 = _normal(0, (2, 7, 2))
    report = gradcheck.check(
        lambda x: max_pool(x, (3,), stride=2, padding="SAME"), x1, hvp=False, jit=False
    )
    report.assert_passed()
    x2 = _normal(1, (1, 4, 5, 2))
    report = gradcheck.check(
        lambda x: avg_pool(
            x, (3, 2), stride=(2, 1), padding=((1, 1), (1, 0)), count_include_pad=False
        ),
        x2,
        hvp=False,
        jit=False,
        vmap=False,
    )
    report.assert_passed()


# --- ties and NaN ---------------------------------------------------------------------


def _vjp_both(fn, x, g):
    """(hand-written VJP, autodiff of the reference) of fn at x for cotangent g."""

    def both(x, g):  # one compiled program
        hand = jax.vjp(fn, x)[1](g)[0]
        with fundl.reference_mode():
            return hand, jax.vjp(fn, x)[1](g)[0]

    return jax.tree.map(np.asarray, jax.jit(both)(x, g))


def test_ties_the_first_maximum_in_row_major_order_takes_the_whole_gradient():
    # a window of equal values: all of it to the window's first element
    hand, ref = _vjp_both(
        lambda x: max_pool(x, (2, 3)), jnp.ones((1, 2, 3, 1)), jnp.full((1, 1, 1, 1), 5.0)
    )
    np.testing.assert_array_equal(hand[0, :, :, 0], [[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(hand, ref)
    # overlapping windows [0 5 1], [5 1 5], [1 5 2]: the first 5 is the maximum of the
    # first two (the second window's tie goes to it too) and collects both gradients
    x = jnp.array([0.0, 5.0, 1.0, 5.0, 2.0]).reshape(1, 5, 1)
    g = jnp.array([1.0, 10.0, 100.0]).reshape(1, 3, 1)
    hand, ref = _vjp_both(lambda x: max_pool(x, (3,), stride=1), x, g)
    np.testing.assert_array_equal(hand.ravel(), [0.0, 11.0, 0.0, 100.0, 0.0])
    np.testing.assert_array_equal(hand, ref)


def test_a_nan_makes_its_windows_nan_and_the_gradient_follows_autodiff():
    # XLA's rule, walking the window: the chosen element stays unless it is not >= the
    # next; NaN >= v is false, so a NaN is passed over by the element after it
    x = jnp.array([1.0, jnp.nan, 3.0, 2.0, jnp.nan, 0.0]).reshape(1, 6, 1)
    max_y, avg_y = jax.jit(lambda x: (max_pool(x, (3,)), avg_pool(x, (2,))))(x)
    np.testing.assert_array_equal(np.isnan(np.asarray(max_y)).ravel(), [True, True])
    np.testing.assert_array_equal(np.isnan(np.asarray(avg_y)).ravel(), [True, False, True])
    hand, ref = _vjp_both(lambda x: max_pool(x, (3,)), x, jnp.ones((1, 2, 1)))
    np.testing.assert_array_equal(hand.ravel(), [0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(hand, ref)


def test_the_max_rule_saves_a_byte_per_output_not_the_input():
    x = jax.ShapeDtypeStruct((2, 6, 6, 3), jnp.float32)
    options = {"window": (2, 2), "stride": (2, 2), "padding": ((0, 0), (0, 0))}
    _, residuals = jax.eval_shape(lambda x: _max_pool.fwd(x, **options), x)
    (position,) = jax.tree.leaves(residuals)  # the input's shape is static: no array
    assert position.dtype == jnp.uint8 and position.shape == (2, 3, 3, 3)
    _, residuals = jax.eval_shape(lambda x: _avg_pool.fwd(x, **options, count_include_pad=False), x)
    assert jax.tree.leaves(residuals) == []  # average pooling keeps no array at all


# --- global average pooling and flatten --------------------------------------------------


def test_global_avg_pool_is_the_spatial_mean_and_spreads_the_gradient_evenly():
    x = _normal(2, (2, 3, 4, 5))
    g = _normal(3, (2, 5))
    layer = GlobalAvgPool(spatial_dims=1)  # (..., W, C): here two batch dims

    def run(x, g):
        y, pullback = jax.vjp(global_avg_pool, x)
        return y, pullback(g)[0], layer.apply({}, x)

    y, dx, y_layer = jax.jit(run)(x, g)
    np.testing.assert_allclose(y, np.asarray(x).mean(axis=(1, 2)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        dx, np.broadcast_to(np.asarray(g)[:, None, None, :] / 12, x.shape), rtol=1e-6
    )
    np.testing.assert_allclose(y_layer, np.asarray(x).mean(axis=2), rtol=1e-6, atol=1e-7)
    assert layer.output_shape((4, 5)) == (5,) and layer.output_shape((2, 3, 4, 5)) == (2, 3, 5)


def test_flatten_merges_the_trailing_axes_in_row_major_order():
    x = jnp.arange(24.0).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(flatten(x), np.arange(24.0).reshape(2, 12))
    assert flatten(x, -2).shape == (2, 3, 4) and flatten(x, 1).shape == (2, 12)
    assert flatten(x, 0).shape == (24,) and flatten(x, -1).shape == x.shape
    assert Flatten().output_shape((3, 2, 2)) == (12,)  # without the batch dim, as init gets it
    assert Flatten(-2).output_shape((2, 3, 2, 2)) == (2, 3, 4)
    np.testing.assert_array_equal(Flatten().apply({}, x), flatten(x))


# --- the layers --------------------------------------------------------------------------


def test_layers_compute_the_functions_and_infer_their_shapes():
    x1 = _normal(5, (2, 9, 3))
    x2 = _normal(6, (2, 5, 7, 3))
    cases = [
        (
            MaxPool1D(3, stride=2, padding="SAME"),
            0,
            lambda x: max_pool(x, (3,), stride=2, padding="SAME"),
        ),
        (
            AvgPool1D(2, padding=1, count_include_pad=False),
            0,
            lambda x: avg_pool(x, (2,), padding=1, count_include_pad=False),
        ),
        (MaxPool2D(2), 1, lambda x: max_pool(x, (2, 2))),
        (
            AvgPool2D((2, 3), stride=(1, 2), padding="SAME"),
            1,
            lambda x: avg_pool(x, (2, 3), stride=(1, 2), padding="SAME"),
        ),
    ]

    def run(xs):  # one compiled program: each layer, and the function it stands for
        return [(layer.apply({}, xs[i]), fn(xs[i])) for layer, i, fn in cases]

    for (layer, i, _), (y, expected) in zip(cases, jax.jit(run)((x1, x2))):
        x = (x1, x2)[i]
        assert layer.init(0, x.shape[1:]) == {}
        np.testing.assert_array_equal(y, expected)
        assert layer.output_shape(x.shape) == y.shape
        assert layer.output_shape(x.shape[1:]) == y.shape[1:]
    # the formula o = ⌊(n + lo + hi − k)/s⌋ + 1, and SAME's ⌈n/s⌉
    assert MaxPool2D(3, stride=2, padding=((1, 0), (2, 2))).output_shape((8, 9, 4)) == (4, 6, 4)
    assert AvgPool1D(4, stride=3, padding="SAME").output_shape((10, 2)) == (4, 2)


def test_configs_are_normalized_hashable_and_read_as_written():
    assert MaxPool2D(2) == MaxPool2D((2, 2)) and hash(MaxPool2D(2)) == hash(MaxPool2D([2, 2]))
    assert MaxPool2D(2, stride=1) != MaxPool2D(2)
    assert repr(MaxPool2D(2)) == "MaxPool2D((2, 2))"
    assert repr(AvgPool1D(3, stride=1, padding=1, count_include_pad=False)) == (
        "AvgPool1D((3,), stride=(1,), padding=((1, 1),), count_include_pad=False)"
    )
    assert (
        repr(Flatten(-2)) == "Flatten(start_axis=-2)" and repr(GlobalAvgPool()) == "GlobalAvgPool()"
    )
    assert {MaxPool1D(2).kind, AvgPool2D(2).kind, GlobalAvgPool.kind, Flatten.kind} == {
        "max_pool",
        "avg_pool",
        "global_avg_pool",
        "flatten",
    }


@pytest.mark.usefixtures("highest_precision")  # hand rules and autodiff agree in float32
def test_pooling_composes_in_sequential_and_parallel():
    model = Sequential(
        [MaxPool2D(2), BatchNorm(), "relu", Flatten(), Dense(3)], input_shape=(6, 6, 4)
    )
    params, state = model.init_with_state(0)
    assert params["dense1"]["W"].shape == (3, 36) and model.names[0] == "max_pool1"
    x = _normal(7, (2, 6, 6, 4))

    def loss(params, x):
        y, _ = model.apply_with_state(params, state, x, train=True)
        return jnp.sum(y**2)

    def grads(params, x):  # the hand rules, and autodiff of the references
        hand = jax.grad(loss, argnums=(0, 1))(params, x)
        with fundl.reference_mode():
            return hand, jax.grad(loss, argnums=(0, 1))(params, x)

    hand, ref = jax.jit(grads)(params, x)
    chex.assert_trees_all_close(hand, ref, rtol=1e-5, atol=1e-6)
    assert model.output_shape() == (3,)
    both = Parallel([MaxPool2D(2), AvgPool2D(2)])
    y, expected = jax.jit(
        lambda x: (
            both.apply({}, x),
            jnp.concatenate([max_pool(x, (2, 2)), avg_pool(x, (2, 2))], -1),
        )
    )(x)
    chex.assert_trees_all_equal(y, expected)
    assert both.output_shape((6, 6, 4)) == (3, 3, 8)


# --- errors -----------------------------------------------------------------------------

_X = jnp.ones((2, 4, 4, 3))
_ERRORS = [
    # functions: hyperparameters
    (
        "int_window",
        lambda: max_pool(_X, 2),
        r"^max_pool: window must be a tuple of positive ints.*got 2$",
    ),
    (
        "zero_window",
        lambda: avg_pool(_X, (0, 2)),
        r"^avg_pool: window must be a positive integer, got 0",
    ),
    (
        "stride_rank",
        lambda: max_pool(_X, (2, 2), stride=(1, 1, 1)),
        r"^max_pool: stride must be a positive int or 2 positive ints .*got \(1, 1, 1\)",
    ),
    (
        "negative_stride",
        lambda: max_pool(_X, (2, 2), stride=-1),
        r"^max_pool: stride must be a positive integer, got -1",
    ),
    (
        "lowercase_same",
        lambda: max_pool(_X, (2, 2), padding="same"),
        r"^max_pool: padding must be 'SAME', 'VALID', a non-negative int, 2 such ints or 2 \(lo, hi\) pairs, got 'same'",
    ),
    (
        "padding_pairs_rank",
        lambda: max_pool(_X, (2, 2), padding=((1, 1),)),
        r"^max_pool: padding must be .*got \(\(1, 1\),\)",
    ),
    (
        "padding_triple",
        lambda: max_pool(_X, (2, 2), padding=((1, 1, 1), 0)),
        r"^max_pool: padding must be",
    ),
    (
        "padding_too_large",
        lambda: avg_pool(_X, (2, 2), padding=2),
        r"^avg_pool: padding must be smaller than the window on each side.*got padding \(\(2, 2\), \(2, 2\)\) for window \(2, 2\)",
    ),
    (
        "count_include_pad",
        lambda: avg_pool(_X, (2, 2), count_include_pad=1),
        r"^avg_pool: count_include_pad must be True or False, got 1",
    ),
    # functions: the input
    (
        "rank",
        lambda: max_pool(jnp.ones((4, 3)), (2, 2)),
        r"^max_pool: expected an input \(\.\.\., H, W, C\) for the 2-D window \(2, 2\), got shape \(4, 3\)",
    ),
    (
        "window_too_large",
        lambda: avg_pool(_X, (5, 2)),
        r"^avg_pool: the window \(5, 2\) is larger than the input's spatial dims \(4, 4\) padded by \(\(0, 0\), \(0, 0\)\) \(input shape \(2, 4, 4, 3\)\)",
    ),
    (
        "window_too_large_padded",
        lambda: max_pool(_X, (7, 7), padding=1),
        r"^max_pool: the window \(7, 7\) is larger",
    ),
    (
        "global_rank",
        lambda: global_avg_pool(jnp.ones((4, 3))),
        r"^global_avg_pool: expected an input \(N, \*spatial, C\) with at least one spatial dim, got shape \(4, 3\)",
    ),
    (
        "flatten_axis",
        lambda: flatten(_X, 4),
        r"^flatten: start_axis must be an axis of the input, in \[-4, 3\] for shape \(2, 4, 4, 3\), got 4",
    ),
    ("flatten_bool", lambda: flatten(_X, True), r"^flatten: start_axis must be an axis"),
    # the primitives take resolved options only
    (
        "primitive_stride_none",
        lambda: _max_pool(_X, window=(2, 2), stride=None, padding=((0, 0), (0, 0))),
        r"^_max_pool: expected resolved options .*as max_pool passes them.*stride=None",
    ),
    (
        "primitive_same",
        lambda: _avg_pool(_X, window=(2, 2), stride=(2, 2), padding="SAME"),
        r"^_avg_pool: expected resolved options",
    ),
    (
        "primitive_no_window",
        lambda: _max_pool(_X),
        r"^_max_pool: window must be a tuple of positive ints",
    ),
    # layers: hyperparameters, when built
    (
        "layer_window",
        lambda: MaxPool2D((2, 2, 2)),
        r"^MaxPool2D: window must be a positive int or 2 positive ints \(one per spatial dim\), got \(2, 2, 2\)",
    ),
    (
        "layer_stride",
        lambda: AvgPool1D(2, stride=0),
        r"^AvgPool1D: stride must be a positive integer, got 0",
    ),
    (
        "layer_padding",
        lambda: MaxPool1D(2, padding="FULL"),
        r"^MaxPool1D: padding must be 'SAME', 'VALID'.*got 'FULL'",
    ),
    (
        "layer_padding_large",
        lambda: AvgPool2D(3, padding=(1, 3)),
        r"^AvgPool2D: padding must be smaller than the window",
    ),
    (
        "layer_count",
        lambda: AvgPool2D(2, count_include_pad="no"),
        r"^AvgPool2D: count_include_pad must be True or False",
    ),
    (
        "flatten_positive",
        lambda: Flatten(1),
        r"^Flatten: start_axis must be a negative int .*got 1",
    ),
    (
        "global_dims",
        lambda: GlobalAvgPool(spatial_dims=0),
        r"^GlobalAvgPool: spatial_dims must be a positive integer, got 0",
    ),
    # layers: the input, named after the layer
    (
        "layer_rank",
        lambda: MaxPool2D(2).apply({}, jnp.ones((4, 3))),
        r"^MaxPool2D\(\(2, 2\)\): expected an input \(\.\.\., H, W, C\)",
    ),
    (
        "layer_too_large",
        lambda: AvgPool1D(5).output_shape((4, 3)),
        r"^AvgPool1D\(\(5,\)\): the window \(5,\) is larger than the input's spatial dims \(4,\)",
    ),
    (
        "layer_global_rank",
        lambda: GlobalAvgPool().output_shape((4, 3)),
        r"^GlobalAvgPool\(\): expected an input \(\.\.\., H, W, C\), got shape \(4, 3\)",
    ),
    (
        "layer_flatten_rank",
        lambda: Flatten(-3).apply({}, jnp.ones((4, 3))),
        r"^Flatten\(\): start_axis=-3 needs an input with at least 3 dims, got shape \(4, 3\)",
    ),
]


@pytest.mark.parametrize("call, pattern", [e[1:] for e in _ERRORS], ids=[e[0] for e in _ERRORS])
def test_bad_options_and_inputs_raise_value_errors_naming_the_function(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda x: max_pool(x, (2, 2)), "max_pool"),
        (lambda x: avg_pool(x, (2, 2)), "avg_pool"),
        (global_avg_pool, "global_avg_pool"),
        (lambda x: MaxPool2D(2).apply({}, x), r"MaxPool2D\(\(2, 2\)\)"),
        (lambda x: GlobalAvgPool().apply({}, x), r"GlobalAvgPool\(\)"),
    ],
    ids=["max_pool", "avg_pool", "global_avg_pool", "MaxPool2D", "GlobalAvgPool"],
)
def test_integer_inputs_are_refused(call, name):
    # a dtype error is a TypeError, as everywhere in fundl (_validate.check_floating)
    with pytest.raises(
        TypeError, match=rf"^{name}: expected a floating-point input, got dtype int32"
    ):
        call(jnp.ones((2, 4, 4, 3), jnp.int32))
