"""Position information for attention: sinusoidal, learned and rotary encodings.

Attention is blind to order (permuting the keys permutes nothing in the output), so a
Transformer adds the position to each token's vector or rotates q and k by it:

- ``sinusoidal_positions(L, d)``: Vaswani et al. (2017), P[p, 2i] = sin(p ω_i),
  P[p, 2i+1] = cos(p ω_i), ω_i = 10000^(−2i/d); ``SinusoidalPositionalEncoding`` adds it.
- ``LearnedPositionalEmbedding(max_length)``: a trained table P (max_length, d), added.
- ``rotary(x, positions)``: RoPE (Su et al., 2021), the primitive that rotates each
  pair of features of q and k by the angle p θ_i, so that q·k depends on positions
  only through their difference.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fundl import initializers
from fundl._validate import (
    as_key,
    check_bool,
    check_floating,
    check_initializers,
    check_int,
    check_number,
    check_param_dtype,
    is_floating_dtype,
)
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.nn.embedding import embedding
from fundl.rules import primitive

__all__ = [
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "rotary",
    "sinusoidal_positions",
]


def sinusoidal_positions(length: int, features: int, *, dtype: Any = jnp.float32) -> jax.Array:
    """The Transformer's fixed position table P (length, features) (Vaswani et al., 2017).

        P[p, 2i] = sin(p ω_i),   P[p, 2i+1] = cos(p ω_i),   ω_i = 10000^(−2i/features)

    Computed in float64 with NumPy (a constant: the same in eager and compiled runs), then
    cast to ``dtype``. No parameters, nothing to differentiate.

    Args:
      length: L, the number of positions (0..L−1).
      features: d, the width (odd d: the last column is a sine).
      dtype: the table's dtype.

    Returns:
      (length, features).

    Examples:
      >>> np.asarray(fundl.nn.sinusoidal_positions(2, 4), np.float64).round(3).tolist()
      [[0.0, 1.0, 0.0, 1.0], [0.841, 0.54, 0.01, 1.0]]
    """
    check_int("sinusoidal_positions", "length", length, low=0)
    check_int("sinusoidal_positions", "features", features)
    if not is_floating_dtype(dtype):  # an int table would round every entry to -1, 0 or 1
        raise ValueError(
            f"sinusoidal_positions: dtype must be a floating dtype (e.g. jnp.float32), got {dtype!r}"
        )
    i = np.arange(features)
    omega = 10000.0 ** (-(i - i % 2) / features)
    angle = np.arange(length)[:, None] * omega[None, :]
    return jnp.asarray(np.where(i % 2 == 0, np.sin(angle), np.cos(angle)), dtype)


def _sequence_shape(layer: Any, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(L, d) of an input (..., L, d), refusing L = 0."""
    input_shape = as_input_shape(repr(layer), input_shape)
    if len(input_shape) < 2 or input_shape[-1] <= 0 or input_shape[-2] <= 0:
        raise ValueError(
            f"{layer!r}: expected an input of shape (..., L, d) with L > 0 and d > 0, got "
            f"{tuple(input_shape)}"
        )
    return int(input_shape[-2]), int(input_shape[-1])


@dataclasses.dataclass(frozen=True, repr=False)
class SinusoidalPositionalEncoding(Layer):
    """y = x + P[:L], P = ``sinusoidal_positions(L, d)``: fixed positions, no parameters.

    Takes (..., L, d), returns (..., L, d) in x's dtype; the gradient passes to x unchanged.
    Vaswani et al. also scale the embeddings by √d before adding (``scale_input``).

    Args:
      scale_input: multiply x by √d first.

    Examples:
      >>> layer = SinusoidalPositionalEncoding()
      >>> y = layer.apply({}, jnp.zeros((2, 3, 4)))          # y[:, p] = P[p]
      >>> np.asarray(y[0, 1], np.float64).round(3).tolist()
      [0.841, 0.54, 0.01, 1.0]
    """

    scale_input: bool = dataclasses.field(default=False, kw_only=True)

    kind: ClassVar[str] = "sinusoidal"

    def __post_init__(self) -> None:
        check_bool("SinusoidalPositionalEncoding", "scale_input", self.scale_input)

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
        """(x + P[:L], state) for x (..., L, d)."""
        del key
        check_bool(repr(self), "train", train)
        check_floating(repr(self), "a floating-point input", x)
        length, d = _sequence_shape(self, jnp.shape(x))
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        if self.scale_input:
            x = x * jnp.asarray(np.sqrt(d), x.dtype)
        P = sinusoidal_positions(length, d, dtype=x.dtype)
        return x + P.reshape((1,) * (x.ndim - 2) + P.shape), state


@dataclasses.dataclass(frozen=True, repr=False)
class LearnedPositionalEmbedding(Layer):
    """y = x + P[:L] with a trained table ``params = {"P": (max_length, d)}`` (BERT, GPT-2).

    The lookup is the ``embedding`` primitive at positions 0..L−1, so P's gradient is
    the upstream gradient summed over the batch, row by row; rows ≥ L get none.

    Args:
      max_length: the longest sequence it takes (longer ones are refused).
      w_init: initializer of P; N(0, 0.02²) by default, as GPT-2.
      param_dtype: dtype of P.

    Takes (..., L, d) with L ≤ max_length, returns (..., L, d).

    Examples:
      >>> layer = LearnedPositionalEmbedding(16)
      >>> params = layer.init(jax.random.key(0), (5, 8))   # {"P": (16, 8)}
      >>> layer.apply(params, jnp.ones((2, 5, 8))).shape
      (2, 5, 8)
    """

    max_length: int
    w_init: initializers.Initializer = dataclasses.field(
        default=initializers.normal(0.02), kw_only=True
    )
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    kind: ClassVar[str] = "positions"

    def __post_init__(self) -> None:
        check_int("LearnedPositionalEmbedding", "max_length", self.max_length)
        check_param_dtype("LearnedPositionalEmbedding", self.param_dtype)
        check_initializers("LearnedPositionalEmbedding", self, "w_init")

    def _length(self, input_shape: tuple[int, ...]) -> tuple[int, int]:
        length, d = _sequence_shape(self, input_shape)
        if length > self.max_length:
            raise ValueError(
                f"{self!r}: a sequence of length {length} (input shape {tuple(input_shape)}) "
                f"is longer than max_length {self.max_length}"
            )
        return length, d

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        """``{"P": (max_length, d)}`` for inputs (..., L, d).

        Only d matters: a 1-D ``input_shape`` is taken as (d,) — one sequence (L, d) less
        its first dim, as ``check_params`` passes it — so an unbatched (L, d) input works.
        """
        key = as_key("LearnedPositionalEmbedding.init", key)
        input_shape = as_input_shape("LearnedPositionalEmbedding.init", input_shape)
        if len(input_shape) == 1 and input_shape[0] > 0:
            d = int(input_shape[0])
        else:
            _, d = self._length(input_shape)
        return {"P": self.w_init(key, (self.max_length, d), self.param_dtype)}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input shape."""
        return as_input_shape(f"{type(self).__name__}.output_shape", input_shape)

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """(x + P[:L], state) for x (..., L, d), L ≤ max_length."""
        del key
        check_bool(repr(self), "train", train)
        check_floating(repr(self), "a floating-point input", x)
        length, _ = self._length(jnp.shape(x))
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        P = embedding(params["P"], jnp.arange(length)).astype(x.dtype)
        return x + P.reshape((1,) * (x.ndim - 2) + P.shape), state


def _check_rotary(x, positions, *, base=10000.0):
    name = "rotary"
    check_floating(name, "a floating-point x", x)
    xs, ps = jnp.shape(x), jnp.shape(positions)
    if len(xs) < 2 or xs[-1] % 2 != 0:
        raise ValueError(f"{name}: expected x of shape (..., L, d) with d even, got shape {xs}")
    if not jnp.issubdtype(jnp.result_type(positions), jnp.integer):
        raise TypeError(f"{name}: expected integer positions, got {jnp.result_type(positions)}")
    if ps != xs[-2:-1] and ps != xs[:-1]:
        raise ValueError(
            f"{name}: expected positions of shape {xs[-2:-1]} or {xs[:-1]} for x of shape "
            f"{xs}, got shape {ps}"
        )
    check_number(name, "base", base, low=0.0, low_open=True)


def _angles(positions, d, base, dtype):
    """cos and sin of p θ_i, θ_i = base^(−2i/d), each (..., L, d/2), in x's dtype."""
    wide = jnp.float64 if dtype == jnp.float64 else jnp.float32
    # d and base are static: θ is a constant, the same in eager and compiled runs
    theta = jnp.asarray(float(base) ** (-np.arange(0, d, 2) / d), wide)
    angle = positions.astype(wide)[..., None] * theta.reshape((1,) * positions.ndim + theta.shape)
    return jnp.cos(angle).astype(dtype), jnp.sin(angle).astype(dtype)


def _rotate(x, cos, sin):
    """(x1 cos − x2 sin, x2 cos + x1 sin) on the two halves of the last axis."""
    h = x.shape[-1] // 2
    lead = (1,) * (x.ndim - cos.ndim)  # positions (L,) for x (..., L, d): broadcast explicitly
    cos, sin = cos.reshape(lead + cos.shape), sin.reshape(lead + sin.shape)
    x1, x2 = x[..., :h], x[..., h:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


@primitive(check=_check_rotary)
def rotary(x, positions, *, base=10000.0):
    """Rotary position embedding: rotate feature pairs of x by the angles p θ_i.

    With the half-split pairing (GPT-NeoX, Hugging Face's LLaMA): for i < d/2 the pair
    (x_i, x_{i+d/2}) at position p is rotated by p θ_i, θ_i = base^(−2i/d):

        y_i = x_i cos(p θ_i) − x_{i+d/2} sin(p θ_i),
        y_{i+d/2} = x_{i+d/2} cos(p θ_i) + x_i sin(p θ_i).

    (RoFormer and Meta's LLaMA code pair adjacent features (x_{2i}, x_{2i+1}) instead:
    the same rotation of the features permuted, so weights trained with one pairing
    need their q and k rows permuted for the other.) Then R(p)q · R(p')k =
    q · R(p' − p)k: the score depends on the positions only through their difference.
    Backward: a rotation is orthogonal, its transpose is the rotation by −θ, so
    dx = R(−pθ) g; positions get no gradient. Saves the positions alone (cos and sin
    are recomputed).

    Args:
      x: (..., L, d), d even (per head: q or k of shape (batch, heads, L, d_h)).
      positions: integer (L,), or (..., L) as x.shape[:-1].
      base: the frequency base (10000 in RoFormer).

    Returns:
      (..., L, d), x's dtype.

    Examples:
      >>> x = jnp.array([[1.0, 0.0]])                          # L = 1, d = 2: θ_0 = 1
      >>> y = fundl.nn.rotary(x, jnp.array([1]))
      >>> np.asarray(y, np.float64).round(4).tolist()          # [cos 1, sin 1]
      [[0.5403, 0.8415]]
    """
    cos, sin = _angles(positions, x.shape[-1], base, x.dtype)
    return _rotate(x, cos, sin)


def rotary_fwd(x, positions, *, base):
    return rotary.reference(x, positions, base=base), positions


def rotary_bwd(positions, g, *, base):
    cos, sin = _angles(positions, g.shape[-1], base, g.dtype)
    return _rotate(g, cos, -sin), None


rotary.defvjp(rotary_fwd, rotary_bwd)
