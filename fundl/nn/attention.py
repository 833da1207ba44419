"""Scaled dot-product attention: the primitive ``dot_product_attention``.

For queries q (..., L_q, d), keys k (..., L_k, d) and values v (..., L_k, d_v):

    s = scale · q kᵀ  (scale = 1/√d),   s_ij = −∞ where query i may not see key j,
    p = softmax_j(s),                   o = p v                  (..., L_q, d_v)

The backward rule does not keep p, which is L_q × L_k per head: it keeps the row
log-sum-exp ℓ_i = log Σ_j exp s_ij (L_q numbers) and recomputes p = exp(s − ℓ) from q
and k, as FlashAttention does. With do the upstream gradient:

    dv = pᵀ do,   dp = do vᵀ,   D_i = Σ_c do_ic o_ic  (= Σ_j p_ij dp_ij),
    ds = p ⊙ (dp − D),   dq = scale · ds k,   dk = scale · dsᵀ q.

For bfloat16 or float16 inputs, s, the softmax, ℓ and every product's accumulation are
float32 (p is rounded to the inputs' dtype for the p v product, as FlashAttention does);
outputs and gradients come back in the inputs' dtype. float32 inputs compute as written.

The trade-off: one more q kᵀ product in the backward pass (about a third more matmul
work for the attention itself) for L_q·L_k fewer saved numbers per head — at L = 2048
that is 16 MiB of float32 per head and batch element.
"""

from __future__ import annotations

import jax.numpy as jnp

from fundl._validate import check_bool, check_floating, check_number
from fundl.rules import primitive
from fundl.tree import accumulation_dtype

__all__ = ["dot_product_attention"]


def _check_attention(q, k, v, mask=None, *, causal=False, scale=None):
    name = "dot_product_attention"
    for arg, x in (("q", q), ("k", k), ("v", v)):
        check_floating(name, f"a floating-point {arg}", x)
    qs, ks, vs = jnp.shape(q), jnp.shape(k), jnp.shape(v)
    if len(qs) < 2 or len(ks) != len(qs) or len(vs) != len(qs):
        raise ValueError(
            f"{name}: expected q (..., L_q, d), k (..., L_k, d) and v (..., L_k, d_v) of one "
            f"rank (at least 2), got shapes {qs}, {ks}, {vs}"
        )
    if ks[:-2] != qs[:-2] or vs[:-2] != qs[:-2]:
        raise ValueError(
            f"{name}: q, k and v must share their leading (batch, head) dims, got shapes "
            f"{qs}, {ks}, {vs}"
        )
    if ks[-1] != qs[-1] or vs[-2] != ks[-2]:
        raise ValueError(
            f"{name}: expected k (..., L_k, {qs[-1]}) and v (..., L_k, d_v) with the same L_k, "
            f"got shapes {ks} and {vs} for q of shape {qs}"
        )
    if qs[-2] == 0 or ks[-2] == 0:
        raise ValueError(f"{name}: sequence length 0 (q {qs}, k {ks}): nothing to attend")
    if mask is not None:
        expected = qs[:-1] + (ks[-2],)
        if jnp.shape(mask) != expected or jnp.result_type(mask) != jnp.bool_:
            raise ValueError(
                f"{name}: expected a bool mask of shape {expected} (True: query i may see key "
                f"j), got {jnp.result_type(mask)} of shape {jnp.shape(mask)}"
            )
    check_bool(name, "causal", causal)
    if scale is not None:
        check_number(name, "scale", scale, low=0.0, low_open=True)


def _product(spec, a, b, out_dtype):
    """einsum of a and b accumulated in float32 at least, returned in ``out_dtype``."""
    wide = accumulation_dtype((a, b))
    return jnp.einsum(spec, a, b, preferred_element_type=wide).astype(out_dtype)


def _scores(q, k, mask, causal, scale):
    """s = scale · q kᵀ with −∞ where not allowed; causal: query i sees keys j ≤ i + L_k − L_q.

    s is float32 for bfloat16/float16 q and k (the product accumulated and kept in it).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    wide = accumulation_dtype(q)
    s = _product("...qd,...kd->...qk", q, k, wide) * jnp.asarray(scale, wide)
    allowed = None
    if causal:
        lq, lk = q.shape[-2], k.shape[-2]
        allowed = jnp.arange(lk)[None, :] <= jnp.arange(lq)[:, None] + (lk - lq)
        allowed = jnp.broadcast_to(allowed, s.shape)
    if mask is not None:
        allowed = mask if allowed is None else allowed & mask
    if allowed is not None:
        s = jnp.where(allowed, s, jnp.asarray(-jnp.inf, s.dtype))
    return s, scale


@primitive(check=_check_attention)
def dot_product_attention(q, k, v, mask=None, *, causal=False, scale=None):
    """Scaled dot-product attention o = softmax(scale · q kᵀ + masks) v.

    A query row that may see no key at all (its mask all False) gives o = 0 and no
    gradient (as PyTorch 2.x's ``scaled_dot_product_attention``; a plain softmax gives
    NaN there). ``causal`` aligns the last query with the last key: query i sees keys
    j ≤ i + L_k − L_q (with L_q = L_k, j ≤ i), which is what a key/value cache needs;
    PyTorch's ``is_causal=True`` aligns the first query with the first key instead
    (j ≤ i), so for L_q ≠ L_k pass it an explicit mask, ``tril(ones, L_k − L_q)``.
    Backward: see the module docstring — p is recomputed from the saved log-sum-exp,
    never stored.

    Args:
      q: queries (..., L_q, d); leading dims are batch (and head) dims.
      k: keys (..., L_k, d).
      v: values (..., L_k, d_v).
      mask: None, or bool (..., L_q, L_k), True where query i may attend to key j
        (padding: False at padded keys).
      causal: also hide keys after each query's position.
      scale: the score scale; None is 1/√d.

    Returns:
      o (..., L_q, d_v), q's dtype.

    Examples:
      >>> q = k = v = jnp.eye(3)[None]                     # (1, 3, 3)
      >>> o = fundl.nn.dot_product_attention(q, k, v, causal=True)
      >>> o[0, 0].tolist()                                 # the first query sees key 0 only
      [1.0, 0.0, 0.0]
    """
    p, _, _ = _softmax(_scores(q, k, mask, causal, scale)[0])
    return _product("...qk,...kd->...qd", p.astype(v.dtype), v, q.dtype)


def _softmax(s):
    """(p, m, Σ exp(s − m)): softmax over keys, shifted by the row max m (0 for a row with
    no key, whose p is 0: exp(−∞) = 0 and the zero sum is divided by 1)."""
    m = jnp.max(s, axis=-1, keepdims=True)
    m = jnp.where(jnp.isneginf(m), jnp.zeros_like(m), m)
    e = jnp.exp(s - m)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total == 0, jnp.ones_like(total), total), m, total


def dot_product_attention_fwd(q, k, v, mask=None, *, causal=False, scale=None):
    p, m, total = _softmax(_scores(q, k, mask, causal, scale)[0])
    o = _product("...qk,...kd->...qd", p.astype(v.dtype), v, q.dtype)
    # ℓ = m + log Σ exp(s − m); +∞ for a row with no key, so that exp(s − ℓ) = 0 there
    lse = jnp.where(total == 0, jnp.asarray(jnp.inf, total.dtype), m + jnp.log(total))
    return o, (q, k, v, mask, o, lse)


def dot_product_attention_bwd(residuals, do, *, causal=False, scale=None):
    q, k, v, mask, o, lse = residuals
    s, scale = _scores(q, k, mask, causal, scale)
    p = jnp.exp(s - lse)  # recomputed, never stored; float32 for half-precision inputs
    wide = p.dtype
    dv = _product("...qk,...qd->...kd", p.astype(do.dtype), do, v.dtype)
    dp = _product("...qd,...kd->...qk", do, v, wide)
    D = jnp.sum(do.astype(wide) * o.astype(wide), axis=-1, keepdims=True)
    ds = p * (dp - D) * jnp.asarray(scale, wide)
    dq = _product("...qk,...kd->...qd", ds.astype(k.dtype), k, q.dtype)
    dk = _product("...qk,...qd->...kd", ds.astype(q.dtype), q, k.dtype)
    return dq, dk, dv, None


dot_product_attention.defvjp(dot_product_attention_fwd, dot_product_attention_bwd)
