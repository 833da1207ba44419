"""Data: mini-batches, splits, standardization, one-hot labels and offline loaders.

A dataset is a pytree of arrays whose leaves share a leading dimension n, the examples:
``{"x": (n, 64) float32, "y": (n,) int32}`` or ``(x, y)``. A batch is the same pytree
with a leading dimension of at most ``batch_size``.

The order of an epoch is a pure function of ``(key, epoch)``:
``jax.random.permutation(jax.random.fold_in(key, epoch), n)``. So :func:`batches` (a
host-side iterator) and :func:`epoch_batches` (the whole epoch as one array pytree, for
``jit`` and ``lax.scan``) agree, and a run resumes at any cursor ``(epoch, start)``.

Nothing here downloads anything: :func:`load_digits` reads the 8×8 digits that ship
inside scikit-learn, and :func:`load_idx` / :func:`load_npz` read files you already have.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import check_int

__all__ = [
    "num_examples",
    "num_batches",
    "batches",
    "epoch_batches",
    "weighted_mean",
    "split",
    "standardize_stats",
    "standardize",
    "one_hot",
    "prefetch_to_device",
    "load_digits",
    "load_idx",
    "load_npz",
]


# --------------------------------------------------------------------------- checks


def _shape(leaf: Any) -> tuple[int, ...]:
    shape = getattr(leaf, "shape", None)
    return tuple(shape) if shape is not None else np.shape(leaf)


def _num_examples(name: str, data: Any) -> int:
    flat = jax.tree_util.tree_flatten_with_path(data)[0]
    if not flat:
        raise ValueError(
            f"{name}: data has no array leaves; expected a pytree of arrays sharing a "
            f"leading dim of examples, got {data!r}"
        )
    sizes = []
    for path, leaf in flat:
        where = jax.tree_util.keystr(path) or "(root)"
        shape = _shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"{name}: leaf {where} is 0-d (shape ()); every leaf needs a leading dim "
                f"of examples"
            )
        sizes.append((where, int(shape[0])))
    if len({size for _, size in sizes}) > 1:
        listing = ", ".join(f"{where} has {size}" for where, size in sizes)
        raise ValueError(f"{name}: leaves disagree on the number of examples: {listing}")
    return sizes[0][1]


def _check_nonempty(name: str, n: int) -> None:
    if n == 0:
        raise ValueError(f"{name}: data has no examples (leading dim 0)")


def _gather(leaf: Any, idx_np: np.ndarray, idx_jax: jax.Array | None) -> Any:
    """``leaf[idx]`` along axis 0, with jnp for jax arrays and numpy for everything else."""
    if isinstance(leaf, jax.Array):
        return jnp.take(leaf, idx_jax if idx_jax is not None else jnp.asarray(idx_np), axis=0)
    return leaf[idx_np]


def _is_jax(data: Any) -> bool:
    return any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(data))


# --------------------------------------------------------------------------- batching


def num_examples(data: Any) -> int:
    """The number of examples n: the leading dim every leaf of ``data`` shares.

    Args:
      data: a pytree of arrays, e.g. ``{"x": (n, 64), "y": (n,)}``.
    Returns: n.
    Raises:
      ValueError: data has no leaves, a leaf is 0-d, or the leaves' leading dims differ
        (the message lists each key path with its size).
    """
    return _num_examples("num_examples", data)


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """The number of batches in an epoch of n examples: ⌈n / b⌉, or ⌊n / b⌋ with ``drop_last``.

    Args:
      n: the number of examples (≥ 0).
      batch_size: b ≥ 1.
      drop_last: drop the final partial batch (n mod b examples) instead of yielding it.
    Returns: the number of batches.
    """
    n = check_int("num_batches", "n", n, low=0)
    batch_size = check_int("num_batches", "batch_size", batch_size, low=1)
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    data: Any,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    epoch: int = 0,
    start: int = 0,
    drop_last: bool = False,
) -> Iterator[Any]:
    """The batches of one epoch, in order, as an iterator.

    With ``key`` the epoch visits the examples in the order
    ``jax.random.permutation(jax.random.fold_in(key, epoch), n)``, so the order is a pure
    function of (key, epoch) and differs from epoch to epoch; without ``key`` it is
    0, 1, ..., n − 1. Batch i holds the examples at positions [i·b, (i+1)·b) of that
    order. The last batch has n mod b examples when b does not divide n, unless
    ``drop_last``. Numpy leaves are gathered with numpy (batches stay on the host), jax
    leaves with jnp (batches stay on their device).

    The cursor (``epoch``, ``start``) is all a run needs to resume: ``start`` = k skips
    the first k batches, so the batches from ``start=k`` are exactly the tail of the
    full epoch. ``start`` may equal the number of batches (the epoch was finished;
    nothing is yielded).

    Args:
      data: a pytree of arrays with a shared leading dim n.
      batch_size: b ≥ 1, the examples per batch.
      key: a PRNG key to shuffle with, or None for the stored order.
      epoch: the epoch number (≥ 0), folded into ``key``.
      start: the index of the first batch to yield, in [0, num_batches].
      drop_last: drop the final partial batch.
    Returns:
      an iterator of pytrees shaped like ``data`` with leading dim b (n mod b for a
      final partial batch). Arguments are checked when it is called, not when iterated.

    Example::

        for batch in batches({"x": x, "y": y}, 128, key=key, epoch=epoch):
            params, opt_state, metrics = step(params, opt_state, batch)
    """
    batch_size = check_int("batches", "batch_size", batch_size, low=1)
    epoch = check_int("batches", "epoch", epoch, low=0)
    start = check_int("batches", "start", start, low=0)
    n = _num_examples("batches", data)
    _check_nonempty("batches", n)
    if drop_last and batch_size > n:
        raise ValueError(
            f"batches: drop_last=True with batch_size {batch_size} > {n} examples leaves no "
            f"batch at all; lower batch_size or set drop_last=False"
        )
    count = num_batches(n, batch_size, drop_last=drop_last)
    if start > count:
        raise ValueError(
            f"batches: start must be in [0, {count}] (the number of batches of {n} examples "
            f"with batch_size {batch_size}, drop_last={drop_last}), got {start}"
        )
    return _iterate(data, batch_size, key, epoch, start, count, n)


def _iterate(data: Any, batch_size: int, key: Any, epoch: int, start: int, count: int, n: int):
    if key is None:
        for i in range(start, count):
            lo, hi = i * batch_size, min((i + 1) * batch_size, n)
            yield jax.tree.map(lambda leaf: leaf[lo:hi], data)
        return
    perm_jax = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    perm_np = np.asarray(perm_jax)  # one host copy per epoch; numpy leaves index with it
    on_device = _is_jax(data)
    for i in range(start, count):
        lo, hi = i * batch_size, min((i + 1) * batch_size, n)
        idx_jax = perm_jax[lo:hi] if on_device else None
        yield jax.tree.map(lambda leaf: _gather(leaf, perm_np[lo:hi], idx_jax), data)


def epoch_batches(data: Any, batch_size: int, key: jax.Array | None = None, epoch: Any = 0) -> Any:
    """One whole epoch as a single pytree of leaves shaped ``(num_batches, batch_size, ...)``.

    The order is the one :func:`batches` uses for the same (key, epoch) — a permutation
    by ``fold_in(key, epoch)``, or the stored order without ``key`` — and the batches are
    ``batches(data, batch_size, key=key, epoch=epoch, drop_last=True)`` stacked. The
    remainder (n mod batch_size examples, different ones each epoch when shuffled) is
    dropped, so every batch has the same shape and the result can feed ``lax.scan``.
    Built from jnp only, with no Python branch on values: it runs inside ``jax.jit``
    and ``epoch`` may be traced. The leaves come back as jax arrays.

    Args:
      data: a pytree of arrays with a shared leading dim n (pass it to the jitted
        function as an argument rather than closing over numpy arrays).
      batch_size: b, 1 ≤ b ≤ n (static).
      key: a PRNG key, or None for the stored order.
      epoch: the epoch number; a Python int or an integer scalar array, traced or not.
    Returns:
      the pytree of ``data`` with each leaf ``(n, ...)`` reshaped to ``(n // b, b, ...)``.

    Example::

        def run_epoch(params, opt_state, data, key, epoch):
            xs = epoch_batches(data, 128, key, epoch)
            return jax.lax.scan(step, (params, opt_state), xs)
    """
    batch_size = check_int("epoch_batches", "batch_size", batch_size, low=1)
    n = _num_examples("epoch_batches", data)
    _check_nonempty("epoch_batches", n)
    if batch_size > n:
        raise ValueError(
            f"epoch_batches: batch_size {batch_size} > {n} examples leaves no full batch; "
            f"lower batch_size"
        )
    if isinstance(epoch, (int, np.integer)):
        epoch = check_int("epoch_batches", "epoch", epoch, low=0)
    count = n // batch_size
    used = count * batch_size

    def cut(leaf: Any, idx: jax.Array | None) -> jax.Array:
        leaf = jnp.asarray(leaf)
        leaf = leaf[:used] if idx is None else jnp.take(leaf, idx, axis=0)
        return leaf.reshape((count, batch_size) + leaf.shape[1:])

    if key is None:
        return jax.tree.map(lambda leaf: cut(leaf, None), data)
    idx = jax.random.permutation(jax.random.fold_in(key, epoch), n)[:used]
    return jax.tree.map(lambda leaf: cut(leaf, idx), data)


def weighted_mean(values: Sequence[Any], weights: Sequence[Any]) -> Any:
    """Σᵢ vᵢ wᵢ / Σᵢ wᵢ over per-batch metrics, weighted by batch size.

    The epoch mean of a per-example metric from per-batch means: a final partial batch
    counts by its size, not as a whole batch. All values are fetched from the device in
    one transfer.

    Args:
      values: per-batch metrics — a list of dicts of scalars (same keys in each) or a
        list of scalars.
      weights: one non-negative weight per value (the batch sizes), not all zero.
    Returns:
      a dict of Python floats with the dicts' keys, or a float for scalar values.

    Example::

        weighted_mean([{"loss": 0.5}, {"loss": 2.0}], [4, 1])  # {"loss": 0.8}
    """
    values, weights = list(values), list(weights)
    if len(values) != len(weights):
        raise ValueError(
            f"weighted_mean: got {len(values)} values and {len(weights)} weights; "
            f"expected one weight (the batch size) per value"
        )
    if not values:
        raise ValueError("weighted_mean: got no values; expected at least one batch")
    w = np.asarray(jax.device_get(weights), np.float64)
    if w.ndim != 1:
        raise ValueError(f"weighted_mean: weights must be scalars, got an array of shape {w.shape}")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ValueError(
            f"weighted_mean: weights must be finite, non-negative and not all zero, "
            f"got {w.tolist()}"
        )
    values = jax.device_get(values)

    def column(get, label: str) -> np.ndarray:
        out = np.empty(len(values), np.float64)
        for i, v in enumerate(values):
            x = np.asarray(get(v))
            if x.ndim != 0:
                raise ValueError(
                    f"weighted_mean: values[{i}]{label} has shape {x.shape}; "
                    f"expected a scalar metric"
                )
            out[i] = x
        return out

    if isinstance(values[0], Mapping):
        keys = list(values[0])
        for i, v in enumerate(values):
            if not isinstance(v, Mapping) or set(v) != set(keys):
                got = sorted(v) if isinstance(v, Mapping) else type(v).__name__
                raise ValueError(
                    f"weighted_mean: values[{i}] has keys {got}, expected those of "
                    f"values[0]: {sorted(keys)}"
                )
        return {k: float(column(lambda v: v[k], f"[{k!r}]") @ w / w.sum()) for k in keys}
    for i, v in enumerate(values):
        if isinstance(v, Mapping):
            raise ValueError(f"weighted_mean: values[{i}] is a dict but values[0] is not")
    return float(column(lambda v: v, "") @ w / w.sum())


# --------------------------------------------------------------------------- splits and features


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
      key: a PRNG key to shuffle with, or None to keep the stored order.
    Returns:
      (first, second), two pytrees shaped like ``data`` with n₁ and n₂ examples.

    Example::

        train, valid = split({"x": x, "y": y}, 0.1, key=key)
    """
    n = _num_examples("split", data)
    if (fraction is None) == (sizes is None):
        raise ValueError(
            f"split: give exactly one of fraction and sizes, got fraction={fraction!r}, "
            f"sizes={sizes!r}"
        )
    if fraction is not None:
        number = isinstance(fraction, (int, float, np.floating)) and not isinstance(fraction, bool)
        if not (number and 0 < fraction < 1):
            raise ValueError(f"split: fraction must be a number in (0, 1), got {fraction!r}")
        n2 = max(1, round(n * float(fraction)))
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
    perm_jax = jax.random.permutation(key, n)
    perm_np = np.asarray(perm_jax)
    on_device = _is_jax(data)

    def take(lo: int, hi: int) -> Any:
        idx_jax = perm_jax[lo:hi] if on_device else None
        return jax.tree.map(lambda leaf: _gather(leaf, perm_np[lo:hi], idx_jax), data)

    return take(0, n1), take(n1, n1 + n2)


def _xp(x: Any):
    return np if isinstance(x, np.ndarray) else jnp


def _check_eps(name: str, eps: Any) -> None:
    is_number = isinstance(eps, (int, float)) and not isinstance(eps, bool)
    if not (is_number and math.isfinite(eps) and eps > 0):
        raise ValueError(f"{name}: eps must be a positive number, got {eps!r}")


def standardize_stats(
    x: Any, *, axis: int | tuple[int, ...] = 0, eps: float = 1e-8
) -> tuple[Any, Any]:
    """Per-feature mean and standard deviation, for :func:`standardize`.

    μ = mean(x, axis), σ = sqrt(mean((x − μ)², axis)) (the population std), computed in
    at least float32 (float64 for numpy input). A feature whose σ < eps — constant on
    these data, such as an image border that is always 0 — gets σ = 1, as scikit-learn's
    ``StandardScaler`` does, so it is centred but never divided by ~0, on these data or
    on new ones. Compute the stats on the training split only and apply the same
    (μ, σ) to validation and test data.

    Args:
      x: the training inputs, e.g. (n, features) or NHWC images with ``axis=(0, 1, 2)``
        for per-channel stats; numpy or jax.
      axis: the axis or axes to reduce (the examples, and any others to pool).
      eps: the threshold below which σ is treated as 0.
    Returns:
      (mean, std), with the reduced axes kept as size 1 so they broadcast against x;
      float dtype (x's own when it is floating, else float32); numpy for numpy input.
    """
    _check_eps("standardize_stats", eps)
    xp = _xp(x)
    x = xp.asarray(x)
    if x.ndim == 0:
        raise ValueError("standardize_stats: x must have at least 1 dim, got a scalar")
    out_dtype = x.dtype if xp.issubdtype(x.dtype, xp.floating) else np.dtype(np.float32)
    work = np.float64 if xp is np else jnp.promote_types(out_dtype, jnp.float32)
    x = x.astype(work)
    mean = xp.mean(x, axis=axis, keepdims=True)
    std = xp.sqrt(xp.mean(xp.square(x - mean), axis=axis, keepdims=True))
    std = xp.where(std < eps, xp.ones_like(std), std)
    return mean.astype(out_dtype), std.astype(out_dtype)


def standardize(x: Any, mean: Any, std: Any, *, eps: float = 1e-8) -> Any:
    """(x − μ) / max(σ, eps), elementwise: zero mean, unit variance per feature.

    σ is floored at eps so a constant feature cannot divide by zero (and
    :func:`standardize_stats` already gives such features σ = 1). Use the training
    split's (μ, σ) for every split.

    Args:
      x: inputs, numpy or jax; integer inputs (uint8 pixels) come back as floats.
      mean: μ from :func:`standardize_stats`, broadcastable against x.
      std: σ from :func:`standardize_stats`, broadcastable against x.
      eps: the floor on σ.
    Returns: the standardized x, numpy for numpy input, else jax.
    """
    _check_eps("standardize", eps)
    xp = _xp(x)
    return (x - mean) / xp.maximum(std, eps)


def one_hot(labels: Any, num_classes: int, *, dtype: Any = jnp.float32) -> jax.Array:
    """Integer labels (...) to one-hot rows (..., K): out[..., k] = 1 if label = k else 0.

    Args:
      labels: integer class labels in [0, K), any shape. Concrete labels are checked
        against the range; traced ones (inside ``jit``) are not, and an out-of-range
        traced label gives a row of zeros.
      num_classes: K ≥ 1.
      dtype: the output dtype.
    Returns: a jax array (..., K).
    Raises:
      TypeError: labels are not integers (e.g. float32 labels).
      ValueError: K is not a positive integer, or a concrete label lies outside [0, K).
    """
    num_classes = check_int("one_hot", "num_classes", num_classes, low=1)
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


def prefetch_to_device(
    iterator: Iterable[Any], size: int = 2, *, sharding: Any = None
) -> Iterator[Any]:
    """Yield the batches of ``iterator``, keeping ``size`` of them already sent to the device.

    Each batch is passed to ``jax.device_put`` (the default device, or ``sharding``, e.g.
    a ``NamedSharding`` splitting the batch over devices) ``size`` batches before the
    consumer asks for it. ``device_put`` is asynchronous, so the host-to-device copy of
    the next batches overlaps the step on the current one; no thread is needed.

    Args:
      iterator: any iterable of batch pytrees (e.g. :func:`batches`).
      size: how many batches to keep in flight, ≥ 1.
      sharding: a ``jax.sharding.Sharding`` or device for every leaf, or None for the
        default device.
    Returns: an iterator of the same batches, as jax arrays on the device.

    Example::

        for batch in prefetch_to_device(batches(train, 128, key=key, epoch=epoch)):
            params, opt_state, metrics = step(params, opt_state, batch)
    """
    size = check_int("prefetch_to_device", "size", size, low=1)
    return _prefetch(iter(iterator), size, sharding)


def _prefetch(it: Iterator[Any], size: int, sharding: Any) -> Iterator[Any]:
    queue: deque = deque()

    def enqueue(k: int) -> None:
        for _ in range(k):
            try:
                queue.append(jax.device_put(next(it), sharding))
            except StopIteration:
                return

    enqueue(size)
    while queue:
        batch = queue.popleft()
        enqueue(1)  # before yielding, so `size` batches travel while the consumer works
        yield batch


# --------------------------------------------------------------------------- loaders


def load_digits(*, as_float: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 handwritten digits (1797 examples, 10 classes), read offline.

    The data ship inside scikit-learn (the ``examples`` extra); nothing is downloaded.

    Args:
      as_float: return pixels as float32 scaled to [0, 1] (value / 16); else the raw
        values 0..16 as uint8.
    Returns:
      (x, y): x (1797, 64) — the 8×8 image flattened row by row — and y (1797,) int32
      in [0, 10), both numpy.
    Raises:
      ImportError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as _sklearn_load_digits
    except ImportError as err:
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'fundl[examples]' "
            "(or pip install scikit-learn)"
        ) from err
    x, y = _sklearn_load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32) if as_float else x.astype(np.uint8)
    return x, y.astype(np.int32)


# IDX type code -> (big-endian numpy dtype, name)
_IDX_TYPES = {
    0x08: (">u1", "ubyte"),
    0x09: (">i1", "sbyte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}


def _read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gzip or raw) into a native-endian numpy array."""
    with open(path, "rb") as f:
        raw = f.read()
    what = "bytes"
    # Trust the content, not the name: browsers often un-gzip a download but keep ".gz".
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"load_idx: {os.fspath(path)} starts with the gzip magic bytes 1f 8b but does "
                f"not decompress ({err}); the download may be truncated"
            ) from err
        what = "bytes once decompressed"
    path = os.fspath(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(
            f"load_idx: {path} is not an IDX file: expected the magic 00 00 <type> <ndim>, "
            f"found {raw[:4].hex(' ') or 'an empty file'}"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02x} ({name})" for c, (_, name) in _IDX_TYPES.items())
        raise ValueError(
            f"load_idx: {path} has unknown IDX type code 0x{code:02x} (magic {raw[:4].hex(' ')}); "
            f"known: {known}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"load_idx: {path} is truncated: its header needs {header} {what} for {ndim} dims, "
            f"found {len(raw)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[code][0])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "oversized"
        raise ValueError(
            f"load_idx: {path} is {problem}: shape {dims} of {_IDX_TYPES[code][1]} needs "
            f"{expected} {what} (header {header} + data {expected - header}), found {len(raw)}"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def load_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Read MNIST / Fashion-MNIST IDX files you already have (gzip or raw).

    IDX layout: the magic 00 00, a type code (0x08 ubyte, 0x09 sbyte, 0x0B short,
    0x0C int, 0x0D float, 0x0E double; big-endian), the number of dims, each dim as a
    big-endian uint32, then the values in C order. A file is decompressed when it starts
    with the gzip magic 1f 8b, whatever its name. Nothing is downloaded.

    Args:
      images_path: the images file, e.g. ``train-images-idx3-ubyte.gz`` (3 dims).
      labels_path: the labels file, e.g. ``train-labels-idx1-ubyte.gz`` (1 dim), or None.
    Returns:
      images (n, rows, cols) in the file's dtype (uint8 for MNIST), or
      (images, labels) with labels (n,) int32, as numpy arrays.
    Raises:
      ValueError: a bad magic or type code, a truncated or oversized file (the message
        gives the expected and actual sizes), wrong dims, or images and labels that
        disagree on n.
    """
    images = _read_idx(images_path)
    if images.ndim != 3:
        raise ValueError(
            f"load_idx: {os.fspath(images_path)} holds an array of shape {images.shape}; "
            f"images must have 3 dims (n, rows, cols)"
        )
    if labels_path is None:
        return images
    labels = _read_idx(labels_path)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"load_idx: {os.fspath(labels_path)} holds {labels.dtype} of shape {labels.shape}; "
            f"labels must be integers with 1 dim (n,)"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"load_idx: {os.fspath(images_path)} has {images.shape[0]} images but "
            f"{os.fspath(labels_path)} has {labels.shape[0]} labels"
        )
    return images, labels.astype(np.int32)


def load_npz(path: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read the arrays of a ``.npz`` file into a dict (no pickle: ``allow_pickle=False``).

    Args:
      path: the .npz file (from ``np.savez`` or ``np.savez_compressed``).
      keys: the names to read, or None for all.
    Returns: ``{name: array}`` in the order of ``keys`` (or of the file).
    Raises:
      KeyError: a requested key is not in the file (the message lists those that are).
    """
    if isinstance(keys, str):
        keys = [keys]
    with np.load(path, allow_pickle=False) as archive:
        available = list(archive.files)
        wanted = available if keys is None else list(keys)
        missing = [k for k in wanted if k not in available]
        if missing:
            raise KeyError(
                f"load_npz: {os.fspath(path)} has no {missing}; available keys: {available}"
            )
        return {k: archive[k] for k in wanted}
