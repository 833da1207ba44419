"""Learning-rate schedules: plain functions ``step -> value``.

A schedule maps the optimizer's step count (a Python int, or an integer array inside
``jit``) to a float32 value, shaped like the step. It is accepted wherever a learning
rate is: ``fundl.optim.sgd(schedules.cosine_decay(0.1, 1000))``.

====================  ===========================================================
schedule              value at step s
====================  ===========================================================
constant              v
piecewise_constant    v₀ · ∏ scale_b over boundaries b ≤ s
step_decay            v₀ · r^⌊s / n⌋
exponential_decay     v₀ · r^((s − s₀)⁺ / n), optionally floored or clipped
inverse_time_decay    v₀ / (1 + r · s / n)
polynomial_decay      (v₀ − v₁)(1 − t / n)^p + v₁,  t = clip(s − s₀, 0, n)
cosine_decay          v₁ + (v₀ − v₁) · ½(1 + cos(π · min(s, n) / n))
warmup_cosine_decay   linear v₀ → peak over w steps, then cosine peak → v₁ at step n
cyclical              Smith's triangular cycles between base and max
one_cycle             PyTorch's OneCycleLR (cosine up, cosine down)
====================  ===========================================================

Hyperparameters are Python numbers, checked when the schedule is built; a bad one
raises ``ValueError`` naming the schedule and the argument. The returned function is
pure ``jax.numpy`` in the step, with no Python branch on it, so ``jax.jit(schedule)``
and ``jax.vmap(schedule)`` work and give the eager values. The step is used as float32,
so steps are exact up to 2²⁴ (about 16.7 million).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp

from fundl._validate import check_int

__all__ = [
    "Schedule",
    "constant",
    "piecewise_constant",
    "step_decay",
    "exponential_decay",
    "inverse_time_decay",
    "polynomial_decay",
    "cosine_decay",
    "warmup_cosine_decay",
    "cyclical",
    "one_cycle",
]

Schedule = Callable[[int | jax.Array], jax.Array]
"""``schedule(step) -> value``: a float32 array shaped like ``step``."""

CyclicalMode = Literal["triangular", "triangular2", "exp_range"]
_CYCLICAL_MODES = ("triangular", "triangular2", "exp_range")


# ----------------------------------------------------------------------------- checks


def _is_real(value: Any) -> bool:
    # bool is an int to Python; as a hyperparameter it is always a mistake.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(fn: str, arg: str, value: Any) -> float:
    if not (_is_real(value) and math.isfinite(value)):
        raise ValueError(f"{fn}: {arg} must be a finite number, got {value!r}")
    return float(value)


def _positive(fn: str, arg: str, value: Any) -> float:
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{fn}: {arg} must be a positive number, got {value!r}")
    return float(value)


def _non_negative(fn: str, arg: str, value: Any) -> float:
    if not (_is_real(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{fn}: {arg} must be a non-negative number, got {value!r}")
    return float(value)


def _label(schedule: Callable[..., jax.Array], fn: str, **args: Any) -> Schedule:
    """Name the closure after its call, so it prints (and plots) as what it is."""
    label = f"{fn}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
    schedule.__name__ = schedule.__qualname__ = label
    return schedule


def _float_step(step: int | jax.Array) -> jax.Array:
    return jnp.asarray(step, jnp.float32)


# -------------------------------------------------------------------------- schedules


def constant(value: float) -> Schedule:
    """The same value at every step: f(s) = v.

    Args:
      value: the value, a finite number.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    v = _finite("constant", "value", value)

    def schedule(step: int | jax.Array) -> jax.Array:
        return jnp.full_like(_float_step(step), v)

    return _label(schedule, "constant", value=value)


def piecewise_constant(init_value: float, boundaries_and_scales: Mapping[int, float]) -> Schedule:
    """Multiply by a scale at each boundary passed: f(s) = v₀ · ∏_{b ≤ s} scale_b.

    As optax's ``piecewise_constant_schedule`` (and PyTorch's ``MultiStepLR`` with
    one scale for all boundaries): at step ``b`` the scale of ``b`` already applies.

    Args:
      init_value: the value before the first boundary.
      boundaries_and_scales: ``{boundary: scale}``; boundaries are non-negative ints,
        scales non-negative numbers. ``{1000: 0.1, 2000: 0.1}`` divides by 10 at step
        1000 and again at 2000.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "piecewise_constant"
    v0 = _finite(fn, "init_value", init_value)
    if not isinstance(boundaries_and_scales, Mapping):
        raise ValueError(
            f"{fn}: boundaries_and_scales must be a dict {{boundary: scale}}, "
            f"got {boundaries_and_scales!r}"
        )
    pieces = []
    for boundary, scale in boundaries_and_scales.items():
        if not (_is_int(boundary) and boundary >= 0):
            raise ValueError(f"{fn}: boundaries must be non-negative integers, got {boundary!r}")
        if not (_is_real(scale) and math.isfinite(scale) and scale >= 0):
            raise ValueError(
                f"{fn}: the scale at boundary {boundary} must be a non-negative number, "
                f"got {scale!r}"
            )
        pieces.append((int(boundary), float(scale)))
    pieces.sort()

    def schedule(step: int | jax.Array) -> jax.Array:
        step = jnp.asarray(step)  # compared as given, so integer steps stay exact
        value = jnp.full(jnp.shape(step), v0, jnp.float32)
        for boundary, scale in pieces:
            value = jnp.where(step >= boundary, value * scale, value)
        return value

    return _label(schedule, fn, init_value=init_value, boundaries_and_scales=dict(pieces))


def step_decay(init_value: float, decay_rate: float, step_size: int) -> Schedule:
    """Multiply by ``decay_rate`` every ``step_size`` steps: f(s) = v₀ · r^⌊s / n⌋.

    PyTorch's ``StepLR`` (``gamma`` = r, ``step_size`` = n).

    Args:
      init_value: the value for steps 0 … n − 1.
      decay_rate: the factor r > 0 applied at every multiple of n.
      step_size: n, a positive number of steps.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "step_decay"
    v0 = _finite(fn, "init_value", init_value)
    r = _positive(fn, "decay_rate", decay_rate)
    n = check_int(fn, "step_size", step_size, low=1)

    def schedule(step: int | jax.Array) -> jax.Array:
        return v0 * jnp.power(r, jnp.floor(_float_step(step) / n))

    return _label(schedule, fn, init_value=init_value, decay_rate=decay_rate, step_size=step_size)


def exponential_decay(
    init_value: float,
    decay_rate: float,
    transition_steps: int,
    *,
    staircase: bool = False,
    transition_begin: int = 0,
    end_value: float | None = None,
) -> Schedule:
    """Exponential decay (optax's ``exponential_decay``)::

        t = max(s − s₀, 0),   p = t / n   (⌊t / n⌋ if staircase)
        f(s) = v₀ · r^p

    constant v₀ until step s₀. With ``end_value`` the value is clipped at it: a floor
    when r < 1, a ceiling when r > 1.

    Args:
      init_value: v₀.
      decay_rate: r > 0, the factor per ``transition_steps`` (r > 1 grows).
      transition_steps: n, a positive number of steps.
      staircase: decay in jumps every n steps instead of continuously.
      transition_begin: s₀, the non-negative step at which the decay starts.
      end_value: the bound the value never passes, or None for none.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "exponential_decay"
    v0 = _finite(fn, "init_value", init_value)
    r = _positive(fn, "decay_rate", decay_rate)
    n = check_int(fn, "transition_steps", transition_steps, low=1)
    s0 = check_int(fn, "transition_begin", transition_begin, low=0)
    v1 = None if end_value is None else _finite(fn, "end_value", end_value)
    clip = jnp.maximum if r < 1 else jnp.minimum

    def schedule(step: int | jax.Array) -> jax.Array:
        p = jnp.maximum(_float_step(step) - s0, 0.0) / n
        if staircase:
            p = jnp.floor(p)
        value = v0 * jnp.power(r, p)
        return value if v1 is None else clip(value, v1)

    return _label(
        schedule,
        fn,
        init_value=init_value,
        decay_rate=decay_rate,
        transition_steps=transition_steps,
        staircase=staircase,
        transition_begin=transition_begin,
        end_value=end_value,
    )


def inverse_time_decay(
    init_value: float, decay_rate: float, decay_steps: int, *, staircase: bool = False
) -> Schedule:
    """Inverse-time decay (Keras's ``InverseTimeDecay``)::

        f(s) = v₀ / (1 + r · s / n)      (⌊s / n⌋ if staircase)

    Args:
      init_value: v₀.
      decay_rate: r ≥ 0; the value has halved by step n / r.
      decay_steps: n, a positive number of steps.
      staircase: decay in jumps every n steps instead of continuously.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "inverse_time_decay"
    v0 = _finite(fn, "init_value", init_value)
    r = _non_negative(fn, "decay_rate", decay_rate)
    n = check_int(fn, "decay_steps", decay_steps, low=1)

    def schedule(step: int | jax.Array) -> jax.Array:
        p = _float_step(step) / n
        if staircase:
            p = jnp.floor(p)
        return v0 / (1.0 + r * p)

    return _label(
        schedule,
        fn,
        init_value=init_value,
        decay_rate=decay_rate,
        decay_steps=decay_steps,
        staircase=staircase,
    )


def polynomial_decay(
    init_value: float,
    end_value: float,
    decay_steps: int,
    *,
    power: float = 1.0,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial decay from v₀ to v₁ over n steps (optax's ``polynomial_schedule``)::

        t = clip(s − s₀, 0, n)
        f(s) = (v₀ − v₁) · (1 − t / n)^p + v₁

    ``power=1`` is a linear ramp (which may also rise: v₁ > v₀ is allowed).

    Args:
      init_value: v₀, the value until step s₀.
      end_value: v₁, the value from step s₀ + n on.
      decay_steps: n, a positive number of steps.
      power: p > 0.
      transition_begin: s₀, the non-negative step at which the decay starts.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "polynomial_decay"
    v0 = _finite(fn, "init_value", init_value)
    v1 = _finite(fn, "end_value", end_value)
    n = check_int(fn, "decay_steps", decay_steps, low=1)
    p = _positive(fn, "power", power)
    s0 = check_int(fn, "transition_begin", transition_begin, low=0)

    def schedule(step: int | jax.Array) -> jax.Array:
        t = jnp.clip(_float_step(step) - s0, 0.0, n)
        return (v0 - v1) * jnp.power(1.0 - t / n, p) + v1

    return _label(
        schedule,
        fn,
        init_value=init_value,
        end_value=end_value,
        decay_steps=decay_steps,
        power=power,
        transition_begin=transition_begin,
    )


def cosine_decay(init_value: float, decay_steps: int, *, end_value: float = 0.0) -> Schedule:
    """Half a cosine from v₀ to v₁ over n steps (Loshchilov & Hutter's SGDR, one cycle)::

        t = min(s, n)
        f(s) = v₁ + (v₀ − v₁) · ½ (1 + cos(π t / n))

    Args:
      init_value: v₀, the value at step 0.
      decay_steps: n, a positive number of steps; v₁ from step n on.
      end_value: v₁.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "cosine_decay"
    v0 = _finite(fn, "init_value", init_value)
    n = check_int(fn, "decay_steps", decay_steps, low=1)
    v1 = _finite(fn, "end_value", end_value)

    def schedule(step: int | jax.Array) -> jax.Array:
        t = jnp.minimum(_float_step(step), n)
        return v1 + (v0 - v1) * 0.5 * (1.0 + jnp.cos(math.pi * t / n))

    return _label(schedule, fn, init_value=init_value, decay_steps=decay_steps, end_value=end_value)


def warmup_cosine_decay(
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    *,
    init_value: float = 0.0,
    end_value: float = 0.0,
) -> Schedule:
    """Linear warm-up, then cosine decay (optax's ``warmup_cosine_decay_schedule``)::

        s < w:       f(s) = v₀ + (peak − v₀) · s / w
        s ≥ w:       t = min(s − w, n − w)
                     f(s) = v₁ + (peak − v₁) · ½ (1 + cos(π t / (n − w)))

    ``decay_steps`` (n) counts from step 0 and includes the warm-up: the value is the
    peak at step w and v₁ from step n on.

    Args:
      peak_value: the value at the end of the warm-up.
      warmup_steps: w ≥ 0 (0: start at the peak).
      decay_steps: n > w, the step at which ``end_value`` is reached.
      init_value: v₀, the value at step 0.
      end_value: v₁.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "warmup_cosine_decay"
    peak = _finite(fn, "peak_value", peak_value)
    w = check_int(fn, "warmup_steps", warmup_steps, low=0)
    n = check_int(fn, "decay_steps", decay_steps, low=1)
    if n <= w:
        raise ValueError(
            f"{fn}: decay_steps must be greater than warmup_steps (it counts from step 0 and "
            f"includes the warm-up), got decay_steps={decay_steps!r}, warmup_steps={warmup_steps!r}"
        )
    v0 = _finite(fn, "init_value", init_value)
    v1 = _finite(fn, "end_value", end_value)

    def schedule(step: int | jax.Array) -> jax.Array:
        s = _float_step(step)
        t = jnp.clip(s - w, 0.0, n - w)
        decay = v1 + (peak - v1) * 0.5 * (1.0 + jnp.cos(math.pi * t / (n - w)))
        if w == 0:  # a build-time choice: there is no warm-up to divide by
            return decay
        warmup = v0 + (peak - v0) * s / w
        return jnp.where(s < w, warmup, decay)

    return _label(
        schedule,
        fn,
        peak_value=peak_value,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        init_value=init_value,
        end_value=end_value,
    )


def cyclical(
    base_value: float,
    max_value: float,
    step_size: int,
    *,
    mode: CyclicalMode = "triangular",
    gamma: float = 1.0,
) -> Schedule:
    """Cyclical learning rates (Smith, 2017; PyTorch's ``CyclicLR``)::

        c = ⌊1 + s / (2n)⌋                    (the cycle, from 1)
        x = |s / n − 2c + 1|
        f(s) = base + (max − base) · max(0, 1 − x) · scale

    with scale = 1 ("triangular"), 1 / 2^(c−1) ("triangular2": the height halves each
    cycle) or γ^s ("exp_range"). The value rises from base to max over n steps and
    falls back over the next n (PyTorch with ``step_size_up = step_size_down = n``).

    Args:
      base_value: the value at the start of each cycle.
      max_value: the value at the top of the first cycle.
      step_size: n, a positive number of steps: half a cycle.
      mode: "triangular", "triangular2" or "exp_range".
      gamma: γ > 0, the per-step factor of "exp_range" (ignored by the others).

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "cyclical"
    base = _finite(fn, "base_value", base_value)
    top = _finite(fn, "max_value", max_value)
    n = check_int(fn, "step_size", step_size, low=1)
    if mode not in _CYCLICAL_MODES:
        raise ValueError(f"{fn}: mode must be one of {_CYCLICAL_MODES}, got {mode!r}")
    g = _positive(fn, "gamma", gamma)

    def schedule(step: int | jax.Array) -> jax.Array:
        s = _float_step(step)
        # The same x from the position in the cycle, u = s mod 2n (exact): s / n − 2c + 1
        # would cancel two large numbers and lose the bottom of late cycles in float32.
        u = jnp.mod(s, 2.0 * n)
        cycle = jnp.round((s - u) / (2.0 * n)) + 1.0
        x = jnp.abs(u / n - 1.0)
        height = (top - base) * jnp.maximum(0.0, 1.0 - x)
        if mode == "triangular2":
            height = height / jnp.power(2.0, cycle - 1.0)
        elif mode == "exp_range":
            height = height * jnp.power(g, s)
        return base + height

    return _label(
        schedule,
        fn,
        base_value=base_value,
        max_value=max_value,
        step_size=step_size,
        mode=mode,
        gamma=gamma,
    )


def one_cycle(
    max_value: float,
    total_steps: int,
    *,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The 1cycle policy (Smith & Topin, 2018), as PyTorch's ``OneCycleLR``.

    PyTorch's defaults: ``anneal_strategy="cos"``, ``three_phase=False``. With
    v₀ = max / div_factor, v_min = v₀ / final_div_factor, e₁ = pct_start · T − 1 and
    e₂ = T − 1 (T = total_steps)::

        anneal(a, b, p) = b + (a − b) / 2 · (1 + cos(π p))
        s ≤ e₁:   f(s) = anneal(v₀,  max,   s / e₁)
        s > e₁:   f(s) = anneal(max, v_min, min((s − e₁) / (e₂ − e₁), 1))

    so f(0) = v₀, the peak is at step e₁ (not rounded, as in PyTorch), f(T − 1) = v_min,
    and the value stays v_min after step T − 1 (where PyTorch raises instead).

    Args:
      max_value: the peak value.
      total_steps: T ≥ 2, the number of steps in the cycle.
      pct_start: the fraction of the cycle spent rising, in (0, 1), with
        pct_start · T > 1 so the rise ends after step 0.
      div_factor: v₀ = max / div_factor, positive.
      final_div_factor: v_min = v₀ / final_div_factor, positive.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``.
    """
    fn = "one_cycle"
    peak = _finite(fn, "max_value", max_value)
    total = check_int(fn, "total_steps", total_steps, low=2)
    if not (_is_real(pct_start) and 0 < pct_start < 1):
        raise ValueError(f"{fn}: pct_start must be in (0, 1), got {pct_start!r}")
    if not pct_start * total > 1:
        raise ValueError(
            f"{fn}: pct_start * total_steps must be greater than 1 so the rise ends after "
            f"step 0, got {pct_start!r} * {total_steps!r} = {pct_start * total!r}; "
            f"raise pct_start or total_steps"
        )
    v0 = peak / _positive(fn, "div_factor", div_factor)
    v_min = v0 / _positive(fn, "final_div_factor", final_div_factor)
    end_up = float(pct_start) * total - 1.0  # PyTorch's phase ends, kept as floats
    end_down = float(total - 1)

    def anneal(start: float, end: float, pct: jax.Array) -> jax.Array:
        return end + (start - end) / 2.0 * (1.0 + jnp.cos(math.pi * pct))

    def schedule(step: int | jax.Array) -> jax.Array:
        s = _float_step(step)
        up = anneal(v0, peak, s / end_up)
        down = anneal(peak, v_min, jnp.minimum((s - end_up) / (end_down - end_up), 1.0))
        return jnp.where(s <= end_up, up, down)

    return _label(
        schedule,
        fn,
        max_value=max_value,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
