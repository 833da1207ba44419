"""Recurrent layers: the vanilla RNN, with backpropagation through time written by hand.

The notes' cell, in PyTorch's layout (``nn.RNN``: W_ih (H, d), W_hh (H, H), b_ih and
b_hh (H,)), so a PyTorch state dict converts by renaming alone:

    h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh),   t = 1, ..., T.

``rnn`` runs it over a batch-first sequence with ``lax.scan``. Its backward rule is
backpropagation through time as a reverse ``lax.scan`` that carries dh: with g_t the
upstream gradient of h_t,

    dh_t = g_t + dz_{t+1} W_hh          (dz_{T+1} = 0)
    dz_t = dh_t ⊙ (1 − h_t²)
    dW_ih = Σ_t dz_tᵀ x_t,   dW_hh = Σ_t dz_tᵀ h_{t−1},   db_ih = db_hh = Σ_t dz_t
    dx_t = dz_t W_ih,        dh_0 = dz_1 W_hh.

It keeps x, h_0, every h_t and the weights — what the formulas read — and no
intermediate of the forward scan.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from fundl import initializers
from fundl._validate import as_key, check_floating, check_int, check_param_dtype
from fundl.nn.base import Layer, check_params, check_state
from fundl.rules import Static, primitive

__all__ = ["RNN", "rnn"]


def _check_rnn(x, h0, W_ih, W_hh, b_ih, b_hh):
    name = "rnn"
    for arg, a in (("x", x), ("h0", h0), ("W_ih", W_ih), ("W_hh", W_hh)):
        check_floating(name, f"a floating-point {arg}", a)
    if jnp.ndim(x) != 3:
        raise ValueError(f"rnn: expected x of shape (batch, T, d), got shape {jnp.shape(x)}")
    n, t, d = jnp.shape(x)
    if t == 0:
        raise ValueError(f"rnn: sequence length 0 (x of shape {jnp.shape(x)}): nothing to run")
    if jnp.ndim(W_hh) != 2 or jnp.shape(W_hh)[0] != jnp.shape(W_hh)[1]:
        raise ValueError(f"rnn: expected W_hh of shape (H, H), got shape {jnp.shape(W_hh)}")
    h = jnp.shape(W_hh)[0]
    expected = {"W_ih": (h, d), "b_ih": (h,), "b_hh": (h,), "h0": (n, h)}
    for arg, a in (("W_ih", W_ih), ("b_ih", b_ih), ("b_hh", b_hh), ("h0", h0)):
        if jnp.shape(a) != expected[arg]:
            raise ValueError(
                f"rnn: expected {arg} of shape {expected[arg]} for x of shape {jnp.shape(x)} "
                f"and hidden size {h}, got shape {jnp.shape(a)}"
            )


def _run(x, h0, W_ih, W_hh, b_ih, b_hh):
    """All hidden states (batch, T, H): the cell scanned over time."""
    xw = jnp.einsum("ntd,hd->tnh", x, W_ih) + (b_ih + b_hh)[None, None]  # every step at once

    def step(h, xw_t):
        h = jnp.tanh(xw_t + h @ W_hh.T)
        return h, h

    _, hs = lax.scan(step, h0, xw)
    return jnp.swapaxes(hs, 0, 1)


@primitive(check=_check_rnn)
def rnn(x, h0, W_ih, W_hh, b_ih, b_hh):
    """The vanilla RNN over a sequence: h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh).

    Backward: backpropagation through time by hand, a reverse scan carrying dh (see
    the module docstring); the reference is differentiated through the forward scan.

    Args:
      x: inputs (batch, T, d), batch first.
      h0: the initial state (batch, H).
      W_ih: (H, d); W_hh: (H, H); b_ih, b_hh: (H,) — PyTorch's ``nn.RNN`` names and shapes.
    Returns: every hidden state, (batch, T, H); the final state is ``[:, -1]``.

    Example:
      >>> x = jnp.ones((2, 5, 3))
      >>> W_ih, W_hh, b = jnp.full((4, 3), 0.1), jnp.eye(4) * 0.5, jnp.zeros(4)
      >>> fundl.nn.rnn(x, jnp.zeros((2, 4)), W_ih, W_hh, b, b).shape
      (2, 5, 4)
    """
    return _run(x, h0, W_ih, W_hh, b_ih, b_hh)


def rnn_fwd(x, h0, W_ih, W_hh, b_ih, b_hh):
    hs = _run(x, h0, W_ih, W_hh, b_ih, b_hh)
    return hs, (x, h0, W_ih, W_hh, hs, Static((b_ih.dtype, b_hh.dtype)))


def rnn_bwd(residuals, g):
    x, h0, W_ih, W_hh, hs, bias_dtypes = residuals
    previous = jnp.concatenate([h0[:, None], hs[:, :-1]], axis=1)  # h_{t−1}, (batch, T, H)

    def step(dz_next, inputs):
        g_t, h_t = inputs
        dh = g_t + dz_next @ W_hh
        dz = dh * (1 - h_t * h_t)
        return dz, dz

    dz_1, dzs = lax.scan(
        step, jnp.zeros_like(h0), (jnp.swapaxes(g, 0, 1), jnp.swapaxes(hs, 0, 1)), reverse=True
    )
    dzs = jnp.swapaxes(dzs, 0, 1)  # (batch, T, H)
    d_W_ih = jnp.einsum("nth,ntd->hd", dzs, x)
    d_W_hh = jnp.einsum("nth,ntk->hk", dzs, previous)
    d_b = jnp.sum(dzs, axis=(0, 1))
    d_x = jnp.einsum("nth,hd->ntd", dzs, W_ih)
    d_h0 = dz_1 @ W_hh
    dtype_ih, dtype_hh = bias_dtypes.value
    return (
        d_x.astype(x.dtype),
        d_h0.astype(h0.dtype),
        d_W_ih.astype(W_ih.dtype),
        d_W_hh.astype(W_hh.dtype),
        d_b.astype(dtype_ih),
        d_b.astype(dtype_hh),
    )


rnn.defvjp(rnn_fwd, rnn_bwd)


@dataclasses.dataclass(frozen=True, repr=False)
class RNN(Layer):
    """The vanilla RNN layer: batch-first (batch, T, d) in, every hidden state (batch, T, H) out.

    ``params = {"W_ih": (H, d), "W_hh": (H, H), "b_ih": (H,), "b_hh": (H,)}``, drawn as
    PyTorch's ``nn.RNN`` does, U(−1/√H, 1/√H); the initial state is zeros. Runs
    :func:`rnn` (hand-written backpropagation through time).

    Args:
      hidden_size: H.
      param_dtype: dtype of the parameters.

    Example:
      >>> layer = RNN(8)
      >>> params = layer.init(jax.random.key(0), (5, 3))     # (T, d)
      >>> layer.apply(params, jnp.ones((2, 5, 3))).shape
      (2, 5, 8)
    """

    hidden_size: int
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    kind: ClassVar[str] = "rnn"

    def __post_init__(self) -> None:
        check_int("RNN", "hidden_size", self.hidden_size)
        check_param_dtype("RNN", self.param_dtype)

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        """The four tensors for inputs (..., T, d), each U(−1/√H, 1/√H)."""
        key = as_key("RNN.init", key)
        if len(input_shape) < 2:
            raise ValueError(f"RNN: expected an input shape (..., T, d), got {tuple(input_shape)}")
        h, d = self.hidden_size, int(input_shape[-1])
        bound = 1 / math.sqrt(h)
        uniform = initializers.uniform(bound)
        keys = jax.random.split(key, 4)
        shapes = {"W_ih": (h, d), "W_hh": (h, h), "b_ih": (h,), "b_hh": (h,)}
        return {
            name: uniform(k, shape, self.param_dtype)
            for (name, shape), k in zip(shapes.items(), keys)
        }

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """(every hidden state (batch, T, H), state) for x (batch, T, d); h_0 = 0."""
        del key, train
        if jnp.ndim(x) != 3:
            raise ValueError(
                f"{self!r}: expected x of shape (batch, T, d), got shape {jnp.shape(x)}"
            )
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        h0 = jnp.zeros((jnp.shape(x)[0], self.hidden_size), params["W_hh"].dtype)
        return rnn(x, h0, params["W_ih"], params["W_hh"], params["b_ih"], params["b_hh"]), state

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(..., T, d) -> (..., T, H)."""
        return tuple(input_shape[:-1]) + (self.hidden_size,)
