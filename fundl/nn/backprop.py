"""Manual backpropagation, exactly the notes' algorithm, for ``Sequential`` MLPs.

Forward, caching Z^[l] and A^[l]; then, without JAX autodiff (batch-first, so the
notes' column matrices appear transposed: A^[l] is (m, n^[l])):

    dZ^[L]   = A^[L] − Y                      (sigmoid + BCE, softmax + CE)
    dW^[l]   = (1/m) dZ^[l]ᵀ A^[l-1]          (n^[l], n^[l-1]), as W^[l]
    db^[l]   = (1/m) Σ_i dZ^[l]_i              (n^[l],)
    dA^[l-1] = dZ^[l] W^[l]                    (m, n^[l-1])
    dZ^[l-1] = dA^[l-1] ⊙ g'^[l-1](Z^[l-1])

dZ is per example (the 1/m is applied in dW and db), as in the notes. The result
equals ``jax.grad`` of the mean loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fundl import activations, losses
from fundl.nn.activation import Activation
from fundl.nn.dense import Dense, dense
from fundl.nn.combinators import Sequential
from fundl.rules import Primitive

__all__ = ["LayerTrace", "backprop"]


class LayerTrace(NamedTuple):
    """What manual backprop computed at one dense layer l (m examples).

    :func:`backprop` returns one per dense layer with ``return_intermediates=True``.

    Examples:
      >>> fundl.nn.LayerTrace._fields  # see backprop's example for the traces of a model
      ('name', 'Z', 'A', 'dZ', 'dA', 'dW_norm', 'db_norm')
    """

    name: str  # the layer's name in params, e.g. "dense2"
    Z: jax.Array  # Z^[l] = A^[l-1] W^[l]ᵀ + b^[l], (m, n^[l])
    A: jax.Array  # A^[l] = g^[l](Z^[l]), (m, n^[l])
    dZ: jax.Array  # dZ^[l], per example, (m, n^[l])
    dA: jax.Array | None  # dA^[l] = m ∂L/∂A^[l], (m, n^[l]); None at a fused output
    dW_norm: jax.Array  # ‖dW^[l]‖_F, scalar
    db_norm: jax.Array | None  # ‖db^[l]‖, scalar; None without a bias


class _Unit(NamedTuple):
    name: str
    dense: Dense
    activation: Activation | None


# (output activation, loss) pairs with dZ^[L] = prediction − Y; the prediction is A^[L]
# for losses on probabilities and the activation of Z^[L] for losses on logits.
_FUSED: dict[tuple[str, Primitive], Primitive | None] = {
    ("sigmoid", losses.binary_cross_entropy): None,
    ("softmax", losses.categorical_cross_entropy): None,
    ("identity", losses.binary_cross_entropy_with_logits): activations.sigmoid,
    ("identity", losses.softmax_cross_entropy): activations.softmax,
}
_CATEGORICAL = (losses.categorical_cross_entropy, losses.softmax_cross_entropy)


def _units(model: Any) -> list[_Unit]:
    if not isinstance(model, Sequential):
        raise TypeError(f"backprop: expected a Sequential model, got {type(model).__name__}")
    units: list[_Unit] = []
    for name, layer in zip(model.names, model.layers):
        if isinstance(layer, Dense):
            units.append(_Unit(name, layer, None))
        elif isinstance(layer, Activation) and units and units[-1].activation is None:
            units[-1] = units[-1]._replace(activation=layer)
        else:
            raise TypeError(
                f"backprop: supports Sequential models of Dense layers, each followed by at most "
                f"one activation; layer {name!r} ({layer!r}) does not fit"
            )
    if not units:
        raise TypeError("backprop: the model has no Dense layer")
    return units


def _through_activation(activation: Activation | None, Z: jax.Array, dA: jax.Array) -> jax.Array:
    """dZ = dA ⊙ g'(Z); for softmax-like g, the hand-written VJP of g."""
    if activation is None:
        return dA
    derivative = activation.derivative(Z)
    if derivative is not None:
        return dA * derivative
    _, pullback = activation.fn.vjp(Z, **dict(activation.options))
    return pullback(dA)[0]


def _output_dZ(
    unit: _Unit, Z: jax.Array, A: jax.Array, y: jax.Array, loss: Primitive, m: int
) -> tuple[jax.Array, jax.Array | None]:
    """(dZ^[L], dA^[L]) at the output, both scaled per example (m ∂L/∂·)."""
    act_name = "identity" if unit.activation is None else unit.activation.name
    key = (act_name, loss)
    if key in _FUSED and not (unit.activation is not None and unit.activation.options):
        if loss.check is not None:
            loss.check(A, y, **loss.options())
        link = _FUSED[key]
        prediction = A if link is None else link.reference(Z)
        if jnp.issubdtype(jnp.result_type(y), jnp.integer):
            y = jax.nn.one_hot(y, A.shape[-1], dtype=A.dtype)
        terms = m if loss in _CATEGORICAL else A.size  # how many terms the mean averages
        return (prediction - y) * (m / terms), None
    _, pullback = loss.vjp(A, y)
    dA = m * pullback(jnp.ones((), A.dtype))[0]
    return _through_activation(unit.activation, Z, dA), dA


def backprop(
    model: Sequential,
    params: dict[str, Any],
    x: jax.Array,
    y: jax.Array,
    loss: Primitive,
    *,
    return_intermediates: bool = False,
) -> Any:
    """Gradients of ``loss(model.apply(params, x), y)`` by the notes' manual backprop.

    Args:
      model: a ``Sequential`` of ``Dense`` layers, each followed by at most one
        activation (e.g. from ``mlp``).
      params: the model's parameters.
      x: inputs, (m, n^[0]).
      y: targets, as ``loss`` takes them (labels or one-hot for the categorical losses).
      loss: a fundl loss (mean reduction), e.g. ``fundl.losses.binary_cross_entropy``.
        The fused pairs (sigmoid + ``binary_cross_entropy``, softmax +
        ``categorical_cross_entropy``, a linear output + ``*_with_logits`` /
        ``softmax_cross_entropy``) start from dZ^[L] = Ŷ − Y; any other loss starts
        from its own hand-written rule, dA^[L] = m ∂L/∂A^[L].
      return_intermediates: also return one :class:`LayerTrace` per dense layer.

    Returns:
      ``grads`` (the pytree of ``params``), or ``(grads, traces)`` with traces ordered
      from layer 1 to L.

    Raises:
      TypeError: for a model that is not such a ``Sequential``, or a loss that is not a
        fundl loss.

    Examples:
      The notes' algorithm gives ``jax.grad``'s gradients:

      >>> model = fundl.nn.mlp([2, 3, 1], "tanh", "sigmoid")
      >>> params = model.init(jax.random.key(0))
      >>> x = jnp.array([[0.5, -1.0], [1.0, 2.0], [0.0, 1.0], [-1.0, 0.0]])  # (m, n^[0])
      >>> y = jnp.array([[1.0], [0.0], [1.0], [0.0]])
      >>> loss = fundl.losses.binary_cross_entropy
      >>> grads, traces = fundl.nn.backprop(model, params, x, y, loss, return_intermediates=True)
      >>> jax.tree.map(jnp.shape, grads)
      {'dense1': {'W': (3, 2), 'b': (3,)}, 'dense2': {'W': (1, 3), 'b': (1,)}}
      >>> with jax.default_matmul_precision("highest"):  # float32 products on a GPU too
      ...     grads = fundl.nn.backprop(model, params, x, y, loss)
      ...     auto = jax.grad(lambda p: loss(model.apply(p, x), y))(params)
      >>> all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.allclose(a, b, atol=1e-6)),
      ...                                  grads, auto)))
      True

      One :class:`LayerTrace` per dense layer (dA is None at the fused sigmoid + BCE output):

      >>> [(t.name, t.Z.shape, t.dZ.shape, t.dA is None) for t in traces]
      [('dense1', (4, 3), (4, 3), False), ('dense2', (4, 1), (4, 1), True)]
    """

    units = _units(model)
    if not isinstance(loss, Primitive):
        raise TypeError(f"backprop: loss must be a fundl loss (a primitive), got {loss!r}")
    if jnp.ndim(x) != 2:
        raise ValueError(f"backprop: expected inputs of shape (m, n_0), got shape {jnp.shape(x)}")
    m = x.shape[0]

    # Forward, caching A^[l-1], Z^[l], A^[l].
    cache = []
    A = x
    for unit in units:
        layer = params[unit.name]
        Z = dense.reference(A, layer["W"], layer.get("b"))
        A_next = Z if unit.activation is None else unit.activation.apply({}, Z)
        cache.append((A, Z, A_next))
        A = A_next

    dZ, dA = _output_dZ(units[-1], cache[-1][1], cache[-1][2], y, loss, m)
    grads: dict[str, Any] = {}
    traces: list[LayerTrace] = []
    for l in reversed(range(len(units))):
        unit = units[l]
        A_prev, Z, A = cache[l]
        W = params[unit.name]["W"]
        dW = (dZ.T @ A_prev / m).astype(W.dtype)
        layer_grads = {"W": dW}
        if "b" in params[unit.name]:
            layer_grads["b"] = (jnp.sum(dZ, axis=0) / m).astype(params[unit.name]["b"].dtype)
        grads[unit.name] = layer_grads
        traces.append(
            LayerTrace(
                unit.name,
                Z,
                A,
                dZ,
                dA,
                jnp.linalg.norm(dW),
                jnp.linalg.norm(layer_grads["b"]) if "b" in layer_grads else None,
            )
        )
        if l > 0:
            dA = dZ @ W
            dZ = _through_activation(units[l - 1].activation, cache[l - 1][1], dA)
    grads = {name: grads[name] for name in params if name in grads}
    if return_intermediates:
        return grads, traces[::-1]
    return grads
