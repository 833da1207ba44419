"""Inverted dropout: the primitive ``dropout`` and the layer ``Dropout``.

In training, each unit is kept with probability 1 − p (p = ``drop_rate``) and the kept
ones are scaled by 1/(1 − p), so the expected output equals the input and evaluation
needs no rescaling: y = x ⊙ m / (1 − p), m_i ~ Bernoulli(1 − p). In evaluation the
layer is the identity.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from fundl._validate import as_key, check_bool, check_floating, check_number
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.rules import primitive
from fundl.tree import accumulation_dtype

__all__ = ["dropout", "Dropout"]


def _check_dropout(x, keep, *, rate):
    check_floating("dropout", "a floating-point input", x)
    if jnp.result_type(keep) != jnp.bool_ or jnp.shape(keep) != jnp.shape(x):
        raise ValueError(
            f"dropout: keep must be a bool mask of the input's shape {jnp.shape(x)}, got "
            f"{jnp.result_type(keep)}{list(jnp.shape(keep))}"
        )
    check_number("dropout", "rate", rate, low=0.0, high=1.0, high_open=True)


@primitive(check=_check_dropout)
def dropout(x, keep, *, rate=0.5):
    """Inverted dropout with a given mask: y = x ⊙ keep / (1 − rate).

    Backward: dx = g ⊙ keep / (1 − rate) — the same mask, so it is saved (a byte per
    element) instead of x; the mask gets no gradient.

    Args:
      x: input of any shape.
      keep: bool mask of x's shape, True where a unit is kept (drawn with probability
        1 − rate: ``jax.random.bernoulli(key, 1 - rate, x.shape)``).
      rate: the drop probability p in [0, 1).

    Returns:
      y, x's shape and dtype.

    Examples:
      >>> x = jnp.array([1.0, 2.0, 3.0, 4.0])
      >>> keep = jnp.array([True, False, True, True])  # jax.random.bernoulli(key, 0.5, x.shape)
      >>> fundl.nn.dropout(x, keep, rate=0.5)  # kept units scaled by 1/(1 − 0.5)
      Array([2., 0., 6., 8.], dtype=float32)
    """
    return jnp.where(keep, _inverted(x, rate), jnp.zeros_like(x))


def _inverted(x: jax.Array, rate: float) -> jax.Array:
    """x / (1 − rate), multiplied in at least float32 and rounded once to x's dtype: a
    bfloat16 factor 1/(1 − 0.1) would round to 1.109375 and bias every kept unit by −0.16%."""
    wide = accumulation_dtype(x)
    return (x.astype(wide) * jnp.asarray(1.0 / (1.0 - rate), wide)).astype(x.dtype)


def dropout_fwd(x, keep, *, rate):
    return dropout.reference(x, keep, rate=rate), keep


def dropout_bwd(keep, g, *, rate):
    return jnp.where(keep, _inverted(g, rate), jnp.zeros_like(g)), None


dropout.defvjp(dropout_fwd, dropout_bwd)


@dataclasses.dataclass(frozen=True, repr=False)
class Dropout(Layer):
    """Inverted dropout (Srivastava et al., 2014) as a layer: random in training only.

    ``train=True``: each unit is dropped with probability ``drop_rate`` and the rest are
    scaled by 1/(1 − drop_rate), from the PRNG ``key`` the call gets (a container splits
    its own key, so every dropout layer, and every training step, draws its own mask).
    ``train=False``: the identity. No parameters, no state.

    Args:
      drop_rate: p, the probability of dropping a unit, in [0, 1) (the notes' typical
        0.2–0.5). Haiku's ``rate`` is the same; stax's and Keras 1's meant the keep rate.

    Examples:
      >>> layer = Dropout(0.5)
      >>> x = jnp.ones((2, 4))
      >>> bool(jnp.all(layer.apply({}, x) == x))                 # evaluation: identity
      True
      >>> y = layer.apply({}, x, key=jax.random.key(0), train=True)
      >>> sorted(set(y.ravel().tolist()))                        # dropped, or 1/(1 - p)
      [0.0, 2.0]
    """

    drop_rate: float = 0.5

    kind: ClassVar[str] = "dropout"

    def __post_init__(self) -> None:
        rate = check_number(
            "Dropout", "drop_rate", self.drop_rate, low=0.0, high=1.0, high_open=True
        )
        object.__setattr__(self, "drop_rate", rate)

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict:
        """No parameters: ``{}``."""
        del key, input_shape
        return {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input shape."""
        return as_input_shape(f"{type(self).__name__}.output_shape", input_shape)

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """``(x ⊙ m / (1 − p), state)`` in training, ``(x, state)`` in evaluation.

        Raises ``ValueError`` in training without a key (there would be no mask to draw).
        """
        check_bool(repr(self), "train", train)
        check_floating(repr(self), "a floating-point input", x)
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        if not train or self.drop_rate == 0.0:
            return x, state
        if key is None:
            raise ValueError(
                f"{self!r}: train=True needs a PRNG key to draw the dropout mask; pass "
                "key=... to apply (fit and the train steps pass one per step)"
            )
        key = as_key(repr(self), key)
        keep = jax.random.bernoulli(key, 1.0 - self.drop_rate, jnp.shape(x))
        return dropout(x, keep, rate=self.drop_rate), state
