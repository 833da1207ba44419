"""fundl.optim.scaling: the one moving average the blocks share (the blocks run in test_alias)."""

import jax.numpy as jnp
import numpy as np

from fundl import optim
from fundl.optim import scaling


def test_update_moment_is_the_moving_average_in_the_moment_dtype():
    g = {"w": jnp.array([1.0078125, -2.0], jnp.bfloat16)}  # 1 + 2⁻⁷, exact in bfloat16
    m = {"w": jnp.array([0.5, 0.5], jnp.float32)}
    first = scaling._update_moment(g, m, 0.9)
    np.testing.assert_allclose(first["w"], 0.9 * 0.5 + 0.1 * np.array([1.0078125, -2.0]), rtol=1e-7)
    # Squared after the cast: (1 + 2⁻⁷)² needs more bits than bfloat16 has.
    second = scaling._update_moment(g, m, 0.0, order=2)
    assert second["w"].dtype == jnp.float32
    np.testing.assert_array_equal(second["w"], np.float32([1.0078125**2, 4.0]))


def test_update_moment_casts_an_array_decay(x64):
    with x64():
        m = {"w": jnp.ones(2, jnp.float32)}
        out = scaling._update_moment({"w": jnp.zeros(2, jnp.float32)}, m, jnp.float64(0.25))
        assert out["w"].dtype == jnp.float32
        np.testing.assert_allclose(out["w"], [0.25, 0.25])


def test_trust_ratio_of_parameters_whose_sum_of_squares_overflows():
    # ‖p‖ = 5e19 is finite, Σ p² is not in float32: the ratio was inf/1 and the update inf.
    block = optim.scale_by_trust_ratio()
    params = {"w": jnp.array([3e19, 4e19], jnp.float32)}
    updates, _ = block.update({"w": jnp.array([0.6, 0.8])}, block.init(params), params)
    np.testing.assert_allclose(updates["w"], [3e19, 4e19], rtol=1e-6)
