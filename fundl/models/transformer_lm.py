"""A decoder-only Transformer language model (GPT-style), with a key/value cache.

    h⁰ = E[tokens] + P[positions]           (learned or sinusoidal P; none with rotary)
    hˡ = DecoderBlockˡ(hˡ⁻¹)                 causal self-attention + GELU FFN, pre-LN
    logits = LN(hᴺ) Eᵀ                       the output tied to the embedding (or a Dense)

``TransformerLM.apply`` takes token ids (batch, L) and gives next-token logits (batch,
L, vocab) for every position. ``init_cache`` and ``decode`` run it incrementally: the
keys and values of earlier tokens are kept, so each new token costs one row of attention
(``fundl.models.generate``).
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
    check_choice,
    check_int,
    check_number,
    check_param_dtype,
    is_floating_dtype,
)
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.nn.dense import dense
from fundl.nn.embedding import embedding
from fundl.nn.multihead import check_attention_masks
from fundl.nn.norm import layer_norm
from fundl.nn.position import sinusoidal_positions
from fundl.nn.transformer import (
    TransformerDecoderBlock,
    check_cache_position,
)

__all__ = ["TransformerLM", "transformer_lm"]

POSITIONAL = ("learned", "sinusoidal", "rotary")


@dataclasses.dataclass(frozen=True, repr=False)
class TransformerLM(Layer):
    """A decoder-only Transformer LM: token ids (batch, L) -> logits (batch, L, vocab).

    ``params = {"embedding": {"E": (vocab, d)}, "positions": {"P": (max_length, d)}
    (learned only), "block0", ..., "block{N−1}" (``TransformerDecoderBlock`` params),
    "norm": {"gamma", "beta"} (pre-LN only), "head": {"W": (vocab, d), "b"} (untied only)}``.

    E ~ N(0, 0.02²) and learned P ~ N(0, 0.02²) (GPT-2); the blocks' own initializers.
    Dropout (train only, needs a key) after the position sum and in every block.

    Args:
      vocab_size: number of tokens.
      d_model: the width d (divisible by num_heads).
      num_heads: heads per block.
      num_layers: blocks.
      max_length: the longest sequence (and the cache's length).
      ff_features: the FFN's hidden width; None is 4·d.
      dropout: rate in [0, 1).
      tie_embeddings: logits = h Eᵀ (True) or a separate Dense head.
      positional: "learned", "sinusoidal" or "rotary" (RoPE in every self-attention).
      norm_first: pre-LN blocks plus a final LN (True), or post-LN blocks.
      eps: the layer norms' ε.
      param_dtype: the parameters' dtype.

    Examples:
      Shapes only (``jax.eval_shape`` traces ``init`` and ``apply``; nothing is computed):

      >>> model = fundl.models.TransformerLM(
      ...     vocab_size=11, d_model=8, num_heads=2, num_layers=1, max_length=6)
      >>> params = jax.eval_shape(model.init, jax.random.key(0))
      >>> sorted(params)
      ['block0', 'embedding', 'norm', 'positions']
      >>> params["embedding"]["E"].shape  # (vocab, d)
      (11, 8)
      >>> tokens = jnp.zeros((2, 5), jnp.int32)  # (batch, L) token ids
      >>> jax.eval_shape(model.apply, params, tokens).shape  # (batch, L, vocab) logits
      (2, 5, 11)
    """

    vocab_size: int
    d_model: int
    num_heads: int
    num_layers: int
    max_length: int
    ff_features: int | None = dataclasses.field(default=None, kw_only=True)
    dropout: float = dataclasses.field(default=0.0, kw_only=True)
    tie_embeddings: bool = dataclasses.field(default=True, kw_only=True)
    positional: str = dataclasses.field(default="learned", kw_only=True)
    norm_first: bool = dataclasses.field(default=True, kw_only=True)
    eps: float = dataclasses.field(default=1e-5, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    kind: ClassVar[str] = "transformer_lm"

    def __post_init__(self) -> None:
        name = "TransformerLM"
        for arg in ("vocab_size", "d_model", "num_heads", "num_layers", "max_length"):
            check_int(name, arg, getattr(self, arg))
        if self.ff_features is not None:
            check_int(name, "ff_features", self.ff_features)
        rate = check_number(name, "dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        object.__setattr__(self, "dropout", rate)
        check_bool(name, "tie_embeddings", self.tie_embeddings)
        check_choice(name, "positional", self.positional, POSITIONAL)
        check_bool(name, "norm_first", self.norm_first)
        eps = check_number(name, "eps", self.eps, low=0.0, low_open=True)
        object.__setattr__(self, "eps", eps)
        check_param_dtype(name, self.param_dtype)
        if self.d_model % self.num_heads:
            raise ValueError(f"{name}: {self.num_heads} heads do not divide d_model {self.d_model}")
        if self.positional == "rotary" and (self.d_model // self.num_heads) % 2:
            raise ValueError(
                f"{name}: rotary positions need an even head width, got d_model "
                f"{self.d_model} / {self.num_heads} heads = {self.d_model // self.num_heads}"
            )

    @property
    def block(self) -> TransformerDecoderBlock:
        """The config every block shares (decoder-only: no cross-attention)."""
        return TransformerDecoderBlock(
            self.num_heads,
            self.ff_features or 4 * self.d_model,
            dropout=self.dropout,
            norm_first=self.norm_first,
            eps=self.eps,
            rotary=self.positional == "rotary",
            cross_attention=False,
            param_dtype=self.param_dtype,
        )

    def init(self, key: Any, input_shape: tuple[int, ...] = ()) -> dict[str, Any]:
        """The parameters (see the class docstring); the ids' shape does not matter."""
        del input_shape
        key = as_key("TransformerLM.init", key)
        d, keys = self.d_model, jax.random.split(key, self.num_layers + 3)
        small = initializers.normal(0.02)
        params: dict[str, Any] = {
            "embedding": {"E": small(keys[0], (self.vocab_size, d), self.param_dtype)}
        }
        if self.positional == "learned":
            params["positions"] = {"P": small(keys[1], (self.max_length, d), self.param_dtype)}
        for i in range(self.num_layers):
            params[f"block{i}"] = self.block.init(keys[3 + i], (1, d))
        if self.norm_first:
            params["norm"] = {
                "gamma": initializers.ones(None, (d,), self.param_dtype),
                "beta": initializers.zeros(None, (d,), self.param_dtype),
            }
        if not self.tie_embeddings:
            params["head"] = {
                "W": initializers.xavier_uniform(keys[2], (self.vocab_size, d), self.param_dtype),
                "b": initializers.zeros(None, (self.vocab_size,), self.param_dtype),
            }
        return params

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """ids (..., L) -> (..., L, vocab_size)."""
        shape = as_input_shape(f"{type(self).__name__}.output_shape", input_shape)
        return shape + (self.vocab_size,)

    def _check_tokens(self, tokens: Any, what: str = "token ids") -> int:
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise TypeError(f"{self!r}: expected integer {what}, got {jnp.result_type(tokens)}")
        shape = jnp.shape(tokens)
        if len(shape) < 2 or shape[-1] == 0:
            raise ValueError(
                f"{self!r}: expected {what} of shape (N, L) (more leading axes allowed) with "
                f"L ≥ 1, got {shape}" + ("; one sequence is ids[None]" if len(shape) == 1 else "")
            )
        if shape[-1] > self.max_length:
            raise ValueError(
                f"{self!r}: a sequence of length {shape[-1]} (shape {shape}) is longer than "
                f"max_length {self.max_length}"
            )
        return shape[-1]

    def _embed(self, params: dict, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        """E[tokens] + P[positions] (positions (L,), learned or sinusoidal; rotary: none)."""
        h = embedding(params["embedding"]["E"], tokens)
        if self.positional == "learned":
            h = h + jnp.broadcast_to(embedding(params["positions"]["P"], positions), h.shape)
        elif self.positional == "sinusoidal":
            table = sinusoidal_positions(self.max_length, self.d_model, dtype=h.dtype)
            h = h + jnp.broadcast_to(jnp.take(table, positions, axis=0), h.shape)
        return h

    def _logits(self, params: dict, h: jax.Array) -> jax.Array:
        if self.norm_first:
            h = layer_norm(h, params["norm"]["gamma"], params["norm"]["beta"], eps=self.eps)
        if self.tie_embeddings:
            return dense(h, params["embedding"]["E"])
        return dense(h, params["head"]["W"], params["head"]["b"])

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
        """(logits (N, L, vocab), state) for token ids x (N, L) (more leading axes allowed).

        ``padding_mask``: None or bool (N, L), False at padding tokens, which no token
        attends to (right padding keeps the real tokens' logits unchanged: attention is
        causal). ``mask``: None or bool (N, L, L), True where token i may see token j,
        and-ed with the causal mask (packed sequences: a block-diagonal mask). A dim of
        1 broadcasts in either.
        """
        check_bool(repr(self), "train", train)
        length = self._check_tokens(x)
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        check_attention_masks(repr(self), jnp.shape(x), length, mask, padding_mask)
        drop = train and self.dropout > 0.0
        if drop and key is None:
            raise ValueError(
                f"{self!r}: train=True with dropout {self.dropout} needs a PRNG key; pass key=..."
            )
        keys = jax.random.split(as_key(repr(self), key), self.num_layers + 1) if drop else None
        block = self.block
        h = self._embed(params, x, jnp.arange(length))
        if drop:  # the blocks' own dropout, on the embedded tokens
            h = block._drop(h, keys[-1], train)
        for i in range(self.num_layers):
            h, _ = block.apply_with_state(
                params[f"block{i}"], {}, h, key=None if keys is None else keys[i], train=train,
                mask=mask, padding_mask=padding_mask,
            )  # fmt: skip
        return self._logits(params, h), state

    def apply(self, params, x, *, key=None, train=False, mask=None, padding_mask=None):
        """The logits alone: ``apply_with_state(params, {}, x, ...)[0]``."""
        return self.apply_with_state(
            params, {}, x, key=key, train=train, mask=mask, padding_mask=padding_mask
        )[0]

    def init_cache(self, batch: int | tuple[int, ...], *, dtype: Any = None) -> dict:
        """An empty key/value cache for ``decode``: ``{"block{i}": {"k", "v"}}``, each
        (*batch, heads, max_length, d_model / heads), in ``dtype`` (the params' by default).

        ``batch`` is a positive int or a tuple of them (the token ids' leading dims);
        ``dtype`` a floating dtype (``ValueError`` otherwise).
        """
        name = f"{self!r}.init_cache"
        try:
            given = batch
            batch = (batch,) if isinstance(batch, (int, np.integer)) else tuple(batch)
            batch = tuple(check_int(name, "batch", n) for n in batch)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: batch must be a positive int or a tuple of them (the token ids' "
                f"leading dims), got {given!r}"
            ) from None
        dtype = self.param_dtype if dtype is None else dtype
        if not is_floating_dtype(dtype):
            raise ValueError(f"{name}: dtype must be a floating dtype, got {dtype!r}")
        block = self.block
        return {
            f"block{i}": block.init_cache(batch, self.max_length, self.d_model, dtype)
            for i in range(self.num_layers)
        }

    def _check_cache(self, cache: Any, batch: tuple[int, ...]) -> None:
        """``cache`` must be what ``init_cache(batch)`` makes (any floating dtype)."""
        expected = jax.eval_shape(lambda: self.init_cache(batch))
        ok = isinstance(cache, dict) and set(cache) == set(expected)
        for block in expected if ok else ():
            entry = cache[block]
            ok = ok and isinstance(entry, dict) and set(entry) == {"k", "v"}
            for kv in ("k", "v") if ok else ():
                shape = jnp.shape(entry[kv])
                ok = ok and shape == expected[block][kv].shape
                ok = ok and is_floating_dtype(jnp.result_type(entry[kv]))
        if not ok:
            spec = expected["block0"]["k"].shape
            raise ValueError(
                f"{self!r}: expected the cache init_cache({batch if len(batch) > 1 else batch[0]}) "
                f"makes for token ids of batch dims {batch}: {{'block0' .. 'block"
                f"{self.num_layers - 1}': {{'k', 'v'}}}}, each floating of shape {spec}; got "
                f"{jax.tree.map(jnp.shape, cache) if isinstance(cache, dict) else type(cache).__name__}"
            )

    def decode(
        self, params: dict, cache: dict, tokens: jax.Array, position: Any
    ) -> tuple[jax.Array, dict]:
        """Logits for new tokens (N, L_new) placed at ``position``, and the updated cache.

        The tokens' keys and values are written into the cache at ``position`` ..
        ``position + L_new − 1``; each attends to everything cached up to itself. Feeding
        a sequence in pieces (a prompt, then one token at a time) gives the same logits as
        ``apply`` on the whole sequence. ``position`` may be traced (inside ``jit`` or a
        scan); a concrete one beyond the cache raises ``ValueError``, and under ``jit``
        the logits of a call that runs past ``max_length`` (or starts below 0) are all NaN
        (never a silently clamped write).
        """
        length = self._check_tokens(tokens, "new token ids")
        check_params(self, params, jnp.shape(tokens))
        self._check_cache(cache, jnp.shape(tokens)[:-1])
        position = check_cache_position(self, position, length, self.max_length)
        positions = position + jnp.arange(length)
        h = self._embed(params, tokens, jnp.minimum(positions, self.max_length - 1))
        block, new_cache = self.block, {}
        for i in range(self.num_layers):
            name = f"block{i}"
            h, new_cache[name] = block.decode(params[name], cache[name], h, position)
        # outside the cache (traced) every block's output is NaN, and so are the logits
        return self._logits(params, h), new_cache


def transformer_lm(
    vocab_size: int,
    *,
    d_model: int,
    num_heads: int,
    num_layers: int,
    max_length: int,
    ff_features: int | None = None,
    dropout: float = 0.0,
    tie_embeddings: bool = True,
    positional: str = "learned",
    norm_first: bool = True,
) -> TransformerLM:
    """A decoder-only Transformer language model (see :class:`TransformerLM`).

    Examples:
      >>> lm = fundl.models.transformer_lm(11, d_model=8, num_heads=2, num_layers=1,
      ...                                  max_length=16)
      >>> params = lm.init(jax.random.key(0))
      >>> lm.apply(params, jnp.zeros((2, 5), jnp.int32)).shape
      (2, 5, 11)
    """
    return TransformerLM(
        vocab_size,
        d_model,
        num_heads,
        num_layers,
        max_length,
        ff_features=ff_features,
        dropout=dropout,
        tie_embeddings=tie_embeddings,
        positional=positional,
        norm_first=norm_first,
    )
