"""Gradient accumulation: one optimizer step per k micro-batches."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fundl.optim.base import (
    GradientTransformation,
    check_against_state,
    check_state,
    moments_like,
    validated,
)

__all__ = ["accumulate", "AccumulateState"]


class AccumulateState(NamedTuple):
    """State of gradient accumulation: the micro-batch count, the gradient sum, ``inner``'s state.

    Examples:
      >>> state = fundl.optim.accumulate(4, fundl.optim.sgd(0.1)).init({"w": jnp.zeros(2)})
      >>> int(state.mini_step), state.grad_sum["w"].shape, state.inner
      (0, (2,), EmptyState())
    """

    mini_step: jax.Array  # micro-batches seen since the last real step, int32 in [0, k)
    grad_sum: Any  # Σ g over those micro-batches, like params, at least float32
    inner: Any  # the wrapped optimizer's state


@validated
def accumulate(k: int, inner: GradientTransformation) -> GradientTransformation:
    """Average the gradients of k micro-batches, then take one step of ``inner``.

    On micro-batches 1..k−1 the updates are zero and ``inner``'s state is untouched; on
    the k-th, ``inner`` sees (1/k) Σ g — for a mean loss over equal micro-batches, the
    gradient of the whole batch — and the sum restarts. So k micro-batches of size b
    take the same steps as ``inner`` on batches of size k·b, with 1/k of the memory.

    Args:
      k: micro-batches per step, a positive integer.
      inner: the optimizer to step.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`AccumulateState`.

    Examples:
      Two micro-batches per step, with α = 1: no update, then −(1 + 3)/2 = −2:

      >>> opt = fundl.optim.accumulate(2, fundl.optim.sgd(1.0))
      >>> params = {"w": jnp.zeros(2)}
      >>> state, step = opt.init(params), jax.jit(opt.update)
      >>> for g in (1.0, 3.0):
      ...     updates, state = step({"w": jnp.full(2, g)}, state, params)
      ...     print(np.asarray(updates["w"], np.float64).round(4).tolist())
      [0.0, 0.0]
      [-2.0, -2.0]
    """

    def init(params: Any) -> AccumulateState:
        return AccumulateState(
            jnp.zeros([], jnp.int32), moments_like(params, None), inner.init(params)
        )

    def update(updates: Any, state: AccumulateState, params: Any = None, **extra_args: Any):
        check_state("accumulate", state, AccumulateState)
        check_against_state("accumulate", updates, state.grad_sum)
        grad_sum = jax.tree.map(lambda s, g: s + g.astype(s.dtype), state.grad_sum, updates)

        def step(_):
            mean = jax.tree.map(lambda s, g: (s / k).astype(g.dtype), grad_sum, updates)
            new_updates, new_inner = inner.update(mean, state.inner, params, **extra_args)
            zeros = jax.tree.map(jnp.zeros_like, grad_sum)
            return new_updates, AccumulateState(jnp.zeros([], jnp.int32), zeros, new_inner)

        def wait(_):
            zeros = jax.tree.map(jnp.zeros_like, updates)
            return zeros, AccumulateState(state.mini_step + 1, grad_sum, state.inner)

        return lax.cond(state.mini_step == k - 1, step, wait, None)

    return GradientTransformation(init, update)
