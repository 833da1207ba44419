"""fundl.initializers: variances against the formulas, within the sampling error of the draw."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import initializers as init

# (initializer, target variance as a function of (fan_in, fan_out))
VARIANCE = {
    "he_normal": lambda fi, fo: 2 / fi,
    "he_uniform": lambda fi, fo: 2 / fi,
    "xavier_normal": lambda fi, fo: 2 / (fi + fo),
    "xavier_uniform": lambda fi, fo: 2 / (fi + fo),
    "lecun_normal": lambda fi, fo: 1 / fi,
    "lecun_uniform": lambda fi, fo: 1 / fi,
}


def _check_moments(sample: np.ndarray, variance: float, z: float = 5.0) -> None:
    """Mean 0 and the given variance, each within z standard errors of the sample.

    SE(mean) = σ/√n; SE(var) = √((μ₄ − σ⁴)/n), μ₄ estimated from the sample itself.
    """
    x = np.asarray(sample, np.float64).ravel()
    n = x.size
    assert abs(x.mean()) < z * math.sqrt(variance / n)
    var = x.var()
    fourth = np.mean((x - x.mean()) ** 4)
    se_var = math.sqrt((fourth - var**2) / n)
    assert abs(var - variance) < z * se_var, (var, variance, se_var)


@pytest.mark.parametrize("name", sorted(VARIANCE))
@pytest.mark.parametrize("shape", [(300, 200), (3, 3, 16, 32)])
def test_variance_matches_formula(name, shape):
    fan_in, fan_out = init.fans(shape)
    sample = getattr(init, name)(jax.random.key(1), shape)
    assert sample.shape == shape and sample.dtype == jnp.float32
    _check_moments(sample, VARIANCE[name](fan_in, fan_out))


@pytest.mark.parametrize("name", sorted(VARIANCE))
def test_uniform_bounds_and_normal_tails(name):
    shape = (400, 300)
    fan_in, fan_out = init.fans(shape)
    sample = np.asarray(getattr(init, name)(jax.random.key(2), shape))
    limit = math.sqrt(3 * VARIANCE[name](fan_in, fan_out))
    if name.endswith("uniform"):
        assert np.abs(sample).max() <= limit
        assert np.abs(sample).max() > 0.99 * limit
    else:  # a normal draw of 120k values exceeds the uniform's bound about 8% of the time
        assert 0.05 < np.mean(np.abs(sample) > limit) < 0.11


def test_truncated_normal_keeps_the_variance_and_cuts_at_two_std():
    initializer = init.variance_scaling(2.0, "fan_in", "truncated_normal")
    shape = (500, 400)
    sample = np.asarray(initializer(jax.random.key(3), shape))
    std = math.sqrt(2 / 400)
    _check_moments(sample, std**2)
    assert np.abs(sample).max() <= 2 * std / 0.87962566103423978 + 1e-6


def test_fans():
    assert init.fans((7,)) == (7, 7)
    assert init.fans((5, 3)) == (3, 5)  # dense (n_out, n_in)
    assert init.fans((3, 3, 4, 8)) == (36, 72)  # HWIO
    assert init.fans((2, 3, 3, 4, 8)) == (72, 144)  # 3-D conv


def test_deterministic_for_a_key_and_different_across_keys():
    a = init.he_normal(jax.random.key(0), (4, 5))
    b = init.he_normal(jax.random.key(0), (4, 5))
    c = init.he_normal(jax.random.key(1), (4, 5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


RANDOM = [
    init.he_normal,
    init.he_uniform,
    init.xavier_normal,
    init.xavier_uniform,
    init.lecun_normal,
    init.lecun_uniform,
    init.variance_scaling(2.0, "fan_in", "truncated_normal"),
    init.orthogonal,
    init.normal(0.1),
    init.uniform(0.1),
]


@pytest.mark.parametrize("initializer", RANDOM, ids=lambda f: f.__name__)
def test_an_int_seed_is_the_key_it_names(initializer):
    # As everywhere in fundl (model.init(0)): an int seed s is jax.random.key(s).
    by_seed = initializer(3, (4, 4))
    np.testing.assert_array_equal(by_seed, initializer(jax.random.key(3), (4, 4)))
    np.testing.assert_array_equal(by_seed, initializer(np.int64(3), (4, 4)))
    np.testing.assert_array_equal(by_seed, initializer(jax.random.PRNGKey(3), (4, 4)))
    name = initializer.__name__.split("(")[0]
    with pytest.raises(
        ValueError,
        match=rf"^{name}.*: key must be a PRNG key \(jax.random.key\(seed\)\) or an int seed, "
        r"got 0.5$",
    ):
        initializer(0.5, (4, 4))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize(
    "initializer",
    [
        init.he_normal,
        init.xavier_uniform,
        init.lecun_normal,
        init.orthogonal,
        init.zeros,
        init.ones,
        init.normal(0.1),
        init.uniform(0.1),
    ],
)
def test_dtype(initializer, dtype):
    out = initializer(jax.random.key(0), (6, 4), dtype)
    assert out.dtype == dtype and out.shape == (6, 4)


def test_constant_initializers():
    np.testing.assert_array_equal(init.zeros(None, (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(init.ones(None, (4,)), np.ones(4))


def test_normal_and_uniform_factories():
    _check_moments(init.normal(0.5)(jax.random.key(4), (200, 300)), 0.25)
    sample = np.asarray(init.uniform(0.3)(jax.random.key(5), (200, 300)))
    _check_moments(sample, 0.3**2 / 3)
    assert np.abs(sample).max() <= 0.3


@pytest.mark.parametrize("shape", [(4, 7), (7, 4), (3, 3, 2, 5)])
def test_orthogonal(shape):
    w = np.asarray(init.orthogonal(jax.random.key(6), shape), np.float64)
    m = w.reshape(-1, shape[-1])
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, np.eye(min(m.shape)), atol=1e-5)


def test_for_activation_follows_the_notes():
    assert init.for_activation("relu") is init.he_normal
    assert init.for_activation("leaky_relu") is init.he_normal
    assert init.for_activation("tanh") is init.xavier_normal
    assert init.for_activation("sigmoid") is init.xavier_normal
    assert init.for_activation(None) is init.xavier_normal
    with pytest.raises(ValueError, match=r"for_activation: unknown activation 'swoosh'; known: \["):
        init.for_activation("swoosh")


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (3, 3, 0, 4)])
def test_non_positive_fan_is_an_error(shape):
    with pytest.raises(
        ValueError, match=r"he_normal: fans must be positive, got fan_in=\d+, fan_out=\d+ for shape"
    ):
        init.he_normal(jax.random.key(0), shape)


def test_scalar_shape_is_an_error():
    with pytest.raises(ValueError, match=r"fans: a scalar shape \(\) has no fan"):
        init.xavier_normal(jax.random.key(0), ())


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.uint8])
def test_non_float_dtype_is_an_error(dtype):
    with pytest.raises(
        TypeError, match=r"he_uniform: dtype must be a floating type \(e.g. float32\), got"
    ):
        init.he_uniform(jax.random.key(0), (3, 3), dtype)
    with pytest.raises(TypeError, match=r"zeros: dtype must be a floating type"):
        init.zeros(None, (3,), dtype)


def test_bad_variance_scaling_arguments():
    with pytest.raises(
        ValueError, match=r"variance_scaling: scale must be a finite number in \(0, inf\); got -1"
    ):
        init.variance_scaling(-1, "fan_in", "normal")
    with pytest.raises(
        ValueError,
        match=r"variance_scaling: mode must be one of 'fan_in', 'fan_out', 'fan_avg'; got 'fan'",
    ):
        init.variance_scaling(1.0, "fan", "normal")
    with pytest.raises(ValueError, match=r"distribution must be one of .*; got 'cauchy'"):
        init.variance_scaling(1.0, "fan_in", "cauchy")
    with pytest.raises(
        ValueError, match=r"normal: stddev must be a finite number in \(0, inf\); got 0"
    ):
        init.normal(0)
    with pytest.raises(
        ValueError, match=r"uniform: scale .*; got '0.1' \(a str\); pass the number 0.1"
    ):
        init.uniform("0.1")
    with pytest.raises(
        ValueError, match=r"orthogonal: expected a shape with at least 2 dims, got \(5,\)"
    ):
        init.orthogonal(jax.random.key(0), (5,))


def test_fan_out_mode():
    initializer = init.variance_scaling(1.0, "fan_out", "normal")
    _check_moments(initializer(jax.random.key(7), (250, 400)), 1 / 250)


def test_the_old_module_name_is_a_deprecated_alias():
    import importlib
    import sys

    sys.modules.pop("fundl.init", None)
    with pytest.warns(DeprecationWarning, match=r"fundl.init is now fundl.initializers"):
        old = importlib.import_module("fundl.init")
    assert old.he_normal is init.he_normal and old.__all__ == init.__all__


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: init.he_normal(jax.random.key(0), 3),
            ValueError,
            r"he_normal: shape must be a tuple of ints, got 3; pass \(3,\)",
        ),
        (
            lambda: init.he_uniform(jax.random.key(0), None),
            ValueError,
            r"he_uniform: shape must be a tuple of ints, got None",
        ),
        (
            lambda: init.xavier_normal(jax.random.key(0), (True, 3)),
            ValueError,
            r"xavier_normal: shape\[0\] must be a non-negative integer, got True",
        ),
        (
            lambda: init.zeros(None, (-1, 3)),
            ValueError,
            r"zeros: shape\[0\] must be a non-negative integer, got -1",
        ),
        (
            lambda: init.fans((2.0, 3)),
            ValueError,
            r"fans: shape\[0\] must be a non-negative integer, got 2.0",
        ),
        (
            lambda: init.orthogonal(jax.random.split(jax.random.key(0)), (2, 2)),
            ValueError,
            r"orthogonal: key must be a single PRNG key, got a batch of keys of shape \(2,\)",
        ),
        (
            lambda: init.lecun_normal(jax.random.key(0), (2, 2), "foo"),
            TypeError,
            r"lecun_normal: dtype must be a floating type \(e.g. float32\), got 'foo'",
        ),
    ],
)
def test_bad_shape_key_and_dtype_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_for_activation_knows_linear_as_activations_get_does():
    assert init.for_activation("linear") is init.xavier_normal
