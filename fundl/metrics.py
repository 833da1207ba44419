"""Evaluation metrics (not differentiated): accuracy."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["accuracy"]


def accuracy(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose highest score is the label: mean(argmax(ŷ) = y).

    Args:
      scores: logits or probabilities, (..., K); or (..., 1) for a binary output.
      labels: integer labels (...), or one-hot / probability targets (..., K).

    For K ≥ 2 the predicted class is argmax over the last axis. For a single output
    (shape (..., 1)) the prediction is ŷ > 0.5 — pass probabilities (sigmoid outputs),
    not logits — and labels are 0/1 of the same shape.
    Returns: a scalar in [0, 1].
    """
    scores = jnp.asarray(scores)
    labels = jnp.asarray(labels)
    if scores.ndim >= 1 and scores.shape[-1] == 1 and labels.shape == scores.shape:
        return jnp.mean(((scores > 0.5) == (labels > 0.5)).astype(jnp.float32))
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != scores.shape:
            raise ValueError(
                f"accuracy: one-hot targets must have the scores' shape {scores.shape}, got {labels.shape}"
            )
        labels = jnp.argmax(labels, axis=-1)
    if labels.shape != scores.shape[:-1]:
        raise ValueError(
            f"accuracy: integer labels must have shape {scores.shape[:-1]} (scores without the "
            f"class axis), got {labels.shape}"
        )
    return jnp.mean((jnp.argmax(scores, axis=-1) == labels).astype(jnp.float32))
