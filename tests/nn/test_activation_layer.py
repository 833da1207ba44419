"""fundl.nn.activation: an activation as a parameter-free layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import activations
from fundl.nn import Activation


def test_apply_init_and_shape():
    layer = Activation("leaky_relu", negative_slope=0.2)
    assert layer.init(jax.random.key(0), (3,)) == {}
    np.testing.assert_allclose(layer.apply({}, jnp.array([-1.0, 2.0])), [-0.2, 2.0])
    np.testing.assert_allclose(layer.derivative(jnp.array([-1.0, 2.0])), [0.2, 1.0])
    assert layer.output_shape((4, 3)) == (4, 3)
    assert layer.name == "leaky_relu"
    assert repr(layer) == "Activation('leaky_relu', negative_slope=0.2)"


def test_primitives_names_and_hashing():
    assert Activation(activations.relu) == Activation("relu")
    assert hash(Activation("relu")) == hash(Activation("relu"))
    assert Activation("softmax").derivative(jnp.ones(3)) is None


def test_bad_activation():
    with pytest.raises(ValueError, match=r"activation: unknown activation 'rel'; known:"):
        Activation("rel")
    with pytest.raises(
        TypeError,
        match=r"Activation: expected an activation name or a fundl primitive, got <ufunc 'sin'>",
    ):
        Activation(np.sin)
    with pytest.raises(
        TypeError, match=r"relu: unknown option\(s\) \['alpha'\]; allowed options: none"
    ):
        Activation("relu", alpha=1.0)


@pytest.mark.parametrize(
    "params, got",
    [
        ({"W": jnp.ones(1)}, r"params with keys \['W'\]"),
        (jnp.ones(3), r"params of type ArrayImpl"),  # was NumPy's "truth value ... ambiguous"
        ([1.0], r"params of type list"),
    ],
)
def test_params_other_than_empty_are_refused(params, got):
    with pytest.raises(
        ValueError, match=rf"Activation\('relu'\): has no parameters \(pass {{}}\), got {got}"
    ):
        Activation("relu").apply(params, jnp.ones(3))
    assert Activation("relu").apply({}, -jnp.ones(3)).tolist() == [0.0, 0.0, 0.0]
