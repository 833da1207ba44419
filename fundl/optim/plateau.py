"""``reduce_on_plateau``: shrink the step when a monitored metric stops improving."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fundl.optim.base import GradientTransformation, check_state, in_dtype, scaled, validated

__all__ = ["reduce_on_plateau", "PlateauState"]


class PlateauState(NamedTuple):
    """State of ``reduce_on_plateau``; every field is a scalar array.

    Examples:
      >>> state = fundl.optim.reduce_on_plateau().init({"w": jnp.zeros(2)})
      >>> float(state.scale), float(state.best), int(state.plateau_count)
      (1.0, inf, 0)
    """

    scale: jax.Array  # the factor updates are multiplied by, float32, starts at 1
    best: jax.Array  # best averaged metric so far, float32, starts at +inf
    plateau_count: jax.Array  # observations without improvement, int32
    cooldown_count: jax.Array  # observations left before counting again, int32
    value_sum: jax.Array  # Σ metric over the current accumulation, float32
    value_count: jax.Array  # metrics in the current accumulation, int32


def _check_value(value: Any) -> None:
    """The metric must be a real scalar (NaN passes: it is data). Dtypes and shapes only."""
    dtype = getattr(value, "dtype", None)
    if dtype is None and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return
    real = dtype is not None and (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    )
    if not real or jnp.shape(value) != ():
        got = (
            f"an array of dtype {dtype} and shape {tuple(jnp.shape(value))}"
            if dtype is not None
            else f"{value!r:.60} (a {type(value).__name__})"
        )
        raise ValueError(
            "reduce_on_plateau: value must be the monitored metric as a real scalar (a number "
            f"or a 0-d array, e.g. the mean validation loss), got {got}"
        )


@validated
def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    *,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> GradientTransformation:
    """Multiply updates by a scale that shrinks by ``factor`` on a plateau of ``value``.

    Each update takes the monitored metric as ``update(..., value=metric)`` (lower is
    better, e.g. the validation loss). Metrics are averaged over ``accumulation_size``
    updates into one observation. An observation improves when it is below
    best − (rtol·|best| + atol); after ``patience`` observations in a row without
    improvement, scale ← max(scale·factor, min_scale), and the count waits ``cooldown``
    observations before starting again. Everything is jit-safe (no Python branching on
    the metric). Put it after the learning-rate scale: ``chain(adam(1e-3),
    reduce_on_plateau(0.5, 5))``. With per-epoch validation, pass the latest validation
    loss at every step and set ``accumulation_size`` to the steps per epoch.

    Args:
      factor: in (0, 1).
      patience: observations without improvement before a reduction, ≥ 1.
      rtol: the relative improvement threshold, ≥ 0.
      atol: the absolute improvement threshold, ≥ 0.
      cooldown: observations to wait after a reduction, ≥ 0.
      accumulation_size: updates averaged into one observation, ≥ 1.
      min_scale: the scale never goes below this, in [0, 1] (the scale starts at 1).

    Returns:
      a :class:`fundl.optim.GradientTransformation` with a :class:`PlateauState`;
      its ``update`` needs ``value=``.

    Examples:
      With patience 1 the scale halves after each observation that does not improve
      on the best (here 1.0):

      >>> opt = fundl.optim.reduce_on_plateau(factor=0.5, patience=1)
      >>> params, g = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
      >>> state, step = opt.init(params), jax.jit(opt.update)
      >>> for loss in (1.0, 1.0, 1.0):
      ...     updates, state = step(g, state, params, value=loss)
      ...     print(float(state.scale), np.asarray(updates["w"], np.float64).tolist())
      1.0 [1.0, 1.0]
      0.5 [0.5, 0.5]
      0.25 [0.25, 0.25]
    """

    def init(params: Any) -> PlateauState:
        del params
        return PlateauState(
            scale=jnp.ones([], jnp.float32),
            best=jnp.full([], jnp.inf, jnp.float32),
            plateau_count=jnp.zeros([], jnp.int32),
            cooldown_count=jnp.zeros([], jnp.int32),
            value_sum=jnp.zeros([], jnp.float32),
            value_count=jnp.zeros([], jnp.int32),
        )

    def update(
        updates: Any,
        state: PlateauState,
        params: Any = None,
        *,
        value: Any = None,
        **extra_args: Any,
    ):
        if value is None:
            raise ValueError(
                "reduce_on_plateau: update needs the monitored metric, "
                "update(grads, state, params, value=validation_loss)"
            )
        check_state("reduce_on_plateau", state, PlateauState)
        _check_value(value)
        value_sum = state.value_sum + jnp.asarray(value, jnp.float32)
        value_count = state.value_count + 1
        ready = value_count >= accumulation_size
        mean = value_sum / value_count.astype(value_sum.dtype)
        f32 = jnp.float32
        threshold = state.best - (in_dtype(rtol, f32) * jnp.abs(state.best) + in_dtype(atol, f32))
        improved = jnp.where(jnp.isinf(state.best), jnp.isfinite(mean), mean < threshold)
        in_cooldown = state.cooldown_count > 0
        plateau = jnp.where(improved | in_cooldown, 0, state.plateau_count + 1)
        reduce = plateau >= patience
        observed = PlateauState(
            scale=jnp.where(
                reduce,
                jnp.maximum(state.scale * in_dtype(factor, f32), in_dtype(min_scale, f32)),
                state.scale,
            ),
            best=jnp.where(improved, mean, state.best),
            plateau_count=jnp.where(reduce, 0, plateau),
            cooldown_count=jnp.where(reduce, cooldown, jnp.maximum(state.cooldown_count - 1, 0)),
            value_sum=jnp.zeros([], jnp.float32),
            value_count=jnp.zeros([], jnp.int32),
        )
        waiting = state._replace(value_sum=value_sum, value_count=value_count)
        new_state = jax.tree.map(lambda a, b: jnp.where(ready, a, b), observed, waiting)
        out = jax.tree.map(lambda u: scaled(u, new_state.scale), updates)
        return out, new_state

    return GradientTransformation(init, update)
