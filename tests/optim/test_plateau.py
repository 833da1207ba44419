"""fundl.optim.plateau: the scale drops after `patience` observations without improvement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import optim


def _run(opt, values):
    params = {"w": jnp.ones(1)}
    state = opt.init(params)
    update = jax.jit(opt.update)
    scales = []
    for v in values:
        updates, state = update({"w": jnp.ones(1)}, state, params, value=v)
        scales.append(float(updates["w"][0]))
    return scales, state


def test_scale_drops_after_patience_and_respects_cooldown():
    opt = optim.reduce_on_plateau(factor=0.5, patience=2, cooldown=1)
    values = [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0]
    scales, state = _run(opt, values)
    # improve, improve, flat 1, flat 2 → ×0.5; cooldown 1 obs; flat 1, flat 2 → ×0.5; improve
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert float(state.best) == 1.0


def test_relative_threshold():
    opt = optim.reduce_on_plateau(factor=0.1, patience=1, rtol=0.1)
    scales, _ = _run(opt, [1.0, 0.95, 0.85])  # 0.95 is not 10% better; 0.85 is better than 0.9
    np.testing.assert_allclose(scales, [1.0, 0.1, 0.1], rtol=1e-6)


def test_accumulation_and_min_scale():
    opt = optim.reduce_on_plateau(factor=0.1, patience=1, accumulation_size=2, min_scale=0.05)
    scales, _ = _run(opt, [4.0, 2.0, 3.0, 3.0, 3.0, 3.0])  # observations: 3, 3, 3
    np.testing.assert_allclose(scales, [1.0, 1.0, 1.0, 0.1, 0.1, 0.05])


def test_absolute_threshold():
    # best 1.0; rtol 1e-4, atol 0.1: an improvement must go below 1 − (1e-4 + 0.1) = 0.8999.
    with_atol = optim.reduce_on_plateau(factor=0.5, patience=1, atol=0.1)
    scales, state = _run(with_atol, [1.0, 0.95, 0.85])  # 0.95: not enough; 0.85: enough
    assert scales == [1.0, 0.5, 0.5]
    np.testing.assert_allclose(state.best, 0.85)
    # Without atol, 0.95 < 1 − 1e-4 improves and the scale never drops.
    scales, state = _run(optim.reduce_on_plateau(factor=0.5, patience=1), [1.0, 0.95, 0.85])
    assert scales == [1.0, 1.0, 1.0]


def test_relative_and_absolute_thresholds_add_on_the_magnitude_of_best():
    # best −2.0: threshold −2 − (0.1·|−2| + 0.05) = −2.25, so −2.2 is a plateau and −2.3 is not.
    opt = optim.reduce_on_plateau(factor=0.5, patience=1, rtol=0.1, atol=0.05)
    scales, state = _run(opt, [-2.0, -2.2, -2.3, -2.3])
    assert scales == [1.0, 0.5, 0.5, 0.25]
    np.testing.assert_allclose(state.best, -2.3)


def test_needs_a_value_and_valid_arguments():
    opt = optim.reduce_on_plateau()
    with pytest.raises(ValueError, match=r"reduce_on_plateau: update needs the monitored metric"):
        opt.update({"w": jnp.ones(1)}, opt.init({"w": jnp.ones(1)}))
    for arg, value, rule in [
        ("factor", 1.5, r"a finite number in \(0, 1\)"),
        ("factor", 0.0, r"a finite number in \(0, 1\)"),
        ("atol", -0.1, r"a finite number in \[0, inf\)"),
        ("rtol", float("inf"), r"a finite number in \[0, inf\)"),
        ("min_scale", 2.0, r"a finite number in \[0, 1\]"),  # the scale starts at 1
        ("patience", 0, "a positive integer"),
        ("cooldown", -1, "a non-negative integer"),
        ("accumulation_size", 2.0, "a positive integer"),
    ]:
        with pytest.raises(
            ValueError, match=rf"^reduce_on_plateau: {arg} must be {rule}.*{value}$"
        ):
            optim.reduce_on_plateau(**{arg: value})


def test_bfloat16_updates_keep_their_dtype():
    opt = optim.reduce_on_plateau(factor=0.5, patience=1)
    grads = {"w": jnp.ones(2, jnp.bfloat16)}
    state = opt.init(grads)
    for v in (1.0, 1.0):
        updates, state = opt.update(grads, state, value=v)
    assert updates["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(updates["w"].astype(jnp.float32), [0.5, 0.5])
