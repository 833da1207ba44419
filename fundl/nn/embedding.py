"""Token embeddings: the primitive ``embedding`` and the layer ``Embedding``.

A table E of shape (vocab_size, d) holds one row per token; looking up token ids is
row selection, y[..., :] = E[ids[...], :] — the product of a one-hot row with E,
without building the one-hot. ``Embedding.attend`` ties an output projection to the
same table: logits = h Eᵀ (Press & Wolf 2017), through the dense rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from fundl import initializers
from fundl._validate import (
    as_key,
    check_array,
    check_bool,
    check_floating,
    check_initializers,
    check_int,
    check_label_range,
    check_param_dtype,
)
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.nn.dense import dense
from fundl.rules import Static, primitive

__all__ = ["Embedding", "embedding"]


def _check_embedding(E, ids):
    check_floating("embedding", "a floating-point table E", E)
    if jnp.ndim(E) != 2:
        raise ValueError(
            f"embedding: expected a table E of shape (vocab_size, d), got shape {jnp.shape(E)}"
        )
    if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
        raise TypeError(f"embedding: expected integer token ids, got dtype {jnp.result_type(ids)}")
    check_label_range("embedding", ids, jnp.shape(E)[0], what="token ids")


@primitive(check=_check_embedding)
def embedding(E, ids):
    """Row lookup y[..., :] = E[ids[...], :]: token ids to vectors.

    Backward (the one-hot product's dW = onehotᵀ dY, without the one-hot): each row of
    E collects the sum of the upstream gradients of every position holding its id,
    dE = scatter-add of g at rows ids; ids get no gradient. Saves ids and E's shape.

    Out-of-vocabulary ids (negative or ≥ vocab_size): a concrete array is refused
    (``ValueError``); inside ``jit``, where ids cannot be read, such a position gives a
    row of NaN (never a silent clamp to the last row, nor NumPy's wrap of −1 to it), and
    its gradient is dropped.

    Args:
      E: the table, (vocab_size, d), floating.
      ids: integer token ids, any shape (...).

    Returns:
      (..., d), E's dtype.

    Examples:
      >>> E = jnp.arange(6.0).reshape(3, 2)
      >>> fundl.nn.embedding(E, jnp.array([2, 0, 2]))
      Array([[4., 5.],
             [0., 1.],
             [4., 5.]], dtype=float32)
    """
    return jnp.take(E, _in_vocabulary(ids, E.shape[0]), axis=0, mode="fill", fill_value=jnp.nan)


def _in_vocabulary(ids: jax.Array, vocab_size: int) -> jax.Array:
    """ids with every out-of-vocabulary id (negative ones too) set to vocab_size: the
    gather's fill and the scatter's drop then apply (jnp indexing would wrap −1 to the last
    row)."""
    return jnp.where((ids < 0) | (ids >= vocab_size), vocab_size, ids)


def embedding_fwd(E, ids):
    return embedding.reference(E, ids), (ids, Static((E.shape, E.dtype)))


def embedding_bwd(residuals, g):
    ids, table = residuals
    shape, dtype = table.value
    ids = _in_vocabulary(ids, shape[0])
    d_E = jnp.zeros(shape, dtype).at[ids].add(g.astype(dtype), mode="drop")
    return d_E, None


embedding.defvjp(embedding_fwd, embedding_bwd)


@dataclasses.dataclass(frozen=True, repr=False)
class Embedding(Layer):
    """Token embedding y = E[ids] with ``params = {"E": (vocab_size, features)}``.

    Args:
      vocab_size: number of tokens (rows of E).
      features: the vector size d.
      w_init: initializer of E; LeCun normal by default, N(0, 1/d) — Flax's ``Embed``
        default, which keeps ``attend``'s logits at unit scale (PyTorch draws N(0, 1)).
      param_dtype: dtype of E.

    Takes integer ids (...), returns (..., features). ``attend(params, h)`` is the tied
    output projection h Eᵀ: (..., features) -> (..., vocab_size).

    Examples:
      >>> layer = Embedding(10, 4)
      >>> params = layer.init(jax.random.key(0), (2, 5))   # {"E": (10, 4)}
      >>> y = layer.apply(params, jnp.zeros((2, 5), jnp.int32))
      >>> y.shape, layer.attend(params, y).shape
      ((2, 5, 4), (2, 5, 10))
    """

    vocab_size: int
    features: int
    w_init: initializers.Initializer = dataclasses.field(
        default=initializers.lecun_normal, kw_only=True
    )
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    kind: ClassVar[str] = "embedding"

    def __post_init__(self) -> None:
        check_int("Embedding", "vocab_size", self.vocab_size)
        check_int("Embedding", "features", self.features)
        check_param_dtype("Embedding", self.param_dtype)
        check_initializers("Embedding", self, "w_init")

    def init(self, key: Any, input_shape: tuple[int, ...] = ()) -> dict[str, jax.Array]:
        """``{"E": (vocab_size, features)}``; the ids' shape does not matter."""
        del input_shape
        key = as_key("Embedding.init", key)
        return {"E": self.w_init(key, (self.vocab_size, self.features), self.param_dtype)}

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """(E[x], state) for integer ids x of any shape; no state, no randomness."""
        del key
        check_bool(repr(self), "train", train)
        check_array(repr(self), "the token ids x", x)
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise TypeError(f"{self!r}: expected integer token ids, got dtype {jnp.result_type(x)}")
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        return embedding(params["E"], x), state

    def attend(self, params: dict, h: jax.Array) -> jax.Array:
        """The tied output projection: logits = h Eᵀ, (..., features) -> (..., vocab_size)."""
        check_params(self, params, ())
        return dense(h, params["E"])

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """ids (...) -> (..., features)."""
        return as_input_shape(f"{type(self).__name__}.output_shape", input_shape) + (self.features,)
