"""What a dataset is, and checking one.

A dataset is a pytree of arrays whose leaves share a leading dim n, the examples.
:func:`num_examples` reads n; :func:`validate` checks a whole dataset once, before
training on it. :func:`check_examples` (the check behind ``num_examples``, with the
calling function's name in its messages) and :func:`take` (examples by index, on the
host or on the device) are what fundl.data's other modules build on.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["num_examples", "validate", "check_examples", "take"]

# Examples are scanned this many values at a time, so a check on numpy data needs
# memory for one chunk, not for a boolean copy of the whole array.
_CHUNK_VALUES = 1 << 20


def _shape(leaf: Any) -> tuple[int, ...]:
    shape = getattr(leaf, "shape", None)
    return tuple(shape) if shape is not None else np.shape(leaf)


def check_examples(name: str, data: Any, *, nonempty: bool = False) -> int:
    """n, the leading dim every leaf of ``data`` shares; else ``ValueError`` from ``name``.

    The check behind :func:`num_examples`, for every fundl function that takes a
    dataset: its messages begin with ``name``, the calling function.

    Raises:
      ValueError: data has no array leaves, a leaf is 0-d, the leaves' leading dims
        differ (the message lists each key path with its size), or — with
        ``nonempty`` — n is 0.
    """
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
    n = sizes[0][1]
    if nonempty and n == 0:
        raise ValueError(f"{name}: data has no examples (leading dim 0)")
    return n


def num_examples(data: Any) -> int:
    """The number of examples n: the leading dim every leaf of ``data`` shares.

    Args:
      data: a pytree of arrays, e.g. ``{"x": (n, 64), "y": (n,)}``.

    Returns:
      n.

    Raises:
      ValueError: data has no leaves, a leaf is 0-d, or the leaves' leading dims differ
        (the message lists each key path with its size).

    Examples:
      >>> fundl.data.num_examples({"x": np.zeros((4, 3)), "y": np.zeros(4, np.int32)})
      4
      >>> fundl.data.num_examples({"x": np.zeros((4, 3)), "y": np.zeros(5)})
      Traceback (most recent call last):
      ValueError: num_examples: leaves disagree on the number of examples: ['x'] has 4, ['y'] has 5
    """
    return check_examples("num_examples", data)


def take(data: Any, indices: np.ndarray) -> Any:
    """The examples at ``indices``, from every leaf: ``leaf[indices]`` along axis 0.

    Numpy leaves are indexed with numpy (the result stays on the host), jax leaves with
    ``jnp.take`` (it stays on their device); the indices go to the device once per call.
    The caller guarantees the indices: ``jnp.take`` does not check bounds.

    Args:
      data: a pytree of arrays with a shared leading dim n.
      indices: a 1-d numpy integer array of example indices in [0, n).

    Returns:
      the pytree of ``data`` with ``len(indices)`` examples per leaf.
    """
    on_device = None

    def gather(leaf: Any) -> Any:
        nonlocal on_device
        if not isinstance(leaf, jax.Array):
            return leaf[indices]
        if on_device is None:
            on_device = jnp.asarray(indices)
        return jnp.take(leaf, on_device, axis=0)

    return jax.tree.map(gather, data)


def validate(data: Any, *, name: str = "data") -> int:
    """Check a dataset once, before training on it; return its number of examples n.

    Three checks, each a single pass over the data (numpy leaves on the host, a chunk
    at a time; jax leaves on their device), so nothing is left to check per batch:

    - the leaves are arrays sharing a leading dim n ≥ 1 (the checks and messages of
      :func:`num_examples`), of a numeric or bool dtype;
    - every floating leaf is finite: one NaN or inf among the inputs makes the loss NaN
      a few steps later, far from its cause;
    - every value fits the dtype JAX stores it in: while ``jax_enable_x64`` is off, a
      numpy int64 leaf becomes int32 (uint64: uint32, float64: float32), and a value
      outside that range would wrap (float64: become inf) without a word.

    Args:
      data: a pytree of numpy or jax arrays with a shared leading dim n.
      name: what the messages call the data, e.g. ``"train_data"``.

    Returns:
      n.

    Raises:
      ValueError: the structure is wrong, a leaf is not numeric, a floating leaf holds
        NaN or inf (the message gives ``name`` and the leaf's key path, how many values
        are non-finite and the first example holding one), or a value does not fit
        (the message gives the leaf, the value and its example, and the two fixes).

    Examples:
      >>> x = np.array([[0.0, 1.0], [0.5, 2.0]], np.float32)
      >>> fundl.data.validate({"x": x, "y": np.arange(2)}, name="train_data")
      2
      >>> x[1, 0] = np.nan
      >>> fundl.data.validate({"x": x, "y": np.arange(2)}, name="train_data")
      Traceback (most recent call last):
      ValueError: validate: train_data['x'] holds NaN or inf: 1 of its 4 values is non-finite,
      the first in example 1; clean or drop those examples before training
    """
    if not isinstance(name, str):
        raise ValueError(f"validate: name must be a str, got {name!r}")
    n = check_examples(f"validate: {name}", data, nonempty=True)
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if isinstance(leaf, jax.Array):
            _check_device_leaf(where, leaf)
        else:
            _check_host_leaf(where, np.asarray(leaf))
    return n


def _nonfinite_message(where: str, count: int, size: int, example: int) -> str:
    verb = "is" if count == 1 else "are"
    return (
        f"validate: {where} holds NaN or inf: {count} of its {size} values {verb} non-finite, "
        f"the first in example {example}; clean or drop those examples before training"
    )


@jax.jit
def _nonfinite_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    bad = ~jnp.isfinite(x).reshape(x.shape[0], -1)
    return jnp.sum(bad), jnp.argmax(jnp.any(bad, axis=1))


def _check_device_leaf(where: str, x: jax.Array) -> None:
    # Leaves on a device already have the dtype JAX keeps, so only finiteness is left.
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return
    count, first = (int(v) for v in jax.device_get(_nonfinite_stats(x)))
    if count:
        raise ValueError(_nonfinite_message(where, count, x.size, first))


def _check_host_leaf(where: str, x: np.ndarray) -> None:
    inexact = jnp.issubdtype(x.dtype, jnp.inexact)  # bfloat16 too, whose numpy kind is "V"
    if not (inexact or jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == np.bool_):
        raise ValueError(
            f"validate: {where} has dtype {x.dtype}; expected numbers or bools (arrays "
            f"of an integer, floating or bool dtype)"
        )
    stored = np.dtype(jax.dtypes.canonicalize_dtype(x.dtype))
    limit = None  # the range of the narrower dtype JAX stores x in, if it narrows it
    if stored != x.dtype and x.dtype.kind in "iu":
        limit = np.iinfo(stored)
    elif stored != x.dtype and x.dtype.kind == "f":
        limit = np.finfo(stored)
    rows = max(1, _CHUNK_VALUES // max(1, x[0].size))
    count, first = 0, -1
    for lo in range(0, len(x), rows):
        chunk = x[lo : lo + rows].reshape(min(rows, len(x) - lo), -1)
        if inexact:
            bad = ~np.isfinite(chunk)
            found = int(bad.sum())
            if found and first < 0:
                first = lo + int(np.argmax(bad.any(axis=1)))
            count += found
        if limit is not None and not count:
            _check_fits(where, chunk, lo, x.dtype, stored, limit)
    if count:
        raise ValueError(_nonfinite_message(where, count, x.size, first))


def _check_fits(where: str, chunk: np.ndarray, lo: int, dtype, stored, limit) -> None:
    outside = (chunk < limit.min) | (chunk > limit.max)
    if not outside.any():
        return
    row, col = np.unravel_index(int(np.argmax(outside)), outside.shape)
    value = chunk[row, col].item()
    result = "wrap around" if dtype.kind in "iu" else "become inf"
    raise ValueError(
        f"validate: {where} holds {value!r} (example {lo + int(row)}), outside the range "
        f"of {stored} [{limit.min}, {limit.max}]: with jax_enable_x64 off JAX stores "
        f"{dtype} as {stored}, and the value would {result}; enable x64 "
        f"(jax.config.update('jax_enable_x64', True)) or cast the leaf to a dtype that "
        f"holds it"
    )
