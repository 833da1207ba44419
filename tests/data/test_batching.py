"""fundl.data.batching: epochs against the permutation, resume cursors, epoch means."""

import inspect
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundl.data import batches, epoch_batches, num_batches, weighted_mean


def _order(key, epoch, n):
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))


def _concat(bs):
    return jax.tree.map(lambda *leaves: np.concatenate([np.asarray(a) for a in leaves]), *bs)


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


def test_num_batches_rejects_a_drop_last_that_is_not_a_bool():
    with pytest.raises(
        ValueError, match=re.escape("num_batches: drop_last must be True or False, got 1")
    ):
        num_batches(10, 4, drop_last=1)


def test_defaults_agree_every_batch_is_yielded_unless_asked(make_data):
    for fn in (num_batches, batches):
        assert inspect.signature(fn).parameters["drop_last"].default is False
    d = make_data(10)
    assert num_batches(10, 4) == len(list(batches(d, 4))) == 3
    assert num_batches(10, 4, drop_last=True) == len(list(batches(d, 4, drop_last=True))) == 2


# ----------------------------------------------------------------------------- batches


def test_unshuffled_batches_are_the_data_in_order_with_a_partial_last_batch(make_data):
    d = make_data(10)
    out = list(batches(d, 4))
    assert [len(b["y"]) for b in out] == [4, 4, 2]
    assert all(isinstance(b["x"], np.ndarray) for b in out)
    chex.assert_trees_all_equal(_concat(out), d)


def test_drop_last_drops_the_partial_batch(make_data):
    out = list(batches(make_data(10), 4, drop_last=True))
    assert [len(b["y"]) for b in out] == [4, 4]
    np.testing.assert_array_equal(_concat(out)["y"], np.arange(8))


@pytest.mark.parametrize("as_jax", [False, True])
def test_shuffled_epoch_follows_the_fold_in_permutation(make_data, assert_aligned, key, as_jax):
    n = 23
    d = make_data(n, as_jax=as_jax)
    out = list(batches(d, 5, key=key, epoch=3))
    assert [len(b["y"]) for b in out] == [5, 5, 5, 5, 3]
    leaf_type = jax.Array if as_jax else np.ndarray
    assert all(isinstance(leaf, leaf_type) for b in out for leaf in jax.tree.leaves(b))
    for b in out:
        assert_aligned(b)
    seen = _concat(out)["y"]
    np.testing.assert_array_equal(seen, _order(key, 3, n))
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # every example exactly once


def test_order_is_a_function_of_key_and_epoch(make_data, key):
    d = make_data(50)

    def order(k, epoch):
        return _concat(list(batches(d, 8, key=k, epoch=epoch)))["y"]

    np.testing.assert_array_equal(order(key, 2), order(key, 2))
    assert not np.array_equal(order(key, 2), order(key, 3))
    assert not np.array_equal(order(key, 2), order(jax.random.key(1), 2))
    # numpy and jax copies of the data see the same order
    np.testing.assert_array_equal(
        order(key, 2), _concat(list(batches(make_data(50, as_jax=True), 8, key=key, epoch=2)))["y"]
    )


@pytest.mark.parametrize("drop_last", [False, True])
def test_start_resumes_exactly_the_tail_of_the_epoch(make_data, key, drop_last):
    d = make_data(30)
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
def test_batches_cover_the_permutation(make_data, n, batch_size, drop_last, seed):
    if drop_last and batch_size > n:
        return
    key = jax.random.key(seed)
    out = list(batches(make_data(n), batch_size, key=key, epoch=seed % 5, drop_last=drop_last))
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
def test_batches_rejects_bad_batch_size_when_called(make_data, bad):
    with pytest.raises(
        ValueError,
        match=re.escape(f"batches: batch_size must be a positive integer, got {bad!r}"),
    ):
        batches(make_data(4), bad)  # not iterated: the check is eager


def test_batches_errors(make_data):
    d = make_data(10)
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


def test_batches_without_drop_last_accepts_a_batch_larger_than_the_data(make_data):
    out = list(batches(make_data(3), 8))
    assert len(out) == 1 and len(out[0]["y"]) == 3


def test_batches_check_drop_last_and_key(make_data, key):
    d = make_data(10)
    with pytest.raises(
        ValueError, match=re.escape("batches: drop_last must be True or False, got 'yes' (a str)")
    ):
        batches(d, 4, drop_last="yes")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "batches: key must be a PRNG key (jax.random.key(seed)) or an int seed, got 0.5"
        ),
    ):
        batches(d, 4, key=0.5)
    seeded = _concat(list(batches(d, 4, key=0, epoch=1)))["y"]  # an int seed is a key
    np.testing.assert_array_equal(seeded, _order(jax.random.key(0), 1, 10))


# ----------------------------------------------------------------------------- epoch_batches


@pytest.mark.parametrize("use_key", [False, True])
def test_epoch_batches_equals_stacked_batches(make_data, key, use_key):
    d = make_data(23)
    k = key if use_key else None
    stacked = epoch_batches(d, 5, k, 4)
    want = list(batches(d, 5, key=k, epoch=4, drop_last=True))
    chex.assert_shape(stacked["x"], (4, 5, 3))
    chex.assert_shape(stacked["y"], (4, 5))
    assert isinstance(stacked["x"], jax.Array) and stacked["y"].dtype == jnp.int32
    chex.assert_trees_all_equal(
        jax.tree.map(np.asarray, stacked), jax.tree.map(lambda *b: np.stack(b), *want)
    )


def test_epoch_batches_under_jit_with_a_traced_epoch(make_data, key):
    d = make_data(20, as_jax=True)
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


def test_epoch_batches_feeds_lax_scan(make_data, key):
    d = make_data(12, as_jax=True)

    @jax.jit
    def sums(data, epoch):
        def body(total, batch):
            return total + jnp.sum(batch["y"]), jnp.sum(batch["y"])

        return jax.lax.scan(body, jnp.int32(0), epoch_batches(data, 4, key, epoch))

    total, per_batch = sums(d, 1)
    assert int(total) == sum(range(12)) and per_batch.shape == (3,)


def test_epoch_batches_errors(make_data):
    with pytest.raises(
        ValueError,
        match=re.escape("epoch_batches: batch_size 8 > 5 examples leaves no full batch"),
    ):
        epoch_batches(make_data(5), 8)
    with pytest.raises(
        ValueError,
        match=r"epoch_batches: batch_size must be a positive integer, got 0",
    ):
        epoch_batches(make_data(5), 0)
    with pytest.raises(
        ValueError, match=r"epoch_batches: epoch must be a non-negative integer, got -1"
    ):
        epoch_batches(make_data(5), 2, jax.random.key(0), -1)


def test_epoch_batches_checks_epoch_arrays_and_key(make_data):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "epoch_batches: epoch must be a non-negative integer or an integer scalar array, "
            "got an array of dtype float32 and shape ()"
        ),
    ):
        epoch_batches(make_data(5), 2, jax.random.key(0), jnp.float32(1.0))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "epoch_batches: key must be a PRNG key (jax.random.key(seed)) or an int seed, got 'k'"
        ),
    ):
        epoch_batches(make_data(5), 2, "k")
    # a concrete negative array was read by fold_in as 2**32 - 1, silently
    for epoch in (np.array(-1), jnp.array(-1)):
        with pytest.raises(
            ValueError, match=re.escape("epoch_batches: epoch must be non-negative, got -1")
        ):
            epoch_batches(make_data(5), 2, jax.random.key(0), epoch)


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


def test_weighted_mean_rejects_values_and_weights_that_are_not_numbers():
    with pytest.raises(
        ValueError,
        match=re.escape("weighted_mean: weights must be numbers (the batch sizes), got [1, 'a']"),
    ):
        weighted_mean([1.0, 2.0], [1, "a"])
    with pytest.raises(
        ValueError,
        match=re.escape("weighted_mean: weights must be scalars, got an array of shape (2, 1)"),
    ):
        weighted_mean([1.0, 2.0], [[1], [2]])
    with pytest.raises(
        ValueError,
        match=re.escape("weighted_mean: values[1]['loss'] must be a real number, got 'x'"),
    ):
        weighted_mean([{"loss": 1.0}, {"loss": "x"}], [1, 1])
