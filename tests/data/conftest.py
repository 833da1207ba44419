"""Fixtures for the fundl.data tests: a dataset in which every example names itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _dataset(n: int, *, as_jax: bool = False) -> dict:
    ids = np.arange(n, dtype=np.int32)
    x = np.stack([ids, 10 * ids + 1, 100 * ids + 2], axis=1).astype(np.float32)
    d = {"x": x, "y": ids}
    return jax.tree.map(jnp.asarray, d) if as_jax else d


def _assert_aligned(batch: dict) -> None:
    y = np.asarray(batch["y"])
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.stack([y, 10 * y + 1, 100 * y + 2], 1))


@pytest.fixture(scope="session")
def make_data():
    """``make_data(n, as_jax=False)``: example i is x = [i, 10i + 1, 100i + 2] and y = i."""
    return _dataset


@pytest.fixture(scope="session")
def assert_aligned():
    """``assert_aligned(batch)``: x and y of every example still belong together."""
    return _assert_aligned
