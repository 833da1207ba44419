"""fundl.data.dataset: the leading-dim checks, gathering examples, and validate."""

import re
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl.data import dataset, num_examples, validate
from fundl.data.dataset import check_examples, take

# ----------------------------------------------------------------------------- num_examples


def test_num_examples_of_dicts_tuples_and_arrays(make_data):
    assert num_examples(make_data(7)) == 7
    assert num_examples((np.zeros((5, 2)), np.zeros(5))) == 5
    assert num_examples(jnp.zeros((3, 4, 4, 1))) == 3
    assert num_examples({"a": {"b": np.zeros((0, 2))}}) == 0


def test_num_examples_names_the_disagreeing_leaves():
    bad = {"x": np.zeros((100, 2)), "y": np.zeros(99)}
    with pytest.raises(
        ValueError,
        match=re.escape(
            "num_examples: leaves disagree on the number of examples: ['x'] has 100, ['y'] has 99"
        ),
    ):
        num_examples(bad)
    with pytest.raises(ValueError, match=re.escape("[0] has 3, [1] has 4")):
        num_examples((np.zeros(3), np.zeros(4)))


def test_num_examples_rejects_no_leaves_and_scalars():
    with pytest.raises(
        ValueError,
        match=r"num_examples: data has no array leaves; expected a pytree",
    ):
        num_examples({})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "num_examples: leaf ['w'] is 0-d (shape ()); every leaf needs a leading dim"
        ),
    ):
        num_examples({"x": np.zeros(3), "w": 1.0})
    with pytest.raises(ValueError, match=re.escape("leaf (root) is 0-d")):
        num_examples(np.float32(2.0))


def test_check_examples_names_the_caller_and_can_require_examples():
    assert check_examples("f", {"x": np.zeros((0, 2))}) == 0
    with pytest.raises(ValueError, match=re.escape("f: data has no examples (leading dim 0)")):
        check_examples("f", {"x": np.zeros((0, 2))}, nonempty=True)
    with pytest.raises(ValueError, match=re.escape("f: leaves disagree on the number of examples")):
        check_examples("f", (np.zeros(3), np.zeros(4)))


# ----------------------------------------------------------------------------- take


def test_take_gathers_each_leaf_where_it_lives(make_data, assert_aligned):
    d = make_data(6)
    mixed = {"x": jnp.asarray(d["x"]), "y": d["y"]}
    idx = np.array([4, 0, 4, 2])
    out = take(mixed, idx)
    assert isinstance(out["x"], jax.Array) and isinstance(out["y"], np.ndarray)
    np.testing.assert_array_equal(out["y"], idx)
    assert_aligned(out)


# ----------------------------------------------------------------------------- validate


@pytest.mark.parametrize("as_jax", [False, True])
def test_validate_returns_n_for_clean_data(make_data, as_jax):
    d = make_data(5, as_jax=as_jax)
    d["mask"] = np.ones(5, bool)
    d["ids"] = np.array([0, 1, 2, 3, 2**32 - 1], np.uint32)  # JAX keeps uint32 as it is
    d["small"] = np.arange(5, dtype=np.int64)  # int64 that fits int32
    d["half"] = np.ones((5, 2), jnp.bfloat16)  # a floating dtype whose numpy kind is "V"
    assert validate(d) == 5
    assert validate((np.zeros((3, 2), np.float16),), name="train_data") == 3


@pytest.mark.parametrize("as_jax", [False, True])
def test_validate_finds_one_nan_among_256_examples(as_jax):
    x = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    x[17, 1] = np.nan
    data = {"x": x, "y": np.zeros(256, np.int32)}
    if as_jax:
        data = jax.tree.map(jnp.asarray, data)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "validate: train_data['x'] holds NaN or inf: 1 of its 768 values is non-finite, "
            "the first in example 17; clean or drop those examples"
        ),
    ):
        validate(data, name="train_data")


@pytest.mark.parametrize("as_jax", [False, True])
def test_validate_counts_every_non_finite_value_and_finds_the_first(monkeypatch, as_jax):
    monkeypatch.setattr(dataset, "_CHUNK_VALUES", 8)  # numpy leaves: many chunks of 4 rows
    x = np.zeros((40, 2), np.float64)
    x[33, 0], x[9, 1], x[9, 0], x[21, 1] = np.inf, np.nan, -np.inf, np.nan
    leaf = jnp.asarray(x, jnp.float32) if as_jax else x
    with pytest.raises(
        ValueError,
        match=re.escape(
            "validate: data[0]['x'] holds NaN or inf: 4 of its 80 values are "
            "non-finite, the first in example 9"
        ),
    ):
        validate([{"x": leaf}])


@pytest.mark.parametrize(
    "leaf, value, dtype, stored, result",
    [
        (np.array([0, 7, 2**31, 5], np.int64), "2147483648", "int64", "int32", "wrap around"),
        (
            np.array([0, 7, -(2**31) - 1, 5], np.int64),
            "-2147483649",
            "int64",
            "int32",
            "wrap around",
        ),
        (np.array([0, 7, 2**32, 5], np.uint64), "4294967296", "uint64", "uint32", "wrap around"),
        (np.array([0.0, 1.0, 1e39, 5.0]), "1e+39", "float64", "float32", "become inf"),
    ],
)
def test_validate_rejects_values_that_jax_would_change_without_x64(
    x64, leaf, value, dtype, stored, result
):
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"validate: data['y'] holds {value} (example 2), outside the range of {stored} ["
        )
        + r".*"
        + re.escape(
            f"with jax_enable_x64 off JAX stores {dtype} as {stored}, and the value would "
            f"{result}; enable x64 (jax.config.update('jax_enable_x64', True)) or cast the leaf"
        ),
    ):
        validate({"x": np.zeros((4, 1), np.float32), "y": leaf})
    with x64():
        assert validate({"y": leaf}) == 4


def test_validate_checks_structure_and_dtypes_with_the_messages_of_num_examples():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "validate: val_data: leaves disagree on the number of examples: "
            "['x'] has 3, ['y'] has 2"
        ),
    ):
        validate({"x": np.zeros(3), "y": np.zeros(2)}, name="val_data")
    with pytest.raises(
        ValueError, match=re.escape("validate: data: data has no examples (leading dim 0)")
    ):
        validate({"x": np.zeros((0, 2))})
    with pytest.raises(ValueError, match=re.escape("validate: data: leaf ['w'] is 0-d")):
        validate({"x": np.zeros(3), "w": 1.0})
    with pytest.raises(
        ValueError,
        match=re.escape("validate: data['name'] has dtype <U1; expected numbers or bools"),
    ):
        validate({"x": np.zeros(2), "name": np.array(["a", "b"])})
    with pytest.raises(ValueError, match=re.escape("validate: name must be a str, got 3")):
        validate({"x": np.zeros(2)}, name=3)


def test_validate_scans_numpy_data_in_bounded_chunks():
    x = np.ones((64, 1 << 16), np.float32)  # 16 MiB: a boolean copy would take 4 MiB
    x[-1, -1] = np.nan
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"the first in example 63"):
            validate({"x": x})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * (1 << 20)
