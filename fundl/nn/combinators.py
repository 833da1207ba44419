"""Containers: ``Sequential`` (in order), ``Residual`` (x + block(x)), ``Parallel`` (branches).

A model is a container of layers: a frozen config (hashable, a valid static argument of
``jit``) that follows the layer protocol of :mod:`fundl.nn.base` itself, so containers
nest. Parameters and state are plain nested dicts, one entry per sublayer that has any,
named after the sublayer's kind and its 1-based count: "dense1", "dense2", ... — so
``params["dense2"]["W"]`` is the notes' W^[2] — or, in ``Residual`` and ``Parallel``,
after its role ("block", "projection", "branch1", ...).

Every container threads params, state, a PRNG key and the ``train`` flag by name: each
sublayer gets its own ``jax.random.split`` of the key, in order (as stax's ``serial``),
so no two sublayers draw from the same key. The containers' own operations — a sum, a
concatenation — are wiring without parameters; their gradients (copy, split) are JAX's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp

from fundl import activations, initializers
from fundl._validate import as_key, check_bool, check_choice
from fundl.nn.activation import Activation
from fundl.nn.base import Layer, as_input_shape, split_key
from fundl.nn.dense import Dense
from fundl.rules import Primitive

__all__ = ["Sequential", "Residual", "Parallel", "mlp"]

_PROTOCOL = ("init", "apply_with_state", "output_shape", "kind")


def _as_layer(owner: str, layer: Any, position: Any) -> Any:
    if isinstance(layer, (str, Primitive)):
        return Activation(layer)
    if not all(hasattr(layer, attr) for attr in _PROTOCOL):
        raise TypeError(
            f"{owner}: layer {position} ({layer!r}) is not a layer; expected an object with "
            "init, apply_with_state, output_shape and kind (a fundl.nn.Layer, e.g. Dense(3)), "
            "an activation name or a primitive"
        )
    return layer


def _as_shape(owner: str, shape: Any) -> tuple[int, ...]:
    """A shape as a tuple of non-negative ints; a float dim (2.7) is refused, not truncated."""
    shape = as_input_shape(owner, shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{owner}: input_shape must have non-negative dims, got {shape}")
    return shape


@contextlib.contextmanager
def _named(name: str) -> Iterator[None]:
    """Prefix a sublayer's ValueError or TypeError with its name in the container."""
    try:
        yield
    except (ValueError, TypeError) as error:
        if type(error) not in (ValueError, TypeError):  # JAX's own subclasses: keep them
            raise
        raise type(error)(f"{name}: {error}") from error


def _init_state(layer: Any, shape: tuple[int, ...]) -> Any:
    init_state = getattr(layer, "init_state", None)
    return {} if init_state is None else init_state(shape)


def _check_names(owner: str, what: str, tree: Any, names: Sequence[str]) -> None:
    if not isinstance(tree, dict):
        raise TypeError(
            f"{owner}: {what} must be a dict {{layer name: layer {what}}} as "
            f"{'init' if what == 'params' else 'init_state'} makes it, got {type(tree).__name__}"
        )
    extra = sorted(set(tree) - set(names), key=str)
    if extra:
        question = (
            "are these another model's parameters?"
            if what == "params"
            else "is this another model's state?"
        )
        raise ValueError(
            f"{owner}: {what} has {', '.join(map(repr, extra))}, which is not a layer of this "
            f"model (its layers: {', '.join(names)}); {question}"
        )


class _Container(Layer):
    """What the containers share: named sublayers, threading params, state, keys and flag."""

    def _sublayers(self) -> tuple[tuple[str, Any], ...]:
        raise NotImplementedError

    def _check_trees(self, params: Any, state: Any) -> None:
        names = [name for name, _ in self._sublayers()]
        _check_names(f"{type(self).__name__}.apply", "params", params, names)
        _check_names(f"{type(self).__name__}.apply", "state", state, names)

    def _run(
        self,
        name: str,
        layer: Any,
        params: Any,
        state: Any,
        x: jax.Array,
        key: Any,
        train: bool,
        new_state: dict[str, Any],
    ) -> jax.Array:
        """One sublayer, its errors named: its output; its new state goes into ``new_state``
        (under its name, when it has any)."""
        with _named(name):
            y, layer_state = layer.apply_with_state(
                params.get(name, {}), state.get(name, {}), x, key=key, train=train
            )
        if layer_state:
            new_state[name] = layer_state
        return y


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Sequential(_Container):
    """Layers applied in order: A^[l] = layer_l(A^[l-1]).

    Args:
      layers: layers (``Dense``, ``Activation``, ``BatchNorm``, ``Dropout``, another
        container, ...); a string or a fundl primitive stands for ``Activation(that)``.
      input_shape: optional shape of one input (e.g. ``(784,)``); when given,
        ``init(key)`` needs no shape.

    Examples:
      >>> model = Sequential([Dense(3), "relu", Dense(1), "sigmoid"], input_shape=(2,))
      >>> params = model.init(jax.random.key(0))   # {"dense1": {...}, "dense2": {...}}
      >>> model.apply(params, jnp.ones((5, 2))).shape   # (m, 2) -> (m, 1)
      (5, 1)
    """

    layers: tuple[Any, ...]
    input_shape: tuple[int, ...] | None = None

    kind: ClassVar[str] = "sequential"

    def __init__(self, layers: Sequence[Any], *, input_shape: Sequence[int] | None = None) -> None:
        if isinstance(layers, (str, Primitive)) or not isinstance(layers, Sequence):
            raise TypeError(f"Sequential: expected a list of layers, got {layers!r}")
        checked = tuple(_as_layer("Sequential", l, i) for i, l in enumerate(layers))
        object.__setattr__(self, "layers", checked)
        shape = None if input_shape is None else _as_shape("Sequential", input_shape)
        object.__setattr__(self, "input_shape", shape)
        names = self.names
        for i, name in enumerate(names):
            if name in names[:i]:
                j = names.index(name)
                raise ValueError(
                    f"Sequential: layers {j} ({checked[j]!r}) and {i} ({checked[i]!r}) would both "
                    f"be named {name!r} (a kind and a count); give the layer class a kind that "
                    "does not end in a digit"
                )

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

    def _sublayers(self) -> tuple[tuple[str, Any], ...]:
        return tuple(zip(self.names, self.layers))

    def _shape(self, input_shape: Sequence[int] | None, method: str) -> tuple[int, ...]:
        """``input_shape`` checked, or the model's own; ``method`` names the caller."""
        if input_shape is None:
            if self.input_shape is None:
                call = "init(key, input_shape)" if method == "init" else f"{method}(input_shape)"
                raise ValueError(
                    f"Sequential.{method}: no input shape; pass {call} or build the model with "
                    "Sequential(..., input_shape=...)"
                )
            return self.input_shape
        return _as_shape(f"Sequential.{method}", input_shape)

    def init(self, key: Any, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        """Create the parameters: ``{layer name: layer params}`` for layers that have any.

        Args:
          key: a PRNG key (or an int seed); each layer gets its own split of it.
          input_shape: shape of an input (leading batch dims optional), e.g. ``(784,)``.
        """
        key = as_key("Sequential.init", key)
        shape = self._shape(input_shape, "init")
        params = {}
        keys = jax.random.split(key, max(len(self.layers), 1))
        for (name, layer), layer_key in zip(self._sublayers(), keys):
            with _named(name):
                layer_params = layer.init(layer_key, shape)
                shape = layer.output_shape(shape)
            if layer_params:
                params[name] = layer_params
        return params

    def init_state(self, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        """Create the state: ``{layer name: layer state}`` for layers that have any."""
        shape = self._shape(input_shape, "init_state")
        state = {}
        for name, layer in self._sublayers():
            with _named(name):
                layer_state = _init_state(layer, shape)
                shape = layer.output_shape(shape)
            if layer_state:
                state[name] = layer_state
        return state

    def init_with_state(
        self, key: Any, input_shape: Sequence[int] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(init(key, input_shape), init_state(input_shape))``."""
        return self.init(key, input_shape), self.init_state(input_shape)

    def apply_with_state(
        self,
        params: dict[str, Any],
        state: dict[str, Any],
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Run the layers in order on x (batch-first): ``(output, new state)``.

        Each layer gets its own split of ``key`` (none without a key) and the ``train``
        flag. The trees are checked when traced: every entry must be a layer of this
        model, and each layer checks its own against its config (``ValueError`` naming
        the layer and the leaf otherwise).
        """
        check_bool("Sequential.apply", "train", train)
        self._check_trees(params, state)
        new_state: dict[str, Any] = {}
        for (name, layer), layer_key in zip(self._sublayers(), split_key(key, len(self.layers))):
            x = self._run(name, layer, params, state, x, layer_key, train, new_state)
        return x, new_state

    def output_shape(self, input_shape: Sequence[int] | None = None) -> tuple[int, ...]:
        """The output shape for an input of shape ``input_shape``."""
        shape = self._shape(input_shape, "output_shape")
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape


class _FanOut(_Container):
    """A container whose sublayers all take the container's input (Residual, Parallel)."""

    def init(self, key: Any, input_shape: Sequence[int]) -> dict[str, Any]:
        """``{sublayer name: its params}``, each from its own split of the key."""
        input_shape = _as_shape(f"{type(self).__name__}.init", input_shape)
        self.output_shape(input_shape)  # the sublayers' outputs must combine
        sublayers = self._sublayers()
        keys = jax.random.split(as_key(f"{type(self).__name__}.init", key), len(sublayers))
        params = {}
        for (name, layer), layer_key in zip(sublayers, keys):
            with _named(name):
                layer_params = layer.init(layer_key, tuple(input_shape))
            if layer_params:
                params[name] = layer_params
        return params

    def init_state(self, input_shape: Sequence[int]) -> dict[str, Any]:
        """``{sublayer name: its state}`` for the sublayers that have any."""
        input_shape = _as_shape(f"{type(self).__name__}.init_state", input_shape)
        state = {}
        for name, layer in self._sublayers():
            with _named(name):
                layer_state = _init_state(layer, tuple(input_shape))
            if layer_state:
                state[name] = layer_state
        return state

    def _branches(
        self, params: Any, state: Any, x: jax.Array, key: Any, train: bool
    ) -> tuple[list[jax.Array], dict[str, Any]]:
        """Every sublayer on the same input x, each with its own key: (outputs, new state)."""
        check_bool(f"{type(self).__name__}.apply", "train", train)
        self._check_trees(params, state)
        sublayers = self._sublayers()
        new_state: dict[str, Any] = {}
        outputs = [
            self._run(name, layer, params, state, x, layer_key, train, new_state)
            for (name, layer), layer_key in zip(sublayers, split_key(key, len(sublayers)))
        ]
        return outputs, new_state


@dataclasses.dataclass(frozen=True, repr=False)
class Residual(_FanOut):
    """A skip connection: y = block(x) + x, or block(x) + projection(x).

    The ResNet block's shortcut: the gradient reaches x directly (dL/dx = dL/dy +
    the block's own contribution), whatever the block does to it. When the block
    changes the width, ``projection`` (e.g. ``Dense(n, use_bias=False)``) maps the
    shortcut to the block's output shape.

    Args:
      block: a layer or container, e.g. ``Sequential([Dense(64), BatchNorm(), "relu"])``.
      projection: a layer for the shortcut, or None for the identity.

    Params and state: ``{"block": ..., "projection": ...}`` (entries with none left out).

    Examples:
      >>> block = Residual(Sequential([Dense(4), "relu", Dense(4)]))
      >>> params = block.init(0, (4,))
      >>> block.apply(params, jnp.ones((2, 4))).shape
      (2, 4)
    """

    block: Any
    projection: Any = None

    kind: ClassVar[str] = "residual"

    def __post_init__(self) -> None:
        object.__setattr__(self, "block", _as_layer("Residual", self.block, "block"))
        if self.projection is not None:
            projection = _as_layer("Residual", self.projection, "projection")
            object.__setattr__(self, "projection", projection)

    def _sublayers(self) -> tuple[tuple[str, Any], ...]:
        if self.projection is None:
            return (("block", self.block),)
        return (("block", self.block), ("projection", self.projection))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The block's output shape, which must equal the shortcut's."""
        shape = _as_shape(f"{type(self).__name__}.output_shape", input_shape)
        out = tuple(self.block.output_shape(shape))
        shortcut = shape if self.projection is None else tuple(self.projection.output_shape(shape))
        if out != shortcut:
            fix = (
                "a projection= layer mapping the input to the block's output shape: "
                "Dense(n) for features, a 1×1 Conv2D with the block's stride for images"
                if self.projection is None
                else "another projection"
            )
            raise ValueError(
                f"Residual: the block maps inputs of shape {shape} to {out}, but the shortcut "
                f"gives {shortcut}; they must match to be added (pass {fix})"
            )
        return out

    def apply_with_state(
        self,
        params: dict[str, Any],
        state: dict[str, Any],
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """``(block(x) + shortcut(x), new state)``; block and projection get their own keys."""
        outputs, new_state = self._branches(params, state, x, key, train)
        y, shortcut = outputs if self.projection is not None else (outputs[0], x)
        if y.shape != shortcut.shape:
            self.output_shape(x.shape)  # raises, saying what to do
        return y + shortcut, new_state


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Parallel(_FanOut):
    """Branches on the same input, their outputs concatenated or summed (stax's FanOut).

    y = concat(branch_1(x), ..., branch_k(x)) along the last axis (``combine="concat"``,
    an Inception block), or branch_1(x) + ... + branch_k(x) (``combine="sum"``).

    Args:
      branches: two or more layers or containers.
      combine: "concat" (the last dims add up) or "sum" (the outputs must share a shape).

    Params and state: ``{"branch1": ..., "branch2": ...}`` (entries with none left out).

    Examples:
      >>> both = Parallel([Dense(3), Dense(2)])
      >>> both.apply(both.init(0, (4,)), jnp.ones((5, 4))).shape
      (5, 5)
    """

    branches: tuple[Any, ...]
    combine: Literal["concat", "sum"] = "concat"

    kind: ClassVar[str] = "parallel"

    def __init__(self, branches: Sequence[Any], *, combine: Literal["concat", "sum"] = "concat"):
        if isinstance(branches, (str, Primitive)) or not isinstance(branches, Sequence):
            raise TypeError(f"Parallel: expected a list of branches, got {branches!r}")
        if len(branches) < 2:
            raise ValueError(f"Parallel: expected two or more branches, got {len(branches)}")
        checked = tuple(_as_layer("Parallel", b, i) for i, b in enumerate(branches))
        object.__setattr__(self, "branches", checked)
        object.__setattr__(
            self, "combine", check_choice("Parallel", "combine", combine, ("concat", "sum"))
        )

    def _sublayers(self) -> tuple[tuple[str, Any], ...]:
        return tuple((f"branch{i + 1}", b) for i, b in enumerate(self.branches))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The combined shape: last dims added ("concat") or the common shape ("sum")."""
        input_shape = _as_shape(f"{type(self).__name__}.output_shape", input_shape)
        shapes = [tuple(b.output_shape(input_shape)) for b in self.branches]
        leading = {s[:-1] for s in shapes} if self.combine == "concat" else set(shapes)
        if len(leading) != 1:
            rule = "all but the last dim" if self.combine == "concat" else "their whole shape"
            raise ValueError(
                f"Parallel: to {self.combine} the branches' outputs they must agree in {rule}; "
                f"for inputs of shape {tuple(input_shape)} they are {shapes}"
            )
        if self.combine == "sum":
            return shapes[0]
        return shapes[0][:-1] + (sum(s[-1] for s in shapes),)

    def apply_with_state(
        self,
        params: dict[str, Any],
        state: dict[str, Any],
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """``(combined outputs, new state)``; every branch gets its own key."""
        self.output_shape(x.shape)
        outputs, new_state = self._branches(params, state, x, key, train)
        if self.combine == "sum":
            return sum(outputs[1:], outputs[0]), new_state
        return jnp.concatenate(outputs, axis=-1), new_state


def default_w_init(act: Primitive | None) -> initializers.Initializer:
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

    Examples:
      >>> model = mlp([2, 3, 3, 1], "relu", "sigmoid")   # the notes' 3-layer network
    """
    try:
        sizes = tuple(sizes)
    except TypeError:  # mlp(784): one int, not the list of sizes
        raise ValueError(
            f"mlp: sizes must be a list of at least two positive integers (n^[0], ..., "
            f"n^[L]), e.g. [784, 128, 10], got {sizes!r}"
        ) from None
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
        init = w_init or default_w_init(act)
        layers.append(Dense(n_out, w_init=init))
        if act is not None:
            layers.append(Activation(act))
    return Sequential(layers, input_shape=sizes[:1])
