"""Transforms of a dataset: a train/validation split, feature standardization, one-hot labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import as_key, check_int, check_number
from fundl.data.dataset import check_examples, take

__all__ = ["split", "standardize_stats", "standardize", "one_hot"]


def split(
    data: Any,
    fraction: float | None = None,
    *,
    sizes: tuple[int, int] | None = None,
    key: jax.Array | None = None,
) -> tuple[Any, Any]:
    """Split the examples in two (train/validation): ``(first, second)``.

    Give either ``fraction``, the share of the examples that goes to the second part —
    n₂ = max(1, round(n·fraction)), n₁ = n − n₂ ≥ 1 — or ``sizes=(n₁, n₂)``, both ≥ 1
    with n₁ + n₂ ≤ n (the rest are left out). With ``key``, the examples are shuffled by
    ``jax.random.permutation(key, n)`` first, the same permutation for every leaf;
    without it, first = examples [0, n₁) and second = [n₁, n₁ + n₂). Numpy leaves stay
    numpy, jax leaves stay jax.

    Args:
      data: a pytree of arrays with a shared leading dim n.
      fraction: 0 < fraction < 1, the validation share.
      sizes: (n₁, n₂), instead of ``fraction``.
      key: a PRNG key (or an int seed) to shuffle with, or None to keep the stored order.

    Returns:
      (first, second), two pytrees shaped like ``data`` with n₁ and n₂ examples.

    Examples:
      >>> data = {"x": np.zeros((5, 2)), "y": np.arange(5)}
      >>> train, valid = fundl.data.split(data, sizes=(3, 1))  # stored order, one left out
      >>> train["y"].tolist(), valid["y"].tolist()
      ([0, 1, 2], [3])
      >>> train, valid = fundl.data.split(data, 0.4, key=jax.random.key(0))  # n₂ = 2
      >>> train["y"].tolist(), valid["y"].tolist()
      ([0, 1, 4], [3, 2])
    """
    n = check_examples("split", data)
    if (fraction is None) == (sizes is None):
        raise ValueError(
            f"split: give exactly one of fraction and sizes, got fraction={fraction!r}, "
            f"sizes={sizes!r}"
        )
    if fraction is not None:
        fraction = check_number(
            "split", "fraction", fraction, low=0, high=1, low_open=True, high_open=True
        )
        n2 = max(1, round(n * fraction))
        n1 = n - n2
        if n1 < 1:
            raise ValueError(
                f"split: fraction {fraction} of {n} examples leaves the first part empty; "
                f"use a smaller fraction or more data"
            )
    else:
        if not (isinstance(sizes, Sequence) and len(sizes) == 2):
            raise ValueError(f"split: sizes must be a pair (n1, n2), got {sizes!r}")
        n1 = check_int("split", "sizes[0]", sizes[0], low=1)
        n2 = check_int("split", "sizes[1]", sizes[1], low=1)
        if n1 + n2 > n:
            raise ValueError(f"split: sizes {n1} + {n2} = {n1 + n2} exceed the {n} examples")
    if key is None:
        first = jax.tree.map(lambda leaf: leaf[:n1], data)
        second = jax.tree.map(lambda leaf: leaf[n1 : n1 + n2], data)
        return first, second
    order = np.asarray(jax.random.permutation(as_key("split", key), n))
    return take(data, order[:n1]), take(data, order[n1 : n1 + n2])


def _xp(x: Any):
    return np if isinstance(x, np.ndarray) else jnp


def _check_numeric(name: str, arg: str, x: Any) -> None:
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == bool):
        raise ValueError(f"{name}: {arg} must hold numbers, got dtype {x.dtype}")


def _check_axis(x: Any, axis: Any) -> tuple[int, ...]:
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    valid = all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) and -x.ndim <= a < x.ndim
        for a in axes
    )
    normalized = tuple(int(a) % x.ndim for a in axes) if valid else ()
    if not (valid and axes and len(set(normalized)) == len(axes)):
        raise ValueError(
            f"standardize_stats: axis must be an int or a tuple of distinct ints in "
            f"[{-x.ndim}, {x.ndim}) for x of shape {tuple(x.shape)}, got {axis!r}"
        )
    return normalized


def standardize_stats(
    x: Any, *, axis: int | tuple[int, ...] = 0, eps: float = 1e-8
) -> tuple[Any, Any]:
    """Per-feature mean and standard deviation, for :func:`standardize`.

    μ = mean(x, axis), σ = sqrt(mean((x − μ)², axis)) (the population std), computed in
    at least float32 (float64 for numpy input) on x − x₀, x shifted by its first value
    along the reduced axes, so that a constant feature has σ = 0 exactly rather than the
    rounding error of μ. A feature whose σ < eps — constant on these data, such as an
    image border that is always 0 — gets σ = 1, as scikit-learn's
    ``StandardScaler`` does, so it is centred but never divided by ~0, on these data or
    on new ones. Compute the stats on the training split only and apply the same
    (μ, σ) to validation and test data.

    Args:
      x: the training inputs, e.g. (n, features) or NHWC images with ``axis=(0, 1, 2)``
        for per-channel stats; numpy or jax.
      axis: the axis or axes to reduce (the examples, and any others to pool).
      eps: the threshold below which σ is treated as 0, > 0.

    Returns:
      (mean, std), with the reduced axes kept as size 1 so they broadcast against x;
      float dtype (x's own when it is floating, else float32); numpy for numpy input.

    Raises:
      ValueError: x is 0-d or not numeric, ``axis`` is not a valid axis or tuple of
        distinct axes, a reduced axis has size 0, or eps ≤ 0.

    Examples:
      >>> x = np.array([[1.0, 5.0], [3.0, 5.0]])  # the second feature is constant
      >>> mean, std = fundl.data.standardize_stats(x)
      >>> mean.tolist(), std.tolist()  # σ = 1 where σ < eps
      ([[2.0, 5.0]], [[1.0, 1.0]])
    """
    eps = check_number("standardize_stats", "eps", eps, low=0, low_open=True)
    xp = _xp(x)
    x = xp.asarray(x)
    if x.ndim == 0:
        raise ValueError("standardize_stats: x must have at least 1 dim, got a scalar")
    _check_numeric("standardize_stats", "x", x)
    axis = _check_axis(x, axis)
    out_dtype = x.dtype if xp.issubdtype(x.dtype, xp.floating) else np.dtype(np.float32)
    work = np.float64 if xp is np else jnp.promote_types(out_dtype, jnp.float32)
    if any(x.shape[a] == 0 for a in axis):
        raise ValueError(
            f"standardize_stats: x of shape {tuple(x.shape)} has no values along axis "
            f"{axis}; the statistics of no examples are undefined (NaN)"
        )
    x = x.astype(work)
    # Shifted by the first value along the reduced axes: a constant feature then gives
    # differences of exactly 0 and σ = 0 exactly. Unshifted, the rounding of μ left
    # σ ≈ ulp(μ) > eps (1000.3 in float32: σ = 7e-4) and standardize mapped it to ±1.
    first = x[tuple(slice(0, 1) if a in axis else slice(None) for a in range(x.ndim))]
    diff = x - first
    shift = xp.mean(diff, axis=axis, keepdims=True)
    mean = first + shift
    std = xp.sqrt(xp.mean(xp.square(diff - shift), axis=axis, keepdims=True))
    std = xp.where(std < eps, xp.ones_like(std), std)
    return mean.astype(out_dtype), std.astype(out_dtype)


def standardize(x: Any, mean: Any, std: Any, *, eps: float = 1e-8) -> Any:
    """(x − μ) / max(σ, eps), elementwise: zero mean, unit variance per feature.

    σ is floored at eps so a constant feature cannot divide by zero (and
    :func:`standardize_stats` already gives such features σ = 1). Use the training
    split's (μ, σ) for every split. The arithmetic runs in x's dtype when x is
    floating, else in μ's floating dtype (float32 if μ has none), with x, μ and σ cast
    to it, so it needs no implicit dtype promotion.

    Args:
      x: inputs, numpy or jax; integer inputs (uint8 pixels) come back as floats.
      mean: μ from :func:`standardize_stats`, broadcastable against x.
      std: σ from :func:`standardize_stats`, broadcastable against x.
      eps: the floor on σ, > 0.

    Returns:
      the standardized x, numpy for numpy input, else jax.

    Examples:
      >>> x = np.array([[1.0, 5.0], [3.0, 5.0]])
      >>> mean, std = fundl.data.standardize_stats(x)
      >>> fundl.data.standardize(x, mean, std).tolist()
      [[-1.0, 0.0], [1.0, 0.0]]
      >>> fundl.data.standardize(np.array([[4, 5]], np.uint8), mean, std).tolist()
      [[2.0, 0.0]]
    """
    eps = check_number("standardize", "eps", eps, low=0, low_open=True)
    xp = _xp(x)
    x = xp.asarray(x)
    _check_numeric("standardize", "x", x)
    for arg, value in (("mean", mean), ("std", std)):
        shape = np.shape(value)
        try:
            fits = np.broadcast_shapes(x.shape, shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"standardize: {arg} of shape {shape} does not broadcast against x of "
                f"shape {x.shape}; pass the statistics standardize_stats gave for these features"
            )
    if xp.issubdtype(x.dtype, xp.floating):
        dtype = x.dtype
    elif hasattr(mean, "dtype") and jnp.issubdtype(mean.dtype, jnp.floating):
        dtype = mean.dtype
    else:
        dtype = np.dtype(np.float32)
    x, mean, std = (xp.asarray(v, dtype) for v in (x, mean, std))
    return (x - mean) / xp.maximum(std, xp.asarray(eps, dtype))


def one_hot(labels: Any, num_classes: int, *, dtype: Any = jnp.float32) -> jax.Array:
    """Integer labels (...) to one-hot rows (..., K): out[..., k] = 1 if label = k else 0.

    Args:
      labels: integer class labels in [0, K), any shape. Concrete labels are checked
        against the range; traced ones (inside ``jit``) are not, and an out-of-range
        traced label gives a row of zeros.
      num_classes: K ≥ 1.
      dtype: the output dtype (floating, integer or bool).

    Returns:
      a jax array (..., K).

    Raises:
      TypeError: labels are not integers (e.g. float32 labels).
      ValueError: K is not a positive integer, dtype is not a numeric dtype, or a
        concrete label lies outside [0, K).

    Examples:
      >>> fundl.data.one_hot(np.array([2, 0]), 3)
      Array([[0., 0., 1.],
             [1., 0., 0.]], dtype=float32)
    """
    num_classes = check_int("one_hot", "num_classes", num_classes, low=1)
    try:
        numeric = jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
    except TypeError:
        numeric = False
    if not numeric:
        raise ValueError(
            f"one_hot: dtype must be a numeric dtype such as jnp.float32, got {dtype!r}"
        )
    traced = isinstance(labels, jax.core.Tracer)
    if not traced and not isinstance(labels, (np.ndarray, jax.Array)):
        labels = np.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"one_hot: labels must have an integer dtype, got {labels.dtype}; cast class "
            f"indices with .astype(int32)"
        )
    if not traced and np.size(labels) > 0:
        host = np.asarray(labels)
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"one_hot: labels must lie in [0, {num_classes}), found min {lo} and max {hi}"
            )
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)
