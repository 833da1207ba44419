"""Recurrent primitives: ``rnn``, ``lstm`` and ``gru``, backpropagation through time by hand.

PyTorch's layout, so a PyTorch state dict converts by renaming alone. Batch first: x is
(N, T, d), states (N, H); W_ih is (kH, d), W_hh (kH, H), b_ih and b_hh (kH,) with k
gates stacked in PyTorch's order (σ the logistic sigmoid, a_t = x_t W_ihᵀ + b_ih +
h_{t−1} W_hhᵀ + b_hh split in k slices of H):

    rnn  (k = 1):  h_t = tanh(a_t)
    lstm (k = 4, i, f, g, o):  i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o)
                   c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)
    gru  (k = 3, r, z, n):  r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr), z likewise,
                   n = tanh(x W_inᵀ + b_in + r ⊙ (h_{t−1} W_hnᵀ + b_hn)),
                   h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}

Each runs one ``lax.scan`` over time (x_t W_ihᵀ inside the step, see ``_time_major``) and
returns ``(hs, final)``: every output (N, T, H) and the final state (h_n, or
``(h_n, c_n)`` for the LSTM). ``reverse=True`` reads t = T−1, ..., 0; ``hs[:, t]`` is
still the state after reading x_t.

mask (N, T) bool, True at real steps: where False the state is carried unchanged and
the output is 0, and the final state is the state after the last real step — PyTorch's
packed sequences. With right-padded sequences and ``reverse=True`` the padded steps come
first in the scan and keep h_0, so each sequence is read from its own last element:
PyTorch's backward direction for packed sequences. The mask gets no gradient. Values at
padded steps reach nothing, not even as NaN (autodiff through the forward scan would
give 0 · NaN in the weight gradients there).

Backward: a reverse ``lax.scan`` (in the opposite direction of the forward one) carrying
dh — and dc for the LSTM — from the final state's cotangent; with g_t the cotangent of
the output h_t, at a real step:

    dh_t ← dh_t + g_t                                 (dh_T = cotangent of h_n)
    rnn:   dz_t = dh_t ⊙ (1 − h_t²)
           dh_{t−1} = dz_t W_hh
    lstm:  dc_t ← dc_t + dh_t ⊙ o ⊙ (1 − tanh²c_t)    (dc_T = cotangent of c_n)
           da_i = dc_t ⊙ g ⊙ i(1 − i),   da_f = dc_t ⊙ c_{t−1} ⊙ f(1 − f),
           da_g = dc_t ⊙ i ⊙ (1 − g²),   da_o = dh_t ⊙ tanh c_t ⊙ o(1 − o)
           dz_t = [da_i, da_f, da_g, da_o];   dh_{t−1} = dz_t W_hh,   dc_{t−1} = dc_t ⊙ f
    gru:   da_n = dh_t ⊙ (1 − z) ⊙ (1 − n²),   da_z = dh_t ⊙ (h_{t−1} − n) ⊙ z(1 − z),
           da_r = da_n ⊙ (h_{t−1} W_hnᵀ + b_hn) ⊙ r(1 − r)
           dz_t = [da_r, da_z, da_n] (input side),   du_t = [da_r, da_z, da_n ⊙ r] (state side)
           dh_{t−1} = dh_t ⊙ z + du_t W_hh

At a padded step dz_t = 0 and dh (dc) pass through unchanged. After the scan, one
matmul each (du = dz for rnn and lstm):

    dW_ih = Σ_t dz_tᵀ x_t,   db_ih = Σ_t dz_t,   dx_t = dz_t W_ih,
    dW_hh = Σ_t du_tᵀ h_{t−1},   db_hh = Σ_t du_t,   dh_0, dc_0 = the carry at the end.

Residuals: x, h_0 (c_0), the weights, every state the scan carried (h_t, and c_t for
the LSTM) and the gate activations (LSTM: i, f, g, o; GRU: r, z, n and h_{t−1} W_hnᵀ +
b_hn) — no other intermediate of the forward scan.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from fundl._validate import check_bool, check_floating
from fundl.rules import Static, primitive

__all__ = ["gru", "lstm", "rnn"]


def _check(name, gates, x, states, weights, mask, reverse):
    """Shapes and dtypes for every recurrent primitive: k = ``gates`` stacked slices."""
    for arg, a in (("x", x), *states, *weights):
        check_floating(name, f"a floating-point {arg}", a)
    if jnp.ndim(x) != 3:
        raise ValueError(f"{name}: expected x of shape (batch, T, d), got shape {jnp.shape(x)}")
    n, t, d = jnp.shape(x)
    if t == 0:
        raise ValueError(f"{name}: sequence length 0 (x of shape {jnp.shape(x)}): nothing to run")
    (_, W_hh) = weights[1]
    if jnp.ndim(W_hh) != 2 or jnp.shape(W_hh)[0] != gates * jnp.shape(W_hh)[1]:
        shape = "(H, H)" if gates == 1 else f"({gates}H, H)"
        raise ValueError(f"{name}: expected W_hh of shape {shape}, got shape {jnp.shape(W_hh)}")
    h = jnp.shape(W_hh)[1]
    expected = {"W_ih": (gates * h, d), "b_ih": (gates * h,), "b_hh": (gates * h,)}
    expected.update({arg: (n, h) for arg, _ in states})
    for arg, a in (*weights, *states):
        if arg in expected and jnp.shape(a) != expected[arg]:
            raise ValueError(
                f"{name}: expected {arg} of shape {expected[arg]} for x of shape {jnp.shape(x)} "
                f"and hidden size {h}, got shape {jnp.shape(a)}"
            )
    if mask is not None and (jnp.shape(mask) != (n, t) or jnp.result_type(mask) != jnp.bool_):
        raise ValueError(
            f"{name}: expected a bool mask of shape {(n, t)} (True at real steps) for x of shape "
            f"{jnp.shape(x)}, got {jnp.result_type(mask)} of shape {jnp.shape(mask)}"
        )
    check_bool(name, "reverse", reverse)


def _check_rnn(x, h0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    weights = (("W_ih", W_ih), ("W_hh", W_hh), ("b_ih", b_ih), ("b_hh", b_hh))
    _check("rnn", 1, x, (("h0", h0),), weights, mask, reverse)


def _check_lstm(x, h0, c0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    weights = (("W_ih", W_ih), ("W_hh", W_hh), ("b_ih", b_ih), ("b_hh", b_hh))
    _check("lstm", 4, x, (("h0", h0), ("c0", c0)), weights, mask, reverse)


def _check_gru(x, h0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    weights = (("W_ih", W_ih), ("W_hh", W_hh), ("b_ih", b_ih), ("b_hh", b_hh))
    _check("gru", 3, x, (("h0", h0),), weights, mask, reverse)


# Shared glue: time-major layout, the mask per step, the previous state of every step.


def _time_major(x):
    """(T, N, d): the scan's per-step inputs. x_t W_ihᵀ is computed inside the step, not
    for every step at once before the scan: on the CPU (XLA with YNNPACK, JAX 0.10) the
    loop ran twice as fast that way, and it adds no memory."""
    return jnp.swapaxes(x, 0, 1)


def _time_mask(mask):
    """(T, N, 1) bool, or None."""
    return None if mask is None else jnp.swapaxes(mask, 0, 1)[..., None]


def _keep(m, new, old):
    """The new state at real steps, the old one carried at padded steps."""
    return new if m is None else jnp.where(m, new, old)


def _outputs(hs, ms):
    """Batch-first outputs: the carried states, 0 at padded steps."""
    if ms is not None:
        hs = jnp.where(ms, hs, jnp.zeros_like(hs))
    return jnp.swapaxes(hs, 0, 1)


def _previous(s0, ss, reverse):
    """s_{t−1} for every t in scan order, time-major: s_0 first (last when reversed)."""
    if reverse:
        return jnp.concatenate([ss[1:], s0[None]], axis=0)
    return jnp.concatenate([s0[None], ss[:-1]], axis=0)


def _weight_grads(dz, du, x, previous, W_ih, mask, dtypes):
    """dx, dW_ih, dW_hh, db_ih, db_hh from the per-step gradients (time-major)."""
    dt_x, dt_ih, dt_hh, dt_bih, dt_bhh = dtypes.value
    d_x = jnp.einsum("tng,gd->ntd", dz, W_ih)
    if mask is not None:  # dz = 0 there, but 0 · NaN is NaN: padding must not matter
        x = jnp.where(mask[..., None], x, jnp.zeros_like(x))
    d_W_ih = jnp.einsum("tng,ntd->gd", dz, x)
    d_W_hh = jnp.einsum("tng,tnk->gk", du, previous)
    return (
        d_x.astype(dt_x),
        d_W_ih.astype(dt_ih),
        d_W_hh.astype(dt_hh),
        jnp.sum(dz, axis=(0, 1)).astype(dt_bih),
        jnp.sum(du, axis=(0, 1)).astype(dt_bhh),
    )


def _dtypes(x, W_ih, W_hh, b_ih, b_hh):
    return Static(tuple(a.dtype for a in (x, W_ih, W_hh, b_ih, b_hh)))


def _with_output(g_t, m):
    return g_t if m is None else jnp.where(m, g_t, jnp.zeros_like(g_t))


# rnn


@functools.partial(jax.jit, static_argnames="reverse")  # eager calls compile once
def _rnn_scan(x, h0, W_ih, W_hh, b_ih, b_hh, mask, reverse):
    b = b_ih + b_hh
    ms = _time_mask(mask)

    def step(h, inputs):
        x_t, m = inputs
        h = _keep(m, jnp.tanh(x_t @ W_ih.T + h @ W_hh.T + b[None]), h)
        return h, h

    h_n, hs = lax.scan(step, h0, (_time_major(x), ms), reverse=reverse)
    return _outputs(hs, ms), h_n, hs


@primitive(check=_check_rnn)
def rnn(x, h0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    """The vanilla RNN over a sequence: h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh).

    Backward: backpropagation through time by hand, a reverse scan carrying dh (see
    the module docstring); the reference is differentiated through the forward scan.

    Args:
      x: inputs (batch, T, d), batch first.
      h0: the initial state (batch, H).
      W_ih: (H, d); W_hh: (H, H); b_ih, b_hh: (H,) — PyTorch's ``nn.RNN`` names and shapes.
      mask: None, or bool (batch, T), True at real steps (padded steps carry the state
        and output 0).
      reverse: read t = T−1, ..., 0.

    Returns:
      ``(hs, h_n)``: every output (batch, T, H) and the final state (batch, H).

    Examples:
      >>> x = jnp.ones((2, 5, 3))
      >>> W_ih, W_hh, b = jnp.full((4, 3), 0.1), jnp.eye(4) * 0.5, jnp.zeros(4)
      >>> hs, h_n = fundl.nn.rnn(x, jnp.zeros((2, 4)), W_ih, W_hh, b, b)
      >>> hs.shape, h_n.shape
      ((2, 5, 4), (2, 4))
    """
    hs, h_n, _ = _rnn_scan(x, h0, W_ih, W_hh, b_ih, b_hh, mask, reverse)
    return hs, h_n


def rnn_fwd(x, h0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    out, h_n, hs = _rnn_scan(x, h0, W_ih, W_hh, b_ih, b_hh, mask, reverse)
    return (out, h_n), (x, h0, W_ih, W_hh, mask, hs, _dtypes(x, W_ih, W_hh, b_ih, b_hh))


def rnn_bwd(residuals, g, *, reverse=False):
    x, h0, W_ih, W_hh, mask, hs, dtypes = residuals
    g_hs, g_h = g
    ms = _time_mask(mask)

    def step(dh, inputs):
        g_t, h_t, m = inputs
        dh = dh + _with_output(g_t, m)
        dz = dh * (1 - h_t * h_t)
        if m is not None:
            dz = jnp.where(m, dz, jnp.zeros_like(dz))
            return jnp.where(m, dz @ W_hh, dh), dz
        return dz @ W_hh, dz

    xs = (jnp.swapaxes(g_hs, 0, 1), hs, ms)
    d_h0, dz = lax.scan(step, g_h, xs, reverse=not reverse)
    d_x, d_W_ih, d_W_hh, d_b_ih, d_b_hh = _weight_grads(
        dz, dz, x, _previous(h0, hs, reverse), W_ih, mask, dtypes
    )
    return d_x, d_h0.astype(h0.dtype), d_W_ih, d_W_hh, d_b_ih, d_b_hh, None


rnn.defvjp(rnn_fwd, rnn_bwd)


# lstm


@functools.partial(jax.jit, static_argnames="reverse")  # eager calls compile once
def _lstm_scan(x, h0, c0, W_ih, W_hh, b_ih, b_hh, mask, reverse):
    b = b_ih + b_hh
    ms = _time_mask(mask)

    def step(carry, inputs):
        h, c = carry
        x_t, m = inputs
        a_i, a_f, a_g, a_o = jnp.split(x_t @ W_ih.T + h @ W_hh.T + b[None], 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jnp.tanh(a_g), jax.nn.sigmoid(a_o)
        c_new = _keep(m, f * c + i * g, c)
        h_new = _keep(m, o * jnp.tanh(c_new), h)
        return (h_new, c_new), (h_new, c_new, jnp.concatenate([i, f, g, o], axis=-1))

    (h_n, c_n), (hs, cs, gates) = lax.scan(step, (h0, c0), (_time_major(x), ms), reverse=reverse)
    return _outputs(hs, ms), (h_n, c_n), (hs, cs, gates)


@primitive(check=_check_lstm)
def lstm(x, h0, c0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    """The LSTM over a sequence, PyTorch's gate order i, f, g, o.

    a_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh = [a_i, a_f, a_g, a_o];
    c_t = σ(a_f) ⊙ c_{t−1} + σ(a_i) ⊙ tanh(a_g);  h_t = σ(a_o) ⊙ tanh(c_t).
    Backward: a reverse scan carrying dh and dc (the module docstring).

    Args:
      x: inputs (batch, T, d), batch first.
      h0: the initial hidden state (batch, H).
      c0: the initial cell state (batch, H).
      W_ih: (4H, d), ``nn.LSTM``'s layout.
      W_hh: (4H, H).
      b_ih: (4H,).
      b_hh: (4H,).
      mask: None, or bool (batch, T), True at real steps.
      reverse: read t = T−1, ..., 0.

    Returns:
      ``(hs, (h_n, c_n))``: every h_t (batch, T, H), 0 at padded steps, and the
      final states (batch, H).

    Examples:
      >>> x, s = jnp.ones((2, 5, 3)), jnp.zeros((2, 4))
      >>> W_ih, W_hh, b = jnp.full((16, 3), 0.1), jnp.zeros((16, 4)), jnp.zeros(16)
      >>> hs, (h_n, c_n) = fundl.nn.lstm(x, s, s, W_ih, W_hh, b, b)
      >>> hs.shape, c_n.shape
      ((2, 5, 4), (2, 4))
    """
    hs, final, _ = _lstm_scan(x, h0, c0, W_ih, W_hh, b_ih, b_hh, mask, reverse)
    return hs, final


def lstm_fwd(x, h0, c0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    out, final, (hs, cs, gates) = _lstm_scan(x, h0, c0, W_ih, W_hh, b_ih, b_hh, mask, reverse)
    dtypes = _dtypes(x, W_ih, W_hh, b_ih, b_hh)
    return (out, final), (x, h0, c0, W_ih, W_hh, mask, hs, cs, gates, dtypes)


def lstm_bwd(residuals, g, *, reverse=False):
    x, h0, c0, W_ih, W_hh, mask, hs, cs, gates, dtypes = residuals
    g_hs, (g_h, g_c) = g
    ms = _time_mask(mask)

    def step(carry, inputs):
        dh, dc = carry
        g_t, gates_t, c_t, c_prev, m = inputs
        i, f, g, o = jnp.split(gates_t, 4, axis=-1)
        dh_t = dh + _with_output(g_t, m)
        tanh_c = jnp.tanh(c_t)
        dc_t = dc + dh_t * o * (1 - tanh_c * tanh_c)
        dz = jnp.concatenate(
            [
                dc_t * g * i * (1 - i),
                dc_t * c_prev * f * (1 - f),
                dc_t * i * (1 - g * g),
                dh_t * tanh_c * o * (1 - o),
            ],
            axis=-1,
        )
        if m is not None:
            dz = jnp.where(m, dz, jnp.zeros_like(dz))
            return (jnp.where(m, dz @ W_hh, dh), jnp.where(m, dc_t * f, dc)), dz
        return (dz @ W_hh, dc_t * f), dz

    xs = (jnp.swapaxes(g_hs, 0, 1), gates, cs, _previous(c0, cs, reverse), ms)
    (d_h0, d_c0), dz = lax.scan(step, (g_h, g_c), xs, reverse=not reverse)
    d_x, d_W_ih, d_W_hh, d_b_ih, d_b_hh = _weight_grads(
        dz, dz, x, _previous(h0, hs, reverse), W_ih, mask, dtypes
    )
    return (
        d_x,
        d_h0.astype(h0.dtype),
        d_c0.astype(c0.dtype),
        d_W_ih,
        d_W_hh,
        d_b_ih,
        d_b_hh,
        None,
    )


lstm.defvjp(lstm_fwd, lstm_bwd)


# gru


@functools.partial(jax.jit, static_argnames="reverse")  # eager calls compile once
def _gru_scan(x, h0, W_ih, W_hh, b_ih, b_hh, mask, reverse):
    ms = _time_mask(mask)

    def step(h, inputs):
        x_t, m = inputs
        x_r, x_z, x_n = jnp.split(x_t @ W_ih.T + b_ih[None], 3, axis=-1)
        u_r, u_z, u_n = jnp.split(h @ W_hh.T + b_hh[None], 3, axis=-1)
        r, z = jax.nn.sigmoid(x_r + u_r), jax.nn.sigmoid(x_z + u_z)
        n = jnp.tanh(x_n + r * u_n)
        h = _keep(m, (1 - z) * n + z * h, h)
        return h, (h, jnp.concatenate([r, z, n, u_n], axis=-1))

    h_n, (hs, gates) = lax.scan(step, h0, (_time_major(x), ms), reverse=reverse)
    return _outputs(hs, ms), h_n, (hs, gates)


@primitive(check=_check_gru)
def gru(x, h0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    """The GRU over a sequence, PyTorch's gate order r, z, n.

    r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr), z likewise,
    n = tanh(x W_inᵀ + b_in + r ⊙ (h_{t−1} W_hnᵀ + b_hn)), h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}.
    Backward: a reverse scan carrying dh (the module docstring).

    Args:
      x: inputs (batch, T, d), batch first.
      h0: the initial state (batch, H).
      W_ih: (3H, d); W_hh: (3H, H); b_ih, b_hh: (3H,) — ``nn.GRU``'s layout.
      mask: None, or bool (batch, T), True at real steps.
      reverse: read t = T−1, ..., 0.

    Returns:
      ``(hs, h_n)``: every h_t (batch, T, H), 0 at padded steps, and the final
      state (batch, H).

    Examples:
      >>> x, h0 = jnp.ones((2, 5, 3)), jnp.zeros((2, 4))
      >>> W_ih, W_hh, b = jnp.full((12, 3), 0.1), jnp.zeros((12, 4)), jnp.zeros(12)
      >>> hs, h_n = fundl.nn.gru(x, h0, W_ih, W_hh, b, b)
      >>> hs.shape, h_n.shape
      ((2, 5, 4), (2, 4))
    """
    hs, h_n, _ = _gru_scan(x, h0, W_ih, W_hh, b_ih, b_hh, mask, reverse)
    return hs, h_n


def gru_fwd(x, h0, W_ih, W_hh, b_ih, b_hh, mask=None, *, reverse=False):
    out, h_n, (hs, gates) = _gru_scan(x, h0, W_ih, W_hh, b_ih, b_hh, mask, reverse)
    dtypes = _dtypes(x, W_ih, W_hh, b_ih, b_hh)
    return (out, h_n), (x, h0, W_ih, W_hh, mask, hs, gates, dtypes)


def gru_bwd(residuals, g, *, reverse=False):
    x, h0, W_ih, W_hh, mask, hs, gates, dtypes = residuals
    g_hs, g_h = g
    ms = _time_mask(mask)
    previous = _previous(h0, hs, reverse)

    def step(dh, inputs):
        g_t, gates_t, h_prev, m = inputs
        r, z, n, u_n = jnp.split(gates_t, 4, axis=-1)
        dh_t = dh + _with_output(g_t, m)
        da_n = dh_t * (1 - z) * (1 - n * n)
        da_z = dh_t * (h_prev - n) * z * (1 - z)
        da_r = da_n * u_n * r * (1 - r)
        dz = jnp.concatenate([da_r, da_z, da_n], axis=-1)
        du = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)
        if m is not None:
            dz = jnp.where(m, dz, jnp.zeros_like(dz))
            du = jnp.where(m, du, jnp.zeros_like(du))
            return jnp.where(m, dh_t * z + du @ W_hh, dh), (dz, du)
        return dh_t * z + du @ W_hh, (dz, du)

    xs = (jnp.swapaxes(g_hs, 0, 1), gates, previous, ms)
    d_h0, (dz, du) = lax.scan(step, g_h, xs, reverse=not reverse)
    d_x, d_W_ih, d_W_hh, d_b_ih, d_b_hh = _weight_grads(dz, du, x, previous, W_ih, mask, dtypes)
    return d_x, d_h0.astype(h0.dtype), d_W_ih, d_W_hh, d_b_ih, d_b_hh, None


gru.defvjp(gru_fwd, gru_bwd)
