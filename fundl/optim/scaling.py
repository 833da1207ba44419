"""Small blocks that turn gradients into update directions (optax's ``scale_by_*``).

Each keeps its moment estimates in ``moment_dtype`` — by default the parameter's dtype
but at least float32, so bfloat16 parameters get float32 moments (bf16 moments lose
small gradients: adding 1e-3 to 1.0 in bfloat16 gives 1.0) — and returns updates in
the gradients' dtype. The named optimizers in :mod:`fundl.optim.alias` are ``chain``s of
these blocks and a learning-rate scale.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fundl.optim.base import (
    GradientTransformation,
    MomentDtype,
    ScalarOrSchedule,
    _check_moment_dtype,
    _check_number,
    _moments_like,
    stateless,
    _safe_increment,
    _value_at,
)
from fundl.tree import check_same_structure, global_norm

__all__ = [
    "scale",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_ema",
    "scale_by_rms",
    "scale_by_adam",
    "scale_by_adagrad",
    "scale_by_lion",
    "scale_by_trust_ratio",
    "ScheduleState",
    "TraceState",
    "EmaState",
    "RmsState",
    "AdamState",
    "AdagradState",
    "LionState",
]


def _float(count: jax.Array) -> jax.Array:
    """A step count as a float (float64 when x64 is on)."""
    return count.astype(jnp.result_type(float))


def _check_against_state(name: str, updates: Any, moments: Any) -> None:
    check_same_structure(name, updates, moments, "grads", "optimizer state")


# --- constant and scheduled scales --------------------------------------------------


def scale(step_size: float) -> GradientTransformation:
    """Multiply updates by a constant: u ← s·u."""
    return stateless(
        lambda updates, params: jax.tree.map(lambda u: (step_size * u).astype(u.dtype), updates)
    )


class ScheduleState(NamedTuple):
    """State of a scheduled learning rate."""

    count: jax.Array  # steps taken, int32 scalar


def scale_by_learning_rate(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """Descend: u ← −α·u, with α a number or a schedule α(step).

    Args:
      learning_rate: α ≥ 0, a float, a scalar array (for ``vmap`` sweeps) or a
        schedule ``step -> α`` evaluated at the number of updates taken so far.
    """
    _check_number("scale_by_learning_rate", "learning_rate", learning_rate, low=0.0)
    if not callable(learning_rate):
        return scale(-learning_rate)

    def init(params: Any) -> ScheduleState:
        return ScheduleState(jnp.zeros([], jnp.int32))

    def update(updates: Any, state: ScheduleState, params: Any = None, **extra_args: Any):
        lr = _value_at(learning_rate, state.count)
        new = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
        return new, ScheduleState(_safe_increment(state.count))

    return GradientTransformation(init, update)


# --- momentum ------------------------------------------------------------------------


class TraceState(NamedTuple):
    """State of heavy-ball momentum."""

    velocity: Any  # v, like params, in the moment dtype


def scale_by_momentum(
    momentum: float = 0.9, *, nesterov: bool = False, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Heavy-ball momentum (Polyak; PyTorch's SGD): v ← μv + g; u ← v.

    With ``nesterov=True`` (Sutskever et al., 2013, as PyTorch): u ← g + μv, using the
    new v.

    Args:
      momentum: μ in [0, 1).
      nesterov: use Nesterov's look-ahead.
      moment_dtype: dtype of v (see :data:`fundl.optim.MomentDtype`).
    """
    _check_number("scale_by_momentum", "momentum", momentum, low=0.0, high=1.0, high_open=True)
    _check_moment_dtype("scale_by_momentum", moment_dtype)

    def init(params: Any) -> TraceState:
        return TraceState(_moments_like(params, moment_dtype))

    def update(updates: Any, state: TraceState, params: Any = None, **extra_args: Any):
        _check_against_state("scale_by_momentum", updates, state.velocity)
        velocity = jax.tree.map(
            lambda g, v: momentum * v + g.astype(v.dtype), updates, state.velocity
        )
        if nesterov:
            out = jax.tree.map(
                lambda g, v: (g.astype(v.dtype) + momentum * v).astype(g.dtype), updates, velocity
            )
        else:
            out = jax.tree.map(lambda g, v: v.astype(g.dtype), updates, velocity)
        return out, TraceState(velocity)

    return GradientTransformation(init, update)


class EmaState(NamedTuple):
    """State of an exponential moving average of gradients."""

    velocity: Any  # v, like params, in the moment dtype


def scale_by_ema(decay: float = 0.9, *, moment_dtype: MomentDtype = None) -> GradientTransformation:
    """The notes' momentum: v ← βv + (1 − β)g; u ← v (no bias correction).

    Compared with heavy-ball momentum (v ← βv + g) the step is (1 − β) times smaller
    for the same learning rate: ``momentum(α, β)`` equals ``sgd(α(1 − β), β)``.

    Args:
      decay: β in [0, 1).
      moment_dtype: dtype of v.
    """
    _check_number("scale_by_ema", "decay", decay, low=0.0, high=1.0, high_open=True)
    _check_moment_dtype("scale_by_ema", moment_dtype)

    def init(params: Any) -> EmaState:
        return EmaState(_moments_like(params, moment_dtype))

    def update(updates: Any, state: EmaState, params: Any = None, **extra_args: Any):
        _check_against_state("scale_by_ema", updates, state.velocity)
        velocity = jax.tree.map(
            lambda g, v: decay * v + (1 - decay) * g.astype(v.dtype), updates, state.velocity
        )
        return jax.tree.map(lambda g, v: v.astype(g.dtype), updates, velocity), EmaState(velocity)

    return GradientTransformation(init, update)


# --- adaptive scalings ---------------------------------------------------------------


class RmsState(NamedTuple):
    """State of RMSprop."""

    nu: Any  # E[g²], like params, in the moment dtype
    mu: Any  # E[g] (centered only; else an empty tuple)


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    *,
    centered: bool = False,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """RMSprop (Hinton, 2012; PyTorch's form): v ← ρv + (1 − ρ)g²; u ← g / (√v + ε).

    Centered (Graves, 2013): also m ← ρm + (1 − ρ)g and u ← g / (√(v − m²) + ε).
    ε sits outside the square root, as in PyTorch (optax puts it inside).

    Args:
      decay: ρ in [0, 1).
      eps: ε > 0.
      centered: divide by the centered second moment (an estimate of the variance).
      moment_dtype: dtype of v and m.
    """
    _check_number("scale_by_rms", "decay", decay, low=0.0, high=1.0, high_open=True)
    _check_number("scale_by_rms", "eps", eps, low=0.0, low_open=True)
    _check_moment_dtype("scale_by_rms", moment_dtype)

    def init(params: Any) -> RmsState:
        mu = _moments_like(params, moment_dtype) if centered else ()
        return RmsState(_moments_like(params, moment_dtype), mu)

    def update(updates: Any, state: RmsState, params: Any = None, **extra_args: Any):
        _check_against_state("scale_by_rms", updates, state.nu)
        nu = jax.tree.map(
            lambda g, v: decay * v + (1 - decay) * jnp.square(g.astype(v.dtype)), updates, state.nu
        )
        if centered:
            mu = jax.tree.map(
                lambda g, m: decay * m + (1 - decay) * g.astype(m.dtype), updates, state.mu
            )
            variance = jax.tree.map(lambda v, m: v - jnp.square(m), nu, mu)
        else:
            mu, variance = (), nu
        out = jax.tree.map(
            lambda g, v: (g.astype(v.dtype) / (jnp.sqrt(v) + eps)).astype(g.dtype),
            updates,
            variance,
        )
        return out, RmsState(nu, mu)

    return GradientTransformation(init, update)


class AdamState(NamedTuple):
    """State of Adam."""

    count: jax.Array  # steps taken t, int32 scalar
    mu: Any  # first moment m, like params, in the moment dtype
    nu: Any  # second moment v, like params, in the moment dtype


def scale_by_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Adam's direction (Kingma & Ba, 2015), with bias correction.

    m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  m̂ = m/(1 − β₁ᵗ);  v̂ = v/(1 − β₂ᵗ);
    u ← m̂ / (√v̂ + ε)   (ε outside the square root, as in the paper and PyTorch).

    Args:
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε > 0.
      moment_dtype: dtype of m and v.
    """
    _check_number("scale_by_adam", "b1", b1, low=0.0, high=1.0, high_open=True)
    _check_number("scale_by_adam", "b2", b2, low=0.0, high=1.0, high_open=True)
    _check_number("scale_by_adam", "eps", eps, low=0.0, low_open=True)
    _check_moment_dtype("scale_by_adam", moment_dtype)

    def init(params: Any) -> AdamState:
        # Two separate buffers: a donated state must not hold one array twice.
        mu, nu = _moments_like(params, moment_dtype), _moments_like(params, moment_dtype)
        return AdamState(jnp.zeros([], jnp.int32), mu, nu)

    def update(updates: Any, state: AdamState, params: Any = None, **extra_args: Any):
        _check_against_state("scale_by_adam", updates, state.mu)
        count = _safe_increment(state.count)
        mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g.astype(m.dtype), updates, state.mu)
        nu = jax.tree.map(
            lambda g, v: b2 * v + (1 - b2) * jnp.square(g.astype(v.dtype)), updates, state.nu
        )
        t = _float(count)
        c1, c2 = 1 - b1**t, 1 - b2**t

        def direction(g, m, v):
            m_hat = m / c1.astype(m.dtype)
            v_hat = v / c2.astype(v.dtype)
            return (m_hat / (jnp.sqrt(v_hat) + eps)).astype(g.dtype)

        return jax.tree.map(direction, updates, mu, nu), AdamState(count, mu, nu)

    return GradientTransformation(init, update)


class AdagradState(NamedTuple):
    """State of Adagrad."""

    sum_of_squares: Any  # G = G₀ + Σ g², like params, in the moment dtype


def scale_by_adagrad(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011; PyTorch's form): G ← G + g²; u ← g / (√G + ε).

    Args:
      initial_accumulator_value: G₀ ≥ 0 (PyTorch: 0; optax: 0.1).
      eps: ε > 0, outside the square root (PyTorch: 1e-10).
      moment_dtype: dtype of G.
    """
    _check_number(
        "scale_by_adagrad", "initial_accumulator_value", initial_accumulator_value, low=0.0
    )
    _check_number("scale_by_adagrad", "eps", eps, low=0.0, low_open=True)
    _check_moment_dtype("scale_by_adagrad", moment_dtype)

    def init(params: Any) -> AdagradState:
        zeros = _moments_like(params, moment_dtype)
        return AdagradState(jax.tree.map(lambda z: z + initial_accumulator_value, zeros))

    def update(updates: Any, state: AdagradState, params: Any = None, **extra_args: Any):
        _check_against_state("scale_by_adagrad", updates, state.sum_of_squares)
        total = jax.tree.map(
            lambda g, s: s + jnp.square(g.astype(s.dtype)), updates, state.sum_of_squares
        )
        out = jax.tree.map(
            lambda g, s: (g.astype(s.dtype) / (jnp.sqrt(s) + eps)).astype(g.dtype), updates, total
        )
        return out, AdagradState(total)

    return GradientTransformation(init, update)


class LionState(NamedTuple):
    """State of Lion."""

    mu: Any  # momentum m, like params, in the moment dtype


def scale_by_lion(
    b1: float = 0.9, b2: float = 0.99, *, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Lion's direction (Chen et al., 2023): u ← sign(β₁m + (1 − β₁)g); m ← β₂m + (1 − β₂)g.

    Args:
      b1: β₁ in [0, 1), the interpolation for the update.
      b2: β₂ in [0, 1), the momentum decay.
      moment_dtype: dtype of m.
    """
    _check_number("scale_by_lion", "b1", b1, low=0.0, high=1.0, high_open=True)
    _check_number("scale_by_lion", "b2", b2, low=0.0, high=1.0, high_open=True)
    _check_moment_dtype("scale_by_lion", moment_dtype)

    def init(params: Any) -> LionState:
        return LionState(_moments_like(params, moment_dtype))

    def update(updates: Any, state: LionState, params: Any = None, **extra_args: Any):
        _check_against_state("scale_by_lion", updates, state.mu)
        out = jax.tree.map(
            lambda g, m: jnp.sign(b1 * m + (1 - b1) * g.astype(m.dtype)).astype(g.dtype),
            updates,
            state.mu,
        )
        mu = jax.tree.map(lambda g, m: b2 * m + (1 - b2) * g.astype(m.dtype), updates, state.mu)
        return out, LionState(mu)

    return GradientTransformation(init, update)


def scale_by_trust_ratio(eps: float = 0.0) -> GradientTransformation:
    """LAMB's layer-wise trust ratio (You et al., 2020): u ← u·‖p‖/(‖u‖ + ε) per leaf.

    The ratio is 1 where ‖p‖ or ‖u‖ is zero. Needs ``params``.
    """
    _check_number("scale_by_trust_ratio", "eps", eps, low=0.0)

    def rescale(u, p):
        p_norm, u_norm = global_norm(p), global_norm(u)
        ratio = jnp.where((p_norm > 0) & (u_norm > 0), p_norm / (u_norm + eps), 1.0)
        return (u * ratio.astype(u.dtype)).astype(u.dtype)

    def fn(updates: Any, params: Any) -> Any:
        if params is None:
            raise ValueError(
                "scale_by_trust_ratio: needs params; call update(grads, state, params)"
            )
        return jax.tree.map(rescale, updates, params)

    return stateless(fn)
