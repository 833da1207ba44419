"""fundl.optim.hyperparams: hyperparameters in the state, changed without recompiling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import checkpoint, optim


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
    with pytest.raises(
        ValueError,
        match=r"adam: learning_rate must be a finite number in \[0, inf\), or a scalar array or a "
        r"schedule with values there; got -1\.0$",
    ):
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
    with pytest.raises(
        ValueError,
        match=r"inject_hyperparams: static_args must be argument names \(strings\), got 1",
    ):
        optim.inject_hyperparams(optim.sgd, static_args=(1,))
    with pytest.raises(
        ValueError,
        match=r"inject_hyperparams: static_args must be a tuple of argument names, got the string "
        r"'mask'; write \('mask',\)",
    ):
        optim.inject_hyperparams(optim.adamw, static_args="mask")


@pytest.mark.parametrize(
    "value, got",
    [
        (-1.0, r"-1\.0"),
        (float("nan"), "nan"),
        (True, r"True \(a bool, not a number\)"),
        (jnp.float32(-0.5), r"an array holding -0\.5"),
        (jnp.ones(2), r"an array of dtype float32 and shape \(2,\); pass a scalar"),
    ],
)
def test_with_hyperparams_checks_values_by_the_same_rules(value, got):
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=0.1, b1=0.9)
    state = opt.init({"w": jnp.ones(1)})
    with pytest.raises(
        ValueError,
        match=r"^with_hyperparams: learning_rate must be a finite number in \[0, inf\), or a scalar "
        rf"array with values there; got {got}$",
    ):
        optim.with_hyperparams(state, learning_rate=value)
    with pytest.raises(
        ValueError, match=r"^with_hyperparams: b1 must be a finite number in \[0, 1\)"
    ):
        optim.with_hyperparams(state, b1=1.0)


def test_schedules_are_checked_by_their_bounds_for_any_hyperparameter():
    schedules = optim.schedules
    with pytest.raises(
        ValueError, match=r"adam: b1 must be .*; got the schedule exponential_decay"
    ):
        optim.inject_hyperparams(optim.adam)(
            learning_rate=0.1, b1=schedules.exponential_decay(0.9, 2.0, 10)
        )
    with pytest.raises(
        ValueError, match=r"sgd: learning_rate must be .*, whose lowest value is -0\.1$"
    ):
        optim.inject_hyperparams(optim.sgd)(learning_rate=schedules.polynomial_decay(0.1, -0.1, 10))
    # A schedule for a β is fine when its values are: β₁ warms up from 0.5 to 0.9.
    opt = optim.inject_hyperparams(optim.adam)(
        learning_rate=0.1, b1=schedules.polynomial_decay(0.5, 0.9, 4)
    )
    state = opt.init({"w": jnp.zeros(1)})
    _, state = opt.update({"w": jnp.ones(1)}, state)
    np.testing.assert_allclose(state.hyperparams["b1"], 0.5)


def test_options_stay_static_and_are_checked():
    # moment_dtype (a callable dtype) and nesterov are options, not hyperparameters to inject.
    opt = optim.inject_hyperparams(optim.sgd)(
        learning_rate=0.1, momentum=0.9, nesterov=True, moment_dtype=jnp.float32
    )
    state = opt.init({"w": jnp.ones(1, jnp.bfloat16)})
    assert set(state.hyperparams) == {"learning_rate", "momentum"}
    assert state.inner.velocity["w"].dtype == jnp.float32
    with pytest.raises(ValueError, match=r"sgd: nesterov must be True or False, got 1$"):
        optim.inject_hyperparams(optim.sgd)(learning_rate=0.1, momentum=0.9, nesterov=1)


def test_float64_hyperparameters_meet_float32_moments_under_strict_promotion(x64):
    with x64():
        opt = optim.inject_hyperparams(optim.adamw)(learning_rate=0.1, b1=0.5, weight_decay=0.1)
        params = {"W": jnp.ones((2, 2), jnp.float32)}
        state = opt.init(params)
        assert state.hyperparams["b1"].dtype == jnp.float64
        updates, state = jax.jit(opt.update)({"W": jnp.ones((2, 2), jnp.float32)}, state, params)
        assert updates["W"].dtype == jnp.float32 and state.inner.mu["W"].dtype == jnp.float32
        np.testing.assert_allclose(updates["W"], -0.1 * (1 + 0.1), rtol=1e-6)


def test_a_donating_step_does_not_delete_the_callers_values():
    """with_hyperparams copies: a step that donates the state leaves the caller's learning
    rates (a scalar, or an array vmapped over) readable."""
    opt = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1)
    params = {"w": jnp.ones(2)}
    grads = {"w": jnp.ones(2)}
    step = jax.jit(opt.update, donate_argnums=1)
    rate = jnp.float32(0.5)
    step(grads, optim.with_hyperparams(opt.init(params), learning_rate=rate), params)
    assert float(rate) == 0.5
    rates = jnp.array([0.1, 0.2])
    states = jax.vmap(lambda r: optim.with_hyperparams(opt.init(params), learning_rate=r))(rates)
    jax.jit(jax.vmap(opt.update, in_axes=(None, 0, None)), donate_argnums=1)(grads, states, params)
    np.testing.assert_allclose(rates, [0.1, 0.2])


def test_a_scheduled_hyperparameter_cannot_be_set_by_hand(tmp_path):
    # The schedule sets it again at every update: a value set by hand was silently lost.
    schedule = optim.schedules.cosine_decay(0.1, 10)
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=schedule, b1=0.9)
    params = {"w": jnp.ones(2)}
    message = (
        r"^with_hyperparams: learning_rate follows a schedule, which sets it again at every "
        r"update, so a new value would be overwritten; to set it by hand, build the "
        r"optimizer with a number for it \(inject_hyperparams\(\.\.\.\)\(learning_rate=\.\.\.\)\) "
        r"or give a schedule with the values you want$"
    )
    state = opt.init(params)
    # the record survives jit, scan and vmap (static data, not leaves) and a checkpoint
    # restored into the optimizer's own state
    _, state = jax.jit(opt.update)({"w": jnp.ones(2)}, state, params)

    def body(s, _):
        return opt.update({"w": jnp.ones(2)}, s, params)[1], None

    state, _ = jax.lax.scan(body, state, None, length=2)
    batched = jax.vmap(lambda s: s, in_axes=(0,))(jax.tree.map(lambda x: x[None], state))
    checkpoint.save(tmp_path / "opt.safetensors", state)
    restored = checkpoint.restore(tmp_path / "opt.safetensors", opt.init(params))
    for s in (state, batched, restored):
        with pytest.raises(ValueError, match=message):
            optim.with_hyperparams(s, learning_rate=0.5)
    # three updates: the last one used (and recorded) the schedule's value at step 2
    np.testing.assert_allclose(restored.hyperparams["learning_rate"], schedule(2), rtol=1e-6)
    # a number-valued hyperparameter of the same optimizer is still set by hand
    changed = optim.with_hyperparams(state, b1=0.5)
    np.testing.assert_allclose(changed.hyperparams["b1"], 0.5)
    # the leaves and their key paths are a plain dict's: checkpoints saved before still load
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert paths[:3] == [".count", ".hyperparams['b1']", ".hyperparams['learning_rate']"]
    plain = state._replace(hyperparams=dict(state.hyperparams))
    assert jax.tree.leaves(plain) == jax.tree.leaves(state)
    updates, _ = opt.update({"w": jnp.ones(2)}, plain, params)  # a plain dict still runs
    assert np.isfinite(updates["w"]).all()
