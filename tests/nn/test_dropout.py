"""fundl.nn.dropout: inverted dropout's statistics, its rule, keys and modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl.nn import Dropout, Sequential, dropout


def test_keep_rate_and_scale_over_many_units():
    layer = Dropout(0.3)
    x = jnp.ones((200, 50))
    y = layer.apply({}, x, key=jax.random.key(0), train=True)
    kept = np.asarray(y) != 0
    n = kept.size
    assert abs(kept.mean() - 0.7) < 5 * np.sqrt(0.7 * 0.3 / n)  # within 5 standard errors
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.7, rtol=1e-6)  # inverted scaling
    assert abs(float(y.mean()) - 1.0) < 5 * np.sqrt(0.3 / 0.7 / n)  # E[y] = x


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_scaling_is_rounded_once_not_biased(dtype):
    # y = x/(1 − p) rounded once to x's dtype: unbiased. A bfloat16 factor 1/0.9 → 1.109375
    # would scale every kept unit by 0.99844 of 1/0.9 (float16's 1.111328 by 1.000195).
    x = jax.random.uniform(jax.random.key(4), (100, 100), minval=1.0, maxval=2.0).astype(dtype)
    keep = jnp.ones(x.shape, bool)
    exact = np.asarray(x, np.float64) / 0.9
    y, vjp = jax.vjp(lambda x: dropout(x, keep, rate=0.1), x)
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float64).sum() / exact.sum(), 1.0, rtol=1e-4)
    # the backward scales its cotangent the same way: g = x gives back y
    np.testing.assert_array_equal(np.asarray(vjp(x)[0], np.float32), np.asarray(y, np.float32))


def test_evaluation_is_the_identity_and_rate_zero_needs_no_key():
    x = jax.random.normal(jax.random.key(1), (4, 3))
    assert Dropout(0.5).apply({}, x) is x
    assert Dropout(0.0).apply({}, x, train=True) is x


def test_the_backward_reuses_the_mask():
    x = jax.random.normal(jax.random.key(2), (5, 4))
    keep = jax.random.bernoulli(jax.random.key(3), 0.5, (5, 4))
    g = jax.grad(lambda x: jnp.sum(dropout(x, keep, rate=0.5) * jnp.arange(4.0)[None, :]))(x)
    np.testing.assert_allclose(g, np.where(keep, 2.0 * np.arange(4.0), 0.0))
    _, residual = dropout.fwd(x, keep, rate=0.5)
    assert residual.dtype == jnp.bool_  # a byte per element, not the input


def test_each_layer_and_each_key_draws_its_own_mask():
    model = Sequential([Dropout(0.5), Dropout(0.5)])
    x = jnp.ones((1, 64))
    first = model.layers[0].apply({}, x, key=jax.random.split(jax.random.key(0), 2)[0], train=True)
    both = model.apply({}, x, key=jax.random.key(0), train=True)
    # the container gives layer i the i-th split of its key: the first layer's mask is
    # the one its own split draws, and the second layer draws another
    assert not np.array_equal(np.asarray(first) != 0, np.asarray(both) != 0)
    a = Dropout(0.5).apply({}, x, key=jax.random.key(1), train=True)
    b = Dropout(0.5).apply({}, x, key=jax.random.key(2), train=True)
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_bad_input():
    with pytest.raises(
        ValueError, match=r"Dropout: drop_rate must be a finite number in \[0, 1\); got 1.0"
    ):
        Dropout(1.0)
    with pytest.raises(ValueError, match=r"Dropout: drop_rate must be .*; got -0.1"):
        Dropout(-0.1)
    with pytest.raises(
        ValueError,
        match=r"Dropout\(drop_rate=0.2\): train=True needs a PRNG key to draw the dropout mask",
    ):
        Dropout(0.2).apply({}, jnp.ones((2, 2)), train=True)
    with pytest.raises(
        ValueError, match=r"dropout: keep must be a bool mask of the input's shape \(2, 2\)"
    ):
        dropout(jnp.ones((2, 2)), jnp.ones((2, 2)), rate=0.5)
    with pytest.raises(ValueError, match=r"Dropout\(\): key must be a PRNG key .* or an int seed"):
        Dropout().apply({}, jnp.ones((2, 2)), key="seed", train=True)
    seeded = Dropout().apply({}, jnp.ones((2, 8)), key=3, train=True)  # an int seed is a key
    keyed = Dropout().apply({}, jnp.ones((2, 8)), key=jax.random.key(3), train=True)
    np.testing.assert_array_equal(seeded, keyed)
    with pytest.raises(ValueError, match=r"Dropout\(\): train must be True or False, got 'yes'"):
        Dropout().apply({}, jnp.ones((2, 2)), train="yes")
