"""fundl.optim.hyperparams: hyperparameters in the state, changed without recompiling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import optim


def _counting_jit(opt):
    traces = []

    def update(grads, state, params):
        traces.append(1)
        return opt.update(grads, state, params)

    return jax.jit(update), traces


def test_changing_the_learning_rate_does_not_recompile():
    opt = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    step, traces = _counting_jit(opt)
    grads = {"w": jnp.ones(2)}
    updates, state = step(grads, state, params)
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1], rtol=1e-6)
    state = optim.with_hyperparams(state, learning_rate=0.01)
    updates, state = step(grads, state, params)
    np.testing.assert_allclose(updates["w"], [-0.01, -0.01], rtol=1e-6)
    state = optim.with_hyperparams(state, learning_rate=jnp.float32(0.5))
    updates, _ = step(grads, state, params)
    np.testing.assert_allclose(updates["w"], [-0.5, -0.5], rtol=1e-6)
    assert len(traces) == 1


def test_injected_adam_equals_plain_adam():
    params = {"w": jnp.array([1.0, -1.0])}
    grads = {"w": jnp.array([0.3, -0.2])}
    plain = optim.adam(0.01, b1=0.8)
    injected = optim.inject_hyperparams(optim.adam)(learning_rate=0.01, b1=0.8)
    s1, s2 = plain.init(params), injected.init(params)
    for _ in range(3):
        u1, s1 = plain.update(grads, s1, params)
        u2, s2 = injected.update(grads, s2, params)
        chex.assert_trees_all_close(u1, u2, rtol=1e-6)
    assert set(s2.hyperparams) == {"learning_rate", "b1"}


def test_schedules_are_evaluated_and_recorded():
    schedule = optim.schedules.step_decay(1.0, 0.5, 1)
    opt = optim.inject_hyperparams(optim.sgd)(learning_rate=schedule)
    params = {"w": jnp.zeros(1)}
    state = opt.init(params)
    seen = []
    for _ in range(3):
        updates, state = opt.update({"w": jnp.ones(1)}, state)
        seen.append((float(state.hyperparams["learning_rate"]), float(updates["w"][0])))
    assert seen == [(1.0, -1.0), (0.5, -0.5), (0.25, -0.25)]


def test_vmap_over_injected_learning_rates():
    opt = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1, momentum=0.9)
    params = {"w": jnp.ones(2)}
    lrs = jnp.array([0.1, 0.2, 0.3, 0.4])
    states = jax.vmap(lambda lr: optim.with_hyperparams(opt.init(params), learning_rate=lr))(lrs)
    updates, _ = jax.vmap(opt.update, in_axes=(None, 0, None))({"w": jnp.ones(2)}, states, params)
    np.testing.assert_allclose(updates["w"][:, 0], -lrs, rtol=1e-6)


def test_static_arguments_pass_through():
    opt = optim.inject_hyperparams(optim.adamw)(learning_rate=0.1, mask=lambda path, leaf: True)
    params = {"b": jnp.ones(2)}
    state = opt.init(params)
    assert set(state.hyperparams) == {"learning_rate"}
    updates, _ = opt.update({"b": jnp.zeros(2)}, state, params)
    np.testing.assert_allclose(
        updates["b"], [-0.1 * 1e-4] * 2, rtol=1e-5
    )  # decayed: mask reached adamw


def test_errors():
    with pytest.raises(ValueError, match=r"adam: learning_rate must be in \[0.0, inf\], got -1.0"):
        optim.inject_hyperparams(optim.adam)(learning_rate=-1.0)
    state = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1).init({"w": jnp.ones(1)})
    with pytest.raises(
        ValueError,
        match=r"with_hyperparams: unknown hyperparameter\(s\) \['lr'\]; the state holds \['learning_rate'\]",
    ):
        optim.with_hyperparams(state, lr=0.2)
    with pytest.raises(
        TypeError,
        match=r"with_hyperparams: expected the state of an inject_hyperparams optimizer, got EmptyState",
    ):
        optim.with_hyperparams(optim.sgd(0.1).init({"w": jnp.ones(1)}), learning_rate=0.2)
