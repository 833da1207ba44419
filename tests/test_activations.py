"""fundl.activations: values against float64 formulas, rules against autodiff and FD."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fundl import activations as A
from fundl import gradcheck

_erf = np.vectorize(math.erf)
_C = math.sqrt(2 / math.pi)


def _np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _np_softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# name -> (float64 forward, float64 derivative or None)
FORMULAS = {
    "sigmoid": (_np_sigmoid, lambda z: _np_sigmoid(z) * (1 - _np_sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.01 * z), lambda z: np.where(z > 0, 1.0, 0.01)),
    "elu": (
        lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
        lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0))),
    ),
    "gelu": (
        lambda z: 0.5 * z * (1 + _erf(z / math.sqrt(2))),
        lambda z: (
            0.5 * (1 + _erf(z / math.sqrt(2))) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        ),
    ),
    "silu": (
        lambda z: z * _np_sigmoid(z),
        lambda z: _np_sigmoid(z) * (1 + z * (1 - _np_sigmoid(z))),
    ),
    "softplus": (lambda z: np.logaddexp(z, 0), _np_sigmoid),
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "softmax": (_np_softmax, None),
    "log_softmax": (lambda z: np.log(_np_softmax(z)), None),
}
ELEMENTWISE = [n for n, (_, d) in FORMULAS.items() if d is not None]

values = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
    elements=st.floats(-6, 6, width=32, allow_subnormal=False),  # XLA flushes subnormals
)


@pytest.mark.parametrize("name", sorted(FORMULAS))
@given(z=values)
def test_forward_matches_float64_formula(name, z):
    forward, _ = FORMULAS[name]
    np.testing.assert_allclose(
        A.get(name)(jnp.asarray(z)), forward(z.astype(np.float64)), rtol=2e-6, atol=2e-6
    )


@pytest.mark.parametrize("name", ELEMENTWISE)
@given(z=values)
def test_derivative_matches_formula_and_autodiff(name, z):
    _, derivative = FORMULAS[name]
    prim = A.get(name)
    hand = jax.jit(prim.derivative)(jnp.asarray(z))  # compiled: eager runs op by op
    np.testing.assert_allclose(hand, derivative(z.astype(np.float64)), rtol=2e-6, atol=2e-6)
    public = getattr(A, f"{prim.name}_derivative")
    assert public is prim.derivative
    autodiff = jax.jit(jax.vmap(jax.grad(prim.reference)))(jnp.asarray(z).ravel())
    np.testing.assert_allclose(hand.ravel(), autodiff, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FORMULAS))
@settings(max_examples=3)
@given(z=values)
def test_gradcheck_passes_at_any_shape(name, z):
    # Every new shape compiles anew: first order and finite differences here, at a few
    # shapes; tests/test_primitives.py runs every check (hvp, vmap, jit) at a fixed one.
    gradcheck.check(A.get(name), jnp.asarray(z), jit=False, hvp=False, vmap=False).assert_passed()


def test_option_values_are_used():
    z = jnp.array([-2.0, 3.0])
    np.testing.assert_allclose(A.leaky_relu(z, negative_slope=0.2), [-0.4, 3.0])
    np.testing.assert_allclose(A.elu(z, alpha=0.5), [0.5 * math.expm1(-2), 3.0], rtol=1e-6)
    u = _C * (z + 0.044715 * z**3)
    np.testing.assert_allclose(A.gelu(z, approximate=True), 0.5 * z * (1 + np.tanh(u)), rtol=1e-6)
    x = jnp.array([[1.0, 2.0], [3.0, 5.0]])
    np.testing.assert_allclose(
        A.softmax(x, axis=0), _np_softmax(np.asarray(x, np.float64), axis=0), rtol=1e-6
    )
    np.testing.assert_allclose(
        A.gelu.derivative(z, approximate=True),
        jax.vmap(jax.grad(lambda v: A.gelu.reference(v, approximate=True)))(z),
        rtol=1e-6,
    )


def test_residuals_are_the_cheap_ones():
    z = jnp.array([-1.0, 0.0, 2.0])
    _, mask = A.relu_fwd(z)
    assert mask.dtype == jnp.bool_
    _, mask = A.leaky_relu_fwd(z, negative_slope=0.01)
    assert mask.dtype == jnp.bool_
    for prim in (A.sigmoid, A.tanh, A.elu):
        out, residual = prim.fwd(z, **prim.options())
        np.testing.assert_array_equal(residual, out)  # the output, not the input
    assert A.identity_fwd(z)[1] is None


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu_gradient_far_below_zero_is_exact_to_a_rounding_of_alpha(alpha):
    # From the saved output, α e^z = elu(z) + α: absolute error within float32's rounding
    # of α (the residual stays the output); elu.derivative works from z, to relative 1e-6.
    z = jnp.array([-10.0, -15.0, -17.0, -20.0, -30.0, -80.0])
    grad = jax.jit(jax.grad(lambda z: jnp.sum(A.elu(z, alpha=alpha))))(z)
    exact = alpha * np.exp(np.asarray(z, np.float64))
    np.testing.assert_allclose(grad, exact, rtol=0, atol=alpha * 2.0**-23)
    np.testing.assert_allclose(A.elu.derivative(z, alpha=alpha), exact, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_stable_at_extreme_inputs(name):
    z = jnp.array([-1e4, -100.0, -50.0, 0.0, 50.0, 100.0, 1e4])
    prim = A.get(name)
    out = prim(z)
    grad = jax.grad(lambda z: jnp.sum(prim(z) * jnp.arange(7.0)))(z)
    assert bool(jnp.all(jnp.isfinite(out))), out
    assert bool(jnp.all(jnp.isfinite(grad))), grad


def test_extreme_values_are_right():
    z = jnp.array([-1e4, 1e4])
    np.testing.assert_array_equal(A.sigmoid(z), [0.0, 1.0])
    np.testing.assert_array_equal(A.softplus(z), [0.0, 1e4])
    np.testing.assert_array_equal(A.softmax(z), [0.0, 1.0])
    np.testing.assert_array_equal(A.log_softmax(z), [-2e4, 0.0])
    np.testing.assert_array_equal(A.tanh(z), [-1.0, 1.0])
    np.testing.assert_array_equal(A.elu(z), [-1.0, 1e4])
    np.testing.assert_array_equal(A.gelu(z), [0.0, 1e4])
    np.testing.assert_array_equal(jax.grad(lambda z: A.sigmoid(z).sum())(z), [0.0, 0.0])


def test_derivative_at_zero_follows_the_stated_convention():
    zero = jnp.zeros(1)
    for prim, expected in [
        (A.relu, 0.0),
        (A.leaky_relu, 0.01),
        (A.elu, 1.0),
        (A.sigmoid, 0.25),
        (A.softplus, 0.5),
    ]:
        hand = jax.grad(lambda z: prim(z).sum())(zero)
        np.testing.assert_allclose(hand, [expected], rtol=1e-6)
        np.testing.assert_allclose(prim.derivative(zero), [expected], rtol=1e-6)


def test_softmax_rows_sum_to_one():
    z = jax.random.normal(jax.random.key(2), (4, 6)) * 10
    np.testing.assert_allclose(A.softmax(z).sum(-1), np.ones(4), rtol=1e-6)


def test_get_and_names():
    assert A.get("relu") is A.relu
    assert A.get(A.tanh) is A.tanh
    assert A.get("swish") is A.silu
    assert "leaky_relu" in A.names()


def test_unknown_activation_name():
    with pytest.raises(
        ValueError, match=r"activation: unknown activation 'rleu'; known: elu, gelu, "
    ):
        A.get("rleu")


def test_bad_inputs():
    with pytest.raises(TypeError, match=r"relu: expected a floating-point input, got dtype int32"):
        A.relu(jnp.arange(3))
    with pytest.raises(
        ValueError, match=r"softmax: axis 2 is out of range for input of shape \(2, 3\)"
    ):
        A.softmax(jnp.ones((2, 3)), axis=2)
    with pytest.raises(
        ValueError, match=r"elu: alpha must be a finite number in \(0, inf\); got -1"
    ):
        A.elu(jnp.ones(3), alpha=-1)
    with pytest.raises(
        ValueError, match=r"leaky_relu: negative_slope must be a finite number .*; got nan"
    ):
        A.leaky_relu(jnp.ones(3), negative_slope=float("nan"))
    with pytest.raises(ValueError, match=r"gelu: approximate must be True or False, got 'tanh'"):
        A.gelu(jnp.ones(3), approximate="tanh")
    with pytest.raises(
        TypeError,
        match=r"leaky_relu: unknown option\(s\) \['slope'\]; allowed options: negative_slope",
    ):
        A.leaky_relu(jnp.ones(3), slope=0.1)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: A.sigmoid(None),
            TypeError,
            r"sigmoid: expected a floating-point input, got NoneType",
        ),
        (
            lambda: A.identity(None),
            TypeError,
            r"identity: expected a floating-point input, got NoneType",
        ),
        (lambda: A.relu([1.0, 2.0]), TypeError, r"relu: expected .* got list; pass jnp.asarray"),
        (
            lambda: A.tanh({"z": jnp.ones(2)}),
            TypeError,
            r"tanh: expected a floating-point input, got dict",
        ),
        (
            lambda: A.softmax(jnp.ones((2, 3)), axis=True),
            ValueError,
            r"softmax: axis must be an int .*got True",
        ),
        (
            lambda: A.softmax(jnp.ones((2, 3)), axis=-1.0),
            ValueError,
            r"softmax: axis must be an int .*got -1.0",
        ),
        (
            lambda: A.log_softmax(jnp.ones((2, 3)), axis="a"),
            ValueError,
            r"log_softmax: axis must be an int",
        ),
        (
            lambda: A.softmax(jnp.ones((2, 0))),
            ValueError,
            r"softmax: axis -1 of the input of shape \(2, 0\) is empty",
        ),
        (
            lambda: A.relu_derivative(jnp.arange(3)),
            TypeError,
            r"relu_derivative: expected a floating-point input, got dtype int32",
        ),
        (
            lambda: A.sigmoid_derivative(None),
            TypeError,
            r"sigmoid_derivative: expected a floating-point input",
        ),
        (
            lambda: A.elu_derivative(jnp.ones(2), alpha=-1.0),
            ValueError,
            r"elu_derivative: alpha must be a finite number in \(0, inf\)",
        ),
        (
            lambda: A.leaky_relu_derivative(jnp.ones(2), negative_slope=float("nan")),
            ValueError,
            r"leaky_relu_derivative: negative_slope must be a finite",
        ),
        (
            lambda: A.gelu_derivative(jnp.ones(2), approximate="tanh"),
            ValueError,
            r"gelu_derivative: approximate must be True or False",
        ),
    ],
)
def test_bad_input_table(call, error, match):
    with pytest.raises(error, match=match):
        call()
