"""fundl.nn.norm: batch, layer and RMS norm against float64 NumPy, running statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import gradcheck, losses
from fundl.nn import (
    BatchNorm,
    Dense,
    LayerNorm,
    RMSNorm,
    Sequential,
    batch_norm,
    layer_norm,
    rms_norm,
)


def _np_normalize(x, gamma, beta, axes, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_values_against_float64_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)) * 3 + 1
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    args = [jnp.asarray(a, jnp.float32) for a in (x, gamma, beta)]
    np.testing.assert_allclose(
        batch_norm(*args), _np_normalize(x, gamma, beta, 0, 1e-5), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        layer_norm(*args), _np_normalize(x, gamma, beta, -1, 1e-5), rtol=1e-5, atol=1e-5
    )
    rms = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * gamma
    np.testing.assert_allclose(rms_norm(args[0], args[1]), rms, rtol=1e-5, atol=1e-5)
    images = rng.normal(size=(2, 3, 3, 4))  # NHWC: statistics over N, H and W
    out = batch_norm(jnp.asarray(images, jnp.float32), jnp.ones(4), jnp.zeros(4))
    np.testing.assert_allclose(out, _np_normalize(images, 1, 0, (0, 1, 2), 1e-5), atol=1e-5)


def test_running_statistics_follow_the_documented_update_over_steps():
    # running ← m·running + (1 − m)·batch, with the unbiased batch variance (PyTorch's)
    layer = BatchNorm(momentum=0.7)
    params, state = layer.init_with_state(0, (3,))
    mean, var = np.zeros(3), np.ones(3)
    step = jax.jit(lambda s, x: layer.apply_with_state(params, s, x, train=True))
    for seed in range(4):
        x = np.random.default_rng(seed).normal(size=(5, 3)) * (seed + 1) + seed
        _, state = step(state, jnp.asarray(x, jnp.float32))
        mean = 0.7 * mean + 0.3 * x.mean(0)
        var = 0.7 * var + 0.3 * x.var(0, ddof=1)
        np.testing.assert_allclose(state["mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["var"], var, rtol=1e-5, atol=1e-6)
    # evaluation normalizes with the running statistics and leaves them as they are
    x = jnp.asarray(np.random.default_rng(9).normal(size=(2, 3)), jnp.float32)
    y, same = layer.apply_with_state(params, state, x)
    np.testing.assert_allclose(
        y, (np.asarray(x) - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5
    )
    assert same is state


def test_pytorch_equivalent_momentum_is_one_minus_ours():
    # torch.nn.BatchNorm1d(momentum=0.1) updates running = 0.9·running + 0.1·batch
    layer = BatchNorm()  # momentum=0.9: the weight of the old value
    params, state = layer.init_with_state(0, (2,))
    x = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    _, state = layer.apply_with_state(params, state, x, train=True)
    np.testing.assert_allclose(state["mean"], 0.1 * np.array([2.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(state["var"], 0.9 + 0.1 * np.array([2.0, 8.0]), rtol=1e-6)


def test_the_backward_rule_uses_the_batch_statistics():
    # A rule treating μ and σ² as constants gets dx = g γ/σ; the full one subtracts the
    # mean of the gradient and its projection on x̂: with g = 1 the true dx is 0.
    x = jax.random.normal(jax.random.key(0), (8, 3))
    dx = jax.grad(lambda x: jnp.sum(batch_norm(x, jnp.ones(3), jnp.zeros(3))))(x)
    np.testing.assert_allclose(dx, np.zeros((8, 3)), atol=1e-5)


@pytest.mark.slow
def test_gradcheck_of_a_model_with_batch_norm_in_both_modes():
    model = Sequential([Dense(4), BatchNorm(), "tanh", Dense(2)])
    params, state = model.init_with_state(0, (3,))
    x = jax.random.normal(jax.random.key(1), (6, 3))
    y = jax.random.normal(jax.random.key(2), (6, 2))
    _, trained = model.apply_with_state(params, state, x, train=True)  # non-trivial statistics
    for train in (True, False):
        gradcheck.check_model(
            model, params, x, y, losses.mse, state=trained, train=train, jit=False
        ).assert_passed()


def test_bad_input():
    with pytest.raises(
        ValueError, match=r"BatchNorm: momentum must be a finite number in \[0, 1\); got 1.5"
    ):
        BatchNorm(momentum=1.5)
    with pytest.raises(
        ValueError, match=r"LayerNorm: eps must be a finite number in \(0, inf\); got 0"
    ):
        LayerNorm(eps=0)
    with pytest.raises(ValueError, match=r"RMSNorm: param_dtype must be a floating dtype"):
        RMSNorm(param_dtype=jnp.int32)
    layer = BatchNorm()
    params, state = layer.init_with_state(0, (3,))
    with pytest.raises(
        ValueError,
        match=r"BatchNorm\(\): train=True needs at least 2 values per feature for the batch "
        r"statistics, got inputs of shape \(1, 3\); use a batch of 2 or more",
    ):
        layer.apply_with_state(params, state, jnp.ones((1, 3)), train=True)
    layer.apply_with_state(params, state, jnp.ones((1, 3)))  # evaluation: fine
    with pytest.raises(ValueError, match=r"batch_norm: batch statistics need at least 2 values"):
        batch_norm(jnp.ones((1, 3)), jnp.ones(3), jnp.zeros(3))
    with pytest.raises(
        ValueError, match=r"layer_norm: expected per-feature vectors of shape \(3,\)"
    ):
        layer_norm(jnp.ones((2, 3)), jnp.ones(4), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"BatchNorm\(\): has state .*; call apply_with_state"):
        layer.apply(params, jnp.ones((4, 3)))
    with pytest.raises(
        ValueError, match=r"BatchNorm\(\): missing state\['mean'\]; missing state\['var'\]"
    ):
        layer.apply_with_state(params, {}, jnp.ones((4, 3)), train=True)
