"""fundl.nn.base: the parameter check every layer makes."""

import jax
import jax.numpy as jnp
import pytest

from fundl.nn import Dense, check_params, expected_params, mlp


def test_expected_params_are_the_shapes_init_makes_without_arrays():
    spec = expected_params(Dense(3), (5, 2))
    assert jax.tree.map(lambda s: (s.shape, s.dtype), spec) == {
        "W": ((3, 2), jnp.float32),
        "b": ((3,), jnp.float32),
    }
    assert expected_params(Dense(3), (2,)) is expected_params(Dense(3), (7, 2))  # cached


def test_check_params_accepts_its_own_and_names_the_first_misfit():
    model = mlp([2, 4, 1])
    check_params(model, model.init(0), (8, 2))
    with pytest.raises(
        ValueError, match=r"params\['dense1'\]\['W'\] has shape \(4, 2\); .* expects \(5, 2\)"
    ):
        check_params(mlp([2, 5, 1]), model.init(0), (8, 2))
    with pytest.raises(ValueError, match=r"missing params\['W'\]"):
        check_params(Dense(1), 3.0, (8, 2))


def test_a_first_check_inside_a_trace_stages_nothing_into_it():
    """The check's shapes come from ``eval_shape``; its key is made inside it, so the
    first check of a layer under ``make_jaxpr``/``jit`` adds no op to the traced program
    (the jaxpr equals a second trace's)."""
    layer = Dense(7, use_bias=False)  # a config no other test checks first
    params = layer.init(jax.random.key(0), (2, 5))
    x = jnp.ones((2, 5))
    first = str(jax.make_jaxpr(lambda p: layer.apply(p, x))(params))
    assert "random_seed" not in first
    assert first == str(jax.make_jaxpr(lambda p: layer.apply(p, x))(params))
