"""``Activation``: an activation function as a parameter-free layer of a model."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fundl import activations
from fundl._validate import check_bool
from fundl.nn.base import Layer, as_input_shape, check_state
from fundl.rules import Primitive

__all__ = ["Activation"]


@dataclasses.dataclass(frozen=True, init=False)
class Activation(Layer):
    """A parameter-free layer A = g(Z), with g a fundl activation.

    Args:
      fn: an activation name ("relu", "sigmoid", ... see ``fundl.activations.names()``)
        or a fundl primitive (any function built with ``fundl.primitive``).
      **options: the activation's options, e.g. ``negative_slope=0.2`` for leaky_relu.

    Examples:
      >>> Activation("leaky_relu", negative_slope=0.2)
      Activation('leaky_relu', negative_slope=0.2)
    """

    fn: Primitive
    options: tuple[tuple[str, Any], ...]

    kind: ClassVar[str] = "activation"

    def __init__(self, fn: str | Primitive, **options: Any) -> None:
        if not isinstance(fn, (str, Primitive)):
            raise TypeError(
                f"Activation: expected an activation name or a fundl primitive, got {fn!r}; "
                f"known names: {', '.join(activations.names())}"
            )
        prim = activations.get(fn)
        full = prim.options(**options)  # unknown options raise here, when the model is built
        for option, value in options.items():
            try:
                hash(value)
            except TypeError:
                raise TypeError(
                    f"Activation({prim.name!r}): option {option}={value!r} must be hashable "
                    "(a layer is a static argument of jit); pass a number, not a list or array"
                ) from None
        if options and prim.check is not None:
            # the option values are checked now, not at the first apply: the primitive's
            # own check on a stand-in input (rank enough for any int axis)
            axis = full.get("axis")
            rank = abs(axis) + 1 if isinstance(axis, int) and not isinstance(axis, bool) else 1
            prim.check(np.zeros((1,) * rank, np.float32), **full)
        object.__setattr__(self, "fn", prim)
        object.__setattr__(self, "options", tuple(sorted(options.items())))

    @property
    def name(self) -> str:
        """The activation's name, e.g. "relu"."""
        return self.fn.name

    def init(self, key: jax.Array, input_shape: tuple[int, ...]) -> dict:
        """No parameters: returns ``{}``."""
        del key, input_shape
        return {}

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """(A = g(x), state), same shape as x. ``params`` and ``state`` must be empty."""
        del key
        check_bool(repr(self), "train", train)
        if not isinstance(params, dict) or params:
            got = (
                f"params with keys {sorted(params, key=str)}"
                if isinstance(params, dict)
                else f"params of type {type(params).__name__}"
            )
            raise ValueError(
                f"{self!r}: has no parameters (pass {{}}), got {got}"
            )
        check_state(self, state, jnp.shape(x))
        return self.fn(x, **dict(self.options)), state

    def derivative(self, z: jax.Array) -> jax.Array | None:
        """g'(z) for elementwise activations; ``None`` for softmax-like ones."""
        if self.fn.derivative is None:
            return None
        return self.fn.derivative(z, **dict(self.options))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input shape."""
        return as_input_shape(f"{type(self).__name__}.output_shape", input_shape)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"Activation({self.name!r}{opts})"
