"""fundl.nn position encodings: the sinusoidal table, the learned table, and the rotary
primitive (relative-position property, backward vs autodiff, positions per example)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl.nn import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    rotary,
    sinusoidal_positions,
)
from fundl.rules import reference_mode


def test_sinusoidal_table_is_vaswanis_formula():
    P = np.asarray(sinusoidal_positions(5, 6), np.float64)
    for p in range(5):
        for i in range(3):
            w = 10000.0 ** (-2 * i / 6)
            np.testing.assert_allclose(P[p, 2 * i], np.sin(p * w), atol=1e-6)
            np.testing.assert_allclose(P[p, 2 * i + 1], np.cos(p * w), atol=1e-6)
    x = jax.random.normal(jax.random.key(0), (2, 5, 6))
    y = SinusoidalPositionalEncoding().apply({}, x)
    np.testing.assert_allclose(y, x + P[None], atol=1e-6)
    y = SinusoidalPositionalEncoding(scale_input=True).apply({}, x)
    np.testing.assert_allclose(y, x * np.sqrt(6.0) + P[None], atol=1e-5)


def test_learned_table_adds_its_rows_and_gets_their_gradient():
    layer = LearnedPositionalEmbedding(6)
    params = layer.init(jax.random.key(0), (4, 3))
    x = jax.random.normal(jax.random.key(1), (2, 4, 3))
    np.testing.assert_allclose(layer.apply(params, x), x + params["P"][None, :4], atol=1e-7)
    g = jax.grad(lambda p: jnp.sum(layer.apply(p, x) * x))(params)["P"]
    np.testing.assert_allclose(g[:4], x.sum(0), atol=1e-6)
    assert float(jnp.abs(g[4:]).max()) == 0.0


def test_rotary_scores_depend_on_the_position_difference_only(x64):
    with x64():
        q, k = jax.random.normal(jax.random.key(2), (2, 1, 8), jnp.float64)

        def score(i, j):
            return float(jnp.sum(rotary(q, jnp.array([i])) * rotary(k, jnp.array([j]))))

        np.testing.assert_allclose(score(3, 1), score(7, 5), rtol=1e-12)
        np.testing.assert_allclose(score(0, 4), score(10, 14), rtol=1e-12)
        assert abs(score(3, 1) - score(3, 2)) > 1e-3  # but it does depend on the difference
        x = jax.random.normal(jax.random.key(3), (3, 8), jnp.float64)
        np.testing.assert_allclose(  # a rotation keeps norms; position 0 is the identity
            jnp.linalg.norm(rotary(x, jnp.array([5, 1, 9])), axis=-1), jnp.linalg.norm(x, axis=-1)
        )
        np.testing.assert_allclose(rotary(x, jnp.zeros(3, int)), x)


def test_rotary_backward_equals_autodiff(x64):
    with x64():
        x = jax.random.normal(jax.random.key(4), (2, 2, 3, 4), jnp.float64)
        g = jax.random.normal(jax.random.key(5), x.shape, jnp.float64)
        for pos in (jnp.array([0, 2, 7]), jnp.array([[[1, 2, 3]] * 2, [[4, 4, 9]] * 2])):
            hand = jax.vjp(lambda x, pos=pos: rotary(x, pos, base=100.0), x)[1](g)[0]
            with reference_mode():
                auto = jax.vjp(lambda x, pos=pos: rotary(x, pos, base=100.0), x)[1](g)[0]
            np.testing.assert_allclose(hand, auto, rtol=1e-12, atol=1e-14)


def test_bad_input_names_the_layer_and_shapes():
    with pytest.raises(
        ValueError, match=r"rotary: expected x of shape \(\.\.\., L, d\) with d even"
    ):
        rotary(jnp.ones((3, 5)), jnp.arange(3))
    with pytest.raises(ValueError, match=r"rotary: expected positions of shape \(3,\) or \(2, 3\)"):
        rotary(jnp.ones((2, 3, 4)), jnp.arange(4))
    with pytest.raises(TypeError, match=r"rotary: expected integer positions"):
        rotary(jnp.ones((3, 4)), jnp.ones(3))
    layer = LearnedPositionalEmbedding(4)
    params = layer.init(0, (4, 3))
    with pytest.raises(
        ValueError, match=r"LearnedPositionalEmbedding\(4\): a sequence of length 5"
    ):
        layer.apply(params, jnp.ones((2, 5, 3)))
    with pytest.raises(
        ValueError, match=r"SinusoidalPositionalEncoding\(\): expected an input .*L > 0"
    ):
        SinusoidalPositionalEncoding().apply({}, jnp.ones((2, 0, 4)))


def test_learned_table_takes_one_unbatched_sequence():
    """(L, d), documented, was refused: the params check passed init its (d,) and init read
    d as L ("got (3,)")."""
    layer = LearnedPositionalEmbedding(6)
    params = layer.init(jax.random.key(0), (4, 3))
    x = jax.random.normal(jax.random.key(1), (4, 3))
    np.testing.assert_allclose(layer.apply(params, x), x + params["P"][:4], atol=1e-7)
    assert layer.init(jax.random.key(0), (3,))["P"].shape == (6, 3)
    with pytest.raises(
        ValueError, match=r"LearnedPositionalEmbedding\(6\): a sequence of length 7 .*\(7, 3\)"
    ):
        layer.apply(params, jnp.ones((7, 3)))
