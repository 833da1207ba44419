"""The optimizer contract: gradient transformations, ``chain`` and ``apply_updates``.

A gradient transformation is a pair of pure functions (optax's contract):

    init(params) -> state
    update(updates, state, params=None, **extra_args) -> (updates, new_state)

``updates`` come in as gradients and leave as the step to add to the parameters;
``state`` is a pytree of arrays (step counts included), so ``update`` can be jitted,
vmapped, scanned, donated, checkpointed and sharded. Extra keyword arguments (such as
``value=`` for :func:`fundl.optim.reduce_on_plateau`) pass through :func:`chain` to
every transformation; the ones that do not use them ignore them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fundl.tree import check_same_structure

__all__ = [
    "GradientTransformation",
    "ScalarOrSchedule",
    "apply_updates",
    "chain",
    "identity",
    "stateless",
    "EmptyState",
    "MomentDtype",
]

ScalarOrSchedule = Any
"""A float (or scalar array), or a schedule ``step -> value``."""


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(updates, state, params=None, **extra) -> (updates, state)``."""

    init: Callable[..., Any]
    update: Callable[..., Any]


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def stateless(fn: Callable[[Any, Any], Any]) -> GradientTransformation:
    """A transformation without state from ``fn(updates, params) -> updates``."""

    def init(params: Any) -> EmptyState:
        del params
        return EmptyState()

    def update(updates: Any, state: EmptyState, params: Any = None, **extra_args: Any):
        return fn(updates, params), state

    return GradientTransformation(init, update)


def identity() -> GradientTransformation:
    """Leave updates unchanged."""
    return stateless(lambda updates, params: updates)


def _is_stateless(t: GradientTransformation) -> bool:
    """Whether ``t`` keeps no state: its state for an empty pytree is ``EmptyState()``."""
    try:
        return isinstance(t.init({}), EmptyState)
    except Exception:  # noqa: BLE001 - an init that needs real params keeps state
        return False


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transformations one after another: ``chain(clip_by_global_norm(1.0), adam(1e-3))``.

    Updates flow through each transformation in order. The state holds the states of
    the members that keep one (stateless members, such as clipping or a constant
    learning rate, are recognised when the chain is built): that state itself when
    one member keeps state — so ``adam(1e-3).init(params)`` is an ``AdamState`` —
    a tuple of them, in order, when several do, and ``EmptyState()`` when none does.
    Every node a compiled step's arguments carry costs host time on each call, which a
    small, dispatch-bound model feels (an extra level of nesting around Adam's state
    cost 10–20% of a 20 µs step). When ``params`` are given, the first mismatch
    between the gradients' and the parameters' structures raises a ``ValueError``
    naming its key path.
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise TypeError(f"chain: argument {i} is not a GradientTransformation, got {t!r}")
    stateful = [i for i, t in enumerate(transforms) if not _is_stateless(t)]

    def init(params: Any) -> Any:
        states = tuple(transforms[i].init(params) for i in stateful)
        return _pack(states)

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any):
        if params is not None:
            check_same_structure("update", updates, params, "grads", "params")
        states = dict(zip(stateful, _unpack(state, len(stateful))))
        for i, t in enumerate(transforms):
            updates, new = t.update(updates, states.get(i, EmptyState()), params, **extra_args)
            if i in states:
                states[i] = new
        return updates, _pack(tuple(states[i] for i in stateful))

    return GradientTransformation(init, update)


def _pack(states: tuple) -> Any:
    if not states:
        return EmptyState()
    return states[0] if len(states) == 1 else states


def _unpack(state: Any, n: int) -> tuple:
    if n == 0:
        return ()
    if n == 1:
        return (state,)
    if not (isinstance(state, tuple) and len(state) == n):
        raise ValueError(f"chain: expected a tuple of {n} states, got {type(state).__name__}")
    return state


def apply_updates(params: Any, updates: Any) -> Any:
    """params + updates, leaf by leaf, each result in its parameter's dtype.

    Raises ``ValueError`` naming the first key path where the structures differ.
    """
    check_same_structure("apply_updates", params, updates, "params", "updates")
    return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)


# --- helpers for the transformations ------------------------------------------------


def _is_number(x: Any) -> bool:
    """A Python number (not bool): checkable when a transformation is built."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_number(
    name: str,
    arg: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Validate a float hyperparameter at build time (arrays and schedules pass through).

    Raises ``ValueError(f"{name}: {arg} must be in [low, high), got value")``.
    """
    if callable(value) or not _is_number(value):
        return
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    ok = not math.isnan(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name}: {arg} must be in {interval}, got {value!r}")


def _value_at(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    """A hyperparameter's value at step ``count``: call a schedule, pass a number through."""
    return value(count) if callable(value) else value


MomentDtype = Any
"""Where moment estimates live: None (the default: the parameter's dtype, at least
float32, so bfloat16 parameters get float32 moments), "param" (the parameter's own
dtype), or a floating dtype."""


def _check_moment_dtype(name: str, moment_dtype: MomentDtype) -> None:
    if moment_dtype is None or (isinstance(moment_dtype, str) and moment_dtype == "param"):
        return
    try:
        ok = jnp.issubdtype(jnp.dtype(moment_dtype), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name}: moment_dtype must be None, 'param' or a floating dtype, got {moment_dtype!r}"
        )


def _moment_dtype(leaf: Any, moment_dtype: MomentDtype) -> Any:
    if moment_dtype is None:
        return jnp.promote_types(jnp.result_type(leaf), jnp.float32)
    if isinstance(moment_dtype, str):
        return jnp.result_type(leaf)
    return jnp.dtype(moment_dtype)


def _moments_like(params: Any, moment_dtype: MomentDtype) -> Any:
    """Zeros shaped like ``params``, each in its moment dtype."""
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _moment_dtype(p, moment_dtype)), params)


def _safe_increment(count: jax.Array) -> jax.Array:
    """count + 1, saturating at the int32 maximum instead of wrapping to negative."""
    return jnp.where(count < jnp.iinfo(jnp.int32).max, count + 1, count)
