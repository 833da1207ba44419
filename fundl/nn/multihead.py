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


def check_attention_masks(
    owner: str,
    q_shape: tuple[int, ...],
    k_length: int,
    mask: Any,
    padding_mask: Any,
    names: tuple[str, str] = ("mask", "padding_mask"),
) -> None:
    """Raise ``ValueError`` unless the masks fit queries of shape (..., L_q) and L_k keys.

    ``mask``: None or bool (..., L_q, L_k), True where query i may see key j;
    ``padding_mask``: None or bool (..., L_k), True at a real key. Each has the queries'
    batch axes (...), exactly as many (a dim of 1 broadcasts): an unbatched (L_q, L_k)
    mask for batched queries is refused, not broadcast — with one batch axis of size
    B = L_q it would have a key-padding mask's shape, and the two must never be confused.
    ``owner`` starts the message and ``names`` are the arguments' names in it.
    """
    lead, lq = tuple(q_shape[:-1]), q_shape[-1]
    wants = (lead + (lq, k_length), lead + (k_length,))
    for arg, given, want in zip(names, (mask, padding_mask), wants):
        if given is None:
            continue
        ms = jnp.shape(given)
        fits = len(ms) == len(want) and all(m in (w, 1) for m, w in zip(ms, want))
        if jnp.result_type(given) == jnp.bool_ and fits:
            continue
        hints = []
        if arg == names[0] and ms == wants[1]:
            hints.append(f"a key-padding mask (..., L_k) goes to {names[1]}=")
        if len(ms) < len(want) and lead:
            index = ", ".join(["None"] * (len(want) - len(ms)))
            hints.append(f"{arg}[{index}] broadcasts it over x's batch axes {lead}")
        hint = "".join(f"; {h}" for h in hints)
        raise ValueError(
            f"{owner}: expected {arg} of dtype bool and shape {want} (a 1 broadcasts), got "
            f"{jnp.result_type(given)} of shape {ms}{hint}"
        )


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

    ``apply_with_state(params, state, x, *, context=None, mask=None, padding_mask=None)``:
    x (..., L_q, d_in); context None (self-attention) or (..., L_k, d_ctx); ``mask`` None
    or bool (..., L_q, L_k), True where query i may see key j; ``padding_mask`` None or
    bool (..., L_k), True at a real key. Each has x's batch axes (a dim of 1
    broadcasts), and both given, a query sees a key where both allow it. True means
    "attend", as in Flax and ``torch.nn.functional.scaled_dot_product_attention``
    (``torch.nn.MultiheadAttention``'s ``attn_mask`` and ``key_padding_mask`` mark the
    keys to ignore: pass ``~m``). Returns (..., L_q, d_out).

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

    def attention_mask(
        self, q_shape: tuple, k_length: int, *, mask: Any = None, padding_mask: Any = None
    ) -> jax.Array | None:
        """The masks as ``dot_product_attention`` takes them: bool (..., H, L_q, L_k), or None.

        ``q_shape`` is q's (..., H, L_q, d_h); ``mask`` and ``padding_mask`` as
        :func:`check_attention_masks` takes them (checked by it); both given, a query
        sees a key where both allow it.
        """
        lead, lq = tuple(q_shape[:-3]), q_shape[-2]
        check_attention_masks(repr(self), lead + (lq,), k_length, mask, padding_mask)
        if padding_mask is not None:
            padding_mask = padding_mask[..., None, :]  # every query sees the same keys
        given = [m for m in (mask, padding_mask) if m is not None]
        if not given:
            return None
        combined = given[0] if len(given) == 1 else given[0] & given[1]
        target = lead + (self.num_heads, lq, k_length)
        return jnp.broadcast_to(jnp.expand_dims(combined, -3), target)

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
        padding_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Any]:
        """(y, state): project, ``dot_product_attention`` (masks, causal), merge; no state."""
        del key
        check_bool(repr(self), "train", train)
        check_state(self, state, jnp.shape(x))
        q, k, v = self.project(params, x, context)
        masks = self.attention_mask(q.shape, k.shape[-2], mask=mask, padding_mask=padding_mask)
        o = dot_product_attention(q, k, v, masks, causal=self.causal)
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
        padding_mask: jax.Array | None = None,
    ) -> jax.Array:
        """The output alone: ``apply_with_state(params, {}, x, ...)[0]``."""
        y, _ = self.apply_with_state(
            params,
            {},
            x,
            key=key,
            train=train,
            context=context,
            mask=mask,
            padding_mask=padding_mask,
        )
        return y
