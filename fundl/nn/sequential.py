"""``Sequential``: layers applied one after another, and the ``mlp`` shortcut.

A model is a frozen config (hashable, a valid static argument of ``jit``) plus pure
functions; its parameters are a plain nested dict, one entry per layer that has
parameters, named after the layer's kind and its 1-based count: "dense1", "dense2", ...
— so ``params["dense2"]["W"]`` is the notes' W^[2].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax

from fundl import activations
from fundl import initializers
from fundl._validate import as_key
from fundl.nn.activation import Activation
from fundl.nn.dense import Dense
from fundl.rules import Primitive

__all__ = ["Sequential", "mlp"]


def _as_layer(layer: Any, position: int) -> Any:
    if isinstance(layer, (str, Primitive)):
        return Activation(layer)
    if not all(hasattr(layer, attr) for attr in ("init", "apply", "output_shape", "kind")):
        raise TypeError(
            f"Sequential: layer {position} ({layer!r}) is not a layer; expected an object with "
            f"init, apply, output_shape and kind (e.g. Dense(3)), an activation name or a primitive"
        )
    return layer


@dataclasses.dataclass(frozen=True, init=False)
class Sequential:
    """Layers applied in order: A^[l] = layer_l(A^[l-1]).

    Args:
      layers: layers (``Dense``, ``Activation``, another ``Sequential``, ...); a string
        or a fundl primitive stands for ``Activation(that)``.
      input_shape: optional shape of one input (e.g. ``(784,)``); when given,
        ``init(key)`` needs no shape.

    Example:
      >>> model = Sequential([Dense(3), "relu", Dense(1), "sigmoid"], input_shape=(2,))
      >>> params = model.init(jax.random.key(0))   # {"dense1": {...}, "dense2": {...}}
      >>> model.apply(params, jnp.ones((5, 2))).shape   # (m, 2) -> (m, 1)
      (5, 1)
    """

    layers: tuple[Any, ...]
    input_shape: tuple[int, ...] | None

    kind: ClassVar[str] = "sequential"

    def __init__(self, layers: Sequence[Any], *, input_shape: Sequence[int] | None = None) -> None:
        if isinstance(layers, (str, Primitive)) or not isinstance(layers, Sequence):
            raise TypeError(f"Sequential: expected a list of layers, got {layers!r}")
        object.__setattr__(self, "layers", tuple(_as_layer(l, i) for i, l in enumerate(layers)))
        shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        object.__setattr__(self, "input_shape", shape)

    @property
    def names(self) -> tuple[str, ...]:
        """Each layer's name: its kind (an activation's own name) and its 1-based count."""
        counts: dict[str, int] = {}
        names = []
        for layer in self.layers:
            kind = layer.name if isinstance(layer, Activation) else layer.kind
            counts[kind] = counts.get(kind, 0) + 1
            names.append(f"{kind}{counts[kind]}")
        return tuple(names)

    def _shape(self, input_shape: Sequence[int] | None) -> tuple[int, ...]:
        if input_shape is None:
            if self.input_shape is None:
                raise ValueError(
                    "Sequential.init: no input shape; pass init(key, input_shape) or build the "
                    "model with Sequential(..., input_shape=...)"
                )
            return self.input_shape
        return tuple(int(d) for d in input_shape)

    def init(self, key: jax.Array, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        """Create the parameters: ``{layer name: layer params}`` for layers that have any.

        Args:
          key: a PRNG key (or an int seed); each layer gets its own split of it.
          input_shape: shape of an input (leading batch dims optional), e.g. ``(784,)``.
        """
        key = as_key("Sequential.init", key)
        shape = self._shape(input_shape)
        params = {}
        keys = jax.random.split(key, max(len(self.layers), 1))
        for name, layer, layer_key in zip(self.names, self.layers, keys):
            layer_params = layer.init(layer_key, shape)
            if layer_params:
                params[name] = layer_params
            shape = layer.output_shape(shape)
        return params

    def apply(self, params: dict[str, Any], x: jax.Array) -> jax.Array:
        """Run the layers in order on x (batch-first).

        The parameters are checked when traced: every entry must be a layer of this
        model, and each layer checks its own against its config (``ValueError`` naming
        the layer and the leaf otherwise).
        """
        self._check_names(params)
        for name, layer in zip(self.names, self.layers):
            try:
                x = layer.apply(params.get(name, {}), x)
            except (ValueError, TypeError) as error:
                if type(error) not in (ValueError, TypeError):  # JAX's own subclasses
                    raise
                raise type(error)(f"{name}: {error}") from error
        return x

    def _check_names(self, params: Any) -> None:
        if not isinstance(params, dict):
            raise TypeError(
                f"Sequential.apply: params must be a dict {{layer name: layer params}} as "
                f"init makes it, got {type(params).__name__}"
            )
        extra = sorted(set(params) - set(self.names), key=str)
        if extra:
            raise ValueError(
                f"Sequential.apply: params has {', '.join(map(repr, extra))}, which is not a "
                f"layer of this model (its layers: {', '.join(self.names)}); are these another "
                "model's parameters?"
            )

    def output_shape(self, input_shape: Sequence[int] | None = None) -> tuple[int, ...]:
        """The output shape for an input of shape ``input_shape``."""
        shape = self._shape(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape


def _default_w_init(act: Primitive | None) -> initializers.Initializer:
    try:
        return initializers.for_activation(None if act is None else act.name)
    except ValueError:  # a user-defined activation: keep Dense's default
        return initializers.he_normal


def mlp(
    sizes: Sequence[int],
    activation: str | Primitive = "relu",
    output_activation: str | Primitive | None = None,
    *,
    w_init: initializers.Initializer | None = None,
) -> Sequential:
    """A multi-layer perceptron with layer sizes (n^[0], n^[1], ..., n^[L]).

    Each hidden layer is ``Dense`` followed by ``activation``; the output layer is
    ``Dense`` followed by ``output_activation`` (none for a linear output or logits).
    Weights default to the notes' rule: He for ReLU-family activations, Xavier for
    tanh/sigmoid/softmax and linear outputs (``fundl.initializers.for_activation``).

    Example:
      >>> model = mlp([2, 3, 3, 1], "relu", "sigmoid")   # the notes' 3-layer network
    """
    sizes = tuple(sizes)
    if len(sizes) < 2 or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes
    ):
        raise ValueError(
            f"mlp: sizes must be at least two positive integers (n^[0], ..., n^[L]), got {sizes}"
        )
    hidden = activations.get(activation)
    output = None if output_activation is None else activations.get(output_activation)
    layers: list[Any] = []
    for i, n_out in enumerate(sizes[1:]):
        act = hidden if i < len(sizes) - 2 else output
        init = w_init or _default_w_init(act)
        layers.append(Dense(n_out, w_init=init))
        if act is not None:
            layers.append(Activation(act))
    return Sequential(layers, input_shape=sizes[:1])
