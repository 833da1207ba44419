"""Hyperparameters held in the optimizer state (in the spirit of optax's ``inject_hyperparams``).

``inject_hyperparams(adam)(learning_rate=1e-3)`` builds Adam whose numeric
hyperparameters live in ``state.hyperparams`` as arrays. Changing one between calls
(``with_hyperparams(state, learning_rate=1e-4)``, or a plateau rule), or giving each
model of a ``vmap`` its own, changes array *values*, never the traced program: a
jitted step is not compiled again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fundl.optim.base import GradientTransformation, _is_number, _safe_increment

__all__ = ["inject_hyperparams", "with_hyperparams", "InjectState"]


class InjectState(NamedTuple):
    """State of an optimizer with injected hyperparameters."""

    count: jax.Array  # steps taken, int32 scalar (schedules are evaluated at it)
    hyperparams: dict[str, jax.Array]  # name -> current value, float scalar arrays
    inner: Any  # the optimizer's own state


def _is_injected(value: Any) -> bool:
    return _is_number(value) or isinstance(value, (jax.Array, np.ndarray, np.generic))


def inject_hyperparams(
    factory: Callable[..., GradientTransformation], *, static_args: tuple[str, ...] = ("mask",)
) -> Callable[..., GradientTransformation]:
    """Wrap an optimizer factory so its numeric hyperparameters live in the state.

    Numbers and arrays become arrays in ``state.hyperparams``; callables are schedules,
    evaluated at the step count each update and recorded there; everything else
    (bools, strings, dtypes) and the arguments named in ``static_args`` (by default
    ``mask``, a callable that is not a schedule) are passed to ``factory`` unchanged.

    Example:
      >>> opt = inject_hyperparams(adam)(learning_rate=1e-3)
      >>> state = opt.init(params)
      >>> state = with_hyperparams(state, learning_rate=3e-4)   # no recompilation
    """
    static_args = tuple(static_args)

    def build(**kwargs: Any) -> GradientTransformation:
        schedules = {k: v for k, v in kwargs.items() if callable(v) and k not in static_args}
        numbers = {k: v for k, v in kwargs.items() if k not in static_args and _is_injected(v)}
        static = {k: v for k, v in kwargs.items() if k not in schedules and k not in numbers}
        factory(**kwargs)  # validate the hyperparameters now, with the user's values

        def values_at(count: jax.Array, hyperparams: dict[str, jax.Array]) -> dict[str, jax.Array]:
            scheduled = {
                k: jnp.asarray(s(count), jnp.result_type(float)) for k, s in schedules.items()
            }
            return {**hyperparams, **scheduled}

        def init(params: Any) -> InjectState:
            count = jnp.zeros([], jnp.int32)
            numeric = {k: jnp.asarray(v, jnp.result_type(float)) for k, v in numbers.items()}
            hyperparams = values_at(count, numeric)
            return InjectState(count, hyperparams, factory(**static, **hyperparams).init(params))

        def update(updates: Any, state: InjectState, params: Any = None, **extra_args: Any):
            hyperparams = values_at(state.count, state.hyperparams)
            inner = factory(**static, **hyperparams)
            updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
            return updates, InjectState(_safe_increment(state.count), hyperparams, inner_state)

        return GradientTransformation(init, update)

    return build


def with_hyperparams(state: InjectState, **values: Any) -> InjectState:
    """A copy of ``state`` with new hyperparameter values (kept in their dtypes and shapes).

    Raises:
      TypeError: if ``state`` is not an :class:`InjectState`.
      ValueError: for a name the state does not hold.
    """
    if not isinstance(state, InjectState):
        raise TypeError(
            f"with_hyperparams: expected the state of an inject_hyperparams optimizer, got {type(state).__name__}"
        )
    unknown = sorted(set(values) - set(state.hyperparams))
    if unknown:
        raise ValueError(
            f"with_hyperparams: unknown hyperparameter(s) {unknown}; the state holds {sorted(state.hyperparams)}"
        )
    new = dict(state.hyperparams)
    for name, value in values.items():
        old = state.hyperparams[name]
        new[name] = jnp.broadcast_to(jnp.asarray(value, old.dtype), old.shape)
    return state._replace(hyperparams=new)
