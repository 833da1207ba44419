"""fundl.optim.accumulation: k micro-batches take the step of one k-times-larger batch."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import losses, mlp, optim


def test_accumulated_steps_equal_large_batch_steps(highest_precision):
    # full float32 matmuls: gradients of batches of 4 against one of 12 (different product
    # shapes, rounded differently at a GPU's default TF32 precision)
    model = mlp([3, 4, 2], "relu")
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (12, 3))
    y = jax.random.randint(jax.random.key(2), (12,), 0, 2)
    grad = jax.jit(jax.grad(lambda p, x, y: losses.softmax_cross_entropy(model.apply(p, x), y)))

    big = optim.adam(0.01)
    big_params, big_state = params, big.init(params)
    small = optim.accumulate(3, optim.adam(0.01))
    small_params, small_state = params, small.init(params)
    update = jax.jit(small.update)
    for _ in range(2):  # two optimizer steps
        updates, big_state = big.update(grad(big_params, x, y), big_state, big_params)
        big_params = optim.apply_updates(big_params, updates)
        for i in range(3):
            sl = slice(4 * i, 4 * i + 4)
            updates, small_state = update(
                grad(small_params, x[sl], y[sl]), small_state, small_params
            )
            if i < 2:
                assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
            small_params = optim.apply_updates(small_params, updates)
    chex.assert_trees_all_close(small_params, big_params, rtol=1e-5, atol=1e-6)
    assert int(small_state.inner.count) == 2  # the inner Adam stepped twice
    assert int(small_state.mini_step) == 0


def test_inner_state_is_untouched_between_steps():
    opt = optim.accumulate(2, optim.sgd(0.1, 0.9))
    params = {"w": jnp.zeros(1)}
    state = opt.init(params)
    _, state = opt.update({"w": jnp.ones(1)}, state)
    np.testing.assert_array_equal(state.inner.velocity["w"], [0.0])
    np.testing.assert_array_equal(state.grad_sum["w"], [1.0])
    updates, state = opt.update({"w": jnp.full((1,), 3.0)}, state)
    np.testing.assert_allclose(updates["w"], [-0.2])  # −0.1 · mean(1, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"accumulate: k must be a positive integer, got 0"):
        optim.accumulate(0, optim.sgd(0.1))
    with pytest.raises(TypeError, match=r"accumulate: inner must be a GradientTransformation"):
        optim.accumulate(2, "adam")


def test_gradients_must_match_the_sum_leaf_by_leaf():
    opt = optim.accumulate(2, optim.sgd(0.1))
    state = opt.init({"w": jnp.zeros(3)})
    with pytest.raises(
        ValueError,
        match=r"^accumulate: grads and optimizer state differ in shape at \['w'\]: \(1,\) vs \(3,\); "
        r"the state may belong to another model",
    ):
        opt.update({"w": jnp.ones(1)}, state)  # would broadcast into the sum
