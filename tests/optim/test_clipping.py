"""fundl.optim.clipping: global-norm and value clipping, NaN zeroing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundl import optim


def _tree(scale):
    return {"a": scale * jnp.array([3.0, 0.0]), "b": {"c": scale * jnp.array([[4.0]])}}


@given(scale=st.floats(0.01, 100.0), max_norm=st.floats(0.1, 10.0))
def test_global_norm_after_clipping(scale, max_norm):
    grads = _tree(scale)  # norm 5·scale
    opt = optim.clip_by_global_norm(max_norm)
    clipped, _ = opt.update(grads, opt.init(grads))
    norm = float(optim.global_norm(clipped))
    if 5 * scale > max_norm:
        np.testing.assert_allclose(norm, max_norm, rtol=1e-5)
        # direction kept
        np.testing.assert_allclose(
            clipped["a"] / norm, grads["a"] / (5 * scale), rtol=1e-5, atol=1e-7
        )
    else:
        np.testing.assert_allclose(clipped["a"], grads["a"], rtol=1e-6)
        np.testing.assert_allclose(norm, 5 * scale, rtol=1e-5)


def test_global_norm_value_and_zero_tree():
    np.testing.assert_allclose(optim.global_norm(_tree(1.0)), 5.0, rtol=1e-6)
    zeros = jax.tree.map(jnp.zeros_like, _tree(1.0))
    opt = optim.clip_by_global_norm(1.0)
    clipped, _ = opt.update(zeros, opt.init(zeros))
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(clipped))
    assert float(optim.global_norm({})) == 0.0


def test_global_norm_of_bfloat16_accumulates_in_float32():
    tree = {"w": jnp.full((4096,), 0.01, jnp.bfloat16)}
    expected = float(jnp.asarray(0.01, jnp.bfloat16)) * 64.0
    np.testing.assert_allclose(optim.global_norm(tree), expected, rtol=1e-5)


def test_clip_by_value():
    opt = optim.clip(1.0)
    grads = {"w": jnp.array([-3.0, -0.5, 0.0, 2.0])}
    clipped, _ = opt.update(grads, opt.init(grads))
    np.testing.assert_array_equal(clipped["w"], [-1.0, -0.5, 0.0, 1.0])


def test_zero_nans_replaces_and_reports():
    opt = optim.zero_nans()
    grads = {"a": jnp.array([1.0, jnp.nan]), "b": jnp.array([2.0])}
    state = opt.init(grads)
    clean, state = jax.jit(opt.update)(grads, state)
    np.testing.assert_array_equal(clean["a"], [1.0, 0.0])
    assert bool(state.found_nan["a"]) and not bool(state.found_nan["b"])


def test_bad_clipping_arguments():
    with pytest.raises(
        ValueError,
        match=r"clip_by_global_norm: max_norm must be a finite number in \[0, inf\), or a scalar "
        r"array with values there; got -1\.0$",
    ):
        optim.clip_by_global_norm(-1.0)
    with pytest.raises(ValueError, match=r"clip: max_abs must be a finite number .*; got nan$"):
        optim.clip(float("nan"))
    with pytest.raises(ValueError, match=r"clip: max_abs must be a finite number .*; got inf$"):
        optim.clip(float("inf"))


def test_bfloat16_updates_with_array_thresholds():
    grads = {"w": jnp.array([3.0, -4.0], jnp.bfloat16)}
    by_norm = optim.clip_by_global_norm(jnp.float32(1.0))  # float32 norm and bound, bf16 updates
    clipped, _ = by_norm.update(grads, by_norm.init(grads))
    assert clipped["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(clipped["w"].astype(jnp.float32), [0.6, -0.8], rtol=1e-2)
    by_value = optim.clip(jnp.float32(2.0))
    clipped, _ = by_value.update(grads, by_value.init(grads))
    assert clipped["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(clipped["w"].astype(jnp.float32), [2.0, -2.0])


def test_zero_nans_refuses_the_state_of_another_model():
    opt = optim.zero_nans()
    state = opt.init({"a": jnp.ones(1)})
    with pytest.raises(
        ValueError,
        match=r"zero_nans: grads and optimizer state differ in structure at \['b'\] vs \['a'\]; "
        r"the state may belong to another model",
    ):
        opt.update({"b": jnp.ones(1)}, state)


@pytest.mark.parametrize(
    "grads",
    [
        {"a": np.array([3e19, 4e19, 1.0], np.float32)},  # Σ g² = 2.5e39 overflows float32
        {"a": np.array([3e19, 0.0], np.float32), "b": np.array([[4e19]], np.float32)},
        {"a": np.array([-2e38, 1e38], np.float32), "b": np.array([1e-30], np.float32)},
    ],
)
def test_clipping_large_finite_gradients_keeps_their_direction(grads):
    # The plain sum of squares is inf, and c/inf = 0 zeroed every update.
    opt = optim.clip_by_global_norm(1.0)
    clipped, _ = jax.jit(opt.update)(jax.tree.map(jnp.asarray, grads), optim.EmptyState())
    norm = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in grads.values()))
    for k, g in grads.items():
        np.testing.assert_allclose(clipped[k], g.astype(np.float64) / norm, rtol=1e-6, atol=1e-44)
    np.testing.assert_allclose(optim.global_norm(grads), norm, rtol=1e-6)


def test_clipping_nan_and_inf_gradients():
    opt = optim.clip_by_global_norm(1.0)
    grads = {"a": jnp.array([1.0, jnp.nan, 3e19])}
    nan, _ = opt.update(grads, optim.EmptyState())
    assert np.isnan(optim.global_norm(grads))
    np.testing.assert_array_equal(nan["a"], grads["a"])  # NaN > c is false: left as it is
    inf, _ = opt.update({"a": jnp.array([1.0, jnp.inf, 3e19])}, optim.EmptyState())
    np.testing.assert_array_equal(np.isnan(inf["a"]), [False, True, False])  # inf·0 is NaN
    np.testing.assert_array_equal(np.asarray(inf["a"])[[0, 2]], [0.0, 0.0])  # c/inf = 0
