"""fundl.data.transforms: splits, standardization with training statistics, one-hot labels."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl.data import one_hot, split, standardize, standardize_stats

# ----------------------------------------------------------------------------- split


def test_split_by_fraction_in_order(make_data, assert_aligned):
    train, valid = split(make_data(10), 0.2)
    np.testing.assert_array_equal(train["y"], np.arange(8))
    np.testing.assert_array_equal(valid["y"], [8, 9])
    assert_aligned(train)
    assert_aligned(valid)


@pytest.mark.parametrize("as_jax", [False, True])
def test_shuffled_split_is_disjoint_and_shares_one_permutation(
    make_data, assert_aligned, key, as_jax
):
    d = make_data(50, as_jax=as_jax)
    train, valid = split(d, 0.3, key=key)
    assert len(train["y"]) == 35 and len(valid["y"]) == 15
    assert isinstance(train["x"], jax.Array if as_jax else np.ndarray)
    assert_aligned(train)  # the same permutation for x and y
    assert_aligned(valid)
    perm = np.asarray(jax.random.permutation(key, 50))
    np.testing.assert_array_equal(train["y"], perm[:35])
    np.testing.assert_array_equal(valid["y"], perm[35:])
    assert not set(np.asarray(train["y"])) & set(np.asarray(valid["y"]))


def test_split_by_sizes_and_rounding(make_data, key):
    a, b = split(make_data(10), sizes=(5, 3))
    np.testing.assert_array_equal(a["y"], np.arange(5))
    np.testing.assert_array_equal(b["y"], [5, 6, 7])
    a, b = split(make_data(10), sizes=(6, 4), key=key)
    assert sorted(np.concatenate([a["y"], b["y"]]).tolist()) == list(range(10))
    assert [len(p["y"]) for p in split(make_data(10), 0.01)] == [9, 1]  # at least one
    assert [len(p["y"]) for p in split(make_data(10), 0.26)] == [7, 3]  # round(2.6)


def test_split_errors(make_data):
    d = make_data(10)
    with pytest.raises(
        ValueError,
        match=r"split: give exactly one of fraction and sizes, got fraction=None, sizes=None",
    ):
        split(d)
    with pytest.raises(
        ValueError,
        match=r"split: give exactly one of fraction and sizes, got fraction=0.1, sizes=\(1, 2\)",
    ):
        split(d, 0.1, sizes=(1, 2))
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(
            ValueError,
            match=re.escape(f"split: fraction must be a finite number in (0, 1); got {bad!r}"),
        ):
            split(d, bad)
    with pytest.raises(
        ValueError,
        match=r"split: fraction 0.5 of 1 examples leaves the first part empty",
    ):
        split(make_data(1), 0.5)
    with pytest.raises(
        ValueError,
        match=re.escape("split: sizes 6 + 5 = 11 exceed the 10 examples"),
    ):
        split(d, sizes=(6, 5))
    with pytest.raises(
        ValueError,
        match=re.escape("split: sizes[1] must be a positive integer, got 0"),
    ):
        split(d, sizes=(10, 0))
    with pytest.raises(ValueError, match=r"split: sizes must be a pair \(n1, n2\), got 5"):
        split(d, sizes=5)


def test_split_checks_the_key(make_data):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "split: key must be a PRNG key (jax.random.key(seed)) or an int seed, got 'key'"
        ),
    ):
        split(make_data(10), 0.2, key="key")


# ----------------------------------------------------------------------------- standardize


@pytest.mark.parametrize("as_jax", [False, True])
def test_standardize_gives_zero_mean_unit_std_on_the_training_data(key, as_jax):
    x = 3.0 + 5.0 * np.asarray(jax.random.normal(key, (200, 4)))
    x[:, 2] = 7.0  # a constant feature
    x = jnp.asarray(x, jnp.float32) if as_jax else x.astype(np.float32)
    mean, std = standardize_stats(x)
    chex.assert_shape((mean, std), (1, 4))
    assert isinstance(mean, jax.Array if as_jax else np.ndarray) and mean.dtype == np.float32
    z = np.asarray(standardize(x, mean, std), np.float64)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), [1.0, 1.0, 0.0, 1.0], atol=1e-5)
    assert float(std[0, 2]) == 1.0  # a constant feature is centred, not divided by ~0
    np.testing.assert_allclose(np.asarray(mean)[0], np.asarray(x, np.float64).mean(0), rtol=1e-5)
    # new data with the constant feature moved stays finite: (x - mean) / 1
    shifted = np.asarray(standardize(x[:2] + 1.0, mean, std))
    np.testing.assert_allclose(shifted[:, 2], 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "x",
    [
        jnp.full((1000, 2), 1000.3, jnp.float32),  # the float32 mean is 11 ulp off: σ was 7e-4
        np.full((1000, 2), 1e10 + 0.1),  # float64: the mean is 1 ulp off, σ was 4e-6
    ],
    ids=["jax-float32", "numpy-float64"],
)
def test_standardize_a_constant_feature_whose_mean_rounds(x):
    # A rounded mean made σ = |x − μ| > eps, and standardize mapped the constant to −1
    # everywhere (scikit-learn's StandardScaler gives 0); shifted by x₀, σ is exactly 0.
    mean, std = standardize_stats(x)
    np.testing.assert_array_equal(np.asarray(mean), np.asarray(x[:1]))
    np.testing.assert_array_equal(np.asarray(std), 1.0)
    np.testing.assert_array_equal(np.asarray(standardize(x, mean, std)), 0.0)


def test_standardize_stats_match_float64_with_a_large_offset(key):
    x = np.asarray(1e4 + jax.random.normal(key, (512, 3)), np.float32)
    mean, std = standardize_stats(jnp.asarray(x))
    x64 = x.astype(np.float64)
    # shifted sums keep float32 near its rounding (errors 2e-8, 4e-8; unshifted 1e-7, 4e-7)
    np.testing.assert_allclose(np.asarray(mean)[0], x64.mean(0), rtol=1e-7)
    np.testing.assert_allclose(np.asarray(std)[0], x64.std(0), rtol=2e-7)


def test_standardize_stats_refuses_an_empty_axis():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "standardize_stats: x of shape (0, 3) has no values along axis (0,); the "
            "statistics of no examples are undefined (NaN)"
        ),
    ):
        standardize_stats(np.zeros((0, 3)))


def test_standardize_floors_a_tiny_std_at_eps():
    x = np.array([[1.0], [3.0]])
    z = standardize(x, np.array([[2.0]]), np.array([[0.0]]), eps=0.5)
    np.testing.assert_allclose(z, [[-2.0], [2.0]])


def test_standardize_per_channel_images_and_integer_pixels():
    images = np.random.default_rng(0).integers(0, 256, size=(8, 5, 5, 3)).astype(np.uint8)
    mean, std = standardize_stats(images, axis=(0, 1, 2))
    chex.assert_shape((mean, std), (1, 1, 1, 3))
    assert mean.dtype == np.float32
    z = standardize(images, mean, std)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean((0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std((0, 1, 2)), 1.0, atol=1e-5)


def test_standardize_errors():
    with pytest.raises(
        ValueError,
        match=re.escape("standardize_stats: eps must be a finite number in (0, inf); got 0"),
    ):
        standardize_stats(np.ones((3, 2)), eps=0)
    with pytest.raises(
        ValueError,
        match=r"standardize_stats: x must have at least 1 dim, got a scalar",
    ):
        standardize_stats(np.float32(1.0))
    with pytest.raises(
        ValueError,
        match=re.escape("standardize: eps must be a finite number in (0, inf); got -1.0"),
    ):
        standardize(np.ones(2), 0.0, 1.0, eps=-1.0)


def test_standardize_jax_integer_pixels_under_strict_dtype_promotion():
    images = jnp.asarray(np.arange(2 * 3 * 3).reshape(2, 3, 3, 1), jnp.uint8)
    mean, std = standardize_stats(images, axis=(0, 1, 2))
    z = standardize(images, mean, std)  # uint8 - float32 needs an explicit cast
    assert z.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(z).mean(), 0.0, atol=1e-6)


def test_standardize_checks_axis_shapes_and_dtypes():
    x = np.ones((3, 2), np.float32)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "standardize_stats: axis must be an int or a tuple of distinct ints in [-2, 2) for x "
            "of shape (3, 2), got 2"
        ),
    ):
        standardize_stats(x, axis=2)
    for bad in ((0, -2), (), [0, 1.0]):
        with pytest.raises(ValueError, match=re.escape(f"for x of shape (3, 2), got {bad!r}")):
            standardize_stats(x, axis=bad)
    with pytest.raises(
        ValueError, match=re.escape("standardize_stats: x must hold numbers, got dtype <U1")
    ):
        standardize_stats(np.array(["a", "b"]))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "standardize: mean of shape (1, 3) does not broadcast against x of shape (3, 2)"
        ),
    ):
        standardize(x, np.zeros((1, 3)), np.ones((1, 2)))
    with pytest.raises(
        ValueError,
        match=re.escape("standardize: std of shape (4, 3, 2) does not broadcast against x"),
    ):
        standardize(x, np.zeros((1, 2)), np.ones((4, 3, 2)))


# ----------------------------------------------------------------------------- one_hot


def test_one_hot_values_shapes_and_dtype():
    np.testing.assert_array_equal(one_hot(np.array([2, 0, 1]), 3), np.eye(3)[[2, 0, 1]])
    out = one_hot(jnp.array([[0, 3], [1, 2]]), 4, dtype=jnp.bfloat16)
    chex.assert_shape(out, (2, 2, 4))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.eye(4)[[[0, 3], [1, 2]]])
    np.testing.assert_array_equal(one_hot([1], 2), [[0.0, 1.0]])


def test_one_hot_under_jit_skips_the_range_check():
    out = jax.jit(lambda y: one_hot(y, 3))(jnp.array([2, 7]))
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 0, 0]])


def test_one_hot_errors():
    with pytest.raises(TypeError, match=r"one_hot: labels must have an integer dtype, got float32"):
        one_hot(np.array([0.0, 1.0], np.float32), 2)
    with pytest.raises(
        ValueError,
        match=re.escape("one_hot: labels must lie in [0, 3), found min -1 and max 3"),
    ):
        one_hot(jnp.array([-1, 0, 3]), 3)
    with pytest.raises(
        ValueError,
        match=re.escape("one_hot: labels must lie in [0, 10), found min 0 and max 10"),
    ):
        one_hot(np.array([0, 10]), 10)
    with pytest.raises(ValueError, match=r"one_hot: num_classes must be a positive integer, got 0"):
        one_hot(np.array([0]), 0)


def test_one_hot_checks_the_dtype():
    with pytest.raises(
        ValueError,
        match=re.escape("one_hot: dtype must be a numeric dtype such as jnp.float32, got 'word'"),
    ):
        one_hot(np.array([0]), 2, dtype="word")
