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
        ValueError,
        match=r"backprop: expected inputs of shape \(m, n_0\) with m ≥ 1, got shape \(2,\)",
    ):
        backprop(model, params, jnp.ones(2), x, losses.mse)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: labels must be in \[0, 1\)"):
        backprop(model, params, x, jnp.array([0, 1, 0, 0]), losses.softmax_cross_entropy)


def test_binary_cross_entropy_takes_integer_targets_as_values():
    """0/1 integer targets are values of Y (the loss takes them), never one-hot labels: the
    one-hot made W's gradient (k, m, n) and b's (m, k), silently."""
    x, ky = _data(m=6)
    y = jax.random.bernoulli(ky, 0.5, (6, 3)).astype(jnp.int32)
    for out, loss in [
        ("sigmoid", losses.binary_cross_entropy),
        (None, losses.binary_cross_entropy_with_logits),
    ]:
        model = mlp([2, 4, 3], "relu", out)
        params = model.init(jax.random.key(1))
        manual = backprop(model, params, x, y, loss)
        y_float = y.astype(jnp.float32)  # the same targets, as floats
        auto = jax.grad(lambda p, m=model, f=loss, t=y_float: f(m.apply(p, x), t))(params)
        chex.assert_trees_all_close(manual, auto, rtol=2e-5, atol=1e-7)


def test_cross_entropy_output_rule_keeps_soft_targets_and_dropped_labels(x64):
    """dZ^[L] = Ŷ Σ_k Y_k − Y (the losses' own rule): targets that do not sum to one, and
    under jit an out-of-range label (loss NaN, gradient dropped) agree with jax.grad."""
    x = jax.random.normal(jax.random.key(0), (4, 2))
    soft = jnp.array([[0.5, 0.7], [1.0, 0.0], [0.2, 0.2], [0.0, 1.0]])
    labels = jnp.array([0, 1, 5, 1])  # 5 is out of range: only readable as such outside jit
    for out, loss in [
        (None, losses.softmax_cross_entropy),
        ("softmax", losses.categorical_cross_entropy),
    ]:
        model = mlp([2, 3, 2], "relu", out)
        params = model.init(jax.random.key(1))

        def auto(p, y, x=x, model=model, loss=loss):
            return jax.grad(lambda p: loss(model.apply(p, x), y))(p)

        with x64():
            p64, x64_, soft64 = jax.tree.map(lambda a: a.astype(jnp.float64), (params, x, soft))
            manual = backprop(model, p64, x64_, soft64, loss)
            expected = auto(p64, soft64, x=x64_)
            chex.assert_trees_all_close(manual, expected, rtol=1e-12, atol=1e-15)
        manual = jax.jit(backprop, static_argnums=(0, 4))(model, params, x, labels, loss)
        chex.assert_trees_all_close(manual, jax.jit(auto)(params, labels), rtol=2e-5, atol=1e-7)


def test_inputs_and_params_are_checked_as_apply_checks_them():
    model = mlp([2, 3, 1])
    params = model.init(jax.random.key(0))
    x, y = jnp.ones((4, 2)), jnp.ones((4, 1))
    other = mlp([2, 5, 1]).init(jax.random.key(0))  # ran silently, with 5 hidden units
    with pytest.raises(
        ValueError, match=r"backprop: dense1: Dense\(3\): params\['W'\] has shape \(5, 2\)"
    ):
        backprop(model, other, x, y, losses.mse)
    with pytest.raises(ValueError, match=r"backprop: dense2: .*missing params\['W'\]"):
        backprop(model, {"dense1": params["dense1"]}, x, y, losses.mse)  # was a KeyError
    with pytest.raises(ValueError, match=r"backprop: params has 'dense3', which is not a layer"):
        backprop(model, {**params, "dense3": params["dense2"]}, x, y, losses.mse)
    with pytest.raises(
        ValueError, match=r"backprop: dense1: dense: expected input with last dim 2 .* \(4, 3\)"
    ):
        backprop(model, params, jnp.ones((4, 3)), y, losses.mse)  # was JAX's dot_general error
    with pytest.raises(TypeError, match=r"backprop: dense1: dense: expected a floating-point"):
        backprop(model, params, jnp.ones((4, 2), jnp.int32), y, losses.mse)
    with pytest.raises(ValueError, match=r"backprop: expected inputs .* m ≥ 1, got shape \(0, 2\)"):
        backprop(model, params, jnp.ones((0, 2)), y[:0], losses.mse)  # was ZeroDivisionError
    with pytest.raises(ValueError, match=r"backprop: return_intermediates must be True or False"):
        backprop(model, params, x, y, losses.mse, return_intermediates="yes")
