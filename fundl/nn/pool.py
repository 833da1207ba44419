"""Pooling and flatten: ``max_pool``, ``avg_pool``, ``global_avg_pool``, ``flatten`` and
their layers ``MaxPool1D``, ``MaxPool2D``, ``AvgPool1D``, ``AvgPool2D``,
``GlobalAvgPool``, ``Flatten``.

Inputs are channels-last, (*batch, *spatial, C) — NHWC images, (N, W, C) sequences —
and a window (k_1, ..., k_d) pools the d spatial dims before the channels; leading dims
are batch dims (none, one or several). Along a spatial dim of size n, with stride s and
padding (lo, hi), window i covers the padded positions i·s, ..., i·s + k − 1, and

    o = ⌊(n + lo + hi − k)/s⌋ + 1                       windows.

Padding: "VALID" (none; the last n − ((o − 1)s + k) positions are dropped), "SAME" (the
XLA/TensorFlow rule: o = ⌈n/s⌉, total padding p = max((o − 1)s + k − n, 0), lo = ⌊p/2⌋,
hi = p − lo, the extra one at the end), an int, d ints (the same on both sides) or d
(lo, hi) pairs. Each side's padding is smaller than the window, so every window holds
at least one element of the input.

Max pooling pads with −∞: padding never wins. Its gradient goes to each window's
arg-max; with ties, the first maximal element in row-major order takes the whole
gradient (what XLA's select-and-scatter, and so autodiff of ``lax.reduce_window``, and
PyTorch do). Average pooling divides each window's sum by k_1·...·k_d
(``count_include_pad=True``, PyTorch's and Flax's default) or by the number of input
elements in it (``False``; TensorFlow's "SAME" average pooling).

``max_pool`` and ``avg_pool`` check and resolve their options (SAME to pairs) and call
the primitives ``_max_pool`` and ``_avg_pool``, whose options are those resolved tuples;
``global_avg_pool`` is itself a primitive. ``flatten`` is a reshape, differentiated by
JAX: a reshape's gradient is the reshape back, there is no rule to write.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fundl._validate import check_bool, check_floating, check_int
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.rules import Static, primitive
from fundl.tree import accumulation_dtype

__all__ = [
    "AvgPool1D",
    "AvgPool2D",
    "Flatten",
    "GlobalAvgPool",
    "MaxPool1D",
    "MaxPool2D",
    "avg_pool",
    "flatten",
    "global_avg_pool",
    "max_pool",
]

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


# --- options: window, stride, padding -------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _layout(d: int) -> str:
    """The input layout a d-D window pools, e.g. "(..., H, W, C)"."""
    spatial = ("D", "H", "W")[-d:] if d <= 3 else (f"{d} spatial dims",)
    return f"(..., {', '.join(spatial)}, C)"


def _ints(name: str, arg: str, value: Any, d: int) -> tuple[int, ...]:
    """``value`` as d positive ints: an int for every spatial dim, or d of them."""
    if _is_int(value):
        value = (value,) * d
    if not isinstance(value, (tuple, list)) or len(value) != d:
        raise ValueError(
            f"{name}: {arg} must be a positive int or {d} positive ints (one per spatial dim), "
            f"got {value!r}"
        )
    return tuple(check_int(name, arg, v) for v in value)


def _padding(name: str, padding: Any, window: tuple[int, ...]) -> str | tuple:
    """The padding as "SAME", "VALID" or d (lo, hi) pairs of ints in [0, k)."""
    if isinstance(padding, str) and padding in ("SAME", "VALID"):
        return padding
    d = len(window)
    pairs = None
    if _is_int(padding):
        pairs = ((padding, padding),) * d
    elif isinstance(padding, (tuple, list)) and len(padding) == d:
        pairs = tuple(
            (p, p) if _is_int(p) else tuple(p) if isinstance(p, (tuple, list)) else (None,)
            for p in padding
        )
    if pairs is None or not all(
        len(p) == 2 and all(_is_int(v) and v >= 0 for v in p) for p in pairs
    ):
        raise ValueError(
            f"{name}: padding must be 'SAME', 'VALID', a non-negative int, {d} such ints or "
            f"{d} (lo, hi) pairs, got {padding!r}"
        )
    pairs = tuple((int(lo), int(hi)) for lo, hi in pairs)
    if any(lo >= k or hi >= k for (lo, hi), k in zip(pairs, window)):
        raise ValueError(
            f"{name}: padding must be smaller than the window on each side (a window of "
            f"padding alone has nothing to pool), got padding {pairs} for window {window}"
        )
    return pairs


def _options(
    name: str, window: Any, stride: Any, padding: Any, spatial_dims: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], str | tuple]:
    """(window, stride, padding) checked and normalized: d-tuples of positive ints (the
    stride is the window when None) and "SAME", "VALID" or d (lo, hi) pairs.

    Without ``spatial_dims`` (the functions) the window must be a tuple: its length is
    the number of spatial dims, which an int would leave open.
    """
    if spatial_dims is None:
        if not isinstance(window, (tuple, list)) or not window:
            raise ValueError(
                f"{name}: window must be a tuple of positive ints, one per spatial dim — (2,) "
                f"for sequences (N, W, C), (2, 2) for images (N, H, W, C) — got {window!r}"
            )
        spatial_dims = len(window)
    window = _ints(name, "window", window, spatial_dims)
    stride = window if stride is None else _ints(name, "stride", stride, spatial_dims)
    return window, stride, _padding(name, padding, window)


def _same(n: int, k: int, s: int) -> tuple[int, int]:
    """XLA's "SAME" padding: o = ⌈n/s⌉ windows, the odd one of the padding at the end."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _resolve(
    name: str, shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...], padding
) -> tuple[tuple[int, int], ...]:
    """The (lo, hi) pairs for an input of ``shape``; ``ValueError`` if the window cannot
    pool it (too few dims, or larger than the padded input)."""
    d = len(window)
    shape = tuple(shape)
    if len(shape) < d + 1:
        raise ValueError(
            f"{name}: expected an input {_layout(d)} for the {d}-D window {window}, "
            f"got shape {shape}"
        )
    spatial = shape[-d - 1 : -1]
    if padding == "VALID":
        pads = ((0, 0),) * d
    elif padding == "SAME":
        pads = tuple(_same(n, k, s) for n, k, s in zip(spatial, window, stride))
    else:
        pads = padding
    if any(n + lo + hi < k for n, k, (lo, hi) in zip(spatial, window, pads)):
        raise ValueError(
            f"{name}: the window {window} is larger than the input's spatial dims {spatial} "
            f"padded by {pads} (input shape {shape})"
        )
    return pads


def _output_spatial(spatial, window, stride, pads) -> tuple[int, ...]:
    """o = ⌊(n + lo + hi − k)/s⌋ + 1 per spatial dim."""
    return tuple(
        (n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(spatial, window, stride, pads)
    )


def _check_resolved(name: str, x: Any, window, stride, padding) -> None:
    """A primitive's check: a floating input, and options as the public function resolves them."""
    check_floating(name, "a floating-point input", x)
    expected_window, expected_stride, spec = _options(name, window, stride, padding)
    pads = _resolve(name, jnp.shape(x), expected_window, expected_stride, spec)
    if (window, stride, padding) != (expected_window, expected_stride, pads):
        raise ValueError(
            f"{name}: expected resolved options (window and stride as tuples of ints, padding "
            f"as (lo, hi) pairs, as {name.lstrip('_')} passes them), got window={window!r}, "
            f"stride={stride!r}, padding={padding!r}"
        )


# --- the window machinery the rules share ----------------------------------------------


def _full(ndim: int, per_dim: Sequence[Any], fill: Any) -> tuple[Any, ...]:
    """Per-spatial-dim values for an input of rank ``ndim``: ``fill`` on the batch dims
    and the channels."""
    return (fill,) * (ndim - len(per_dim) - 1) + tuple(per_dim) + (fill,)


def _offsets(window: tuple[int, ...]):
    """Every position in the window, in row-major order (the last dim fastest)."""
    return enumerate(itertools.product(*(range(k) for k in window)))


def _at_offset(xp: jax.Array, offset, stride, out) -> jax.Array:
    """The element at ``offset`` of every window, from the padded input: shape (…, *out, C)."""
    start = _full(xp.ndim, offset, 0)
    lead = xp.ndim - len(offset) - 1
    limit = (
        xp.shape[:lead]
        + tuple(f + s * (m - 1) + 1 for f, s, m in zip(offset, stride, out))
        + xp.shape[-1:]
    )
    return lax.slice(xp, start, limit, _full(xp.ndim, stride, 1))


def _place(c: jax.Array, offset, stride, pads, spatial) -> jax.Array:
    """The transpose of ``_at_offset`` (cropping the padding): an output-shaped ``c`` put
    back at the input positions of the windows' ``offset`` elements, zeros elsewhere.

    Output i lands at input position f − lo + i·s: a pad with interior s − 1, whose
    negative edges crop what fell in the padding.
    """
    out = c.shape[c.ndim - len(offset) - 1 : -1]
    config = [
        (f - lo, n - (f - lo) - (s * (m - 1) + 1), s - 1)
        for f, s, (lo, _), m, n in zip(offset, stride, pads, out, spatial)
    ]
    return lax.pad(c, jnp.zeros((), c.dtype), _full(c.ndim, config, (0, 0, 0)))


def _spatial(shape: tuple[int, ...], d: int) -> tuple[int, ...]:
    return tuple(shape[-d - 1 : -1])


# --- max pooling -----------------------------------------------------------------------


def _check_max_pool(x, *, window, stride, padding):
    _check_resolved("_max_pool", x, window, stride, padding)


@primitive(check=_check_max_pool)
def _max_pool(x, *, window=(), stride=(), padding=()):
    """Max pooling with resolved options: y = max of x over each window (−∞ padding).

    Backward: each output's gradient goes to its window's first maximal element in
    row-major order; an input that is the chosen maximum of several overlapping windows
    collects the sum of their gradients. Saves that element's position in the window
    per output (uint8 for windows of up to 256 elements) and x's shape — not x.

    Args:
      x: (*batch, *spatial, C), floating.
      window, stride: d-tuples of positive ints.
      padding: d (lo, hi) pairs, each side smaller than the window.

    Returns:
      (*batch, *o, C), x's dtype.
    """
    lowest = np.array(-np.inf, x.dtype)  # concrete: lax recognizes the max monoid
    pads = _full(x.ndim, padding, (0, 0))
    return lax.reduce_window(
        x, lowest, lax.max, _full(x.ndim, window, 1), _full(x.ndim, stride, 1), pads
    )


def _first_argmax(x, window, stride, padding) -> jax.Array:
    """Per output, the row-major position in its window of the element that takes its
    gradient: XLA's select-and-scatter rule, exactly.

    Walking the window in order, the chosen element stays unless it is not ≥ the next
    one: on numbers the first maximum wins ties; a NaN is chosen when reached and then
    left for the next element (NaN ≥ v is false), as autodiff of ``lax.reduce_window``
    does — so NaN inputs give the reference's gradients. Padding is −∞ and in order too.
    """
    lowest = np.array(-np.inf, x.dtype)  # concrete: lax recognizes the max monoid
    xp = lax.pad(x, lowest, _full(x.ndim, [(lo, hi, 0) for lo, hi in padding], (0, 0, 0)))
    out = _output_spatial(_spatial(x.shape, len(window)), window, stride, padding)
    dtype = jnp.uint8 if math.prod(window) <= 256 else jnp.int32
    chosen = position = None
    for k, offset in _offsets(window):
        v = _at_offset(xp, offset, stride, out)
        if k == 0:
            chosen, position = v, jnp.zeros(v.shape, dtype)
            continue
        moves = ~(chosen >= v)
        chosen = jnp.where(moves, v, chosen)
        position = jnp.where(moves, jnp.asarray(k, dtype), position)
    return position


def _max_pool_fwd(x, *, window, stride, padding):
    y = _max_pool.reference(x, window=window, stride=stride, padding=padding)
    return y, (_first_argmax(x, window, stride, padding), Static(x.shape))


def _max_pool_bwd(residuals, g, *, window, stride, padding):
    position, shape = residuals
    spatial = _spatial(shape.value, len(window))
    zero = jnp.zeros_like(g)
    dx = jnp.zeros(shape.value, g.dtype)
    for k, offset in _offsets(window):
        dx = dx + _place(jnp.where(position == k, g, zero), offset, stride, padding, spatial)
    return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: Sequence[int], *, stride=None, padding: Padding = "VALID"):
    """Max pooling over the spatial dims of channels-last input.

    y[..., i, c] = max over window i of x[..., c] (padding is −∞, never the max), with
    o = ⌊(n + lo + hi − k)/s⌋ + 1 windows per spatial dim. Backward: each output's
    gradient goes to its window's first maximal element in row-major order (see the
    module docstring), a hand-written rule that saves a uint8 position per output.

    Args:
      x: (*batch, *spatial, C), floating; the batch dims are optional.
      window: (k_1, ..., k_d), one per spatial dim: (2,) for (N, W, C), (2, 2) for
        (N, H, W, C).
      stride: an int or d ints; None (default) is the window: non-overlapping windows.
      padding: "VALID" (default), "SAME" (o = ⌈n/s⌉), an int, d ints, or d (lo, hi) pairs.

    Returns:
      (*batch, *o, C), x's dtype.

    Examples:
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> fundl.nn.max_pool(x, (2, 2))[0, :, :, 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
    """
    window, stride, spec = _options("max_pool", window, stride, padding)
    check_floating("max_pool", "a floating-point input", x)
    pads = _resolve("max_pool", jnp.shape(x), window, stride, spec)
    return _max_pool(x, window=window, stride=stride, padding=pads)


# --- average pooling -------------------------------------------------------------------


def _check_avg_pool(x, *, window, stride, padding, count_include_pad):
    _check_resolved("_avg_pool", x, window, stride, padding)
    check_bool("_avg_pool", "count_include_pad", count_include_pad)


def _divisor(shape, window, stride, padding, count_include_pad, dtype):
    """What each window's sum is divided by: k_1·...·k_d, or with ``count_include_pad``
    False the number of input elements in the window — a constant of shape
    (1, ..., *o, 1), the product of the per-dim counts, computed from shapes alone."""
    if count_include_pad:
        return float(math.prod(window))
    spatial = _spatial(shape, len(window))
    out = _output_spatial(spatial, window, stride, padding)
    counts = np.ones(())
    for n, k, s, (lo, _), m in zip(spatial, window, stride, padding, out):
        start = np.arange(m) * s - lo
        counts = np.multiply.outer(counts, np.minimum(start + k, n) - np.maximum(start, 0))
    return jnp.asarray(counts.reshape(_full(len(shape), out, 1)), dtype)


@primitive(check=_check_avg_pool)
def _avg_pool(x, *, window=(), stride=(), padding=(), count_include_pad=True):
    """Average pooling with resolved options: y = (sum of x over each window) / divisor.

    The divisor is k_1·...·k_d (``count_include_pad=True``) or the number of input
    elements in the window. Backward: every input element of a window gets the window's
    g/divisor, summed over the windows that hold it. Saves nothing but x's shape.
    Sums are taken in float32 at least.

    Args:
      x: (*batch, *spatial, C), floating.
      window, stride: d-tuples of positive ints.
      padding: d (lo, hi) pairs, each side smaller than the window.
      count_include_pad: whether padding counts in the divisor.

    Returns:
      (*batch, *o, C), x's dtype.
    """
    wide = x.astype(accumulation_dtype(x))
    sums = lax.reduce_window(
        wide,
        np.zeros((), wide.dtype),
        lax.add,
        _full(x.ndim, window, 1),
        _full(x.ndim, stride, 1),
        _full(x.ndim, padding, (0, 0)),
    )
    divisor = _divisor(x.shape, window, stride, padding, count_include_pad, wide.dtype)
    return (sums / divisor).astype(x.dtype)


def _avg_pool_fwd(x, *, window, stride, padding, count_include_pad):
    y = _avg_pool.reference(
        x, window=window, stride=stride, padding=padding, count_include_pad=count_include_pad
    )
    return y, Static(x.shape)


def _avg_pool_bwd(shape, g, *, window, stride, padding, count_include_pad):
    wide = accumulation_dtype(g)
    share = g.astype(wide) / _divisor(shape.value, window, stride, padding, count_include_pad, wide)
    spatial = _spatial(shape.value, len(window))
    dx = jnp.zeros(shape.value, wide)
    for _, offset in _offsets(window):
        dx = dx + _place(share, offset, stride, padding, spatial)
    return (dx.astype(g.dtype),)


_avg_pool.defvjp(_avg_pool_fwd, _avg_pool_bwd)


def avg_pool(
    x: jax.Array,
    window: Sequence[int],
    *,
    stride=None,
    padding: Padding = "VALID",
    count_include_pad: bool = True,
):
    """Average pooling over the spatial dims of channels-last input.

    y[..., i, c] = (Σ over window i of x[..., c]) / divisor, the divisor k_1·...·k_d
    (``count_include_pad=True``, PyTorch's and Flax's default) or the number of input
    elements in the window (``False``: padding does not dilute the mean; TensorFlow's
    "SAME" average pooling). Backward: each input gets g/divisor from every window that
    holds it (hand-written; saves nothing but the shape).

    Args:
      x: (*batch, *spatial, C), floating; the batch dims are optional.
      window: (k_1, ..., k_d), one per spatial dim.
      stride: an int or d ints; None (default) is the window.
      padding: "VALID" (default), "SAME", an int, d ints, or d (lo, hi) pairs.
      count_include_pad: whether padded positions count in the divisor.

    Returns:
      (*batch, *o, C), x's dtype, o = ⌊(n + lo + hi − k)/s⌋ + 1.

    Examples:
      >>> x = jnp.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
      >>> fundl.nn.avg_pool(x, (2,), stride=1, padding=1)[0, :, 0]         # (0+1)/2, ...
      Array([0.5, 1.5, 2.5, 1.5], dtype=float32)
      >>> fundl.nn.avg_pool(x, (2,), stride=1, padding=1, count_include_pad=False)[0, :, 0]
      Array([1. , 1.5, 2.5, 3. ], dtype=float32)
    """
    window, stride, spec = _options("avg_pool", window, stride, padding)
    check_bool("avg_pool", "count_include_pad", count_include_pad)
    check_floating("avg_pool", "a floating-point input", x)
    pads = _resolve("avg_pool", jnp.shape(x), window, stride, spec)
    return _avg_pool(
        x, window=window, stride=stride, padding=pads, count_include_pad=bool(count_include_pad)
    )


# --- global average pooling ------------------------------------------------------------


def _check_global_avg_pool(x):
    check_floating("global_avg_pool", "a floating-point input", x)
    if jnp.ndim(x) < 3:
        raise ValueError(
            f"global_avg_pool: expected an input (N, *spatial, C) with at least one spatial "
            f"dim, got shape {jnp.shape(x)}"
        )


@primitive(check=_check_global_avg_pool)
def global_avg_pool(x):
    """The mean over every spatial position: (N, *spatial, C) -> (N, C).

    y[n, c] = (1/P) Σ_p x[n, p, c], P = the number of spatial positions (H·W for images).
    Backward: dx[n, p, c] = g[n, c]/P, broadcast over the positions; saves nothing but
    x's shape. The sum is taken in float32 at least.

    Args:
      x: (N, *spatial, C), floating: the first axis is the batch, the last the channels.

    Returns:
      (N, C), x's dtype.

    Examples:
      >>> fundl.nn.global_avg_pool(jnp.arange(8.0).reshape(1, 2, 2, 2))
      Array([[3., 4.]], dtype=float32)
    """
    wide = x.astype(accumulation_dtype(x))
    return jnp.mean(wide, axis=tuple(range(1, x.ndim - 1))).astype(x.dtype)


def global_avg_pool_fwd(x):
    return global_avg_pool.reference(x), Static(x.shape)


def global_avg_pool_bwd(shape, g):
    shape = shape.value
    share = g.astype(accumulation_dtype(g)) / math.prod(shape[1:-1])
    keep = share.reshape(shape[:1] + (1,) * (len(shape) - 2) + shape[-1:])
    return (jnp.broadcast_to(keep, shape).astype(g.dtype),)


global_avg_pool.defvjp(global_avg_pool_fwd, global_avg_pool_bwd)


# --- flatten ---------------------------------------------------------------------------


def flatten(x: jax.Array, start_axis: int = -3) -> jax.Array:
    """Merge the axes from ``start_axis`` to the last into one: a reshape.

    (d_0, ..., d_{a−1}, d_a, ..., d_last) -> (d_0, ..., d_{a−1}, d_a·...·d_last). The
    default −3 flattens each image's (H, W, C) of an (N, H, W, C) batch, −2 a sequence's
    (W, C). No primitive: JAX differentiates a reshape (its gradient is the reshape back).

    Args:
      x: an array of rank ≥ 1.
      start_axis: the first axis merged, in [−rank, rank − 1].

    Returns:
      x reshaped, the same elements in the same (row-major) order.

    Examples:
      >>> fundl.nn.flatten(jnp.ones((8, 4, 4, 3))).shape
      (8, 48)
    """
    ndim = jnp.ndim(x)
    if not _is_int(start_axis) or not -ndim <= start_axis < ndim:
        raise ValueError(
            f"flatten: start_axis must be an axis of the input, in [{-ndim}, {ndim - 1}] for "
            f"shape {jnp.shape(x)}, got {start_axis!r}"
        )
    shape = jnp.shape(x)
    start = start_axis % ndim
    return jnp.reshape(x, shape[:start] + (math.prod(shape[start:]),))


# --- layers ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class _Pool(Layer):
    """What the pooling layers share: window, stride and padding, shapes and checks."""

    window: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = dataclasses.field(default=None, kw_only=True)
    padding: Padding = dataclasses.field(default="VALID", kw_only=True)

    spatial_dims: ClassVar[int]

    def __post_init__(self) -> None:
        name = type(self).__name__
        window, stride, padding = _options(
            name, self.window, self.stride, self.padding, self.spatial_dims
        )
        object.__setattr__(self, "window", window)
        if self.stride is not None:  # None stays: it reads "the window" in the repr
            object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "padding", padding)

    @property
    def _strides(self) -> tuple[int, ...]:
        """The stride per spatial dim (the window when ``stride`` is None)."""
        return self.window if self.stride is None else self.stride

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict:
        """No parameters: ``{}``."""
        del key, input_shape
        return {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(..., *spatial, C) -> (..., *o, C), o = ⌊(n + lo + hi − k)/s⌋ + 1.

        Raises ``ValueError`` naming the layer when the window cannot pool the input.
        """
        shape = as_input_shape(f"{type(self).__name__}.output_shape", input_shape)
        pads = _resolve(repr(self), shape, self.window, self._strides, self.padding)
        d = self.spatial_dims
        out = _output_spatial(_spatial(shape, d), self.window, self._strides, pads)
        return shape[: -d - 1] + out + shape[-1:]

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """``(pooled x, state)``; no parameters, no state, no randomness."""
        del key
        check_bool(repr(self), "train", train)
        check_floating(repr(self), "a floating-point input", x)
        self.output_shape(jnp.shape(x))  # the window must fit: say so with the layer's name
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        return self._pool(x), state

    def _pool(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, repr=False)
class _MaxPool(_Pool):
    kind: ClassVar[str] = "max_pool"

    def _pool(self, x: jax.Array) -> jax.Array:
        return max_pool(x, self.window, stride=self._strides, padding=self.padding)


@dataclasses.dataclass(frozen=True, repr=False)
class MaxPool1D(_MaxPool):
    """Max pooling over the W axis of (N, W, C) sequences (see :func:`max_pool`).

    Args:
      window: k, an int (or a 1-tuple).
      stride: s; None (default) is the window.
      padding: "VALID" (default), "SAME", an int, or ((lo, hi),).

    Takes (..., W, C), returns (..., ⌊(W + lo + hi − k)/s⌋ + 1, C). No parameters.

    Examples:
      >>> MaxPool1D(2).apply({}, jnp.array([[[1.0], [3.0], [2.0], [0.0]]]))[0, :, 0]
      Array([3., 2.], dtype=float32)
    """

    spatial_dims: ClassVar[int] = 1


@dataclasses.dataclass(frozen=True, repr=False)
class MaxPool2D(_MaxPool):
    """Max pooling over the H and W axes of NHWC images (see :func:`max_pool`).

    Args:
      window: (k_h, k_w), or an int for a square window.
      stride: an int or (s_h, s_w); None (default) is the window.
      padding: "VALID" (default), "SAME", an int, two ints or two (lo, hi) pairs.

    Takes (..., H, W, C), returns (..., o_h, o_w, C), o = ⌊(n + lo + hi − k)/s⌋ + 1.

    Examples:
      >>> MaxPool2D(2).output_shape((32, 32, 3))
      (16, 16, 3)
      >>> MaxPool2D(3, stride=2, padding="SAME").output_shape((32, 32, 3))
      (16, 16, 3)
    """

    spatial_dims: ClassVar[int] = 2


@dataclasses.dataclass(frozen=True, repr=False)
class _AvgPool(_Pool):
    count_include_pad: bool = dataclasses.field(default=True, kw_only=True)

    kind: ClassVar[str] = "avg_pool"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool(type(self).__name__, "count_include_pad", self.count_include_pad)
        object.__setattr__(self, "count_include_pad", bool(self.count_include_pad))

    def _pool(self, x: jax.Array) -> jax.Array:
        return avg_pool(
            x,
            self.window,
            stride=self._strides,
            padding=self.padding,
            count_include_pad=self.count_include_pad,
        )


@dataclasses.dataclass(frozen=True, repr=False)
class AvgPool1D(_AvgPool):
    """Average pooling over the W axis of (N, W, C) sequences (see :func:`avg_pool`).

    Args:
      window: k, an int (or a 1-tuple).
      stride: s; None (default) is the window.
      padding: "VALID" (default), "SAME", an int, or ((lo, hi),).
      count_include_pad: divide by k (True, default) or by the number of input elements
        in the window (False).

    Takes (..., W, C), returns (..., ⌊(W + lo + hi − k)/s⌋ + 1, C). No parameters.

    Examples:
      >>> layer = fundl.nn.AvgPool1D(2)
      >>> layer.apply({}, jnp.array([[[1.0], [3.0], [2.0], [6.0]]]))[0, :, 0]  # (1+3)/2, (2+6)/2
      Array([2., 4.], dtype=float32)
      >>> layer.output_shape((10, 8))
      (5, 8)
    """

    spatial_dims: ClassVar[int] = 1


@dataclasses.dataclass(frozen=True, repr=False)
class AvgPool2D(_AvgPool):
    """Average pooling over the H and W axes of NHWC images (see :func:`avg_pool`).

    Args:
      window: (k_h, k_w), or an int for a square window.
      stride: an int or (s_h, s_w); None (default) is the window.
      padding: "VALID" (default), "SAME", an int, two ints or two (lo, hi) pairs.
      count_include_pad: divide by k_h·k_w (True, default; PyTorch, Flax) or by the
        number of input elements in the window (False; TensorFlow's "SAME").

    Takes (..., H, W, C), returns (..., o_h, o_w, C). No parameters.

    Examples:
      >>> layer = AvgPool2D(2)
      >>> layer.apply({}, jnp.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0]
      Array([[ 2.5,  4.5],
             [10.5, 12.5]], dtype=float32)
    """

    spatial_dims: ClassVar[int] = 2


@dataclasses.dataclass(frozen=True, repr=False)
class GlobalAvgPool(Layer):
    """The mean over every spatial position of each channel: (..., *spatial, C) -> (..., C).

    The head of a ResNet: ``[..., GlobalAvgPool(), Dense(n_classes)]``. Computed with
    the :func:`global_avg_pool` primitive (its leading dims merged into one batch dim).

    Args:
      spatial_dims: how many axes before the channels are pooled: 2 (default) for NHWC
        images, 1 for (N, W, C) sequences. Shape inference needs it: the layer gets
        input shapes with or without the batch dim.

    Examples:
      >>> GlobalAvgPool().output_shape((7, 7, 512))
      (512,)
    """

    spatial_dims: int = dataclasses.field(default=2, kw_only=True)

    kind: ClassVar[str] = "global_avg_pool"

    def __post_init__(self) -> None:
        check_int("GlobalAvgPool", "spatial_dims", self.spatial_dims)
        object.__setattr__(self, "spatial_dims", int(self.spatial_dims))

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict:
        """No parameters: ``{}``."""
        del key, input_shape
        return {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(..., *spatial, C) -> (..., C)."""
        shape = as_input_shape(f"{type(self).__name__}.output_shape", input_shape)
        d = self.spatial_dims
        if len(shape) < d + 1:
            raise ValueError(f"{self!r}: expected an input {_layout(d)}, got shape {shape}")
        return shape[: -d - 1] + shape[-1:]

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """``(the mean of x over its spatial axes, state)``."""
        del key
        check_bool(repr(self), "train", train)
        check_floating(repr(self), "a floating-point input", x)
        out = self.output_shape(jnp.shape(x))
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        pooled = -self.spatial_dims - 1
        batch = math.prod(x.shape[:pooled])
        return global_avg_pool(x.reshape((batch,) + x.shape[pooled:])).reshape(out), state


@dataclasses.dataclass(frozen=True, repr=False)
class Flatten(Layer):
    """Merge the axes from ``start_axis`` to the last into one (see :func:`flatten`).

    Args:
      start_axis: a negative axis, counted from the end so that batch dims do not matter:
        −3 (default) flattens an image's (H, W, C), −2 a sequence's (W, C).

    Takes (..., d_a, ..., d_last), returns (..., d_a·...·d_last). No parameters.

    Examples:
      >>> Flatten().output_shape((5, 5, 16))
      (400,)
    """

    start_axis: int = -3

    kind: ClassVar[str] = "flatten"

    def __post_init__(self) -> None:
        if not _is_int(self.start_axis) or self.start_axis >= 0:
            raise ValueError(
                "Flatten: start_axis must be a negative int (counted from the last axis, so "
                f"the same with or without batch dims), got {self.start_axis!r}"
            )
        object.__setattr__(self, "start_axis", int(self.start_axis))

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict:
        """No parameters: ``{}``."""
        del key, input_shape
        return {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(..., d_a, ..., d_last) -> (..., d_a·...·d_last)."""
        shape = as_input_shape(f"{type(self).__name__}.output_shape", input_shape)
        if len(shape) < -self.start_axis:
            raise ValueError(
                f"{self!r}: start_axis={self.start_axis} needs an input with at least "
                f"{-self.start_axis} dims, got shape {shape}"
            )
        return shape[: self.start_axis] + (math.prod(shape[self.start_axis :]),)

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """``(x flattened, state)``."""
        del key
        check_bool(repr(self), "train", train)
        self.output_shape(jnp.shape(x))
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        return flatten(x, self.start_axis), state
