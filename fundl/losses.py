"""Losses L(ŷ, y), each with its hand-written backward rule.

Reduction (keyword ``reduction``): "mean" (the default) averages, "sum" adds, "none"
returns the unreduced losses. The elementwise losses (``mse``, the two binary cross
entropies) reduce over every element, as PyTorch does; the categorical ones first sum
over the class axis (the last) and then reduce over the examples, so "none" gives one
loss per example.

The fused pairs have the notes' clean gradient: for sigmoid + binary cross-entropy
(:func:`binary_cross_entropy_with_logits`) and softmax + categorical cross-entropy
(:func:`softmax_cross_entropy`), dL/dz = (ŷ − y)/m with m the number of terms averaged.

Half-precision inputs (bfloat16, float16) are computed in float32 and rounded once: the
logs, exponentials and the reduction over every example run in float32 (as PyTorch's
autocast runs its losses), and the loss and the gradients come back in the inputs'
dtype. The backward rules keep only their inputs (and, for the softmax cross-entropy,
two numbers per example), so a bfloat16 loss keeps no float32 copy of its input alive.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fundl._validate import (
    check_array,
    check_choice,
    check_floating,
    check_label_range,
    check_number,
    check_unit_interval,
)
from fundl.activations import log_softmax, sigmoid
from fundl.rules import primitive
from fundl.tree import accumulation_dtype, is_weight, mask_tree

__all__ = [
    "mse",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "categorical_cross_entropy",
    "softmax_cross_entropy",
    "l2_penalty",
]

_REDUCTIONS = ("mean", "sum", "none")


# --- shared helpers ------------------------------------------------------------------


def _check_reduction(name: str, reduction: str) -> None:
    check_choice(name, "reduction", reduction, _REDUCTIONS)


def _check_float(name: str, what: str, x: Any) -> None:
    check_array(name, what, x)
    check_floating(name, f"floating-point {what}", x)


def _check_same_shape(name: str, predictions: Any, targets: Any) -> None:
    _check_float(name, "predictions", predictions)
    check_array(name, "targets", targets)
    if jnp.shape(predictions) != jnp.shape(targets):
        raise ValueError(
            f"{name}: targets must have the shape of the predictions {jnp.shape(predictions)}, "
            f"got {jnp.shape(targets)}"
        )


def _check_probabilities(name: str, probabilities: Any, remedy: str) -> None:
    """Concrete probabilities in [0, 1]: logits would be clipped to a near-perfect score."""
    check_unit_interval(
        name, "probabilities", probabilities, f"if these are logits (raw scores), use {remedy}"
    )


def _check_eps(name: str, eps: float | None) -> None:
    if eps is not None:
        check_number(name, "eps", eps, low=0.0, high=0.5, low_open=True, high_open=True)


def _wide(*arrays: jax.Array) -> Any:
    """Each array in the dtype the formula's result takes, widened to float32 at least.

    float32 and float64 inputs are returned as they are (the program is unchanged);
    bfloat16 and float16 ones are computed in float32 and rounded once, by the caller.
    Integer targets take the predictions' dtype, as the plain formula's promotion gives.
    """
    wide = accumulation_dtype(jnp.result_type(*arrays))
    cast = tuple(jnp.asarray(x).astype(wide) for x in arrays)
    return cast if len(cast) > 1 else cast[0]


def _reduce(losses: jax.Array, reduction: str) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(losses)
    if reduction == "sum":
        return jnp.sum(losses)
    return losses


def _expand(g: jax.Array, shape: tuple[int, ...], reduction: str) -> jax.Array:
    """The cotangent of each unreduced loss term, given the cotangent of the reduction."""
    if reduction == "none":
        return g
    if reduction == "mean":
        g = g / max(math.prod(shape), 1)
    return jnp.broadcast_to(g, shape)


def _cotangent_for(x: Any, value: jax.Array) -> jax.Array | None:
    """``value`` as the cotangent of input ``x``; ``None`` (no gradient) for integer x."""
    dtype = jnp.result_type(x)
    return value.astype(dtype) if jnp.issubdtype(dtype, jnp.floating) else None


def _clip_eps(eps: float | None, dtype: Any) -> float:
    return float(jnp.finfo(dtype).eps) if eps is None else eps


def _straight_through_clip(p: jax.Array, low: float, high: float) -> jax.Array:
    """clip(p, low, high) in value, identity in gradient."""
    return p + lax.stop_gradient(jnp.clip(p, low, high) - p)


def _is_integer(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.integer)


def _one_hot(labels: jax.Array, n_classes: int, dtype: Any) -> jax.Array:
    classes = jnp.arange(n_classes, dtype=labels.dtype).reshape((1,) * labels.ndim + (n_classes,))
    return (labels[..., None] == classes).astype(dtype)


def _valid_labels(labels: jax.Array, n_classes: int) -> jax.Array:
    return (labels >= 0) & (labels < n_classes)


def _categorical_targets(name: str, scores: Any, targets: Any) -> None:
    """Check class-axis targets: integer labels (shape[:-1]) or probabilities (same shape)."""
    _check_float(name, "scores", scores)
    shape = jnp.shape(scores)
    if len(shape) < 1:
        raise ValueError(f"{name}: expected scores with a class axis (last), got shape {shape}")
    n_classes = shape[-1]
    check_array(name, "targets", targets)
    if _is_integer(targets):
        if jnp.shape(targets) != shape[:-1]:
            raise ValueError(
                f"{name}: integer labels must have shape {shape[:-1]} (scores without the "
                f"class axis), got {jnp.shape(targets)}"
            )
        check_label_range(name, targets, n_classes)
        return
    _check_float(name, "targets (integer labels or class probabilities)", targets)
    if jnp.shape(targets) != shape:
        raise ValueError(
            f"{name}: one-hot or probability targets must have the scores' shape {shape}, "
            f"got {jnp.shape(targets)}; pass integer labels of shape {shape[:-1]} instead"
        )


def _categorical_dtype(scores: Any, targets: Any) -> Any:
    """The loss's dtype: the scores', promoted with probability targets (labels add none)."""
    return jnp.result_type(scores, *([] if _is_integer(targets) else [targets]))


def _as_distribution(targets: jax.Array, n_classes: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """(probabilities over classes, per-example validity) for labels or probabilities."""
    if _is_integer(targets):
        return _one_hot(targets, n_classes, dtype), _valid_labels(targets, n_classes)
    return targets.astype(dtype), jnp.ones(targets.shape[:-1], bool)


# --- mean squared error --------------------------------------------------------------


def _check_mse(predictions, targets, *, reduction):
    _check_reduction("mse", reduction)
    _check_same_shape("mse", predictions, targets)


@primitive(check=_check_mse)
def mse(predictions, targets, *, reduction="mean"):
    """Mean squared error: L = mean over elements of (ŷ − y)².

    Backward: dL/dŷ = 2(ŷ − y)/N (N elements for "mean"), dL/dy = −dL/dŷ. Saves only
    its inputs.

    Args:
      predictions: array ŷ of any shape.
      targets: array y of the same shape.
      reduction: "mean", "sum" or "none" (elementwise squares).

    Returns:
      a scalar, or for "none" an array of ŷ's shape.

    Examples:
      >>> y_hat, y = jnp.array([0.5, 2.0]), jnp.array([1.0, 1.0])
      >>> float(fundl.losses.mse(y_hat, y))  # ((−0.5)² + 1²) / 2
      0.625
      >>> [round(float(v), 4) for v in jax.grad(fundl.losses.mse)(y_hat, y)]  # 2(ŷ − y)/N
      [-0.5, 1.0]
    """
    out_dtype = jnp.result_type(predictions, targets)
    p, y = _wide(predictions, targets)
    diff = p - y
    return _reduce(diff * diff, reduction).astype(out_dtype)


def mse_fwd(predictions, targets, *, reduction):
    return mse.reference(predictions, targets, reduction=reduction), (predictions, targets)


def mse_bwd(residuals, g, *, reduction):
    predictions, targets = residuals
    p, y = _wide(predictions, targets)
    d_pred = 2 * (p - y) * _expand(g.astype(p.dtype), p.shape, reduction)
    return _cotangent_for(predictions, d_pred), _cotangent_for(targets, -d_pred)


mse.defvjp(mse_fwd, mse_bwd)


# --- binary cross-entropy ------------------------------------------------------------


def _check_bce(probabilities, targets, *, eps, reduction):
    _check_reduction("binary_cross_entropy", reduction)
    _check_eps("binary_cross_entropy", eps)
    _check_same_shape("binary_cross_entropy", probabilities, targets)
    _check_probabilities("binary_cross_entropy", probabilities, "binary_cross_entropy_with_logits")


@primitive(check=_check_bce)
def binary_cross_entropy(probabilities, targets, *, eps=None, reduction="mean"):
    """Binary cross-entropy on probabilities: L = −[y log ŷ + (1 − y) log(1 − ŷ)].

    ŷ is clipped to [eps, 1 − eps] in value only (eps defaults to the machine epsilon
    of ŷ's dtype), so log never sees 0 and a saturated ŷ still gets the gradient of the
    loss at the clipped value, pulling it back toward y.
    Backward: dL/dŷ = (ŷ − y)/(ŷ(1 − ŷ)) / N, dL/dy = log((1 − ŷ)/ŷ) / N.
    Prefer :func:`binary_cross_entropy_with_logits`: it is exact for any logit.

    Args:
      probabilities: ŷ in [0, 1], any shape.
      targets: y in [0, 1], same shape.
      eps: clipping margin, or None for the dtype's epsilon.
      reduction: "mean", "sum" or "none" (elementwise).

    Returns:
      a scalar, or for "none" an array of ŷ's shape.

    Raises:
      ValueError: for concrete probabilities outside [0, 1] (pass logits to
        :func:`binary_cross_entropy_with_logits` instead).

    Examples:
      >>> p, y = jnp.array([0.9, 0.2]), jnp.array([1.0, 0.0])
      >>> round(float(fundl.losses.binary_cross_entropy(p, y)), 4)  # −(log 0.9 + log 0.8)/2
      0.1643
      >>> dp = jax.grad(fundl.losses.binary_cross_entropy)(p, y)  # (ŷ − y)/(ŷ(1 − ŷ))/N
      >>> [round(float(v), 4) for v in dp]
      [-0.5556, 0.625]
    """
    out_dtype = jnp.result_type(probabilities, targets)
    eps = _clip_eps(eps, probabilities.dtype)
    p = _straight_through_clip(probabilities, eps, 1 - eps)
    p, y = _wide(p, targets)
    losses = -(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))
    return _reduce(losses, reduction).astype(out_dtype)


def binary_cross_entropy_fwd(probabilities, targets, *, eps, reduction):
    out = binary_cross_entropy.reference(probabilities, targets, eps=eps, reduction=reduction)
    return out, (probabilities, targets)


def binary_cross_entropy_bwd(residuals, g, *, eps, reduction):
    probabilities, targets = residuals
    eps_ = _clip_eps(eps, probabilities.dtype)
    p, y = _wide(jnp.clip(probabilities, eps_, 1 - eps_), targets)
    gl = _expand(g.astype(p.dtype), p.shape, reduction)
    d_p = gl * (p - y) / (p * (1 - p))
    d_targets = gl * (jnp.log1p(-p) - jnp.log(p))
    return _cotangent_for(probabilities, d_p), _cotangent_for(targets, d_targets)


binary_cross_entropy.defvjp(binary_cross_entropy_fwd, binary_cross_entropy_bwd)


def _check_bce_logits(logits, targets, *, reduction):
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    _check_same_shape("binary_cross_entropy_with_logits", logits, targets)


@primitive(check=_check_bce_logits)
def binary_cross_entropy_with_logits(logits, targets, *, reduction="mean"):
    """Sigmoid + binary cross-entropy, fused: L = BCE(σ(z), y), exact for any z.

    Computed as max(z, 0) − z·y + log(1 + e^{−|z|}).
    Backward (the notes' clean rule): dL/dz = (σ(z) − y)/N, dL/dy = −z/N. Saves z, y.

    Args:
      logits: z, any shape.
      targets: y in [0, 1], same shape.
      reduction: "mean", "sum" or "none" (elementwise).

    Returns:
      a scalar, or for "none" an array of z's shape.

    Examples:
      >>> z, y = jnp.array([2.0, -1.0]), jnp.array([1.0, 0.0])
      >>> round(float(fundl.losses.binary_cross_entropy_with_logits(z, y)), 4)
      0.2201
      >>> dz = jax.grad(fundl.losses.binary_cross_entropy_with_logits)(z, y)  # (σ(z) − y)/N
      >>> [round(float(v), 4) for v in dz]
      [-0.0596, 0.1345]
    """
    out_dtype = jnp.result_type(logits, targets)
    z, y = _wide(logits, targets)
    losses = jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    return _reduce(losses, reduction).astype(out_dtype)


def binary_cross_entropy_with_logits_fwd(logits, targets, *, reduction):
    out = binary_cross_entropy_with_logits.reference(logits, targets, reduction=reduction)
    return out, (logits, targets)


def binary_cross_entropy_with_logits_bwd(residuals, g, *, reduction):
    logits, targets = residuals
    z, y = _wide(logits, targets)
    gl = _expand(g.astype(z.dtype), z.shape, reduction)
    d_z = gl * (sigmoid.reference(z) - y)
    return _cotangent_for(logits, d_z), _cotangent_for(targets, -gl * z)


binary_cross_entropy_with_logits.defvjp(
    binary_cross_entropy_with_logits_fwd, binary_cross_entropy_with_logits_bwd
)


# --- categorical cross-entropy -------------------------------------------------------


def _check_cce(probabilities, targets, *, eps, reduction):
    _check_reduction("categorical_cross_entropy", reduction)
    _check_eps("categorical_cross_entropy", eps)
    _categorical_targets("categorical_cross_entropy", probabilities, targets)
    _check_probabilities(
        "categorical_cross_entropy", probabilities, "softmax_cross_entropy on the logits"
    )


@primitive(check=_check_cce)
def categorical_cross_entropy(probabilities, targets, *, eps=None, reduction="mean"):
    """Categorical cross-entropy on probabilities: L = −Σ_k y_k log ŷ_k per example.

    ŷ is clipped to [eps, 1] in value only (see :func:`binary_cross_entropy`).
    Backward: dL/dŷ = −y/ŷ / m, dL/dy = −log ŷ / m. Saves only its inputs. Prefer
    :func:`softmax_cross_entropy` on logits: exact and cheaper.

    Args:
      probabilities: ŷ of shape (..., K), each row a distribution (e.g. softmax output).
      targets: integer labels of shape (...) in [0, K), or one-hot / probability rows
        of shape (..., K).
      eps: clipping margin, or None for the dtype's epsilon.
      reduction: "mean", "sum" or "none" (one loss per example, shape (...)).

    Returns:
      a scalar, or for "none" an array of shape (...).

    Raises:
      ValueError: for concrete probabilities outside [0, 1] or labels out of [0, K).

    Examples:
      >>> p = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
      >>> labels = jnp.array([0, 2])  # −(log 0.7 + log 0.8)/2:
      >>> round(float(fundl.losses.categorical_cross_entropy(p, labels)), 4)
      0.2899
      >>> losses = fundl.losses.categorical_cross_entropy(p, labels, reduction="none")
      >>> [round(float(v), 4) for v in losses]
      [0.3567, 0.2231]
    """
    out_dtype = _categorical_dtype(probabilities, targets)
    p = _wide(_straight_through_clip(probabilities, _clip_eps(eps, probabilities.dtype), 1.0))
    y, valid = _as_distribution(targets, p.shape[-1], p.dtype)
    losses = -jnp.sum(y * jnp.log(p), axis=-1)
    return _reduce(jnp.where(valid, losses, jnp.nan), reduction).astype(out_dtype)


def categorical_cross_entropy_fwd(probabilities, targets, *, eps, reduction):
    out = categorical_cross_entropy.reference(probabilities, targets, eps=eps, reduction=reduction)
    return out, (probabilities, targets)


def categorical_cross_entropy_bwd(residuals, g, *, eps, reduction):
    probabilities, targets = residuals
    p = _wide(jnp.clip(probabilities, _clip_eps(eps, probabilities.dtype), 1.0))
    y, valid = _as_distribution(targets, p.shape[-1], p.dtype)
    gl = jnp.where(valid, _expand(g.astype(p.dtype), valid.shape, reduction), 0)[..., None]
    d_p = -gl * y / p
    return _cotangent_for(probabilities, d_p), _cotangent_for(targets, -gl * jnp.log(p))


categorical_cross_entropy.defvjp(categorical_cross_entropy_fwd, categorical_cross_entropy_bwd)


def _check_softmax_ce(logits, labels, *, label_smoothing, reduction):
    _check_reduction("softmax_cross_entropy", reduction)
    check_number(
        "softmax_cross_entropy",
        "label_smoothing",
        label_smoothing,
        low=0.0,
        high=1.0,
        high_open=True,
    )
    _categorical_targets("softmax_cross_entropy", logits, labels)


def _cross_entropy_terms(y: jax.Array, log_p: jax.Array) -> jax.Array:
    """−Σ_k y_k log p_k over the class axis, with 0·log 0 = 0.

    A class masked with a −inf logit has log p = −inf; where its target is 0 the term is
    0, not 0·(−inf) = NaN (the second ``where`` keeps autodiff of the reference finite).
    """
    absent = y == 0
    safe_log_p = jnp.where(absent, jnp.zeros_like(log_p), log_p)
    return -jnp.sum(jnp.where(absent, jnp.zeros_like(y), y * safe_log_p), axis=-1)


def _smoothed(y: jax.Array, label_smoothing: float) -> jax.Array:
    if label_smoothing == 0:
        return y
    return (1 - label_smoothing) * y + label_smoothing / y.shape[-1]


@primitive(check=_check_softmax_ce)
def softmax_cross_entropy(logits, labels, *, label_smoothing=0.0, reduction="mean"):
    """Softmax + categorical cross-entropy, fused: L = −Σ_k y_k log softmax(z)_k.

    With label smoothing ε the target is y' = (1 − ε) y + ε/K.
    Backward (the notes' clean rule): dL/dz = (softmax(z) − y')/m — computed as
    (softmax(z)·Σ_k y'_k − y')/m, exact also for targets whose sum is off one by
    rounding — and for probability targets dL/dy = −(1 − ε) log softmax(z)/m.
    Saves the logits, the labels and, per example, max_k z_k and log Σ_k e^{z_k − max z}
    (log softmax is recomputed from them). Masking works: a class whose logit is −inf gets
    probability 0 and, where its target is 0, adds nothing to the loss.
    Integer labels out of [0, K) raise a ValueError when the labels are concrete; under
    ``jit`` the loss of such an example is NaN (and its gradient zero).

    Args:
      logits: z of shape (..., K).
      labels: integer labels of shape (...) in [0, K), or one-hot / probability rows
        of shape (..., K).
      label_smoothing: ε in [0, 1).
      reduction: "mean", "sum" or "none" (one loss per example, shape (...)).

    Returns:
      a scalar, or for "none" an array of shape (...).

    Raises:
      ValueError: for concrete integer labels out of [0, K), or ε outside [0, 1).

    Examples:
      >>> z = jnp.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])  # m = 2 examples, K = 3
      >>> labels = jnp.array([0, 2])
      >>> round(float(fundl.losses.softmax_cross_entropy(z, labels)), 4)
      0.2513
      >>> dz = jax.grad(fundl.losses.softmax_cross_entropy)(z, labels)  # (softmax(z) − y)/m
      >>> [round(float(v), 4) for v in dz[0]]
      [-0.1674, 0.1224, 0.045]
    """
    log_p = log_softmax.reference(_wide(logits))
    return _softmax_cross_entropy(logits, labels, log_p, label_smoothing, reduction)


def _softmax_cross_entropy(logits, labels, log_p, label_smoothing, reduction):
    """The loss from log softmax(z) (float32 at least), in the dtype of the logits and labels."""
    out_dtype = _categorical_dtype(logits, labels)
    y, valid = _as_distribution(labels, log_p.shape[-1], log_p.dtype)
    losses = _cross_entropy_terms(_smoothed(y, label_smoothing), log_p)
    return _reduce(jnp.where(valid, losses, jnp.nan), reduction).astype(out_dtype)


def _log_softmax_parts(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(max_k z_k, log Σ_k e^{z_k − max z}) over the last axis, kept, float32 at least."""
    z = _wide(logits)
    peak = lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    return peak, jnp.log(jnp.sum(jnp.exp(z - peak), axis=-1, keepdims=True))


def _log_p(logits: jax.Array, peak: jax.Array, log_sum: jax.Array) -> jax.Array:
    """log softmax(z) = (z − max z) − log Σ e^{z − max z}, as ``log_softmax`` computes it."""
    return (_wide(logits) - peak) - log_sum


def softmax_cross_entropy_fwd(logits, labels, *, label_smoothing, reduction):
    peak, log_sum = _log_softmax_parts(logits)
    log_p = _log_p(logits, peak, log_sum)
    out = _softmax_cross_entropy(logits, labels, log_p, label_smoothing, reduction)
    return out, (logits, labels, peak, log_sum)


def softmax_cross_entropy_bwd(residuals, g, *, label_smoothing, reduction):
    logits, labels, peak, log_sum = residuals
    log_p = _log_p(logits, peak, log_sum)
    y, valid = _as_distribution(labels, log_p.shape[-1], log_p.dtype)
    gl = jnp.where(valid, _expand(g.astype(log_p.dtype), valid.shape, reduction), 0)[..., None]
    target = _smoothed(y, label_smoothing)
    # softmax(z)·Σ_k y_k − y: the notes' ŷ − y, exact also for targets that do not sum
    # to one in floating point (soft labels computed in float32, say).
    d_logits = gl * (jnp.exp(log_p) * jnp.sum(target, axis=-1, keepdims=True) - target)
    d_labels = -(1 - label_smoothing) * gl * log_p
    return _cotangent_for(logits, d_logits), _cotangent_for(labels, d_labels)


softmax_cross_entropy.defvjp(softmax_cross_entropy_fwd, softmax_cross_entropy_bwd)


# --- L2 penalty ----------------------------------------------------------------------


def _penalized(params: Any, include: Any) -> list[bool]:
    return mask_tree("l2_penalty", params, is_weight if include is None else include)


def _check_l2(params, lam, *, include):
    check_number("l2_penalty", "lam", lam, low=0.0, array=True)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), chosen in zip(flat, _penalized(params, include)):
        if chosen:
            check_floating(
                "l2_penalty", f"floating-point weights at params{jax.tree_util.keystr(path)}", leaf
            )


@primitive(check=_check_l2)
def l2_penalty(params, lam, *, include=None):
    """The notes' L2 term λ/2 Σ_l ‖W^[l]‖², over the weights of a parameter pytree.

    By default every leaf with two or more dims is a weight (dense W, conv kernels;
    ``fundl.tree.is_weight``); biases and normalization scales (vectors) are left out.
    ``include`` picks the leaves instead: a predicate ``(key_path, leaf) -> bool`` or a
    pytree of bools shaped like ``params``. Backward: dL/dW = λ W on the chosen leaves (0 on the
    rest), dL/dλ = ½ Σ ‖W‖².

    Args:
      params: any pytree of arrays.
      lam: λ ≥ 0, a number or a scalar array (so a sweep can ``vmap`` over it).
      include: optional predicate ``(key_path, leaf) -> bool`` or pytree of bools.

    Returns:
      a scalar.

    Examples:
      >>> params = {"W": jnp.array([[1.0, 2.0]]), "b": jnp.array([5.0])}
      >>> round(float(fundl.losses.l2_penalty(params, 0.1)), 4)  # 0.1/2 · (1 + 4); b left out
      0.25
      >>> grads = jax.grad(fundl.losses.l2_penalty)(params, 0.1)  # λ W, 0 for b
      >>> [round(float(v), 4) for v in grads["W"][0]], [float(v) for v in grads["b"]]
      ([0.1, 0.2], [0.0])
    """
    chosen = _penalized(params, include)
    out_dtype = jnp.result_type(lam, *jax.tree.leaves(params))
    wide = accumulation_dtype(out_dtype)  # bfloat16 weights are squared and summed in float32
    squares = [
        jnp.sum(jnp.square(leaf.astype(wide)))
        for leaf, c in zip(jax.tree.leaves(params), chosen)
        if c
    ]
    total = sum(squares, jnp.zeros((), wide))
    return (0.5 * jnp.asarray(lam).astype(wide) * total).astype(out_dtype)


def l2_penalty_fwd(params, lam, *, include):
    return l2_penalty.reference(params, lam, include=include), (params, lam)


def l2_penalty_bwd(residuals, g, *, include):
    params, lam = residuals
    leaves, treedef = jax.tree.flatten(params)
    wide = accumulation_dtype(g)
    g_lam = g.astype(wide) * jnp.asarray(lam).astype(wide)
    d_leaves = [
        (g_lam * w.astype(wide)).astype(w.dtype) if chosen else jnp.zeros_like(w)
        for w, chosen in zip(leaves, _penalized(params, include))
    ]
    d_lam = g * l2_penalty.reference(params, 1.0, include=include)
    return jax.tree.unflatten(treedef, d_leaves), _cotangent_for(lam, d_lam)


l2_penalty.defvjp(l2_penalty_fwd, l2_penalty_bwd)
