"""Manual backpropagation, exactly the notes' algorithm, for ``Sequential`` MLPs.

Forward, caching Z^[l] and A^[l]; then, without JAX autodiff (batch-first, so the
notes' column matrices appear transposed: A^[l] is (m, n^[l])):

    dZ^[L]   = A^[L] − Y                      (sigmoid + BCE, softmax + CE)
    dW^[l]   = (1/m) dZ^[l]ᵀ A^[l-1]          (n^[l], n^[l-1]), as W^[l]
    db^[l]   = (1/m) Σ_i dZ^[l]_i              (n^[l],)
    dA^[l-1] = dZ^[l] W^[l]                    (m, n^[l-1])
    dZ^[l-1] = dA^[l-1] ⊙ g'^[l-1](Z^[l-1])

dZ is per example (the 1/m is applied in dW and db), as in the notes. The result
equals ``jax.grad`` of the mean loss. (For cross-entropy the output rule is, exactly,
dZ^[L] = A^[L] Σ_k Y_k − Y, which is A^[L] − Y for one-hot rows: soft targets that do
not sum to one, and under ``jit`` an out-of-range label's zero row, keep ``jax.grad``'s
gradient.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fundl import activations, losses
from fundl._validate import check_bool
from fundl.nn.activation import Activation
from fundl.nn.base import check_params
from fundl.nn.combinators import Sequential
from fundl.nn.dense import Dense, dense
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


def _check_names(units: list[_Unit], params: Any) -> None:
    """Refuse a params tree with entries that are not dense layers of the model."""
    if not isinstance(params, dict):
        raise TypeError(f"backprop: params must be a dict {{layer name: params}}, got {params!r}")
    names = [unit.name for unit in units]
    extra = sorted(set(params) - set(names), key=str)
    if extra:
        raise ValueError(
            f"backprop: params has {', '.join(map(repr, extra))}, which is not a layer of this "
            f"model (its dense layers: {', '.join(names)}); are these another model's parameters?"
        )


def _check_layer(unit: _Unit, layer: Any, A_prev: jax.Array) -> None:
    """Refuse what ``model.apply`` refuses: a wrong input, another model's params."""
    try:
        if isinstance(layer, dict) and "W" in layer:  # a wrong input width, said as such
            dense.check(A_prev, layer["W"], layer.get("b") if unit.dense.use_bias else None)
        check_params(unit.dense, layer, jnp.shape(A_prev))
    except (ValueError, TypeError) as error:
        raise type(error)(f"backprop: {unit.name}: {error}") from error


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
        if loss in _CATEGORICAL:
            if jnp.issubdtype(jnp.result_type(y), jnp.integer):  # labels; out of range: 0 rows
                y = jax.nn.one_hot(y, A.shape[-1], dtype=A.dtype)
            # the loss −Σ_k y_k log softmax(z)_k has dz = softmax(z) Σ_k y_k − y: Ŷ − Y for
            # one-hot rows, exact for soft targets and (as the loss's rule) 0 for a zero row
            return prediction * jnp.sum(y, axis=-1, keepdims=True) - y, None
        # binary targets, 0/1 integers included, are values of Y itself (never one-hot)
        return (prediction - y.astype(A.dtype)) * (m / A.size), None  # the mean's 1/(m k)
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
        ``softmax_cross_entropy``) start from dZ^[L] = Ŷ − Y (Ŷ Σ_k Y_k − Y for the
        categorical ones); any other loss starts from its own hand-written rule,
        dA^[L] = m ∂L/∂A^[L].
      return_intermediates: also return one :class:`LayerTrace` per dense layer.

    Returns:
      ``grads`` (the pytree of ``params``), or ``(grads, traces)`` with traces ordered
      from layer 1 to L.

    Raises:
      TypeError: for a model that is not such a ``Sequential``, a loss that is not a
        fundl loss, or integer inputs.
      ValueError: for inputs that are not (m, n^[0]) with m ≥ 1, or params that are not
        what ``model.init`` makes for them (another model's; the layer and leaf named).

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
    check_bool("backprop", "return_intermediates", return_intermediates)
    if jnp.ndim(x) != 2 or jnp.shape(x)[0] == 0:
        raise ValueError(
            f"backprop: expected inputs of shape (m, n_0) with m ≥ 1, got shape {jnp.shape(x)}"
        )
    _check_names(units, params)
    m = x.shape[0]

    # Forward, caching A^[l-1], Z^[l], A^[l].
    cache = []
    A = x
    for unit in units:
        layer = params.get(unit.name, {})
        _check_layer(unit, layer, A)
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
