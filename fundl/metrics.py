"""Evaluation metrics (not differentiated) and the one rule for "best so far".

:func:`accuracy` scores predictions; :class:`Monitor` says which of two values of a
metric is better, the one rule early stopping, the checkpoint manager and ``fit``
share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import check_choice, check_label_range, check_number, check_unit_interval

__all__ = ["accuracy", "Monitor"]


@dataclasses.dataclass(frozen=True)
class Monitor:
    """A metric to watch and what counts as an improvement of it.

    A value improves on the best so far when it is better by more than ``min_delta``:
    ``value < best − min_delta`` for mode "min", ``value > best + min_delta`` for "max".
    A tie is not an improvement (so the earlier of two equal values stays the best),
    NaN never is, and the first non-NaN value always is.

    Args:
      name: the metric's key in the logs, e.g. "val_loss" or "val_accuracy".
      mode: "min" (lower is better, a loss) or "max" (higher is better, an accuracy).
      min_delta: the smallest change that counts, ≥ 0.

    Examples:
      >>> Monitor("val_accuracy", "max").improved(0.91, best=0.90)
      True
    """

    name: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Monitor: name must be a metric name (a str), got {self.name!r}")
        check_choice("Monitor", "mode", self.mode, ("min", "max"))
        object.__setattr__(
            self, "min_delta", check_number("Monitor", "min_delta", self.min_delta, low=0.0)
        )

    def improved(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` (``None``: nothing yet) by more than ``min_delta``."""
        value = _metric_value("value", value)
        if math.isnan(value):
            return False
        if best is None:
            return True
        best = _metric_value("best", best)
        if math.isnan(best):
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def best(self, values: Iterable[tuple[Any, float]]) -> tuple[Any, float] | None:
        """The first ``(tag, value)`` pair holding the best value, scanning in order.

        ``values`` are ``(tag, value)`` pairs (a step or an epoch and the metric);
        ``None`` when there is none or every value is NaN.
        """
        found = None
        for pair in values:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(
                    f"Monitor.best: values must be (tag, value) pairs, got an item {pair!r}"
                )
            tag, value = pair
            if self.improved(value, None if found is None else found[1]):
                found = (tag, float(value))
        return found


def _metric_value(arg: str, value: Any) -> float:
    """A metric value as a float (NaN allowed: it never improves); else ``ValueError``."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
        raise ValueError(f"Monitor.improved: {arg} must be a scalar metric value, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Monitor.improved: {arg} must be a scalar metric value, got {value!r}"
        ) from None


def accuracy(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose highest score is the label: mean(argmax(ŷ) = y).

    Args:
      scores: (N, K) logits or probabilities of K ≥ 2 classes (more leading axes are
        allowed: (..., N, K)); or (N, 1) probabilities of a binary output — sigmoid
        outputs, not logits — whose prediction is ŷ > 0.5. A 1-D score vector is
        refused as ambiguous: pass ``p[:, None]`` for N binary probabilities or
        ``z[None]`` for one example's K scores.
      labels: integer labels (N,) in [0, K), or float one-hot / probability targets
        (N, K) (their argmax is the label); for a binary output, labels of shape (N,)
        or (N, 1): integers 0/1, or floats in [0, 1] (the label is y > 0.5).

    Returns:
      a scalar in [0, 1]; NaN when any score or float label is NaN (NaN in gives NaN
      out, so a diverged model never scores well). Concrete (not traced) values are checked:
      labels outside the classes, and binary scores or float labels outside [0, 1]
      (logits, say), raise ``ValueError``. Under ``jit`` values cannot be read and are
      not checked: there an out-of-range label never matches and a binary logit is
      thresholded at 0.5 as if it were a probability.

    Examples:
      >>> float(fundl.metrics.accuracy(jnp.array([[0.1, 0.9], [0.8, 0.2]]), jnp.array([1, 1])))
      0.5
      >>> p = jnp.array([0.9, 0.2, 0.8, 0.95])  # sigmoid outputs of 4 examples
      >>> float(fundl.metrics.accuracy(p[:, None], jnp.array([1.0, 0.0, 0.0, 0.0])))
      0.5
    """
    scores, labels = _as_array("scores", scores), _as_array("labels", labels)
    nan = jnp.any(jnp.isnan(scores))
    if jnp.issubdtype(labels.dtype, jnp.inexact):
        nan = nan | jnp.any(jnp.isnan(labels))  # a NaN target is no label: NaN out
    if scores.ndim < 2:
        raise ValueError(
            "accuracy: scores must be (N, K) for K classes or (N, 1) binary probabilities, "
            f"got shape {scores.shape}; a 1-D vector is ambiguous: pass scores[:, None] "
            "for N binary probabilities or scores[None] for one example's K scores"
        )
    integer = jnp.issubdtype(labels.dtype, jnp.integer)
    if scores.shape[-1] == 1:  # one sigmoid output per example
        if labels.shape == scores.shape[:-1]:
            labels = labels[..., None]
        if labels.shape != scores.shape:
            raise ValueError(
                f"accuracy: labels of a binary output {scores.shape} must have shape "
                f"{scores.shape[:-1]} or {scores.shape}, got {labels.shape}"
            )
        check_unit_interval(
            "accuracy", "binary scores (N, 1)", scores, "pass jax.nn.sigmoid(logits), not logits"
        )
        if integer:
            check_label_range("accuracy", labels, 2, what="binary labels")
        else:
            check_unit_interval("accuracy", "float binary labels", labels, "pass 0/1 labels")
        hits = (scores > 0.5) == (labels.astype(scores.dtype) > 0.5)
    else:
        if not integer:
            if labels.shape != scores.shape:
                raise ValueError(
                    f"accuracy: one-hot targets must have the scores' shape {scores.shape}, "
                    f"got {labels.shape}"
                )
            labels = jnp.argmax(labels, axis=-1)
        elif labels.shape != scores.shape[:-1]:
            hint = ""
            if labels.shape == scores.shape:
                hint = f"; one-hot targets must be float, got {labels.dtype}: pass y.astype(float)"
            raise ValueError(
                f"accuracy: integer labels must have shape {scores.shape[:-1]} (scores without "
                f"the class axis), got {labels.shape}{hint}"
            )
        else:
            check_label_range("accuracy", labels, scores.shape[-1])
        hits = jnp.argmax(scores, axis=-1) == labels
    value = jnp.mean(hits.astype(jnp.float32))
    return jnp.where(nan, jnp.float32(jnp.nan), value)


def _as_array(arg: str, x: Any) -> jax.Array:
    """``x`` as an array; None, a dict or a string is a ``TypeError`` naming accuracy's ``arg``."""
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as error:
        raise TypeError(f"accuracy: {arg} must be an array, got {type(x).__name__}") from error
    return x
