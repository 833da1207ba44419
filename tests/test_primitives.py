"""Every fundl primitive, one row each, through the checks every primitive must pass.

A new primitive gets all of them by adding a row to ``PRIMITIVES_UNDER_TEST`` (as
optax's tests do for optimizers): the gradient check (hand rule vs autodiff and finite
differences in float64; grad of grad, vmap and jit in the slow run), NaN propagating
exactly as the reference propagates it, dtypes kept, integer inputs refused with the
primitive's name, and options that are hashable static arguments.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import activations as A
from fundl import gradcheck
from fundl import losses as L
from fundl import nn
from fundl.nn import dense, pool
from fundl.rules import Primitive


def _normal(seed, shape, scale=1.0):
    return scale * jax.random.normal(jax.random.key(seed), shape)


def _probabilities(seed, shape):
    return jax.random.uniform(jax.random.key(seed), shape, minval=0.05, maxval=0.95)


def _labels(seed, m, k):
    return jax.random.randint(jax.random.key(seed), (m,), 0, k)


def _soft(seed, shape):
    return jax.nn.softmax(_normal(seed, shape))


class Case(NamedTuple):
    """One row: a primitive, example inputs, options, and which input is the data."""

    id: str
    fn: Primitive
    inputs: Callable[[], tuple[Any, ...]]  # float32 example inputs
    options: dict = {}
    data: int = 0  # the input that gets a NaN and must be floating


PRIMITIVES_UNDER_TEST = [
    Case("sigmoid", A.sigmoid, lambda: (_normal(0, (2, 3), 2.0),)),
    Case("tanh", A.tanh, lambda: (_normal(1, (2, 3), 2.0),)),
    Case("relu", A.relu, lambda: (_normal(2, (2, 3), 2.0),)),
    Case("leaky_relu", A.leaky_relu, lambda: (_normal(3, (2, 3), 2.0),), {"negative_slope": 0.2}),
    Case("elu", A.elu, lambda: (_normal(4, (2, 3), 2.0),), {"alpha": 0.5}),
    Case("gelu", A.gelu, lambda: (_normal(5, (2, 3), 2.0),)),
    Case("gelu_tanh", A.gelu, lambda: (_normal(6, (2, 3), 2.0),), {"approximate": True}),
    Case("silu", A.silu, lambda: (_normal(7, (2, 3), 2.0),)),
    Case("softplus", A.softplus, lambda: (_normal(8, (2, 3), 2.0),)),
    Case("identity", A.identity, lambda: (_normal(9, (2, 3)),)),
    Case("softmax", A.softmax, lambda: (_normal(10, (2, 3), 2.0),), {"axis": 0}),
    Case("log_softmax", A.log_softmax, lambda: (_normal(11, (2, 3), 2.0),)),
    Case("mse", L.mse, lambda: (_normal(12, (3, 2)), _normal(13, (3, 2)))),
    Case(
        "binary_cross_entropy",
        L.binary_cross_entropy,
        lambda: (_probabilities(14, (3, 2)), _probabilities(15, (3, 2))),
        {"reduction": "sum"},
    ),
    Case(
        "binary_cross_entropy_with_logits",
        L.binary_cross_entropy_with_logits,
        lambda: (_normal(16, (3, 2), 2.0), _probabilities(17, (3, 2))),
        {"reduction": "none"},
    ),
    Case(
        "categorical_cross_entropy",
        L.categorical_cross_entropy,
        # example 0's label is class 1, where the NaN test puts its NaN: with integer labels
        # only the labelled class's probability enters the loss (under jit XLA drops the
        # 0·NaN of the other classes)
        lambda: (_soft(18, (3, 4)), _labels(19, 3, 4).at[0].set(1)),
    ),
    Case(
        "categorical_cross_entropy_soft",
        L.categorical_cross_entropy,
        lambda: (_soft(20, (3, 4)), _soft(21, (3, 4))),
        {"reduction": "none"},
    ),
    Case(
        "softmax_cross_entropy",
        L.softmax_cross_entropy,
        lambda: (_normal(22, (3, 4), 2.0), _labels(23, 3, 4)),
        {"label_smoothing": 0.1},
    ),
    Case(
        "softmax_cross_entropy_soft",
        L.softmax_cross_entropy,
        lambda: (_normal(24, (3, 4), 2.0), _soft(25, (3, 4))),
        {"reduction": "sum"},
    ),
    Case(
        "l2_penalty",
        L.l2_penalty,
        lambda: ({"W": _normal(26, (3, 2)), "b": _normal(27, (3,))}, jnp.float32(0.3)),
    ),
    Case(
        "l2_penalty_mask",
        L.l2_penalty,
        lambda: ({"W": _normal(28, (3, 2)), "b": _normal(29, (3,))}, jnp.float32(0.3)),
        {"include": {"W": True, "b": True}},  # a pytree option: hashed by its leaves
    ),
    Case("dense", dense, lambda: (_normal(30, (2, 3, 4)), _normal(31, (5, 4)), _normal(32, (5,)))),
    Case(
        "dropout",
        nn.dropout,
        # a fixed mask (as a fixed key draws): element (0, 1), where the NaN test puts
        # its NaN, is kept
        lambda: (
            _normal(33, (3, 4)),
            jax.random.bernoulli(jax.random.key(34), 0.7, (3, 4)).at[0, 1].set(True),
        ),
        {"rate": 0.3},
    ),
    Case(
        "batch_norm",
        nn.batch_norm,
        lambda: (_normal(35, (5, 3), 2.0) + 1.0, 1.0 + _normal(36, (3,), 0.3), _normal(37, (3,))),
    ),
    Case(
        "batch_norm_nhwc",
        nn.batch_norm,
        lambda: (_normal(38, (2, 3, 2, 3)), 1.0 + _normal(39, (3,), 0.3), _normal(40, (3,))),
        {"eps": 1e-3},
    ),
    Case(
        "batch_norm_inference",
        nn.batch_norm_inference,
        lambda: (
            _normal(41, (4, 3), 2.0),
            _normal(42, (3,)),
            jnp.abs(_normal(43, (3,))) + 0.5,
            1.0 + _normal(44, (3,), 0.3),
            _normal(45, (3,)),
        ),
    ),
    Case(
        "layer_norm",
        nn.layer_norm,
        lambda: (_normal(46, (3, 4), 2.0) + 1.0, 1.0 + _normal(47, (4,), 0.3), _normal(48, (4,))),
    ),
    Case(
        "rms_norm",
        nn.rms_norm,
        lambda: (_normal(49, (3, 4), 2.0), 1.0 + _normal(50, (4,), 0.3)),
    ),
    # pooling: fundl.nn.max_pool and avg_pool resolve their options (SAME to pairs) and
    # call these primitives; normal inputs have no ties, so finite differences hold
    Case(
        "max_pool_2d_overlapping",
        pool._max_pool,
        lambda: (_normal(51, (2, 4, 4, 2)),),
        {"window": (2, 2), "stride": (1, 1), "padding": ((1, 0), (0, 1))},
    ),
    Case(
        "avg_pool_1d_same",
        pool._avg_pool,
        lambda: (_normal(52, (2, 6, 3)),),
        # "SAME" for n = 6, k = 3, s = 2: padding (0, 1); the last window holds 2 elements
        {"window": (3,), "stride": (2,), "padding": ((0, 1),), "count_include_pad": False},
    ),
    Case("global_avg_pool", nn.global_avg_pool, lambda: (_normal(53, (2, 3, 3, 2)),)),
    # conv takes its options normalized (conv1d/conv2d make them): stride 2 with 'SAME'
    # padding on 5x5 is ((1, 1), (1, 1)) for a 3x3 kernel
    Case(
        "conv2d_stride2_same_bias",
        nn.conv,
        lambda: (_normal(51, (2, 5, 5, 2)), _normal(52, (3, 3, 2, 3), 0.5), _normal(53, (3,))),
        {"stride": (2, 2), "padding": ((1, 1), (1, 1))},
    ),
    Case(  # width 4 + 1 padded, kernel 2, stride 2: the last column under no window
        "conv2d_grouped_dilated",
        nn.conv,
        lambda: (_normal(54, (1, 5, 4, 4)), _normal(55, (2, 2, 2, 4), 0.5)),
        {"stride": (1, 2), "padding": ((0, 1), (1, 0)), "dilation": (2, 1), "groups": 2},
    ),
    Case(  # E[0, 1], where the NaN test puts its NaN: row 0 is looked up twice, row 3 never
        "embedding",
        nn.embedding,
        lambda: (_normal(56, (4, 3)), jnp.array([[1, 0, 1], [2, 0, 2]])),
    ),
    Case(  # causal, a padding mask, and query row 2 of head 1 that sees no key at all
        "dot_product_attention",
        nn.dot_product_attention,
        lambda: (
            _normal(57, (2, 3, 2)),
            _normal(58, (2, 4, 2)),
            _normal(59, (2, 4, 3)),
            jnp.ones((2, 3, 4), bool).at[0, :, 3].set(False).at[1, 2].set(False),
        ),
        {"causal": True},
    ),
    Case(  # positions (2, 3): one row per batch element, a gap and a repeat
        "rotary",
        nn.rotary,
        lambda: (_normal(66, (2, 3, 4)), jnp.array([[0, 1, 2], [5, 5, 9]])),
        {"base": 100.0},
    ),
    Case(
        "rnn",
        nn.rnn,
        lambda: (
            _normal(60, (2, 3, 2)),
            _normal(61, (2, 3), 0.5),
            _normal(62, (3, 2), 0.5),
            _normal(63, (3, 3), 0.5),
            _normal(64, (3,), 0.3),
            _normal(65, (3,), 0.3),
        ),
    ),
    Case(  # sequence 0 has 2 real steps of 3, read backward from its last real one
        "lstm_masked_reverse",
        nn.lstm,
        lambda: (
            _normal(73, (2, 3, 2)),
            _normal(74, (2, 3), 0.5),
            _normal(75, (2, 3), 0.5),
            _normal(76, (12, 2), 0.5),
            _normal(77, (12, 3), 0.5),
            _normal(78, (12,), 0.3),
            _normal(79, (12,), 0.3),
            jnp.array([[True, True, False], [True, True, True]]),
        ),
        {"reverse": True},
    ),
    Case(
        "gru",
        nn.gru,
        lambda: (
            _normal(80, (2, 3, 2)),
            _normal(81, (2, 3), 0.5),
            _normal(82, (9, 2), 0.5),
            _normal(83, (9, 3), 0.5),
            _normal(84, (9,), 0.3),
            _normal(85, (9,), 0.3),
        ),
    ),
]
IDS = [case.id for case in PRIMITIVES_UNDER_TEST]


def _call(case):
    return lambda *inputs: case.fn(*inputs, **case.options)


def test_every_primitive_has_a_row():
    in_table = {case.fn for case in PRIMITIVES_UNDER_TEST}
    declared = {getattr(m, n) for m in (A, L, nn) for n in m.__all__}
    primitives = {obj for obj in declared if isinstance(obj, Primitive)}
    assert primitives - in_table == set()


@pytest.mark.parametrize("case", PRIMITIVES_UNDER_TEST, ids=IDS)
def test_hand_rule_equals_autodiff_and_finite_differences(case):
    """The first-order checks, in every run; the slow test below adds grad of grad, vmap
    and jit (a third of the cost is here, the rest there)."""
    report = gradcheck.check(_call(case), *case.inputs(), hvp=False, jit=False, vmap=False)
    report.assert_passed()
    assert {row.check for row in report.rows} == {
        "forward: hand vs reference",
        "vjp: hand vs autodiff",
        "vjp: hand vs finite diff",
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", PRIMITIVES_UNDER_TEST, ids=IDS)
def test_gradcheck_passes_every_check(case):
    report = gradcheck.check(_call(case), *case.inputs())
    report.assert_passed()
    assert {row.check.split(":")[0] for row in report.rows} == {
        "forward",
        "vjp",
        "hvp",
        "jit",
        "vmap",
    }


def _with_nan(tree):
    leaves, treedef = jax.tree.flatten(tree)
    first = leaves[0].reshape(-1).at[1].set(jnp.nan).reshape(leaves[0].shape)
    return jax.tree.unflatten(treedef, [first, *leaves[1:]])


def _assert_same_nans_and_values(a, b, what):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=f"{what}: NaN positions")
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=what)


# The hand-written rule and the reference compute the same values by other products: held to
# each other to float32 rounding, at full float32 matmul precision on every backend.
@pytest.mark.usefixtures("highest_precision")
@pytest.mark.parametrize("case", PRIMITIVES_UNDER_TEST, ids=IDS)
def test_nan_propagates_as_the_reference_propagates_it(case):
    inputs = list(case.inputs())
    inputs[case.data] = _with_nan(inputs[case.data])
    fn = _call(case)

    def forward_and_vjp(*inputs):  # one compiled program per mode, not op by op
        out, pullback = jax.vjp(fn, *inputs)
        return out, pullback(jax.tree.map(jnp.ones_like, out))[case.data]

    out, grads = jax.jit(forward_and_vjp)(*inputs)
    with __import__("fundl").reference_mode():
        ref_out, ref_grads = jax.jit(forward_and_vjp)(*inputs)
    assert np.isnan(np.asarray(jax.tree.leaves(out)[0], np.float64)).any()  # NaN in, NaN out
    _assert_same_nans_and_values(out, ref_out, "forward")
    _assert_same_nans_and_values(grads, ref_grads, "vjp")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("case", PRIMITIVES_UNDER_TEST, ids=IDS)
def test_low_precision_dtype_is_kept(case, dtype):
    def low(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    inputs = jax.tree.map(low, list(case.inputs()))  # strict promotion: no mixed dtypes
    fn = _call(case)

    def scalar(data):
        args = list(inputs)
        args[case.data] = data
        return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(fn(*args)))

    out = jax.jit(fn)(*inputs)
    assert {x.dtype for x in jax.tree.leaves(out)} == {jnp.dtype(dtype)}
    grads = jax.jit(jax.grad(scalar))(inputs[case.data])
    assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(dtype)}


@pytest.mark.parametrize("case", PRIMITIVES_UNDER_TEST, ids=IDS)
def test_integer_data_is_refused_naming_the_primitive(case):
    inputs = list(case.inputs())
    inputs[case.data] = jax.tree.map(lambda x: x.astype(jnp.int32), inputs[case.data])
    with pytest.raises(TypeError, match=rf"^{case.fn.name}: .*floating"):
        _call(case)(*inputs)


@pytest.mark.parametrize("case", PRIMITIVES_UNDER_TEST, ids=IDS)
def test_options_are_static_and_traced_once(case):
    traces = []

    def fn(*inputs):
        traces.append(1)
        return _call(case)(*inputs)

    jitted = jax.jit(fn)
    first = jitted(*case.inputs())
    again = jitted(*case.inputs())
    assert len(traces) == 1
    jax.tree.map(np.testing.assert_array_equal, first, again)
