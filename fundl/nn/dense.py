"""The dense (fully connected) layer: the primitive ``dense`` and the layer ``Dense``.

Layout (DESIGN.md): W has shape (n_out, n_in), b has shape (n_out,), inputs are
batch-first, z = x @ Wᵀ + b — the notes' W^[l] of shape (n^[l], n^[l-1]) and
PyTorch's ``nn.Linear``.
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
    check_param_dtype,
)
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.rules import primitive

__all__ = ["dense", "Dense"]


def _check_dense(x, W, b):
    check_floating("dense", "a floating-point input", x)
    if jnp.ndim(W) != 2:
        raise ValueError(f"dense: expected W of shape (n_out, n_in), got shape {jnp.shape(W)}")
    n_out, n_in = jnp.shape(W)
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != n_in:
        raise ValueError(
            f"dense: expected input with last dim {n_in} (W has shape {(n_out, n_in)}), "
            f"got shape {jnp.shape(x)}"
        )
    if b is not None and jnp.shape(b) != (n_out,):
        raise ValueError(f"dense: expected b of shape {(n_out,)}, got shape {jnp.shape(b)}")


def _add_bias(z: jax.Array, b: jax.Array | None) -> jax.Array:
    if b is None:
        return z
    return z + b.reshape((1,) * (z.ndim - 1) + b.shape)


@primitive(check=_check_dense)
def dense(x, W, b=None):
    """Affine map z = x Wᵀ + b over the last axis of x.

    Backward (the notes' step 2, with the batch summed): for upstream dZ of shape
    (..., n_out), dW = dZᵀ x summed over every leading dim, db = Σ dZ, dx = dZ W.
    (The notes' 1/m comes from the loss: a mean loss hands dZ already divided by m.)
    Saves x and W — what the rule needs (and b, only to know its dtype).

    Args:
      x: input of shape (..., n_in).
      W: weight of shape (n_out, n_in).
      b: bias of shape (n_out,), or None.

    Returns:
      z of shape (..., n_out).

    Examples:
      >>> x = jnp.array([[1.0, 2.0]])  # m = 1 example, n_in = 2
      >>> W = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]])  # (n_out, n_in) = (3, 2)
      >>> fundl.nn.dense(x, W, jnp.array([0.0, 0.5, 1.0]))
      Array([[ 1. ,  3.5, -1. ]], dtype=float32)
    """
    return _add_bias(x @ W.T, b)


def dense_fwd(x, W, b):
    return _add_bias(x @ W.T, b), (x, W, b)


def dense_bwd(residuals, g):
    x, W, b = residuals
    d_W = jnp.einsum("...o,...i->oi", g, x).astype(W.dtype)
    d_b = None if b is None else jnp.sum(g.reshape(-1, g.shape[-1]), axis=0).astype(b.dtype)
    d_x = (g @ W).astype(x.dtype)
    return d_x, d_W, d_b


dense.defvjp(dense_fwd, dense_bwd)


@dataclasses.dataclass(frozen=True, repr=False)
class Dense(Layer):
    """Fully connected layer z = x Wᵀ + b with ``params = {"W": (n_out, n_in), "b": (n_out,)}``.

    Args:
      n_out: number of output units n^[l].
      use_bias: whether the layer has b.
      w_init: initializer of W (He normal by default, for ReLU-family layers; use
        ``fundl.initializers.xavier_normal`` before tanh or sigmoid).
      b_init: initializer of b (zeros).
      param_dtype: dtype of the parameters.

    Takes (..., n_in), returns (..., n_out).

    Examples:
      >>> layer = Dense(3)
      >>> params = layer.init(jax.random.key(0), (2,))   # {"W": (3, 2), "b": (3,)}
      >>> layer.apply(params, jnp.ones((8, 2))).shape
      (8, 3)
    """

    n_out: int
    use_bias: bool = dataclasses.field(default=True, kw_only=True)
    w_init: initializers.Initializer = dataclasses.field(
        default=initializers.he_normal, kw_only=True
    )
    b_init: initializers.Initializer = dataclasses.field(default=initializers.zeros, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    kind: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        check_int("Dense", "n_out", self.n_out)
        check_bool("Dense", "use_bias", self.use_bias)
        check_param_dtype("Dense", self.param_dtype)
        check_initializers("Dense", self, "w_init", "b_init")

    def init(self, key: jax.Array, input_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        """Create ``{"W", "b"}`` for inputs of shape ``input_shape`` (last dim n_in).

        ``key`` is a PRNG key or an int seed.
        """
        key = as_key("Dense.init", key)
        input_shape = as_input_shape("Dense.init", input_shape)
        if len(input_shape) < 1 or input_shape[-1] <= 0:
            raise ValueError(
                f"Dense: expected an input shape (..., n_in), got {tuple(input_shape)}"
            )
        n_in = int(input_shape[-1])
        w_key, b_key = jax.random.split(key)
        params = {"W": self.w_init(w_key, (self.n_out, n_in), self.param_dtype)}
        if self.use_bias:
            params["b"] = self.b_init(b_key, (self.n_out,), self.param_dtype)
        return params

    def apply_with_state(
        self,
        params: dict[str, jax.Array],
        state: Any,
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
    ) -> tuple[jax.Array, Any]:
        """(z = x Wᵀ + b, state), for x of shape (..., n_in); no state, no randomness.

        ``params`` must be what ``init`` makes for this input, and ``state`` empty
        (checked when traced: ``ValueError`` naming the leaf and both shapes otherwise).
        """
        del key
        check_bool(repr(self), "train", train)
        if isinstance(params, dict) and "W" in params:
            # An input whose width disagrees with W is the usual mistake: say so first.
            _check_dense(x, params["W"], params.get("b") if self.use_bias else None)
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        return dense(x, params["W"], params["b"] if self.use_bias else None), state

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(..., n_in) -> (..., n_out)."""
        shape = as_input_shape(f"{type(self).__name__}.output_shape", input_shape)
        return shape[:-1] + (self.n_out,)
