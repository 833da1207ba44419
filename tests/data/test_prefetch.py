"""fundl.data.prefetch: the same batches, already on the device, size of them ahead."""

import re

import chex
import jax
import numpy as np
import pytest

from fundl.data import batches, prefetch_to_device

# ----------------------------------------------------------------------------- prefetch_to_device


def test_prefetch_yields_the_same_batches_on_the_device(make_data, key):
    d = make_data(10)
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


def test_prefetch_checks_its_arguments_when_called():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "prefetch_to_device: sharding must be a jax.sharding.Sharding, a jax.Device or None, "
            "got 'gpu'"
        ),
    ):
        prefetch_to_device([], sharding="gpu")
    with pytest.raises(
        ValueError,
        match=re.escape("prefetch_to_device: iterator must be an iterable of batches, got 3"),
    ):
        prefetch_to_device(3)
    device = jax.devices()[0]
    (out,) = prefetch_to_device([np.ones(2)], sharding=device)
    assert out.devices() == {device}


@pytest.mark.parametrize("size", [1, 2, 5])
def test_prefetch_raises_a_producer_error_after_the_batches_before_it(size):
    # A plain loop sees batches 0 and 1, then the error; prefetching must not lose them
    # (it raised as soon as it fetched ahead, before yielding batch 0).
    def source():
        yield np.zeros(2)
        yield np.ones(2)
        raise RuntimeError("corrupt record 2")

    got = []
    with pytest.raises(RuntimeError, match="corrupt record 2"):
        for batch in prefetch_to_device(source(), size):
            got.append(float(batch[0]))
    assert got == [0.0, 1.0]


def test_prefetch_stops_at_the_first_stop_iteration():
    class Resuming:  # yields again after a StopIteration; a for loop never sees the 4
        def __init__(self):
            self.calls = 0

        def __iter__(self):
            return self

        def __next__(self):
            self.calls += 1
            if self.calls == 3 or self.calls > 5:
                raise StopIteration
            return np.array([self.calls])

    assert [int(b[0]) for b in Resuming()] == [1, 2]
    assert [int(b[0]) for b in prefetch_to_device(Resuming(), 2)] == [1, 2]
