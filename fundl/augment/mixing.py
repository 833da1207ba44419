"""Mixup (Zhang et al., 2018): a batch mixed with a shuffled copy of itself, labels too."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fundl._validate import as_key, check_floating, check_number

__all__ = ["mixup"]


def mixup(key: Any, x: jax.Array, y: jax.Array, *, alpha: float) -> tuple[jax.Array, jax.Array]:
    """Mix a batch with a shuffled copy of itself: x̃ = λx + (1 − λ)x[π], ỹ = λy + (1 − λ)y[π].

    Zhang et al. (2018). One λ ~ Beta(α, α) for the batch and one random permutation π
    of its examples, from the two halves of ``jax.random.split(key)``. The labels must
    be one-hot or soft rows, (N, K): convert integer labels with
    ``jax.nn.one_hot(labels, K)``; ``fundl.losses.softmax_cross_entropy`` takes the
    mixed rows as they are. A batch-level transform that changes the labels, so it is
    called in the loss function (see docs/augment.md), not inside a layer.

    Args:
      key: a PRNG key (or an int seed).
      x: inputs (N, ...), floating.
      y: labels (N, K), floating, each row summing to 1.
      alpha: α > 0; small α keeps λ near 0 or 1 (0.2–0.4 on ImageNet, 1 is uniform).

    Returns:
      (x̃, ỹ), the shapes and dtypes of x and y; the rows of ỹ still sum to 1.

    Examples:
      With one-hot labels of the examples themselves, ỹ holds λ and 1 − λ, and x̃ = ỹ x:

      >>> x, y = jnp.arange(4.0).reshape(4, 1), jnp.eye(4)
      >>> x_mix, y_mix = fundl.augment.mixup(0, x, y, alpha=0.4)
      >>> y_mix.sum(axis=1).tolist(), bool(jnp.allclose(x_mix[:, 0], (y_mix * x.T).sum(1)))
      ([1.0, 1.0, 1.0, 1.0], True)

      In a loss function (``model`` a ``fundl.nn`` layer, 10 classes):

      ```python
      def loss_fn(params, batch, *, state, key, train):
          x, y = batch["x"], jax.nn.one_hot(batch["y"], 10)
          if train:
              mix_key, key = jax.random.split(key)
              x, y = fundl.augment.mixup(mix_key, x, y, alpha=0.2)
          logits, state = model.apply_with_state(params, state, x, key=key, train=train)
          return fundl.losses.softmax_cross_entropy(logits, y), {}, state
      ```
    """
    alpha = check_number("mixup", "alpha", alpha, low=0.0, low_open=True)
    key = as_key("mixup", key)
    check_floating("mixup", "floating-point inputs x", x)
    if jnp.ndim(y) != 2 or not jnp.issubdtype(jnp.result_type(y), jnp.floating):
        raise ValueError(
            f"mixup: y must be one-hot or soft labels of shape (N, K) and a floating dtype, "
            f"got {jnp.result_type(y)} of shape {jnp.shape(y)}; convert integer labels with "
            "jax.nn.one_hot(labels, K)"
        )
    if jnp.ndim(x) < 1 or jnp.shape(x)[0] != jnp.shape(y)[0]:
        raise ValueError(
            f"mixup: x and y must have the same batch size N, got x of shape {jnp.shape(x)} "
            f"and y of shape {jnp.shape(y)}"
        )
    x, y = jnp.asarray(x), jnp.asarray(y)
    key_lam, key_perm = jax.random.split(key)
    lam = jax.random.beta(
        key_lam, alpha, alpha, (), jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    )
    perm = jax.random.permutation(key_perm, jnp.shape(x)[0])

    def mix(v: jax.Array) -> jax.Array:
        weight = lam.astype(v.dtype)
        return weight * v + (1 - weight) * v[perm]

    return mix(x), mix(y)
