"""Multi-head attention: the layer ``MultiHeadAttention``.

For x (..., L_q, d_in) and a context c (..., L_k, d_ctx) (c = x for self-attention),
with H heads of width d_h:

    q = x W_qᵀ + b_q,   k = c W_kᵀ + b_k,   v = c W_vᵀ + b_v        (..., L, H·d_h)
    split heads: (..., H, L, d_h);  o_h = softmax(q_h k_hᵀ / √d_h + mask) v_h
    merge heads: (..., L_q, H·d_h);  y = o W_oᵀ + b_o                (..., L_q, d_out)

It composes the ``dense`` and ``dot_product_attention`` primitives (and ``rotary`` for
RoPE); the head split and merge are reshapes, differentiated by JAX. The pieces are
public — ``project`` (q, k, v with heads split, rotary applied) and ``merge`` — so a
key/value cache can run project on new tokens, concatenate k and v with the cache, and
call ``dot_product_attention`` itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from fundl import initializers
from fundl._validate import (
    as_key,
    check_bool,
    check_floating,
    check_initializers,
    check_int,
    check_number,
    check_param_dtype,
)
from fundl.nn.attention import dot_product_attention
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.nn.dense import dense
from fundl.nn.position import rotary as rotary_embedding

__all__ = ["MultiHeadAttention"]


@dataclasses.dataclass(frozen=True, repr=False)
class MultiHeadAttention(Layer):
    """Multi-head (self- or cross-) attention, the Transformer's mixing layer.

    ``params = {"W_q": (H·d_h, d_in), "b_q", "W_k": (H·d_h, d_ctx), "b_k", "W_v":
    (H·d_h, d_ctx), "b_v", "W_o": (d_out, H·d_h), "b_o"}`` (dense layout W (n_out,
    n_in); the b's left out with ``use_bias=False``). Equations: see the module docstring.

    Args:
      num_heads: H.
      head_features: d_h; None is d_in / H (then H must divide d_in).
      out_features: d_out; None is d_in.
      context_features: d_ctx, the context's width for cross-attention; None is d_in.
      causal: query i sees keys j ≤ i + L_k − L_q only (a decoder's self-attention).
      rotary: apply rotary position embeddings (``fundl.nn.rotary``) to q and k per
        head, at positions 0..L−1 (self-attention only; d_h even).
      rotary_base: the rotary frequency base.
      use_bias: whether the four projections have biases.
      w_init: initializer of the W's (Xavier uniform, as PyTorch's MultiheadAttention).
      b_init: initializer of the b's (zeros).
      param_dtype: dtype of the parameters.

    ``apply_with_state(params, state, x, *, context=None, mask=None)``: x (..., L_q,
    d_in); context None (self-attention) or (..., L_k, d_ctx); mask None, bool (..., L_k)
    (key padding, True = a real key) or bool (..., L_q, L_k) (True: query i may see key
    j). Returns (..., L_q, d_out).

    Examples:
      >>> mha = MultiHeadAttention(2, causal=True)
      >>> params = mha.init(jax.random.key(0), (5, 8))     # W_q (8, 8), ...
      >>> mha.apply(params, jnp.ones((3, 5, 8))).shape
      (3, 5, 8)
    """

    num_heads: int
    head_features: int | None = dataclasses.field(default=None, kw_only=True)
    out_features: int | None = dataclasses.field(default=None, kw_only=True)
    context_features: int | None = dataclasses.field(default=None, kw_only=True)
    causal: bool = dataclasses.field(default=False, kw_only=True)
    rotary: bool = dataclasses.field(default=False, kw_only=True)
    rotary_base: float = dataclasses.field(default=10000.0, kw_only=True)
    use_bias: bool = dataclasses.field(default=True, kw_only=True)
    w_init: initializers.Initializer = dataclasses.field(
        default=initializers.xavier_uniform, kw_only=True
    )
    b_init: initializers.Initializer = dataclasses.field(default=initializers.zeros, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    kind: ClassVar[str] = "attention"

    def __post_init__(self) -> None:
        name = "MultiHeadAttention"
        check_int(name, "num_heads", self.num_heads)
        for arg in ("head_features", "out_features", "context_features"):
            if getattr(self, arg) is not None:
                check_int(name, arg, getattr(self, arg))
        check_bool(name, "causal", self.causal)
        check_bool(name, "rotary", self.rotary)
        check_bool(name, "use_bias", self.use_bias)
        base = check_number(name, "rotary_base", self.rotary_base, low=0.0, low_open=True)
        object.__setattr__(self, "rotary_base", base)
        check_param_dtype(name, self.param_dtype)
        check_initializers(name, self, "w_init", "b_init")
        if self.rotary and self.head_features is not None and self.head_features % 2:
            raise ValueError(
                f"{name}: rotary=True needs an even head_features, got {self.head_features}"
            )

    # -- shapes -----------------------------------------------------------------------

    def _width(self, input_shape: tuple[int, ...]) -> int:
        input_shape = as_input_shape(repr(self), input_shape)
        if len(input_shape) < 1 or input_shape[-1] <= 0:
            raise ValueError(
                f"{self!r}: expected an input shape (..., L, d_in), got {tuple(input_shape)}"
            )
        return int(input_shape[-1])

    def _head_features(self, d_in: int) -> int:
        if self.head_features is not None:
            return self.head_features
        if d_in % self.num_heads:
            raise ValueError(
                f"{self!r}: {self.num_heads} heads do not divide the input width {d_in}; "
                "choose num_heads dividing it or set head_features"
            )
        d_h = d_in // self.num_heads
        if self.rotary and d_h % 2:
            raise ValueError(
                f"{self!r}: rotary=True needs an even head width, got d_in {d_in} / "
                f"{self.num_heads} heads = {d_h}"
            )
        return d_h

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        """The W's and b's for inputs (..., L_q, d_in); d_ctx is ``context_features``."""
        key = as_key("MultiHeadAttention.init", key)
        d_in = self._width(input_shape)
        inner = self.num_heads * self._head_features(d_in)
        d_ctx = self.context_features or d_in
        d_out = self.out_features or d_in
        shapes = {"q": (inner, d_in), "k": (inner, d_ctx), "v": (inner, d_ctx), "o": (d_out, inner)}
        params = {}
        for (name, shape), k in zip(shapes.items(), jax.random.split(key, 4)):
            w_key, b_key = jax.random.split(k)
            params[f"W_{name}"] = self.w_init(w_key, shape, self.param_dtype)
            if self.use_bias:
                params[f"b_{name}"] = self.b_init(b_key, shape[:1], self.param_dtype)
        return params

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(..., L_q, d_in) -> (..., L_q, d_out)."""
        d_in = self._width(input_shape)
        return tuple(input_shape[:-1]) + (self.out_features or d_in,)

    # -- the pieces -------------------------------------------------------------------

    def _check_inputs(self, params: Any, x: Any, context: Any) -> None:
        check_floating(repr(self), "a floating-point input", x)
        if jnp.ndim(x) < 2:
            raise ValueError(f"{self!r}: expected x of shape (..., L_q, d_in), got {jnp.shape(x)}")
        check_params(self, params, jnp.shape(x))
        if jnp.shape(x)[-2] == 0:
            raise ValueError(f"{self!r}: sequence length 0 (x of shape {jnp.shape(x)})")
        if context is None:
            d_in = jnp.shape(x)[-1]
            if self.context_features is not None and self.context_features != d_in:
                raise ValueError(
                    f"{self!r}: context_features={self.context_features} is cross-attention to "
                    f"a context of shape (..., L_k, {self.context_features}); pass context=... "
                    f"(self-attention on x of shape {jnp.shape(x)} needs context_features None "
                    f"or {d_in})"
                )
            return
        check_floating(repr(self), "a floating-point context", context)
        d_ctx = self.context_features or jnp.shape(x)[-1]
        xs, cs = jnp.shape(x), jnp.shape(context)
        if len(cs) != len(xs) or cs[:-2] != xs[:-2] or cs[-1] != d_ctx or cs[-2] == 0:
            raise ValueError(
                f"{self!r}: expected a context of shape {xs[:-2] + ('L_k', d_ctx)} (L_k > 0) "
                f"for x of shape {xs}, got shape {cs}"
            )
        if self.rotary:
            raise ValueError(
                f"{self!r}: rotary=True is for self-attention; cross-attention (context "
                "given) takes a MultiHeadAttention without rotary"
            )

    def _split(self, z: jax.Array) -> jax.Array:
        """(..., L, H·d_h) -> (..., H, L, d_h)."""
        z = z.reshape(z.shape[:-1] + (self.num_heads, z.shape[-1] // self.num_heads))
        return jnp.swapaxes(z, -3, -2)

    def project(
        self, params: dict, x: jax.Array, context: jax.Array | None = None, *, positions=None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(q, k, v), each (..., H, L, d_h): the projections with heads split.

        With ``rotary=True``, q and k are rotated at ``positions``: int (L,) or (..., L)
        (x's leading dims), default arange(L) — in decoding, the new tokens' places in
        the sequence (the cache length onwards); k gets the same positions (self-attention).
        """
        self._check_inputs(params, x, context)
        source = x if context is None else context
        b = params.get if self.use_bias else (lambda name: None)
        q = self._split(dense(x, params["W_q"], b("b_q")))
        k = self._split(dense(source, params["W_k"], b("b_k")))
        v = self._split(dense(source, params["W_v"], b("b_v")))
        if self.rotary:
            length = jnp.shape(x)[-2]
            if positions is None:
                positions = jnp.arange(length)
            lead = jnp.shape(x)[:-2]
            ps = jnp.shape(positions)
            if not jnp.issubdtype(jnp.result_type(positions), jnp.integer) or ps not in (
                (length,),
                lead + (length,),
            ):
                raise ValueError(
                    f"{self!r}: expected integer positions of shape {(length,)} or "
                    f"{lead + (length,)}, got {jnp.result_type(positions)} of shape {ps}"
                )
            if ps != (length,):  # (..., L) -> (..., H, L), one row per head
                positions = jnp.broadcast_to(
                    jnp.expand_dims(positions, -2), lead + (self.num_heads, length)
                )
            q = rotary_embedding(q, positions, base=self.rotary_base)
            k = rotary_embedding(k, positions, base=self.rotary_base)
        return q, k, v

    def merge(self, params: dict, o: jax.Array) -> jax.Array:
        """y = merge(o) W_oᵀ + b_o: o (..., H, L, d_h) -> (..., L, d_out)."""
        o = jnp.swapaxes(o, -3, -2)
        o = o.reshape(o.shape[:-2] + (o.shape[-2] * o.shape[-1],))
        return dense(o, params["W_o"], params.get("b_o") if self.use_bias else None)

    def attention_mask(self, mask: Any, q_shape: tuple, k_length: int) -> jax.Array | None:
        """A mask as ``dot_product_attention`` takes it: bool (..., H, L_q, L_k).

        ``mask``: None, bool (..., L_k) (key padding) or bool (..., L_q, L_k), with x's
        batch axes (...); ``q_shape`` is q's (..., H, L_q, d_h). An unbatched (L_q, L_k)
        mask is not broadcast as PyTorch's ``attn_mask`` is: with one batch axis of size
        B = L_q it has the key-padding shape (B, L_k) and is read as one, so broadcast
        it first (``jnp.broadcast_to(m, (B, L_q, L_k))``).
        """
        if mask is None:
            return None
        lead, lq = tuple(q_shape[:-3]), q_shape[-2]
        ms = jnp.shape(mask)
        if jnp.result_type(mask) != jnp.bool_ or ms not in (
            lead + (k_length,),
            lead + (lq, k_length),
        ):
            hint = (
                f"; broadcast an unbatched (L_q, L_k) mask to {lead + (lq, k_length)} first"
                if ms == (lq, k_length) and lead
                else ""
            )
            raise ValueError(
                f"{self!r}: expected a bool mask of shape {lead + (k_length,)} (key padding) or "
                f"{lead + (lq, k_length)}, got {jnp.result_type(mask)} of shape {ms}{hint}"
            )
        if len(ms) == len(lead) + 1:
            mask = mask[..., None, :]  # every query sees the same keys
        target = lead + (self.num_heads, lq, k_length)
        return jnp.broadcast_to(jnp.expand_dims(mask, -3), target)

    def apply_with_state(
        self,
        params: dict,
        state: Any,
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
        context: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Any]:
        """(y, state): project, ``dot_product_attention`` (mask, causal), merge; no state."""
        del key
        check_bool(repr(self), "train", train)
        check_state(self, state, jnp.shape(x))
        q, k, v = self.project(params, x, context)
        o = dot_product_attention(
            q, k, v, self.attention_mask(mask, q.shape, k.shape[-2]), causal=self.causal
        )
        return self.merge(params, o), state

    def apply(
        self,
        params: dict,
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
        context: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """The output alone: ``apply_with_state(params, {}, x, ...)[0]``."""
        y, _ = self.apply_with_state(
            params, {}, x, key=key, train=train, context=context, mask=mask
        )
        return y
