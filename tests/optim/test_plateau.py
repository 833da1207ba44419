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


def test_needs_a_value_and_valid_arguments():
    opt = optim.reduce_on_plateau()
    with pytest.raises(ValueError, match=r"reduce_on_plateau: update needs the monitored metric"):
        opt.update({"w": jnp.ones(1)}, opt.init({"w": jnp.ones(1)}))
    with pytest.raises(
        ValueError, match=r"reduce_on_plateau: factor must be in \(0.0, 1.0\), got 1.5"
    ):
        optim.reduce_on_plateau(factor=1.5)
    with pytest.raises(
        ValueError, match=r"reduce_on_plateau: patience must be a positive integer, got 0"
    ):
        optim.reduce_on_plateau(patience=0)
