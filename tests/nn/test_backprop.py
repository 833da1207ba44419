"""fundl.nn.backprop: the notes' manual algorithm equals jax.grad, layer by layer."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import losses
from fundl.nn import Dense, Sequential, backprop, mlp

# Manual backprop against jax.grad of the hand-written rules: two computations of the same
# float32 gradients, held to each other with full-float32 matmuls on every backend (see
# tests/conftest.py).
pytestmark = pytest.mark.usefixtures("highest_precision")


def _data(m=16, n=2, k=1, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (m, n))
    return x, ky


CASES = [
    # (sizes, hidden, output activation, loss, target kind)
    ([2, 3, 3, 1], "relu", "sigmoid", losses.binary_cross_entropy, "binary"),
    ([2, 4, 3], "tanh", "softmax", losses.categorical_cross_entropy, "labels"),
    ([2, 4, 3], "relu", "softmax", losses.categorical_cross_entropy, "onehot"),
    ([2, 4, 1], "leaky_relu", None, losses.binary_cross_entropy_with_logits, "binary"),
    ([2, 5, 4, 3], "elu", None, losses.softmax_cross_entropy, "labels"),
    ([2, 4, 2], "gelu", None, losses.mse, "real"),
    ([2, 4, 2], "softplus", "tanh", losses.mse, "real"),
    (
        [2, 4, 3],
        "softmax",
        None,
        losses.softmax_cross_entropy,
        "labels",
    ),  # non-elementwise hidden g
    ([2, 4, 3], "sigmoid", "sigmoid", losses.binary_cross_entropy, "binary3"),  # multi-output BCE
]


def _targets(kind, key, m, k):
    if kind == "binary":
        return jax.random.bernoulli(key, 0.5, (m, 1)).astype(jnp.float32)
    if kind == "binary3":
        return jax.random.bernoulli(key, 0.5, (m, k)).astype(jnp.float32)
    if kind == "labels":
        return jax.random.randint(key, (m,), 0, k)
    if kind == "onehot":
        return jax.nn.one_hot(jax.random.randint(key, (m,), 0, k), k)
    return jax.random.normal(key, (m, k))


@pytest.mark.parametrize("sizes, hidden, output, loss, kind", CASES)
def test_manual_backprop_equals_jax_grad(sizes, hidden, output, loss, kind):
    model = mlp(sizes, hidden, output)
    params = model.init(jax.random.key(1))
    x, ky = _data(n=sizes[0])
    y = _targets(kind, ky, 16, sizes[-1])
    manual = backprop(model, params, x, y, loss)
    auto = jax.grad(lambda p: loss(model.apply(p, x), y))(params)
    chex.assert_trees_all_close(manual, auto, rtol=2e-5, atol=1e-6)


def test_fused_output_starts_from_a_minus_y():
    model = mlp([2, 3, 3, 1], "relu", "sigmoid")
    params = model.init(jax.random.key(0))
    x, ky = _data()
    y = _targets("binary", ky, 16, 1)
    grads, traces = backprop(
        model, params, x, y, losses.binary_cross_entropy, return_intermediates=True
    )
    assert [t.name for t in traces] == ["dense1", "dense2", "dense3"]
    out = traces[-1]
    chex.assert_trees_all_close(out.dZ, out.A - y)  # dZ[L] = A[L] − Y
    assert out.dA is None
    # dW[L] = (1/m) dZ[L]ᵀ A[L-1];  db[L] = (1/m) Σ dZ[L];  dA[L-1] = dZ[L] W[L]
    chex.assert_trees_all_close(grads["dense3"]["W"], out.dZ.T @ traces[1].A / 16, rtol=1e-6)
    chex.assert_trees_all_close(grads["dense3"]["b"], out.dZ.sum(0) / 16, rtol=1e-6)
    chex.assert_trees_all_close(traces[1].dA, out.dZ @ params["dense3"]["W"], rtol=1e-6)
    # dZ[l] = dA[l] ⊙ relu'(Z[l])
    chex.assert_trees_all_close(
        traces[1].dZ, traces[1].dA * (traces[1].Z > 0).astype(jnp.float32), rtol=1e-6
    )
    np.testing.assert_allclose(traces[0].dW_norm, np.linalg.norm(grads["dense1"]["W"]), rtol=1e-6)
    chex.assert_shape([t.Z for t in traces], [(16, 3), (16, 3), (16, 1)])


def test_jit_compatible_with_static_model():
    model = mlp([2, 4, 3], "relu")
    params = model.init(jax.random.key(0))
    x, ky = _data()
    y = _targets("labels", ky, 16, 3)
    fn = jax.jit(backprop, static_argnums=(0, 4))
    chex.assert_trees_all_close(
        fn(model, params, x, y, losses.softmax_cross_entropy),
        backprop(model, params, x, y, losses.softmax_cross_entropy),
        rtol=1e-6,
    )


def test_no_bias_layers():
    model = Sequential(
        [Dense(3, use_bias=False), "relu", Dense(1, use_bias=False)], input_shape=(2,)
    )
    params = model.init(jax.random.key(0))
    x, ky = _data()
    y = _targets("real", ky, 16, 1)
    manual = backprop(model, params, x, y, losses.mse)
    auto = jax.grad(lambda p: losses.mse(model.apply(p, x), y))(params)
    chex.assert_trees_all_close(manual, auto, rtol=1e-5, atol=1e-7)


def test_errors():
    x = jnp.ones((4, 2))
    with pytest.raises(
        TypeError,
        match=r"backprop: supports Sequential models of Dense layers, each followed by at most one activation; layer 'relu1'",
    ):
        backprop(Sequential(["relu", Dense(1)]), {}, x, x, losses.mse)
    with pytest.raises(TypeError, match=r"layer 'tanh1'"):
        backprop(Sequential([Dense(2), "relu", "tanh"]), {}, x, x, losses.mse)
    with pytest.raises(TypeError, match=r"backprop: expected a Sequential model, got Dense"):
        backprop(Dense(2), {}, x, x, losses.mse)
    model = mlp([2, 1])
    params = model.init(jax.random.key(0))
    with pytest.raises(TypeError, match=r"backprop: loss must be a fundl loss \(a primitive\)"):
        backprop(model, params, x, x[:, :1], lambda a, b: jnp.mean((a - b) ** 2))
    with pytest.raises(
        ValueError, match=r"backprop: expected inputs of shape \(m, n_0\), got shape \(2,\)"
    ):
        backprop(model, params, jnp.ones(2), x, losses.mse)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: labels must be in \[0, 1\)"):
        backprop(model, params, x, jnp.array([0, 1, 0, 0]), losses.softmax_cross_entropy)
