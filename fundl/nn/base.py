"""What a layer is: the one protocol every fundl layer and model follows.

A layer is a frozen, hashable config — a dataclass of hyperparameters, a valid static
argument of ``jax.jit`` — with pure functions over plain pytrees:

===========================================  ===========================================
``init(key, input_shape) -> params``         the parameters: what the optimizer updates
                                             and ``jax.grad`` differentiates
``init_state(input_shape) -> state``         the state: what the layer carries between
                                             calls but is neither differentiated nor
                                             optimized (batch-norm running statistics);
                                             ``{}`` for most layers
``apply_with_state(params, state, x, *,``    the output and the new state; ``key`` is a
``key=None, train=False) -> (y, state)``     PRNG key for randomness (dropout), ``train``
                                             a static flag (dropout on, batch statistics)
``output_shape(input_shape) -> shape``       shape inference, without arrays
``kind``                                     a class attribute naming the layer in its
                                             container ("dense" gives "dense1", ...)
===========================================  ===========================================

Subclassing :class:`Layer` adds the short forms: ``apply(params, x, *, key, train)``
gives the output alone for layers without state (it refuses a layer with state, whose
new state it would drop), and ``init_with_state(key, input_shape)`` gives both trees.

Containers (``Sequential``, ``Residual``, ``Parallel``) thread params, state, keys and
the flag by layer name: every sublayer gets its own split of the key, deterministically
(as stax's ``serial``), so no two layers share a key, and each step of a training loop
passes a fresh one.

Parameters and state are checked against the config when ``apply`` is traced
(:func:`check_params`, :func:`check_state`): another model's trees fail with the leaf
named, never run silently. Shapes are static, so the checks cost nothing in a compiled
step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import as_key, check_int, is_floating_dtype

__all__ = [
    "Layer",
    "check_params",
    "check_state",
    "expected_params",
    "expected_state",
    "split_key",
]

Params = Any
State = Any


@runtime_checkable
class Layer(Protocol):
    """The layer protocol (see the module docstring): init, init_state, apply_with_state.

    Layers may implement the protocol structurally or subclass this class, which adds
    ``init_state`` (no state), ``apply`` and ``init_with_state``.

    Examples:
      A layer y = x ⊙ s with one parameter vector s, as a frozen (hashable) dataclass:

      >>> import dataclasses
      >>> @dataclasses.dataclass(frozen=True)
      ... class Scale(fundl.nn.Layer):
      ...     kind = "scale"
      ...     def init(self, key, input_shape):
      ...         return {"s": jnp.full(input_shape[-1:], 2.0)}
      ...     def apply_with_state(self, params, state, x, *, key=None, train=False):
      ...         return x * params["s"][None], state
      ...     def output_shape(self, input_shape):
      ...         return input_shape
      >>> layer = Scale()
      >>> layer.apply(layer.init(0, (2,)), jnp.ones((1, 2)))
      Array([[2., 2.]], dtype=float32)
      >>> isinstance(layer, fundl.nn.Layer), isinstance(fundl.nn.Dense(3), fundl.nn.Layer)
      (True, True)
    """

    kind: ClassVar[str]

    def init(self, key: Any, input_shape: tuple[int, ...]) -> Params:
        """The layer's parameters for inputs of shape ``input_shape`` (batch dims optional)."""
        ...

    def apply_with_state(
        self, params: Params, state: State, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, State]:
        """``(y, new_state)`` for input ``x``."""
        ...

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for an input of shape ``input_shape``."""
        ...

    def init_state(self, input_shape: tuple[int, ...]) -> State:
        """The layer's state for inputs of shape ``input_shape``: ``{}`` (none) by default."""
        del input_shape
        return {}

    def init_with_state(self, key: Any, input_shape: tuple[int, ...]) -> tuple[Params, State]:
        """``(init(key, input_shape), init_state(input_shape))``."""
        return self.init(key, input_shape), self.init_state(input_shape)

    def apply(self, params: Params, x: jax.Array, *, key: Any = None, train: bool = False):
        """The output alone, for a layer without state: ``apply_with_state`` with ``{}``.

        Raises ``ValueError`` for a layer with state: use ``apply_with_state`` and keep
        the new state it returns.
        """
        state = expected_state(self, np.shape(x))
        if jax.tree.leaves(state):
            raise ValueError(
                f"{self!r}: has state ({', '.join(_paths(state))}); call "
                "apply_with_state(params, state, x, key=..., train=...) and keep the new state "
                "it returns"
            )
        y, _ = self.apply_with_state(params, {}, x, key=key, train=train)
        return y

    def __repr__(self) -> str:
        """The config as it would be written: required fields, then those off their default."""
        if not dataclasses.is_dataclass(self):
            return object.__repr__(self)
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.default is dataclasses.MISSING:
                parts.append(_show(value))
            elif not _same(value, field.default):
                parts.append(f"{field.name}={_show(value)}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _same(value: Any, default: Any) -> bool:
    try:
        return value is default or bool(value == default)
    except Exception:  # noqa: BLE001 - values that do not compare are not the default
        return False


def _show(value: Any) -> str:
    """A config value as code: an initializer by its name, a dtype by its name."""
    if isinstance(value, type) or isinstance(value, jnp.dtype):
        try:
            return f"jnp.{jnp.dtype(value).name}"
        except TypeError:
            pass
    if callable(value) and hasattr(value, "__name__") and not dataclasses.is_dataclass(value):
        return value.__name__
    if isinstance(value, tuple) and value and all(hasattr(v, "apply_with_state") for v in value):
        return f"[{', '.join(_show(v) for v in value)}]"  # a list of layers, as written
    return repr(value)


def as_input_shape(owner: str, input_shape: Any) -> tuple[int, ...]:
    """``input_shape`` as a tuple of Python ints; else ``TypeError`` naming ``owner``.

    Every layer's ``init`` takes a shape, not a width: ``init(key, 4)`` (for ``(4,)``),
    None, a string or a float dim (4.0) fails here, not as ``'int' object has no len()``
    or ``MLIR`` deep inside, nor truncated silently. Ranges (positive dims) are each
    layer's own check.
    """
    try:
        if isinstance(input_shape, (str, bytes)):
            raise TypeError
        shape = tuple(input_shape)
        return tuple(check_int(owner, "input_shape", d, low=-(2**63)) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner}: input_shape must be a tuple of ints (the input's shape, batch dim "
            f"optional), e.g. (8, 784) or (784,), got {input_shape!r}"
        ) from None


def split_key(key: Any, n: int) -> list[Any]:
    """``n`` keys, one per sublayer (``jax.random.split``); ``n`` Nones without a key.

    ``key`` may be an int seed, as everywhere a key is taken.

    Args:
      key: a ``jax.random`` key, an int seed, or None.
      n: how many keys.

    Returns:
      a list of ``n`` keys, or of ``n`` Nones.

    Examples:
      >>> len(fundl.nn.split_key(jax.random.key(0), 3))
      3
      >>> fundl.nn.split_key(None, 2)
      [None, None]
    """
    n = check_int("split_key", "n", n, low=0)
    if key is None:
        return [None] * n
    return list(jax.random.split(as_key("apply", key), n))


def _example_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One example's shape: the batch dim dropped (``init`` takes it with or without)."""
    return shape[1:] if len(shape) > 1 else shape


@functools.lru_cache(maxsize=1024)
def _expected(layer: Any, example_shape: tuple[int, ...], which: str) -> Any:
    if which == "params":
        # the key made inside eval_shape: made outside, under an outer trace (the first
        # check of a layer inside jit or make_jaxpr), it would be staged into that trace
        return jax.eval_shape(lambda: layer.init(jax.random.key(0), example_shape))
    init_state = getattr(layer, "init_state", None)
    if init_state is None:
        return {}
    return jax.eval_shape(lambda: init_state(example_shape))


def expected_params(layer: Any, input_shape: tuple[int, ...]) -> Any:
    """The parameters' structure and shapes (``jax.ShapeDtypeStruct`` leaves) for an input.

    Args:
      layer: a layer config (hashable), with ``init(key, input_shape)``.
      input_shape: the shape of a batch of inputs, (batch, ...): its first dim is
        dropped (a 1-D shape is taken as one example's). Pass an image's (H, W, C) as
        (1, H, W, C).

    Returns:
      the params pytree with ``jax.ShapeDtypeStruct`` leaves (nothing is drawn).

    Examples:
      >>> fundl.nn.expected_params(fundl.nn.Dense(3), (8, 2))  # W (n_out, n_in), b (n_out,)
      {'W': ShapeDtypeStruct(shape=(3, 2), dtype=float32),
       'b': ShapeDtypeStruct(shape=(3,), dtype=float32)}
    """
    shape = as_input_shape("expected_params", input_shape)
    return _expected(layer, _example_shape(shape), "params")


def expected_state(layer: Any, input_shape: tuple[int, ...]) -> Any:
    """The state's structure and shapes (``jax.ShapeDtypeStruct`` leaves) for an input.

    Args:
      layer: a layer config (hashable); without ``init_state`` it has no state.
      input_shape: the shape of a batch of inputs, (batch, ...), as for
        :func:`expected_params`.


    Returns:
      the state pytree with ``jax.ShapeDtypeStruct`` leaves; ``{}`` for a stateless layer.

    Examples:
      >>> fundl.nn.expected_state(fundl.nn.BatchNorm(), (8, 2))  # running statistics
      {'mean': ShapeDtypeStruct(shape=(2,), dtype=float32),
       'var': ShapeDtypeStruct(shape=(2,), dtype=float32)}
      >>> fundl.nn.expected_state(fundl.nn.Dense(3), (8, 2))
      {}
    """
    shape = as_input_shape("expected_state", input_shape)
    return _expected(layer, _example_shape(shape), "state")


def _paths(tree: Any) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def _check_tree(layer: Any, what: str, expected: Any, given: Any, input_shape: tuple) -> None:
    expected = _paths(expected)
    try:
        given = _paths(given)
    except TypeError:  # not a pytree at all
        given = {"": given}
    missing = [path for path in expected if path not in given]
    extra = [path for path in given if path not in expected]
    hint = (
        "Are these another model's parameters?"
        if what == "params"
        else ("Is this another model's state? Make it with init_state (or init_with_state).")
    )
    if missing or extra:
        parts = [f"missing {what}{p}" for p in missing] + [f"unexpected {what}{p}" for p in extra]
        wanted = ", ".join(f"{what}{p}" for p in expected) or f"no {what}"
        raise ValueError(
            f"{layer!r}: {'; '.join(parts)} (for inputs of shape {tuple(input_shape)} it "
            f"takes {wanted}). {hint}"
        )
    for path, spec in expected.items():
        shape = getattr(given[path], "shape", None)
        if shape is None or tuple(shape) != tuple(spec.shape):
            raise ValueError(
                f"{layer!r}: {what}{path} has shape {None if shape is None else tuple(shape)}; "
                f"for inputs of shape {tuple(input_shape)} it expects {tuple(spec.shape)}. {hint}"
            )
        # A float leaf in another float dtype is mixed precision (bfloat16 params cast on
        # purpose); an integer or bool leaf where init makes a float one is not.
        dtype = getattr(given[path], "dtype", None)
        if is_floating_dtype(spec.dtype) and (dtype is None or not is_floating_dtype(dtype)):
            raise TypeError(
                f"{layer!r}: {what}{path} has dtype {dtype}; it expects a floating dtype "
                f"(init makes {spec.dtype}). Cast it, e.g. {what}{path}.astype(jnp.{spec.dtype})"
                f", or pass the {what} init made."
            )


def check_params(layer: Any, params: Any, input_shape: tuple[int, ...]) -> None:
    """Raise unless ``params`` has the structure, shapes and kinds of dtype ``layer.init`` makes.

    A leaf may be in another floating dtype than init's (bfloat16 params under mixed
    precision), but not an integer or bool one where init makes a float.

    A layer's ``apply_with_state`` calls this first (a container adds the layer's name to
    the message), so another model's parameters never run silently.

    Args:
      layer: the layer config; its ``repr`` starts the message.
      params: the parameters given to ``apply``.
      input_shape: the shape of the input ``apply`` got.

    Raises:
      ValueError: naming the missing, unexpected or misshapen leaves.
      TypeError: naming a leaf of integer or bool dtype where init makes a floating one.

    Examples:
      >>> layer = fundl.nn.Dense(3)
      >>> params = layer.init(0, (2,))
      >>> fundl.nn.check_params(layer, params, (8, 2))  # fits: returns None
      >>> fundl.nn.check_params(layer, params, (8, 5))
      Traceback (most recent call last):
      ...
      ValueError: Dense(3): params['W'] has shape (3, 2); for inputs of shape (8, 5) ...
    """
    _check_tree(layer, "params", expected_params(layer, input_shape), params, input_shape)


def check_state(layer: Any, state: Any, input_shape: tuple[int, ...]) -> None:
    """Raise unless ``state`` has the structure, shapes and kinds of dtype of ``init_state``.

    Args:
      layer: the layer config; its ``repr`` starts the message.
      state: the state given to ``apply_with_state``.
      input_shape: the shape of the input it got.

    Raises:
      ValueError: naming the missing, unexpected or misshapen leaves.
      TypeError: naming a leaf of integer or bool dtype where init_state makes a floating one.

    Examples:
      >>> layer = fundl.nn.BatchNorm()
      >>> fundl.nn.check_state(layer, layer.init_state((2,)), (8, 2))  # fits: returns None
      >>> fundl.nn.check_state(layer, {}, (8, 2))
      Traceback (most recent call last):
      ...
      ValueError: BatchNorm(): missing state['mean']; missing state['var'] ...
    """

    _check_tree(layer, "state", expected_state(layer, input_shape), state, input_shape)
