"""Transformer blocks: ``TransformerEncoderBlock`` and ``TransformerDecoderBlock``.

Each sublayer (self-attention, cross-attention, the feed-forward network) is wrapped in
a residual connection and a layer norm, pre-LN by default (GPT-2, most modern models),
or post-LN as in Vaswani et al. (2017):

    pre-LN  (norm_first=True):   x ← x + Drop(Sublayer(LN(x)))
    post-LN (norm_first=False):  x ← LN(x + Drop(Sublayer(x)))

    FFN(x) = gelu(x W_1ᵀ + b_1) W_2ᵀ + b_2      (d -> ff_features -> d)

They compose ``MultiHeadAttention`` and the ``layer_norm``, ``dense``, ``gelu`` and
``dropout`` primitives; the residual sums are plain additions.
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
    check_int,
    check_number,
    check_param_dtype,
)
from fundl.activations import gelu
from fundl.nn.attention import dot_product_attention
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.nn.dense import dense
from fundl.nn.dropout import dropout
from fundl.nn.multihead import MultiHeadAttention, check_attention_masks
from fundl.nn.norm import layer_norm

__all__ = ["TransformerDecoderBlock", "TransformerEncoderBlock"]


def check_cache_position(owner: Any, position: Any, length: int, max_length: int) -> Any:
    """``position`` checked for ``length`` new tokens in a cache of ``max_length``: an
    integer scalar (``TypeError``); a concrete one with 0 ≤ position ≤ max_length − length
    (``ValueError``) comes back as an int, a traced one as it is (see ``outside_cache``)."""
    try:
        ok = jnp.issubdtype(jnp.result_type(position), jnp.integer) and not jnp.ndim(position)
    except TypeError:  # a string, None, ...: no dtype at all
        ok = False
    if isinstance(position, (bool, np.bool_)) or not ok:
        got = (
            f"{jnp.result_type(position)} of shape {jnp.shape(position)}"
            if isinstance(position, (jax.Array, np.ndarray, np.generic))
            else repr(position)
        )
        raise TypeError(f"{owner!r}: expected an integer scalar position, got {got}")
    if isinstance(position, jax.core.Tracer):
        return position
    position = int(position)
    if not 0 <= position <= max_length - length:
        raise ValueError(
            f"{owner!r}: {length} new tokens at position {position} do not fit the cache of "
            f"max_length {max_length}"
        )
    return position


def nan_outside_cache(y: jax.Array, position: Any, length: int, max_length: int) -> jax.Array:
    """y, or all NaN when the (traced) write ran outside the cache: ``dynamic_update_slice``
    clamped it onto other positions, so nothing computed from the cache can be trusted."""
    outside = (position < 0) | (position + length > max_length)
    return jnp.where(outside, jnp.asarray(jnp.nan, y.dtype), y)


@dataclasses.dataclass(frozen=True, repr=False)
class _Block(Layer):
    """What both blocks share: the options, the FFN, the norms, dropout and the wiring."""

    num_heads: int
    ff_features: int
    dropout: float = dataclasses.field(default=0.0, kw_only=True)
    norm_first: bool = dataclasses.field(default=True, kw_only=True)
    eps: float = dataclasses.field(default=1e-5, kw_only=True)
    head_features: int | None = dataclasses.field(default=None, kw_only=True)
    rotary: bool = dataclasses.field(default=False, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_int(name, "num_heads", self.num_heads)
        check_int(name, "ff_features", self.ff_features)
        rate = check_number(name, "dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        object.__setattr__(self, "dropout", rate)
        check_bool(name, "norm_first", self.norm_first)
        eps = check_number(name, "eps", self.eps, low=0.0, low_open=True)
        object.__setattr__(self, "eps", eps)
        if self.head_features is not None:
            check_int(name, "head_features", self.head_features)
        check_bool(name, "rotary", self.rotary)
        check_param_dtype(name, self.param_dtype)

    # the sublayers, as configs: (name in params, MultiHeadAttention) pairs
    def _attentions(self) -> tuple[tuple[str, MultiHeadAttention], ...]:
        raise NotImplementedError

    def _width(self, input_shape: tuple[int, ...]) -> int:
        input_shape = as_input_shape(repr(self), input_shape)
        if len(input_shape) < 1 or input_shape[-1] <= 0:
            raise ValueError(
                f"{self!r}: expected an input shape (..., L, d), got {tuple(input_shape)}"
            )
        d = int(input_shape[-1])
        if self.head_features is None and d % self.num_heads:
            raise ValueError(
                f"{self!r}: {self.num_heads} heads do not divide the input width {d} "
                f"(input shape {tuple(input_shape)}); set head_features or change num_heads"
            )
        return d

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """Attention params, ``norm1``.. (γ, β of width d) and ``ff1`` (W (F, d)), ``ff2`` (W (d, F)).

        Only d matters: ``input_shape`` is (..., L, d), or (d,) — one unbatched (L, d)
        sequence less its first dim, as ``check_params`` passes it.
        """
        key = as_key(f"{type(self).__name__}.init", key)
        d = self._width(input_shape)
        attentions = self._attentions()
        keys = jax.random.split(key, len(attentions) + 2)
        params: dict[str, Any] = {}
        for (name, mha), k in zip(attentions, keys):
            params[name] = mha.init(k, input_shape)
        for i in range(len(attentions) + 1):
            params[f"norm{i + 1}"] = {
                "gamma": initializers.ones(None, (d,), self.param_dtype),
                "beta": initializers.zeros(None, (d,), self.param_dtype),
            }
        ff = ((self.ff_features, d), (d, self.ff_features))
        for i, (shape, k) in enumerate(zip(ff, keys[-2:])):
            w_init = initializers.he_normal if i == 0 else initializers.xavier_uniform
            params[f"ff{i + 1}"] = {
                "W": w_init(k, shape, self.param_dtype),
                "b": initializers.zeros(None, shape[:1], self.param_dtype),
            }
        return params

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input shape, (..., L, d)."""
        self._width(input_shape)
        return tuple(input_shape)

    def _drop(self, y: jax.Array, key: Any, train: bool) -> jax.Array:
        if not train or self.dropout == 0.0:
            return y
        keep = jax.random.bernoulli(key, 1.0 - self.dropout, y.shape)
        return dropout(y, keep, rate=self.dropout)

    def _ffn(self, params: dict, h: jax.Array) -> jax.Array:
        z = gelu(dense(h, params["ff1"]["W"], params["ff1"]["b"]))
        return dense(z, params["ff2"]["W"], params["ff2"]["b"])

    def _sublayer(self, params, norm, x, fn, key, train):
        """x + Drop(fn(LN(x))) (pre-LN) or LN(x + Drop(fn(x))) (post-LN)."""
        g, b = params[norm]["gamma"], params[norm]["beta"]
        if self.norm_first:
            return x + self._drop(fn(layer_norm(x, g, b, eps=self.eps)), key, train)
        return layer_norm(x + self._drop(fn(x), key, train), g, b, eps=self.eps)

    def _check_masks(self, x: Any, context: Any, masks: tuple) -> None:
        """Each attention's (mask, padding_mask) against x (..., L, d) and its keys."""
        if jnp.ndim(x) < 2:
            return  # x itself is refused, naming its shape
        for (name, _), (mask, padding) in zip(self._attentions(), masks):
            names = ("mask", "padding_mask")
            k_length = jnp.shape(x)[-2]
            if name == "cross_attention":
                if jnp.ndim(context) < 2:
                    continue  # the cross-attention names a context of the wrong rank
                names, k_length = ("context_mask", "context_padding_mask"), jnp.shape(context)[-2]
            check_attention_masks(repr(self), jnp.shape(x)[:-1], k_length, mask, padding, names)

    def _run(self, params, state, x, key, train, masks, context):
        check_bool(repr(self), "train", train)
        check_floating(repr(self), "a floating-point input", x)
        if jnp.ndim(x) < 2:
            raise ValueError(f"{self!r}: expected x of shape (..., L, d), got shape {jnp.shape(x)}")
        self._width(jnp.shape(x))
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        self._check_masks(x, context, masks)
        if train and self.dropout > 0.0:
            if key is None:
                raise ValueError(
                    f"{self!r}: train=True with dropout {self.dropout} needs a PRNG key to "
                    "draw the dropout masks; pass key=..."
                )
            keys = list(jax.random.split(as_key(repr(self), key), len(masks) + 1))
        else:
            keys = [None] * (len(masks) + 1)
        attentions = self._attentions()
        for i, ((name, mha), (mask, padding), k) in enumerate(zip(attentions, masks, keys)):
            c = context if name == "cross_attention" else None

            def attend(h, mha=mha, name=name, mask=mask, padding=padding, c=c):
                return mha.apply(params[name], h, context=c, mask=mask, padding_mask=padding)

            x = self._sublayer(params, f"norm{i + 1}", x, attend, k, train)
        last = f"norm{len(attentions) + 1}"
        x = self._sublayer(params, last, x, lambda h: self._ffn(params, h), keys[-1], train)
        return x, state


@dataclasses.dataclass(frozen=True, repr=False)
class TransformerEncoderBlock(_Block):
    """A Transformer encoder block: self-attention, then a GELU feed-forward network.

    Pre-LN (default): h = x + Drop(MHA(LN₁(x))), y = h + Drop(FFN(LN₂(h))); post-LN
    (``norm_first=False``): h = LN₁(x + Drop(MHA(x))), y = LN₂(h + Drop(FFN(h))).

    ``params = {"attention": MultiHeadAttention params, "norm1": {"gamma", "beta"},
    "norm2": ..., "ff1": {"W": (F, d), "b"}, "ff2": {"W": (d, F), "b"}}``.

    Args:
      num_heads: attention heads H (dividing d unless ``head_features`` is set).
      ff_features: F, the feed-forward width (4·d in Vaswani et al.).
      dropout: rate on each sublayer's output before the residual sum (training only;
        a key is needed then).
      norm_first: pre-LN (True) or post-LN (False).
      eps: the layer norms' ε.
      head_features: d_h; None is d / H.
      causal: causal self-attention (a decoder-only model's block).
      rotary: rotary position embeddings in the attention.
      param_dtype: dtype of the parameters.

    ``apply_with_state(params, state, x, *, key, train, mask=None, padding_mask=None)``:
    x (..., L, d); ``mask`` None or bool (..., L, L), True where token i may see token j;
    ``padding_mask`` None or bool (..., L), True at a real token (as
    ``MultiHeadAttention``'s).

    Examples:
      >>> block = TransformerEncoderBlock(2, 16)
      >>> params = block.init(jax.random.key(0), (5, 8))
      >>> block.apply(params, jnp.ones((3, 5, 8))).shape
      (3, 5, 8)
    """

    causal: bool = dataclasses.field(default=False, kw_only=True)

    kind: ClassVar[str] = "encoder_block"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool(type(self).__name__, "causal", self.causal)

    def _attentions(self):
        mha = MultiHeadAttention(
            self.num_heads,
            head_features=self.head_features,
            causal=self.causal,
            rotary=self.rotary,
            param_dtype=self.param_dtype,
        )
        return (("attention", mha),)

    def apply_with_state(
        self,
        params: dict,
        state: Any,
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
        mask: jax.Array | None = None,
        padding_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Any]:
        """(y, state) for x (..., L, d); see the class docstring."""
        return self._run(params, state, x, key, train, ((mask, padding_mask),), None)

    def apply(self, params, x, *, key=None, train=False, mask=None, padding_mask=None):
        """The output alone: ``apply_with_state(params, {}, x, ...)[0]``."""
        return self.apply_with_state(
            params, {}, x, key=key, train=train, mask=mask, padding_mask=padding_mask
        )[0]


@dataclasses.dataclass(frozen=True, repr=False)
class TransformerDecoderBlock(_Block):
    """A Transformer decoder block: causal self-attention, cross-attention, then the FFN.

    Pre-LN (default): h = x + Drop(MHA_causal(LN₁(x))), h = h + Drop(MHA(LN₂(h), c)),
    y = h + Drop(FFN(LN₃(h))); post-LN (``norm_first=False``) puts each LN after the
    residual sum. With ``cross_attention=False`` the middle sublayer is absent (a GPT
    block: self-attention and FFN, norms ``norm1``, ``norm2``).

    ``params = {"self_attention", "cross_attention" (MultiHeadAttention params), "norm1",
    "norm2", "norm3": {"gamma", "beta"}, "ff1", "ff2": {"W", "b"}}``.

    Args:
      num_heads: as ``TransformerEncoderBlock``'s.
      ff_features: as ``TransformerEncoderBlock``'s.
      dropout: as ``TransformerEncoderBlock``'s.
      norm_first: as ``TransformerEncoderBlock``'s.
      eps: as ``TransformerEncoderBlock``'s.
      head_features: as ``TransformerEncoderBlock``'s.
      rotary: as ``TransformerEncoderBlock``'s (in the self-attention).
      param_dtype: as ``TransformerEncoderBlock``'s.
      cross_attention: whether the block attends to a ``context`` (an encoder's
        output); then ``context=`` is required at apply.
      context_features: the context's width; None is d.

    ``apply_with_state(params, state, x, *, key, train, mask=None, padding_mask=None,
    context=None, context_mask=None, context_padding_mask=None)``: x (..., L, d);
    ``mask`` (..., L, L) and ``padding_mask`` (..., L) for the self-attention (combined
    with the causal mask); context (..., L_k, d_ctx), ``context_mask`` (..., L, L_k) and
    ``context_padding_mask`` (..., L_k) for the cross-attention. Masks as
    ``MultiHeadAttention``'s: bool, True where a query may see a key.

    Examples:
      >>> block = TransformerDecoderBlock(2, 16)
      >>> params = block.init(jax.random.key(0), (5, 8))
      >>> memory = jnp.ones((3, 7, 8))                  # the encoder's output
      >>> block.apply(params, jnp.ones((3, 5, 8)), context=memory).shape
      (3, 5, 8)
    """

    cross_attention: bool = dataclasses.field(default=True, kw_only=True)
    context_features: int | None = dataclasses.field(default=None, kw_only=True)

    kind: ClassVar[str] = "decoder_block"

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_bool(name, "cross_attention", self.cross_attention)
        if self.context_features is not None:
            check_int(name, "context_features", self.context_features)
            if not self.cross_attention:
                raise ValueError(f"{name}: context_features is set but cross_attention=False")

    def _attentions(self):
        common = {"head_features": self.head_features, "param_dtype": self.param_dtype}
        out = [
            (
                "self_attention",
                MultiHeadAttention(self.num_heads, causal=True, rotary=self.rotary, **common),
            )
        ]
        if self.cross_attention:
            cross = MultiHeadAttention(
                self.num_heads, context_features=self.context_features, **common
            )
            out.append(("cross_attention", cross))
        return tuple(out)

    def apply_with_state(
        self,
        params: dict,
        state: Any,
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
        mask: jax.Array | None = None,
        padding_mask: jax.Array | None = None,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
        context_padding_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Any]:
        """(y, state) for x (..., L, d); see the class docstring."""
        self._check_context(context, context_mask, context_padding_mask)
        masks = ((mask, padding_mask),)
        if self.cross_attention:
            masks += ((context_mask, context_padding_mask),)
        return self._run(params, state, x, key, train, masks, context)

    def _check_context(self, context: Any, context_mask: Any, context_padding_mask: Any) -> None:
        if self.cross_attention and context is None:
            raise ValueError(
                f"{self!r}: cross_attention=True needs context=... (..., L_k, d_ctx); "
                "use cross_attention=False for a decoder-only block"
            )
        if not self.cross_attention and any(
            a is not None for a in (context, context_mask, context_padding_mask)
        ):
            raise ValueError(
                f"{self!r}: cross_attention=False takes no context, context_mask or "
                "context_padding_mask"
            )

    def init_cache(self, batch: tuple[int, ...], max_length: int, d: int, dtype: Any) -> dict:
        """An empty key/value cache: ``{"k", "v"}`` of shape (*batch, H, max_length, d_h)."""
        mha = self._attentions()[0][1]
        d_h = mha._head_features(d)
        zeros = jnp.zeros(tuple(batch) + (self.num_heads, max_length, d_h), dtype)
        return {"k": zeros, "v": zeros}

    def decode(
        self,
        params: dict,
        cache: dict,
        x: jax.Array,
        position: Any,
        *,
        context: jax.Array | None = None,
        context_mask: jax.Array | None = None,
        context_padding_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, dict]:
        """The block on new tokens x (..., L_new, d) at ``position``, with a key/value cache.

        The self-attention's keys and values of the new tokens are written into the cache
        (``init_cache``) at ``position`` .. ``position + L_new − 1``; query i sees the cache
        up to ``position + i``. Evaluation mode (no dropout). Equals the full pass's rows
        at those positions (tested). Returns ``(y, new cache)``. A concrete ``position``
        whose tokens do not fit the cache raises ``ValueError``; under ``jit`` such a call
        gives all-NaN y (never a silently clamped write).
        """
        check_floating(repr(self), "a floating-point input", x)
        check_params(self, params, jnp.shape(x))
        self._check_context(context, context_mask, context_padding_mask)
        if self.cross_attention:
            self._check_masks(x, context, ((None, None), (context_mask, context_padding_mask)))
        attentions = self._attentions()
        name, mha = attentions[0]
        length, max_length = jnp.shape(x)[-2], cache["k"].shape[-2]
        position = check_cache_position(self, position, length, max_length)
        positions = position + jnp.arange(length)

        def attend_cached(h):
            nonlocal cache
            q, k, v = mha.project(params[name], h, positions=positions)
            start = (0,) * (k.ndim - 2) + (position, 0)
            cache = {
                "k": jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), start),
                "v": jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start),
            }
            seen = jnp.arange(max_length)[None, :] <= positions[:, None]  # (L_new, max_length)
            mask = jnp.broadcast_to(seen, q.shape[:-1] + (max_length,))
            o = dot_product_attention(q, cache["k"], cache["v"], mask)
            return mha.merge(params[name], o)

        x = self._sublayer(params, "norm1", x, attend_cached, None, False)
        if self.cross_attention:
            cross = attentions[1][1]

            def attend(h):
                return cross.apply(
                    params["cross_attention"],
                    h,
                    context=context,
                    mask=context_mask,
                    padding_mask=context_padding_mask,
                )

            x = self._sublayer(params, "norm2", x, attend, None, False)
        last = f"norm{len(attentions) + 1}"
        x = self._sublayer(params, last, x, lambda h: self._ffn(params, h), None, False)
        return nan_outside_cache(x, position, length, max_length), cache

    def apply(
        self,
        params,
        x,
        *,
        key=None,
        train=False,
        mask=None,
        padding_mask=None,
        context=None,
        context_mask=None,
        context_padding_mask=None,
    ):
        """The output alone: ``apply_with_state(params, {}, x, ...)[0]``."""
        y, _ = self.apply_with_state(
            params,
            {},
            x,
            key=key,
            train=train,
            mask=mask,
            padding_mask=padding_mask,
            context=context,
            context_mask=context_mask,
            context_padding_mask=context_padding_mask,
        )
        return y
