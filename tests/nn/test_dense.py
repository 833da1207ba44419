"""fundl.nn.dense: the dense primitive's rule and the Dense layer."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundl import gradcheck, initializers
from fundl.nn import Dense, dense


def test_forward_is_x_wt_plus_b_in_float64(f32_tol):
    x = np.random.default_rng(0).normal(size=(5, 3))
    W = np.random.default_rng(1).normal(size=(4, 3))
    b = np.random.default_rng(2).normal(size=4)
    np.testing.assert_allclose(
        dense(jnp.asarray(x), jnp.asarray(W), jnp.asarray(b)), x @ W.T + b, **f32_tol(1e-5, 1e-6)
    )


def test_backward_is_the_notes_algebra(f32_tol):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x, W, b = jax.random.normal(kx, (6, 3)), jax.random.normal(kw, (4, 3)), jnp.zeros(4)
    dZ = jax.random.normal(kg, (6, 4))
    _, pullback = jax.vjp(dense, x, W, b)
    dx, dW, db = pullback(dZ)
    tol = f32_tol(1e-5, 1e-6)  # float32 products, against products computed another way
    np.testing.assert_allclose(dW, dZ.T @ x, **tol)  # dW = dZᵀ A_prev
    np.testing.assert_allclose(db, dZ.sum(0), rtol=1e-5)  # db = Σ dZ
    np.testing.assert_allclose(dx, dZ @ W, **tol)  # dA_prev = dZ W


@pytest.mark.slow
@settings(max_examples=3)  # each example compiles new shapes
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    n_in=st.integers(1, 4),
    n_out=st.integers(1, 4),
    bias=st.booleans(),
)
def test_gradcheck_any_leading_dims(lead, n_in, n_out, bias):
    kx, kw, kb = jax.random.split(jax.random.key(len(lead) + 10 * n_in + 100 * n_out), 3)
    x = jax.random.normal(kx, (*lead, n_in))
    W = jax.random.normal(kw, (n_out, n_in))
    b = jax.random.normal(kb, (n_out,))
    if bias:
        gradcheck.check(dense, x, W, b, jit=False).assert_passed()
    else:
        gradcheck.check(lambda x, W: dense(x, W), x, W, jit=False).assert_passed()


def test_layer_init_shapes_and_initializers():
    layer = Dense(3)
    params = layer.init(jax.random.key(0), (8, 2))
    chex.assert_shape(params["W"], (3, 2))
    chex.assert_shape(params["b"], (3,))
    np.testing.assert_array_equal(params["b"], np.zeros(3))
    np.testing.assert_array_equal(
        params["W"], initializers.he_normal(jax.random.split(jax.random.key(0))[0], (3, 2))
    )
    custom = Dense(
        3,
        w_init=initializers.ones,
        b_init=initializers.ones,
        use_bias=True,
        param_dtype=jnp.bfloat16,
    )
    params = custom.init(jax.random.key(0), (2,))
    assert params["W"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(params["b"], np.ones(3))
    assert "b" not in Dense(3, use_bias=False).init(jax.random.key(0), (2,))


class TestApply(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_apply_matches_formula_and_shapes(self):
        layer = Dense(4)
        params = layer.init(jax.random.key(1), (3,))
        params["b"] = jnp.arange(4.0)
        x = jax.random.normal(jax.random.key(2), (2, 5, 3))
        out = self.variant(layer.apply)(params, x)
        chex.assert_shape(out, (2, 5, 4))
        chex.assert_trees_all_close(out, x @ params["W"].T + params["b"][None, None, :], rtol=1e-6)
        assert layer.output_shape((2, 5, 3)) == (2, 5, 4)
        assert jax.eval_shape(layer.apply, params, x).shape == out.shape


def test_layer_is_hashable_and_static():
    assert hash(Dense(3)) == hash(Dense(3))
    layer = Dense(2)
    params = layer.init(jax.random.key(0), (3,))
    out = jax.jit(lambda l, p, x: l.apply(p, x), static_argnums=0)(layer, params, jnp.ones((1, 3)))
    chex.assert_shape(out, (1, 2))


def test_mismatched_input_width():
    layer = Dense(3)
    params = layer.init(jax.random.key(0), (2,))
    with pytest.raises(
        ValueError,
        match=r"dense: expected input with last dim 2 \(W has shape \(3, 2\)\), got shape \(4, 5\)",
    ):
        layer.apply(params, jnp.ones((4, 5)))
    with pytest.raises(ValueError, match=r"dense: expected b of shape \(3,\), got shape \(2,\)"):
        dense(jnp.ones((4, 2)), params["W"], jnp.ones(2))
    with pytest.raises(TypeError, match=r"dense: expected a floating-point input, got dtype int32"):
        dense(jnp.ones((4, 2), jnp.int32), params["W"])


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match=r"Dense: n_out must be a positive integer, got 0"):
        Dense(0)
    with pytest.raises(ValueError, match=r"Dense: n_out must be a positive integer, got 2.5"):
        Dense(2.5)
    with pytest.raises(TypeError, match=r"Dense: w_init must be an initializer function, got 'he'"):
        Dense(2, w_init="he")
    with pytest.raises(ValueError, match=r"Dense: use_bias must be True or False, got 1"):
        Dense(2, use_bias=1)
    with pytest.raises(ValueError, match=r"Dense: param_dtype must be a floating dtype"):
        Dense(2, param_dtype=jnp.int32)


def test_params_of_another_layer_are_refused_naming_the_leaf():
    x = jnp.ones((5, 2))
    with pytest.raises(
        ValueError,
        match=r"Dense\(3\): missing params\['W'\]; missing params\['b'\] \(for inputs of "
        r"shape \(5, 2\) it takes params\['W'\], params\['b'\]\). Are these another model's",
    ):
        Dense(3).apply({}, x)
    wide = Dense(16).init(jax.random.key(0), (2,))
    with pytest.raises(
        ValueError,
        match=r"Dense\(3\): params\['W'\] has shape \(16, 2\); for inputs of shape \(5, 2\) "
        r"it expects \(3, 2\)",
    ):
        Dense(3).apply(wide, x)
    with pytest.raises(ValueError, match=r"Dense\(3, use_bias=False\): unexpected params\['b'\]"):
        Dense(3, use_bias=False).apply(Dense(3).init(jax.random.key(0), (2,)), x)


def test_repr_shows_what_differs_from_the_defaults():
    assert repr(Dense(3)) == "Dense(3)"
    assert (
        repr(Dense(3, use_bias=False, w_init=initializers.xavier_normal))
        == "Dense(3, use_bias=False, w_init=xavier_normal)"
    )


def test_an_int_seed_is_a_key():
    np.testing.assert_array_equal(
        Dense(3).init(7, (2,))["W"], Dense(3).init(jax.random.key(7), (2,))["W"]
    )
    with pytest.raises(ValueError, match=r"Dense.init: key must be a PRNG key .* or an int seed"):
        Dense(3).init("seed", (2,))
