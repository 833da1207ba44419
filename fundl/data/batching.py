"""An epoch's mini-batches, in the order fixed by (key, epoch), and epoch means of their metrics.

:func:`batches` yields them one at a time on the host (or on the device, for jax data);
:func:`epoch_batches` gives the whole epoch as one array pytree for ``jit`` and
``lax.scan``. Both visit the examples in the order
``jax.random.permutation(jax.random.fold_in(key, epoch), n)``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import as_key, check_bool, check_int
from fundl.data.dataset import check_examples, take

__all__ = ["num_batches", "batches", "epoch_batches", "weighted_mean"]


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """The number of batches in an epoch of n examples: ⌈n / b⌉, or ⌊n / b⌋ with ``drop_last``.

    Args:
      n: the number of examples (≥ 0).
      batch_size: b ≥ 1.
      drop_last: drop the final partial batch (n mod b examples) instead of yielding it.

    Returns:
      the number of batches.

    Examples:
      >>> fundl.data.num_batches(10, 4), fundl.data.num_batches(10, 4, drop_last=True)
      (3, 2)
    """
    n = check_int("num_batches", "n", n, low=0)
    batch_size = check_int("num_batches", "batch_size", batch_size, low=1)
    drop_last = check_bool("num_batches", "drop_last", drop_last)
    return n // batch_size if drop_last else -(-n // batch_size)


@functools.partial(jax.jit, static_argnums=2)
def _order(key: jax.Array, epoch: Any, n: int) -> jax.Array:
    """The epoch's order of the examples: a permutation of [0, n) by ``fold_in(key, epoch)``.

    Compiled as one program (once per n): eagerly, the fold-in and the permutation's
    steps are each an op compiled on their own, a kernel each on a GPU.
    """
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


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
      data: a pytree of arrays with a shared leading dim n ≥ 1.
      batch_size: b ≥ 1, the examples per batch.
      key: a PRNG key (or an int seed) to shuffle with, or None for the stored order.
      epoch: the epoch number (≥ 0), folded into ``key``.
      start: the index of the first batch to yield, in [0, num_batches].
      drop_last: drop the final partial batch.

    Returns:
      an iterator of pytrees shaped like ``data`` with leading dim b (n mod b for a
      final partial batch). Arguments are checked when it is called, not when iterated.

    Examples:
      >>> data = {"x": np.zeros((5, 2)), "y": np.arange(5)}
      >>> [b["y"].tolist() for b in fundl.data.batches(data, 2)]
      [[0, 1], [2, 3], [4]]
      >>> key = jax.random.key(0)
      >>> [b["y"].tolist() for b in fundl.data.batches(data, 2, key=key, epoch=1)]
      [[0, 3], [1, 4], [2]]
      >>> [b["y"].tolist() for b in fundl.data.batches(data, 2, key=key, epoch=1, start=1)]
      [[1, 4], [2]]

      In a training loop, ``for batch in batches(data, 128, key=key, epoch=epoch):``
      then ``params, opt_state, metrics = step(params, opt_state, batch)``.
    """
    batch_size = check_int("batches", "batch_size", batch_size, low=1)
    epoch = check_int("batches", "epoch", epoch, low=0)
    start = check_int("batches", "start", start, low=0)
    drop_last = check_bool("batches", "drop_last", drop_last)
    key = None if key is None else as_key("batches", key)
    n = check_examples("batches", data, nonempty=True)
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
    order = None if key is None else _order(key, epoch, n)
    return _iterate(data, batch_size, order, start, count, n)


def _iterate(
    data: Any, batch_size: int, order: jax.Array | None, start: int, count: int, n: int
) -> Iterator[Any]:
    if order is not None:
        order = np.asarray(order)  # one host copy per epoch, when iteration begins
    for i in range(start, count):
        lo, hi = i * batch_size, min((i + 1) * batch_size, n)
        if order is None:
            yield jax.tree.map(lambda leaf: leaf[lo:hi], data)
        else:
            yield take(data, order[lo:hi])


def _check_epoch(epoch: Any) -> Any:
    if isinstance(epoch, (jax.Array, np.ndarray)):
        if epoch.ndim != 0 or not jnp.issubdtype(epoch.dtype, jnp.integer):
            raise ValueError(
                f"epoch_batches: epoch must be a non-negative integer or an integer scalar "
                f"array, got an array of dtype {epoch.dtype} and shape {epoch.shape}"
            )
        # A concrete array is checked as an int is (fold_in would read -1 as 2³² − 1);
        # a traced one cannot be, without a host sync inside jit.
        if not isinstance(epoch, jax.core.Tracer) and int(epoch) < 0:
            raise ValueError(f"epoch_batches: epoch must be non-negative, got {int(epoch)}")
        return epoch
    return check_int("epoch_batches", "epoch", epoch, low=0)


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
      key: a PRNG key (or an int seed), or None for the stored order.
      epoch: the epoch number ≥ 0; a Python int or an integer scalar array, traced or
        not (a traced one cannot be checked).

    Returns:
      the pytree of ``data`` with each leaf ``(n, ...)`` reshaped to ``(n // b, b, ...)``.

    Examples:
      The epoch of :func:`batches` above without its partial batch, fed to ``lax.scan``:

      >>> data = {"x": jnp.arange(10.0).reshape(5, 2), "y": jnp.arange(5)}
      >>> xs = fundl.data.epoch_batches(data, 2, jax.random.key(0), 1)
      >>> xs["x"].shape, xs["y"].tolist()
      ((2, 2, 2), [[0, 3], [1, 4]])
      >>> def body(total, batch):  # a training step would take (params, opt_state)
      ...     return total + batch["x"].sum(), batch["y"]
      >>> total, seen = jax.lax.scan(body, jnp.float32(0.0), xs)
      >>> float(total), seen.tolist()
      (36.0, [[0, 3], [1, 4]])
    """
    batch_size = check_int("epoch_batches", "batch_size", batch_size, low=1)
    epoch = _check_epoch(epoch)
    key = None if key is None else as_key("epoch_batches", key)
    n = check_examples("epoch_batches", data, nonempty=True)
    if batch_size > n:
        raise ValueError(
            f"epoch_batches: batch_size {batch_size} > {n} examples leaves no full batch; "
            f"lower batch_size"
        )
    count = n // batch_size
    used = count * batch_size
    idx = None if key is None else _order(key, epoch, n)[:used]

    def cut(leaf: Any) -> jax.Array:
        leaf = jnp.asarray(leaf)
        leaf = leaf[:used] if idx is None else jnp.take(leaf, idx, axis=0)
        return leaf.reshape((count, batch_size) + leaf.shape[1:])

    return jax.tree.map(cut, data)


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

    Examples:
      >>> fundl.data.weighted_mean([{"loss": 0.5}, {"loss": 2.0}], [4, 1])  # (4·0.5 + 2)/5
      {'loss': 0.8}
    """
    values, weights = list(values), list(weights)
    if len(values) != len(weights):
        raise ValueError(
            f"weighted_mean: got {len(values)} values and {len(weights)} weights; "
            f"expected one weight (the batch size) per value"
        )
    if not values:
        raise ValueError("weighted_mean: got no values; expected at least one batch")
    try:
        w = np.asarray(jax.device_get(weights), np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"weighted_mean: weights must be numbers (the batch sizes), got {weights!r}"
        ) from None
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
            # bfloat16 (a mixed-precision policy's metrics) is floating but not numpy's kind "f"
            if x.dtype.kind not in "biuf" and not jnp.issubdtype(x.dtype, jnp.floating):
                raise ValueError(
                    f"weighted_mean: values[{i}]{label} must be a real number, got {x.item()!r}"
                )
            out[i] = x.astype(np.float64)
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
