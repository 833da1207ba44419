"""``TrainState``: everything a training step changes, as one pytree.

The stateful steps (``stateful=True`` in :mod:`fundl.train.steps`) carry it: the
parameters, the optimizer's state, the model's state (batch-norm statistics) and the
root of the model's randomness with a step count, from which each step derives its own
key — ``fold_in(key, step)`` — so no two steps, inside a scan or across a resume, draw
the same dropout mask. One pytree: donated, scanned, vmapped and checkpointed as one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fundl._validate import as_key
from fundl.optim.base import GradientTransformation

__all__ = ["TrainState"]


class TrainState(NamedTuple):
    """The state of a training run that a stateful step updates.

    Build one with :meth:`create`; a step returns the next one.

    Examples:
      A stateful step (``make_train_step(..., stateful=True)``) on a linear model; a
      model with batch norm or dropout would call ``model.apply_with_state(params,
      state, x, key=key, train=train)`` in the loss function:

      >>> def loss_fn(params, batch, *, state, key, train):
      ...     z = batch["x"] @ params["W"].T + params["b"][None]
      ...     return fundl.losses.mse(z, batch["y"]), {}, state
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]] * 2)
      >>> batch = {"x": x, "y": x @ jnp.array([[2.0], [-1.0]])}  # 8 examples, y = x (2, −1)ᵀ
      >>> params, opt = {"W": jnp.zeros((1, 2)), "b": jnp.zeros(1)}, fundl.optim.sgd(0.5)
      >>> train_state = fundl.train.TrainState.create(params, opt, key=0)
      >>> step = fundl.train.make_train_step(loss_fn, opt, stateful=True)
      >>> for _ in range(2):
      ...     train_state, metrics = step(train_state, batch)
      >>> int(train_state.step), train_state.params["W"].tolist(), train_state.model_state
      (2, [[1.5, -0.75]], {})
    """

    params: Any  # what the optimizer updates (a pytree of arrays)
    opt_state: Any  # the optimizer's state
    model_state: Any  # the model's state (running statistics), {} for a model without
    key: jax.Array  # the root key of the model's randomness: step t uses fold_in(key, t)
    step: jax.Array  # updates taken, int32 scalar

    @classmethod
    def create(
        cls, params: Any, optimizer: Any, *, model_state: Any = None, key: Any = 0
    ) -> TrainState:
        """The state before the first step: ``optimizer.init(params)``, step 0.

        Args:
          params: the initial parameters.
          optimizer: a ``fundl.optim`` transformation.
          model_state: the model's state (``model.init_state(...)``), or None for ``{}``.
          key: a PRNG key or int seed: the root of the model's randomness (dropout).
        """
        if not isinstance(optimizer, GradientTransformation):
            raise TypeError(
                "TrainState.create: optimizer must be a fundl.optim GradientTransformation, "
                f"got {optimizer!r}"
            )
        return cls(
            params,
            optimizer.init(params),
            {} if model_state is None else model_state,
            as_key("TrainState.create", key),
            jnp.zeros((), jnp.int32),
        )

    def step_key(self) -> jax.Array:
        """This step's key: ``fold_in(key, step)``."""
        return jax.random.fold_in(self.key, self.step)
