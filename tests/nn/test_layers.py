"""Every layer, one row each, through the checks every layer must pass.

A new layer gets all of them by adding a row to ``LAYERS_UNDER_TEST``: output shape
equal to ``jax.eval_shape`` and to ``output_shape``, a hashable config usable as a
static ``jit`` argument, jit equal to eager, the model's gradient check, a clear error
(naming the layer) for an input of the wrong width, another config's parameters
refused, and an int seed accepted as a key.
"""

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import pytest

from fundl import gradcheck, losses
from fundl.nn import Activation, Dense, Sequential, mlp


class Case(NamedTuple):
    """One row: a layer config, its input shape, and a config its params must not fit."""

    id: str
    layer: Any
    input_shape: tuple[int, ...]  # (batch, features)
    other: Any = None  # a config whose parameters this layer must refuse
    bad_input_shape: tuple[int, ...] | None = None  # an input it must refuse
    bad_input_message: str = ""


LAYERS_UNDER_TEST = [
    Case(
        "dense",
        Dense(3),
        (4, 5),
        other=Dense(4),
        bad_input_shape=(4, 6),
        bad_input_message=r"dense: expected input with last dim 5",
    ),
    Case(
        "dense_no_bias",
        Dense(3, use_bias=False),
        (4, 5),
        other=Dense(3),
        bad_input_shape=(4, 2),
        bad_input_message=r"dense: expected input with last dim 5",
    ),
    Case(
        "activation",
        Activation("leaky_relu", negative_slope=0.2),
        (4, 5),
        bad_input_shape=(4, 5),  # integer input, below
        bad_input_message=r"leaky_relu: expected a floating-point input",
    ),
    Case(
        "sequential",
        Sequential([Dense(4), "tanh", Dense(2)]),
        (3, 5),
        other=Sequential([Dense(4), "tanh", Dense(3)]),
        bad_input_shape=(3, 7),
        bad_input_message=r"dense1: dense: expected input with last dim 5",
    ),
    Case(
        "nested_sequential",
        Sequential([Sequential([Dense(4), "relu"]), Dense(2)]),
        (3, 5),
        other=Sequential([Sequential([Dense(6), "relu"]), Dense(2)]),
        bad_input_shape=(3, 2),
        bad_input_message=r"sequential1: dense1: dense: expected input with last dim 5",
    ),
    Case(
        "mlp",
        mlp([5, 4, 4, 2], "gelu", "sigmoid"),
        (3, 5),
        other=mlp([5, 4, 2], "gelu", "sigmoid"),
        bad_input_shape=(3, 4),
        bad_input_message=r"dense1: dense: expected input with last dim 5",
    ),
]
IDS = [case.id for case in LAYERS_UNDER_TEST]


def _setup(case):
    params = case.layer.init(jax.random.key(0), case.input_shape[1:])
    x = jax.random.normal(jax.random.key(1), case.input_shape)
    return params, x


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_output_shape_equals_eval_shape(case):
    params, x = _setup(case)
    out = case.layer.apply(params, x)
    assert jax.eval_shape(case.layer.apply, params, x).shape == out.shape
    assert tuple(case.layer.output_shape(case.input_shape)) == out.shape


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_config_is_hashable_and_a_static_jit_argument(case):
    params, x = _setup(case)
    assert hash(case.layer) == hash(case.layer) and case.layer == case.layer
    apply = jax.jit(lambda layer, p, x: layer.apply(p, x), static_argnums=0)
    chex.assert_trees_all_close(apply(case.layer, params, x), case.layer.apply(params, x))


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_jit_equals_eager(case):
    params, x = _setup(case)
    chex.assert_trees_all_close(
        jax.jit(case.layer.apply)(params, x), case.layer.apply(params, x), rtol=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_gradcheck_of_the_layer_passes(case):
    params, x = _setup(case)
    y = jax.random.normal(jax.random.key(2), jax.eval_shape(case.layer.apply, params, x).shape)
    if jax.tree.leaves(params):
        report = gradcheck.check_model(case.layer, params, x, y, losses.mse, jit=False)
    else:  # no parameters: check the gradient with respect to the input
        report = gradcheck.check(lambda x: case.layer.apply({}, x), x, jit=False)
    report.assert_passed()


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_bad_input_gives_a_message_naming_the_layer(case):
    params, _ = _setup(case)
    bad = jnp.ones(case.bad_input_shape)
    if case.id == "activation":
        bad = bad.astype(jnp.int32)
    with pytest.raises((ValueError, TypeError), match=case.bad_input_message):
        case.layer.apply(params, bad)


@pytest.mark.parametrize(
    "case",
    [c for c in LAYERS_UNDER_TEST if c.other is not None],
    ids=[c.id for c in LAYERS_UNDER_TEST if c.other is not None],
)
def test_another_configs_params_are_refused(case):
    _, x = _setup(case)
    other = case.other.init(jax.random.key(0), case.input_shape[1:])
    with pytest.raises(ValueError, match=r"Are these another model's parameters\?|another model"):
        case.layer.apply(other, x)


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_an_int_seed_is_a_key(case):
    chex.assert_trees_all_equal(
        case.layer.init(5, case.input_shape[1:]),
        case.layer.init(jax.random.key(5), case.input_shape[1:]),
    )
