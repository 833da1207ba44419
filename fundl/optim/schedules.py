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

Hyperparameters are Python numbers, checked when the schedule is built; a bad one, or
two that contradict each other (a decay's floor above its start, a cycle's max below
its base), raises ``ValueError`` naming the schedule, the argument, the value and the
rule. Each schedule knows its range: ``schedule.bounds`` is (lowest, highest) over all
steps ≥ 0, so an optimizer refuses ``sgd(polynomial_decay(0.1, -0.1, 10))`` when it is
built, naming the lowest value. The returned function is pure ``jax.numpy`` in the
step, with no Python branch on it, so ``jax.jit(schedule)`` and ``jax.vmap(schedule)``
work and give the eager values. The step is used as float32, so steps are exact up to
2²⁴ (about 16.7 million).

Examples:
  >>> lr = fundl.optim.schedules.cosine_decay(0.1, 1000, end_value=1e-3)
  >>> lr.bounds
  (0.001, 0.1)
  >>> below_zero = fundl.optim.schedules.cosine_decay(0.1, 1000, end_value=-1e-3)
  >>> fundl.optim.sgd(below_zero)  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ValueError: sgd: learning_rate must be ...; got the schedule cosine_decay(...), whose lowest value is -0.001
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import check_bool, check_choice, check_int, check_number

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


class Schedule(Protocol):
    """``schedule(step) -> value``: a float32 array shaped like ``step``.

    Any function of the step count is a schedule (a learning rate accepts one). Every
    schedule built here also carries ``schedule.bounds``, the pair (lowest, highest)
    of its values over all steps ≥ 0 (the limits it approaches included, so a decay to 0
    has lowest 0; highest is ``inf`` for a growing exponential), which an optimizer
    checks when it is built, and is named after its call:
    ``cosine_decay(init_value=0.1, decay_steps=10, end_value=0.0)``.

    Examples:
      >>> lr = fundl.optim.schedules.step_decay(0.1, 0.5, 10)
      >>> round(float(lr(25)), 4), lr.bounds
      (0.025, (0.0, 0.1))
      >>> lr.__name__
      'step_decay(init_value=0.1, decay_rate=0.5, step_size=10)'
    """

    def __call__(self, step: int | jax.Array) -> jax.Array: ...


CyclicalMode = Literal["triangular", "triangular2", "exp_range"]
_CYCLICAL_MODES = ("triangular", "triangular2", "exp_range")


# ------------------------------------------------------------------ the shared builder


def _schedule_builder(build: Callable[..., Schedule]) -> Callable[..., Schedule]:
    """Name what ``build`` returns after the call, so it prints (and plots) as what it is.

    ``build`` checks its arguments and returns its schedule through :func:`_bounded`;
    the label lists every argument, defaults included.
    """
    signature = inspect.signature(build)

    @functools.wraps(build)
    def builder(*args: Any, **kwargs: Any) -> Schedule:
        schedule = build(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = ", ".join(f"{k}={v!r}" for k, v in bound.arguments.items())
        schedule.__name__ = schedule.__qualname__ = f"{build.__name__}({arguments})"
        return schedule

    return builder


def _bounded(schedule: Callable[..., jax.Array], lowest: float, highest: float) -> Schedule:
    """Attach ``bounds = (lowest, highest)``, the range of values over all steps ≥ 0."""
    schedule.bounds = (float(lowest), float(highest))
    return schedule


def _geometric_bounds(v0: float, r: float) -> tuple[float, float]:
    """The range of v₀ · rᵖ over p ≥ 0 (r > 0): from v₀ towards 0 (r < 1) or ±inf (r > 1)."""
    if r == 1 or v0 == 0:
        return v0, v0
    limit = 0.0 if r < 1 else math.copysign(math.inf, v0)
    return min(v0, limit), max(v0, limit)


def _checked_step(fn: str, step: Any) -> jax.Array:
    """The step as an array, refusing what is not a step count: a str, bool, complex number
    or key, and a negative host step (a Python number or numpy array: the curves are
    defined for steps ≥ 0). Dtypes, and the values of host steps, only: nothing is added
    to a traced program, and a device array's value is never read."""
    dtype = getattr(step, "dtype", None)
    if dtype is None and isinstance(step, (int, float)) and not isinstance(step, bool):
        bad = False
    else:
        try:
            arr = step if dtype is not None else np.asarray(step)
            dtype = arr.dtype
            bad = jnp.issubdtype(dtype, jnp.bool_) or not (
                jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
            )
        except (TypeError, ValueError):
            bad = True
    if bad:
        shown = (
            f"an array of dtype {step.dtype}"
            if hasattr(step, "dtype")
            else f"{step!r:.40} (a {type(step).__name__})"
        )
        raise ValueError(
            f"{fn}: the step must be a step count, an integer (or an integer array), got {shown}"
        )
    # the sign of a host value (a Python number or numpy array) only: reading a device
    # array's value would stall an eager (unjitted) loop on the device every step
    if isinstance(step, (int, float, np.ndarray, np.generic)) and np.size(step):
        lowest = np.nanmin(np.asarray(step, np.float64)) if not np.all(np.isnan(step)) else 0.0
        if lowest < 0:
            raise ValueError(
                f"{fn}: the step must be ≥ 0 (the number of updates taken), got {lowest:g}"
            )
    return jnp.asarray(step)


def _float_step(fn: str, step: int | jax.Array) -> jax.Array:
    return _checked_step(fn, step).astype(jnp.float32)


# -------------------------------------------------------------------------- schedules


@_schedule_builder
def constant(value: float) -> Schedule:
    """The same value at every step: f(s) = v.

    Args:
      value: the value, a finite number.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds (v, v).

    Examples:
      The examples evaluate a schedule at several steps at once, jitted (one compiled
      program instead of one per operation; the values are the eager ones):

      >>> lr = fundl.optim.schedules.constant(0.1)
      >>> np.asarray(jax.jit(lr)(jnp.arange(3)), np.float64).round(4).tolist()
      [0.1, 0.1, 0.1]
    """
    fn = "constant"
    v = check_number(fn, "value", value)

    def schedule(step: int | jax.Array) -> jax.Array:
        return jnp.full_like(_float_step(fn, step), v)

    return _bounded(schedule, v, v)


@_schedule_builder
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
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds: the lowest
      and highest of the values between boundaries.

    Examples:
      Step 2 multiplies by 0.1, step 4 by 0.5 (each boundary's scale applies from it on):

      >>> lr = fundl.optim.schedules.piecewise_constant(0.1, {2: 0.1, 4: 0.5})
      >>> np.asarray(jax.jit(lr)(jnp.arange(6)), np.float64).round(4).tolist()
      [0.1, 0.1, 0.01, 0.01, 0.005, 0.005]
    """
    fn = "piecewise_constant"
    v0 = check_number(fn, "init_value", init_value)
    if not isinstance(boundaries_and_scales, Mapping):
        raise ValueError(
            f"{fn}: boundaries_and_scales must be a dict {{boundary: scale}}, "
            f"got {boundaries_and_scales!r}"
        )
    pieces = []
    for boundary, scale in boundaries_and_scales.items():
        b = check_int(fn, "every boundary", boundary, low=0)
        pieces.append((b, check_number(fn, f"the scale at boundary {b}", scale, low=0.0)))
    pieces.sort()
    values = [] if pieces and pieces[0][0] == 0 else [v0]  # v₀ is never seen if a boundary is 0
    for _, scale in pieces:
        values.append((values[-1] if values else v0) * scale)

    def schedule(step: int | jax.Array) -> jax.Array:
        step = _checked_step(fn, step)  # compared as given, so integer steps stay exact
        value = jnp.full(jnp.shape(step), v0, jnp.float32)
        for boundary, scale in pieces:
            value = jnp.where(step >= boundary, value * scale, value)
        return value

    return _bounded(schedule, min(values), max(values))


@_schedule_builder
def step_decay(init_value: float, decay_rate: float, step_size: int) -> Schedule:
    """Multiply by ``decay_rate`` every ``step_size`` steps: f(s) = v₀ · r^⌊s / n⌋.

    PyTorch's ``StepLR`` (``gamma`` = r, ``step_size`` = n).

    Args:
      init_value: the value for steps 0 … n − 1.
      decay_rate: the factor r > 0 applied at every multiple of n (r > 1 grows).
      step_size: n, a positive number of steps.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds from v₀ to
      the limit 0 (r < 1) or ±inf (r > 1).

    Examples:
      >>> lr = fundl.optim.schedules.step_decay(0.1, 0.5, 2)
      >>> np.asarray(jax.jit(lr)(jnp.arange(6)), np.float64).round(4).tolist()
      [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    """
    fn = "step_decay"
    v0 = check_number(fn, "init_value", init_value)
    r = check_number(fn, "decay_rate", decay_rate, low=0.0, low_open=True)
    n = check_int(fn, "step_size", step_size)

    def schedule(step: int | jax.Array) -> jax.Array:
        return v0 * jnp.power(r, jnp.floor(_float_step(fn, step) / n))

    return _bounded(schedule, *_geometric_bounds(v0, r))


@_schedule_builder
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
    when r < 1 (so ``end_value`` ≤ v₀), a ceiling when r ≥ 1 (so ``end_value`` ≥ v₀).

    Args:
      init_value: v₀.
      decay_rate: r > 0, the factor per ``transition_steps`` (r > 1 grows).
      transition_steps: n, a positive number of steps.
      staircase: decay in jumps every n steps instead of continuously.
      transition_begin: s₀, the non-negative step at which the decay starts.
      end_value: the bound the value never passes, or None for none.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds from v₀ to
      ``end_value``, or to the limit 0 (r < 1) or ±inf (r > 1) without one.

    Examples:
      Halving every 2 steps, continuously; then in jumps, from step 1, never below 0.03:

      >>> lr = fundl.optim.schedules.exponential_decay(0.1, 0.5, 2)
      >>> np.asarray(jax.jit(lr)(jnp.arange(6)), np.float64).round(4).tolist()
      [0.1, 0.0707, 0.05, 0.0354, 0.025, 0.0177]
      >>> lr = fundl.optim.schedules.exponential_decay(
      ...     0.1, 0.5, 2, staircase=True, transition_begin=1, end_value=0.03
      ... )
      >>> np.asarray(jax.jit(lr)(jnp.arange(6)), np.float64).round(4).tolist()
      [0.1, 0.1, 0.1, 0.05, 0.05, 0.03]
    """
    fn = "exponential_decay"
    v0 = check_number(fn, "init_value", init_value)
    r = check_number(fn, "decay_rate", decay_rate, low=0.0, low_open=True)
    n = check_int(fn, "transition_steps", transition_steps)
    staircase = check_bool(fn, "staircase", staircase)
    s0 = check_int(fn, "transition_begin", transition_begin, low=0)
    lowest, highest = _geometric_bounds(v0, r)
    v1 = None
    if end_value is not None:
        v1 = check_number(fn, "end_value", end_value)
        if (v1 > v0) if r < 1 else (v1 < v0):
            kind, rule = ("a floor", "at most") if r < 1 else ("a ceiling", "at least")
            raise ValueError(
                f"{fn}: with decay_rate={decay_rate!r}, end_value is {kind} and must be {rule} "
                f"init_value; got end_value={end_value!r}, init_value={init_value!r}"
            )
        lowest, highest = (max(lowest, v1), highest) if r < 1 else (lowest, min(highest, v1))
    clip = jnp.maximum if r < 1 else jnp.minimum

    def schedule(step: int | jax.Array) -> jax.Array:
        p = jnp.maximum(_float_step(fn, step) - s0, 0.0) / n
        if staircase:
            p = jnp.floor(p)
        value = v0 * jnp.power(r, p)
        return value if v1 is None else clip(value, v1)

    return _bounded(schedule, lowest, highest)


@_schedule_builder
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
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds from v₀ to
      the limit 0 (v₀ alone when r = 0).

    Examples:
      >>> lr = fundl.optim.schedules.inverse_time_decay(0.1, 1.0, 2)
      >>> np.asarray(jax.jit(lr)(jnp.arange(5)), np.float64).round(4).tolist()
      [0.1, 0.0667, 0.05, 0.04, 0.0333]
    """
    fn = "inverse_time_decay"
    v0 = check_number(fn, "init_value", init_value)
    r = check_number(fn, "decay_rate", decay_rate, low=0.0)
    n = check_int(fn, "decay_steps", decay_steps)
    staircase = check_bool(fn, "staircase", staircase)
    limit = v0 if r == 0 else 0.0

    def schedule(step: int | jax.Array) -> jax.Array:
        p = _float_step(fn, step) / n
        if staircase:
            p = jnp.floor(p)
        return v0 / (1.0 + r * p)

    return _bounded(schedule, min(v0, limit), max(v0, limit))


@_schedule_builder
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
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds
      (min(v₀, v₁), max(v₀, v₁)).

    Examples:
      Linear (p = 1) and quadratic (p = 2) decay from 1 to 0 over 4 steps:

      >>> lr = fundl.optim.schedules.polynomial_decay(1.0, 0.0, 4)
      >>> np.asarray(jax.jit(lr)(jnp.arange(6)), np.float64).round(4).tolist()
      [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
      >>> lr = fundl.optim.schedules.polynomial_decay(1.0, 0.0, 4, power=2.0)
      >>> np.asarray(jax.jit(lr)(jnp.arange(6)), np.float64).round(4).tolist()
      [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    fn = "polynomial_decay"
    v0 = check_number(fn, "init_value", init_value)
    v1 = check_number(fn, "end_value", end_value)
    n = check_int(fn, "decay_steps", decay_steps)
    p = check_number(fn, "power", power, low=0.0, low_open=True)
    s0 = check_int(fn, "transition_begin", transition_begin, low=0)

    def schedule(step: int | jax.Array) -> jax.Array:
        t = jnp.clip(_float_step(fn, step) - s0, 0.0, n)
        return (v0 - v1) * jnp.power(1.0 - t / n, p) + v1

    return _bounded(schedule, min(v0, v1), max(v0, v1))


@_schedule_builder
def cosine_decay(init_value: float, decay_steps: int, *, end_value: float = 0.0) -> Schedule:
    """Half a cosine from v₀ to v₁ over n steps (Loshchilov & Hutter's SGDR, one cycle)::

        t = min(s, n)
        f(s) = v₁ + (v₀ − v₁) · ½ (1 + cos(π t / n))

    Args:
      init_value: v₀, the value at step 0.
      decay_steps: n, a positive number of steps; v₁ from step n on.
      end_value: v₁.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds
      (min(v₀, v₁), max(v₀, v₁)).

    Examples:
      >>> lr = fundl.optim.schedules.cosine_decay(0.1, 4, end_value=0.01)
      >>> np.asarray(jax.jit(lr)(jnp.arange(6)), np.float64).round(4).tolist()
      [0.1, 0.0868, 0.055, 0.0232, 0.01, 0.01]
    """
    fn = "cosine_decay"
    v0 = check_number(fn, "init_value", init_value)
    n = check_int(fn, "decay_steps", decay_steps)
    v1 = check_number(fn, "end_value", end_value)

    def schedule(step: int | jax.Array) -> jax.Array:
        t = jnp.minimum(_float_step(fn, step), n)
        return v1 + (v0 - v1) * 0.5 * (1.0 + jnp.cos(math.pi * t / n))

    return _bounded(schedule, min(v0, v1), max(v0, v1))


@_schedule_builder
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
      peak_value: the value at the end of the warm-up, at least v₀ and v₁.
      warmup_steps: w ≥ 0 (0: start at the peak).
      decay_steps: n > w, the step at which ``end_value`` is reached.
      init_value: v₀, the value at step 0.
      end_value: v₁.

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds
      (min(v₀, v₁), peak) (v₁ alone below the peak when w = 0).

    Examples:
      Up from 0 to 0.1 over 2 steps, then down to 0.01 at step 6:

      >>> lr = fundl.optim.schedules.warmup_cosine_decay(0.1, 2, 6, end_value=0.01)
      >>> np.asarray(jax.jit(lr)(jnp.arange(8)), np.float64).round(4).tolist()
      [0.0, 0.05, 0.1, 0.0868, 0.055, 0.0232, 0.01, 0.01]
    """
    fn = "warmup_cosine_decay"
    peak = check_number(fn, "peak_value", peak_value)
    w = check_int(fn, "warmup_steps", warmup_steps, low=0)
    n = check_int(fn, "decay_steps", decay_steps)
    if n <= w:
        raise ValueError(
            f"{fn}: decay_steps must be greater than warmup_steps (it counts from step 0 and "
            f"includes the warm-up), got decay_steps={decay_steps!r}, warmup_steps={warmup_steps!r}"
        )
    v0 = check_number(fn, "init_value", init_value)
    v1 = check_number(fn, "end_value", end_value)
    for arg, v in (("init_value", v0), ("end_value", v1)):
        if v > peak:
            raise ValueError(
                f"{fn}: {arg} must be at most peak_value (the peak is the highest value); "
                f"got {arg}={v!r} > peak_value={peak!r}"
            )

    def schedule(step: int | jax.Array) -> jax.Array:
        s = _float_step(fn, step)
        t = jnp.clip(s - w, 0.0, n - w)
        decay = v1 + (peak - v1) * 0.5 * (1.0 + jnp.cos(math.pi * t / (n - w)))
        if w == 0:  # a build-time choice: there is no warm-up to divide by
            return decay
        warmup = v0 + (peak - v0) * s / w
        return jnp.where(s < w, warmup, decay)

    return _bounded(schedule, min(v1, v0 if w > 0 else v1), peak)


@_schedule_builder
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
      max_value: the value at the top of the first cycle, at least ``base_value``.
      step_size: n, a positive number of steps: half a cycle.
      mode: "triangular", "triangular2" or "exp_range".
      gamma: γ in (0, 1], the per-step factor of "exp_range" (ignored by the others).

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds (base, max)
      ("exp_range" stays below max after step 0 when γ < 1: max bounds it).

    Examples:
      Cycles of 2n = 4 steps; "triangular2" halves the second cycle's height:

      >>> lr = fundl.optim.schedules.cyclical(0.01, 0.09, 2)
      >>> np.asarray(jax.jit(lr)(jnp.arange(9)), np.float64).round(4).tolist()
      [0.01, 0.05, 0.09, 0.05, 0.01, 0.05, 0.09, 0.05, 0.01]
      >>> lr = fundl.optim.schedules.cyclical(0.01, 0.09, 2, mode="triangular2")
      >>> np.asarray(jax.jit(lr)(jnp.arange(9)), np.float64).round(4).tolist()
      [0.01, 0.05, 0.09, 0.05, 0.01, 0.03, 0.05, 0.03, 0.01]
    """
    fn = "cyclical"
    base = check_number(fn, "base_value", base_value)
    top = check_number(fn, "max_value", max_value)
    if top < base:
        raise ValueError(
            f"{fn}: max_value must be at least base_value (the cycles rise from base to max); "
            f"got max_value={max_value!r} < base_value={base_value!r}"
        )
    n = check_int(fn, "step_size", step_size)
    mode = check_choice(fn, "mode", mode, _CYCLICAL_MODES)
    g = check_number(fn, "gamma", gamma, low=0.0, high=1.0, low_open=True)

    def schedule(step: int | jax.Array) -> jax.Array:
        s = _float_step(fn, step)
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

    return _bounded(schedule, base, top)


@_schedule_builder
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
      max_value: the peak value, ≥ 0.
      total_steps: T ≥ 2, the number of steps in the cycle.
      pct_start: the fraction of the cycle spent rising, in (0, 1), with
        pct_start · T > 1 so the rise ends after step 0.
      div_factor: v₀ = max / div_factor, ≥ 1 (so v₀ ≤ max).
      final_div_factor: v_min = v₀ / final_div_factor, ≥ 1 (so v_min ≤ v₀).

    Returns:
      ``schedule(step) -> value``, float32, shaped like ``step``; bounds (v_min, max).

    Examples:
      T = 10 steps: up from 0.1/25 = 0.004 to the peak at step e₁ = 2, then down to
      0.004/10⁴ at step 9:

      >>> lr = fundl.optim.schedules.one_cycle(0.1, 10)
      >>> np.asarray(lr(jnp.arange(10)), np.float64).round(4).tolist()
      [0.004, 0.052, 0.1, 0.095, 0.0812, 0.0611, 0.0389, 0.0188, 0.005, 0.0]
    """
    fn = "one_cycle"
    peak = check_number(fn, "max_value", max_value, low=0.0)
    total = check_int(fn, "total_steps", total_steps, low=2)
    pct = check_number(fn, "pct_start", pct_start, low=0.0, high=1.0, low_open=True, high_open=True)
    if not pct * total > 1:
        raise ValueError(
            f"{fn}: pct_start * total_steps must be greater than 1 so the rise ends after "
            f"step 0, got {pct_start!r} * {total_steps!r} = {pct * total!r}; "
            f"raise pct_start or total_steps"
        )
    v0 = peak / check_number(fn, "div_factor", div_factor, low=1.0)
    v_min = v0 / check_number(fn, "final_div_factor", final_div_factor, low=1.0)
    end_up = pct * total - 1.0  # PyTorch's phase ends, kept as floats
    end_down = float(total - 1)

    def anneal(start: float, end: float, pct: jax.Array) -> jax.Array:
        return end + (start - end) / 2.0 * (1.0 + jnp.cos(math.pi * pct))

    def schedule(step: int | jax.Array) -> jax.Array:
        s = _float_step(fn, step)
        up = anneal(v0, peak, s / end_up)
        down = anneal(peak, v_min, jnp.minimum((s - end_up) / (end_down - end_up), 1.0))
        return jnp.where(s <= end_up, up, down)

    return _bounded(schedule, v_min, peak)
