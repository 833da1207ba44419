"""fundl.data: epochs against the permutation, resume cursors, splits, loaders on written files."""

import gzip
import pathlib
import re
import struct
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundl import data
from fundl.data import (
    batches,
    epoch_batches,
    load_digits,
    load_idx,
    load_npz,
    num_batches,
    num_examples,
    one_hot,
    prefetch_to_device,
    split,
    standardize,
    standardize_stats,
    weighted_mean,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _dataset(n: int, *, as_jax: bool = False) -> dict:
    """Example i is x = [i, 10i + 1, 100i + 2] and y = i, so any batch names its examples."""
    ids = np.arange(n, dtype=np.int32)
    x = np.stack([ids, 10 * ids + 1, 100 * ids + 2], axis=1).astype(np.float32)
    d = {"x": x, "y": ids}
    return jax.tree.map(jnp.asarray, d) if as_jax else d


def _order(key, epoch, n):
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))


def _concat(bs):
    return jax.tree.map(lambda *leaves: np.concatenate([np.asarray(a) for a in leaves]), *bs)


def _assert_aligned(batch):
    """x and y of every example still belong together."""
    y = np.asarray(batch["y"])
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.stack([y, 10 * y + 1, 100 * y + 2], 1))


# ----------------------------------------------------------------------------- num_examples


def test_num_examples_of_dicts_tuples_and_arrays():
    assert num_examples(_dataset(7)) == 7
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


# ----------------------------------------------------------------------------- num_batches


def test_num_batches():
    assert num_batches(10, 4) == 3
    assert num_batches(10, 4, drop_last=True) == 2
    assert num_batches(12, 4) == num_batches(12, 4, drop_last=True) == 3
    assert num_batches(3, 4) == 1 and num_batches(3, 4, drop_last=True) == 0
    assert num_batches(0, 4) == 0
    assert num_batches(np.int64(9), np.int32(3)) == 3


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "8", None])
def test_num_batches_rejects_bad_batch_size(bad):
    with pytest.raises(
        ValueError,
        match=re.escape(f"num_batches: batch_size must be a positive integer, got {bad!r}"),
    ):
        num_batches(10, bad)


def test_num_batches_rejects_negative_n():
    with pytest.raises(ValueError, match=r"num_batches: n must be a non-negative integer, got -1"):
        num_batches(-1, 4)


# ----------------------------------------------------------------------------- batches


def test_unshuffled_batches_are_the_data_in_order_with_a_partial_last_batch():
    d = _dataset(10)
    out = list(batches(d, 4))
    assert [len(b["y"]) for b in out] == [4, 4, 2]
    assert all(isinstance(b["x"], np.ndarray) for b in out)
    chex.assert_trees_all_equal(_concat(out), d)


def test_drop_last_drops_the_partial_batch():
    out = list(batches(_dataset(10), 4, drop_last=True))
    assert [len(b["y"]) for b in out] == [4, 4]
    np.testing.assert_array_equal(_concat(out)["y"], np.arange(8))


@pytest.mark.parametrize("as_jax", [False, True])
def test_shuffled_epoch_follows_the_fold_in_permutation(key, as_jax):
    n = 23
    d = _dataset(n, as_jax=as_jax)
    out = list(batches(d, 5, key=key, epoch=3))
    assert [len(b["y"]) for b in out] == [5, 5, 5, 5, 3]
    leaf_type = jax.Array if as_jax else np.ndarray
    assert all(isinstance(leaf, leaf_type) for b in out for leaf in jax.tree.leaves(b))
    for b in out:
        _assert_aligned(b)
    seen = _concat(out)["y"]
    np.testing.assert_array_equal(seen, _order(key, 3, n))
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # every example exactly once


def test_order_is_a_function_of_key_and_epoch(key):
    d = _dataset(50)

    def order(k, epoch):
        return _concat(list(batches(d, 8, key=k, epoch=epoch)))["y"]

    np.testing.assert_array_equal(order(key, 2), order(key, 2))
    assert not np.array_equal(order(key, 2), order(key, 3))
    assert not np.array_equal(order(key, 2), order(jax.random.key(1), 2))
    # numpy and jax copies of the data see the same order
    np.testing.assert_array_equal(
        order(key, 2), _concat(list(batches(_dataset(50, as_jax=True), 8, key=key, epoch=2)))["y"]
    )


@pytest.mark.parametrize("drop_last", [False, True])
def test_start_resumes_exactly_the_tail_of_the_epoch(key, drop_last):
    d = _dataset(30)
    full = list(batches(d, 7, key=key, epoch=1, drop_last=drop_last))
    for k in range(len(full) + 1):
        tail = list(batches(d, 7, key=key, epoch=1, start=k, drop_last=drop_last))
        assert len(tail) == len(full) - k
        for got, want in zip(tail, full[k:]):
            chex.assert_trees_all_equal(got, want)


@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 12),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batches_cover_the_permutation(n, batch_size, drop_last, seed):
    if drop_last and batch_size > n:
        return
    key = jax.random.key(seed)
    out = list(batches(_dataset(n), batch_size, key=key, epoch=seed % 5, drop_last=drop_last))
    count = num_batches(n, batch_size, drop_last=drop_last)
    assert len(out) == count
    assert all(len(b["y"]) == batch_size for b in out[: n // batch_size])
    seen = _concat(out)["y"]
    np.testing.assert_array_equal(seen, _order(key, seed % 5, n)[: len(seen)])
    assert len(seen) == (n // batch_size * batch_size if drop_last else n)


def test_tuple_data_and_higher_rank_leaves(key):
    x = np.arange(6 * 2 * 2).reshape(6, 2, 2)
    y = np.arange(6)
    out = list(batches((x, y), 4, key=key))
    assert [b[0].shape for b in out] == [(4, 2, 2), (2, 2, 2)]
    perm = _order(key, 0, 6)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in out]), x[perm])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in out]), perm)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_batches_rejects_bad_batch_size_when_called(bad):
    with pytest.raises(
        ValueError,
        match=re.escape(f"batches: batch_size must be a positive integer, got {bad!r}"),
    ):
        batches(_dataset(4), bad)  # not iterated: the check is eager


def test_batches_errors():
    d = _dataset(10)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "batches: drop_last=True with batch_size 16 > 10 examples leaves no batch at all; lower"
        ),
    ):
        batches(d, 16, drop_last=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "batches: start must be in [0, 3] (the number of batches of 10 examples with batch_size 4, drop_last=False), got 4"
        ),
    ):
        batches(d, 4, start=4)
    with pytest.raises(ValueError, match=r"batches: start must be a non-negative integer, got -1"):
        batches(d, 4, start=-1)
    with pytest.raises(ValueError, match=r"batches: epoch must be a non-negative integer, got -2"):
        batches(d, 4, key=jax.random.key(0), epoch=-2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "batches: leaves disagree on the number of examples: ['x'] has 10, ['y'] has 9"
        ),
    ):
        batches({"x": d["x"], "y": d["y"][:9]}, 4)
    with pytest.raises(
        ValueError,
        match=re.escape("batches: data has no examples (leading dim 0)"),
    ):
        batches({"x": np.zeros((0, 3))}, 4)


def test_batches_without_drop_last_accepts_a_batch_larger_than_the_data():
    out = list(batches(_dataset(3), 8))
    assert len(out) == 1 and len(out[0]["y"]) == 3


# ----------------------------------------------------------------------------- epoch_batches


@pytest.mark.parametrize("use_key", [False, True])
def test_epoch_batches_equals_stacked_batches(key, use_key):
    d = _dataset(23)
    k = key if use_key else None
    stacked = epoch_batches(d, 5, k, 4)
    want = list(batches(d, 5, key=k, epoch=4, drop_last=True))
    chex.assert_shape(stacked["x"], (4, 5, 3))
    chex.assert_shape(stacked["y"], (4, 5))
    assert isinstance(stacked["x"], jax.Array) and stacked["y"].dtype == jnp.int32
    chex.assert_trees_all_equal(
        jax.tree.map(np.asarray, stacked), jax.tree.map(lambda *b: np.stack(b), *want)
    )


def test_epoch_batches_under_jit_with_a_traced_epoch(key):
    d = _dataset(20, as_jax=True)
    traces = []

    @jax.jit
    def first_ids(data, k, epoch):
        traces.append(None)
        return epoch_batches(data, 6, k, epoch)["y"]

    for epoch in range(3):
        got = first_ids(d, key, jnp.int32(epoch))
        want = np.stack([b["y"] for b in batches(d, 6, key=key, epoch=epoch, drop_last=True)])
        np.testing.assert_array_equal(got, want)
    assert len(traces) == 1  # one compile for every epoch


def test_epoch_batches_feeds_lax_scan(key):
    d = _dataset(12, as_jax=True)

    @jax.jit
    def sums(data, epoch):
        def body(total, batch):
            return total + jnp.sum(batch["y"]), jnp.sum(batch["y"])

        return jax.lax.scan(body, jnp.int32(0), epoch_batches(data, 4, key, epoch))

    total, per_batch = sums(d, 1)
    assert int(total) == sum(range(12)) and per_batch.shape == (3,)


def test_epoch_batches_errors():
    with pytest.raises(
        ValueError,
        match=re.escape("epoch_batches: batch_size 8 > 5 examples leaves no full batch"),
    ):
        epoch_batches(_dataset(5), 8)
    with pytest.raises(
        ValueError,
        match=r"epoch_batches: batch_size must be a positive integer, got 0",
    ):
        epoch_batches(_dataset(5), 0)
    with pytest.raises(
        ValueError, match=r"epoch_batches: epoch must be a non-negative integer, got -1"
    ):
        epoch_batches(_dataset(5), 2, jax.random.key(0), -1)


# ----------------------------------------------------------------------------- weighted_mean


def test_weighted_mean_counts_a_partial_batch_by_its_size():
    metrics = [{"loss": jnp.float32(0.5), "acc": np.float32(1.0)}, {"loss": 2.0, "acc": 0.0}]
    out = weighted_mean(metrics, [4, 1])
    assert out == pytest.approx({"loss": (0.5 * 4 + 2.0 * 1) / 5, "acc": 4 / 5})
    assert all(type(v) is float for v in out.values())
    assert weighted_mean([1.0, 3.0, jnp.array(5.0)], [1, 1, 2]) == pytest.approx((1 + 3 + 10) / 4)


def test_weighted_mean_equals_the_mean_over_examples(key):
    per_example = np.asarray(jax.random.normal(key, (10,)))
    sizes = [4, 4, 2]
    means = [{"m": per_example[i : i + s].mean()} for i, s in zip([0, 4, 8], sizes)]
    assert weighted_mean(means, sizes)["m"] == pytest.approx(per_example.mean(), rel=1e-6)


def test_weighted_mean_errors():
    with pytest.raises(
        ValueError,
        match=r"weighted_mean: got 2 values and 1 weights; expected one weight",
    ):
        weighted_mean([1.0, 2.0], [3])
    with pytest.raises(
        ValueError,
        match=r"weighted_mean: got no values; expected at least one batch",
    ):
        weighted_mean([], [])
    with pytest.raises(
        ValueError,
        match=re.escape("weights must be finite, non-negative and not all zero, got [1.0, -1.0]"),
    ):
        weighted_mean([1.0, 2.0], [1, -1])
    with pytest.raises(ValueError, match=re.escape("not all zero, got [0.0, 0.0]")):
        weighted_mean([1.0, 2.0], [0, 0])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "weighted_mean: values[1] has keys ['acc'], expected those of values[0]: ['loss']"
        ),
    ):
        weighted_mean([{"loss": 1.0}, {"acc": 1.0}], [1, 1])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "weighted_mean: values[1]['loss'] has shape (2,); expected a scalar metric"
        ),
    ):
        weighted_mean([{"loss": 1.0}, {"loss": np.ones(2)}], [1, 1])
    with pytest.raises(
        ValueError,
        match=re.escape("weighted_mean: values[1] is a dict but values[0] is not"),
    ):
        weighted_mean([1.0, {"loss": 1.0}], [1, 1])


# ----------------------------------------------------------------------------- split


def test_split_by_fraction_in_order():
    train, valid = split(_dataset(10), 0.2)
    np.testing.assert_array_equal(train["y"], np.arange(8))
    np.testing.assert_array_equal(valid["y"], [8, 9])
    _assert_aligned(train)
    _assert_aligned(valid)


@pytest.mark.parametrize("as_jax", [False, True])
def test_shuffled_split_is_disjoint_and_shares_one_permutation(key, as_jax):
    d = _dataset(50, as_jax=as_jax)
    train, valid = split(d, 0.3, key=key)
    assert len(train["y"]) == 35 and len(valid["y"]) == 15
    assert isinstance(train["x"], jax.Array if as_jax else np.ndarray)
    _assert_aligned(train)  # the same permutation for x and y
    _assert_aligned(valid)
    perm = np.asarray(jax.random.permutation(key, 50))
    np.testing.assert_array_equal(train["y"], perm[:35])
    np.testing.assert_array_equal(valid["y"], perm[35:])
    assert not set(np.asarray(train["y"])) & set(np.asarray(valid["y"]))


def test_split_by_sizes_and_rounding(key):
    a, b = split(_dataset(10), sizes=(5, 3))
    np.testing.assert_array_equal(a["y"], np.arange(5))
    np.testing.assert_array_equal(b["y"], [5, 6, 7])
    a, b = split(_dataset(10), sizes=(6, 4), key=key)
    assert sorted(np.concatenate([a["y"], b["y"]]).tolist()) == list(range(10))
    assert [len(p["y"]) for p in split(_dataset(10), 0.01)] == [9, 1]  # at least one
    assert [len(p["y"]) for p in split(_dataset(10), 0.26)] == [7, 3]  # round(2.6)


def test_split_errors():
    d = _dataset(10)
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
            match=re.escape(f"split: fraction must be a number in (0, 1), got {bad!r}"),
        ):
            split(d, bad)
    with pytest.raises(
        ValueError,
        match=r"split: fraction 0.5 of 1 examples leaves the first part empty",
    ):
        split(_dataset(1), 0.5)
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
        match=r"standardize_stats: eps must be a positive number, got 0",
    ):
        standardize_stats(np.ones((3, 2)), eps=0)
    with pytest.raises(
        ValueError,
        match=r"standardize_stats: x must have at least 1 dim, got a scalar",
    ):
        standardize_stats(np.float32(1.0))
    with pytest.raises(ValueError, match=r"standardize: eps must be a positive number, got -1.0"):
        standardize(np.ones(2), 0.0, 1.0, eps=-1.0)


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


# ----------------------------------------------------------------------------- prefetch_to_device


def test_prefetch_yields_the_same_batches_on_the_device(key):
    d = _dataset(10)
    want = list(batches(d, 3, key=key))
    got = list(prefetch_to_device(batches(d, 3, key=key), size=2))
    assert len(got) == len(want)
    device = jax.devices()[0]
    for g, w in zip(got, want):
        for leaf in jax.tree.leaves(g):
            assert isinstance(leaf, jax.Array) and leaf.devices() == {device}
        chex.assert_trees_all_equal(jax.tree.map(np.asarray, g), w)


def test_prefetch_with_a_sharding():
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[-1])
    out = list(prefetch_to_device(iter([np.ones(3), np.zeros(3)]), sharding=sharding))
    assert [o.sharding for o in out] == [sharding, sharding]
    np.testing.assert_array_equal(out[0], np.ones(3))


@pytest.mark.parametrize("size", [1, 3])
def test_prefetch_keeps_size_batches_ahead(size):
    pulled = []

    def source():
        for i in range(6):
            pulled.append(i)
            yield np.full(2, i)

    it = prefetch_to_device(source(), size)
    assert pulled == []  # nothing runs before the first next()
    for i in range(6):
        assert int(next(it)[0]) == i
        assert len(pulled) == min(i + 1 + size, 6)
    assert list(it) == []


def test_prefetch_errors_and_empty_input():
    assert list(prefetch_to_device([])) == []
    with pytest.raises(
        ValueError,
        match=r"prefetch_to_device: size must be a positive integer, got 0",
    ):
        prefetch_to_device([], 0)


# ----------------------------------------------------------------------------- load_digits


def test_load_digits():
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    assert sorted(np.unique(y).tolist()) == list(range(10))
    raw, y_raw = load_digits(as_float=False)
    assert raw.dtype == np.uint8 and raw.max() == 16
    np.testing.assert_array_equal(x, raw.astype(np.float32) / 16)
    np.testing.assert_array_equal(y, y_raw)


def test_load_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(
        ImportError,
        match=re.escape(
            "load_digits needs scikit-learn: pip install 'fundl[examples]' (or pip install scikit-learn)"
        ),
    ):
        load_digits()


# ----------------------------------------------------------------------------- load_idx


_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, _CODES[array.dtype.type], array.ndim])
    header = magic + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path: pathlib.Path, content: bytes, *, gz: bool = False) -> pathlib.Path:
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def _mnist_like(n=5, rows=4, cols=3):
    images = np.arange(n * rows * cols, dtype=np.uint8).reshape(n, rows, cols)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_round_trip(tmp_path, gz):
    images, labels = _mnist_like()
    suffix = ".gz" if gz else ""
    ip = _write(tmp_path / f"images-idx3-ubyte{suffix}", _idx_bytes(images), gz=gz)
    lp = _write(tmp_path / f"labels-idx1-ubyte{suffix}", _idx_bytes(labels), gz=gz)
    x, y = load_idx(ip, lp)
    assert x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(load_idx(str(ip)), images)


def test_load_idx_trusts_content_over_the_name(tmp_path):
    images, _ = _mnist_like()
    raw_named_gz = _write(tmp_path / "images.gz", _idx_bytes(images))  # a browser un-gzipped it
    gz_named_raw = _write(tmp_path / "images-idx3-ubyte", _idx_bytes(images), gz=True)
    np.testing.assert_array_equal(load_idx(raw_named_gz), images)
    np.testing.assert_array_equal(load_idx(gz_named_raw), images)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_load_idx_big_endian_types(tmp_path, dtype):
    images = (np.arange(2 * 3 * 2) - 5).astype(dtype).reshape(2, 3, 2) * 3
    x = load_idx(_write(tmp_path / "x.idx", _idx_bytes(images)))
    assert x.dtype == np.dtype(dtype) and x.dtype.isnative
    np.testing.assert_array_equal(x, images)


def test_load_idx_rejects_bad_magic_and_type(tmp_path):
    images, _ = _mnist_like()
    content = _idx_bytes(images)
    bad = _write(tmp_path / "bad", b"\x01\x02" + content[2:])
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {bad} is not an IDX file: expected the magic 00 00 <type> <ndim>, found 01 02 08 03"
        ),
    ):
        load_idx(bad)
    empty = _write(tmp_path / "empty", b"")
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {empty} is not an IDX file: expected the magic 00 00 <type> <ndim>, found an empty file"
        ),
    ):
        load_idx(empty)
    code = _write(tmp_path / "code", content[:2] + b"\x0a" + content[3:])
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {code} has unknown IDX type code 0x0a (magic 00 00 0a 03); known: 0x08 (ubyte), 0x09 (sbyte)"
        ),
    ):
        load_idx(code)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_rejects_truncated_and_oversized_files(tmp_path, gz):
    images, _ = _mnist_like()  # header 4 + 3·4 = 16 bytes, data 60 bytes
    content = _idx_bytes(images)
    what = "bytes once decompressed" if gz else "bytes"
    short = _write(tmp_path / "short", content[:-1], gz=gz)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {short} is truncated: shape (5, 4, 3) of ubyte needs 76 {what} (header 16 + data 60), found 75"
        ),
    ):
        load_idx(short)
    long = _write(tmp_path / "long", content + b"\x00\x00", gz=gz)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {long} is oversized: shape (5, 4, 3) of ubyte needs 76 {what} (header 16 + data 60), found 78"
        ),
    ):
        load_idx(long)
    header = _write(tmp_path / "header", content[:10], gz=gz)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {header} is truncated: its header needs 16 {what} for 3 dims, found 10"
        ),
    ):
        load_idx(header)


def test_load_idx_rejects_a_broken_gzip(tmp_path):
    images, _ = _mnist_like()
    broken = _write(tmp_path / "broken.gz", gzip.compress(_idx_bytes(images))[:-12])
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {broken} starts with the gzip magic bytes 1f 8b but does not decompress"
        ),
    ):
        load_idx(broken)


def test_load_idx_checks_dims_and_counts(tmp_path):
    images, labels = _mnist_like(n=5)
    ip = _write(tmp_path / "images", _idx_bytes(images))
    lp = _write(tmp_path / "labels", _idx_bytes(labels))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {lp} holds an array of shape (5,); images must have 3 dims (n, rows, cols)"
        ),
    ):
        load_idx(lp, ip)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {ip} holds uint8 of shape (5, 4, 3); labels must be integers with 1 dim (n,)"
        ),
    ):
        load_idx(ip, ip)
    floats = _write(tmp_path / "floats", _idx_bytes(labels.astype(np.float32)))
    with pytest.raises(
        ValueError,
        match=re.escape(f"load_idx: {floats} holds float32 of shape (5,); labels must be integers"),
    ):
        load_idx(ip, floats)
    fewer = _write(tmp_path / "fewer", _idx_bytes(labels[:4]))
    with pytest.raises(
        ValueError,
        match=re.escape(f"load_idx: {ip} has 5 images but {fewer} has 4 labels"),
    ):
        load_idx(ip, fewer)


# ----------------------------------------------------------------------------- load_npz


def test_load_npz_round_trip(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(4, 3), "y": np.array([0, 1, 1, 0])}
    path = tmp_path / "d.npz"
    np.savez_compressed(path, **arrays)
    loaded = load_npz(path)
    assert list(loaded) == ["x", "y"]
    chex.assert_trees_all_equal(loaded, arrays)
    assert list(load_npz(str(path), keys=["y"])) == ["y"]
    np.testing.assert_array_equal(load_npz(path, "x")["x"], arrays["x"])
    with pytest.raises(
        KeyError,
        match=re.escape(f"load_npz: {path} has no ['z']; available keys: ['x', 'y']"),
    ):
        load_npz(path, keys=["x", "z"])


def test_load_npz_refuses_pickles(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz(path)


# ----------------------------------------------------------------------------- module and docs


def test_every_public_name_has_a_docstring_and_a_docs_line():
    page = (ROOT / "docs" / "data.md").read_text()
    for name in data.__all__:
        assert getattr(data, name).__doc__, name
        assert f"`{name}" in page, name


def test_docs_code_samples_run():
    page = (ROOT / "docs" / "data.md").read_text()
    samples = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert samples
    namespace: dict = {}
    for sample in samples:  # the samples build on each other, as a reader runs them
        exec(compile(sample, "docs/data.md", "exec"), namespace)
