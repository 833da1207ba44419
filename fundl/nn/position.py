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

import jax.numpy as jnp
import numpy as np

from fundl._validate import check_floating, check_number
from fundl.rules import primitive

__all__ = ["rotary"]


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

    With the half-split pairing (GPT-NeoX, LLaMA): for i < d/2 the pair
    (x_i, x_{i+d/2}) at position p is rotated by p θ_i, θ_i = base^(−2i/d):

        y_i = x_i cos(p θ_i) − x_{i+d/2} sin(p θ_i),
        y_{i+d/2} = x_{i+d/2} cos(p θ_i) + x_i sin(p θ_i).

    Then R(p)q · R(p')k = q · R(p' − p)k: the score depends on the positions only
    through their difference. Backward: a rotation is orthogonal, its transpose is the
    rotation by −θ, so dx = R(−pθ) g; positions get no gradient. Saves the positions
    alone (cos and sin are recomputed).

    Args:
      x: (..., L, d), d even (per head: q or k of shape (batch, heads, L, d_h)).
      positions: integer (L,), or (..., L) as x.shape[:-1].
      base: the frequency base (10000 in RoFormer).
    Returns: (..., L, d), x's dtype.

    Example:
      >>> x = jnp.array([[1.0, 0.0]])                          # L = 1, d = 2: θ_0 = 1
      >>> fundl.nn.rotary(x, jnp.array([1])).round(4).tolist()  # [cos 1, sin 1]
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
