"""Placing pytrees on a mesh: the batch split along the data axis, parameters replicated
or split (ZeRO/FSDP-style), and everything gathered back to the host.

Outside ``jit`` these put arrays where a data-parallel step wants them, each leaf sent
straight to its devices (no gather on one device first): a numpy batch goes from the
host to every device's slice. :class:`fundl.parallel.DataParallel` applies the same
rules inside a compiled step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from fundl.parallel.mesh import axis_size, check_mesh

__all__ = ["host_copy", "param_specs", "replicate", "shard_batch", "shard_params"]


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _already_on(leaf: jax.Array, sharding: NamedSharding) -> bool:
    """Whether ``leaf`` already has exactly ``sharding`` (nothing to move or relabel)."""
    try:
        return leaf.sharding == sharding
    except (AttributeError, TypeError):  # e.g. a tracer
        return False


def put(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """``leaf`` on ``sharding``. Across processes (a sharding some of whose devices this
    process cannot address), every process passes the same value and sends only its own
    devices' slices; a typed PRNG key travels as its key data."""
    if isinstance(leaf, jax.Array) and _already_on(leaf, sharding):
        return leaf  # as jax.device_put does: a donating step then consumes it
    if not isinstance(leaf, jax.Array):
        return jax.device_put(leaf, sharding)
    if sharding.is_fully_addressable:
        # a copy first: device_put gives the new array the caller's buffer on the device
        # they share (even with may_alias=False, JAX 0.6-0.10), and a donating step would
        # then delete the caller's original
        return jax.device_put(jax.device_put(leaf, may_alias=False), sharding)
    if _is_key(leaf):
        impl = jax.random.key_impl(leaf)
        data = put(jax.random.key_data(leaf), NamedSharding(sharding.mesh, PartitionSpec()))
        return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl), out_shardings=sharding)(
            data
        )
    if leaf.is_fully_addressable and not leaf.is_fully_replicated:
        leaf = np.asarray(leaf)
    elif not leaf.is_fully_addressable:
        return jax.device_put(leaf, sharding)  # already global: JAX reshards it
    return jax.device_put(np.asarray(leaf), sharding)


def batch_spec(axis: str, leading: int = 0) -> PartitionSpec:
    """The spec of a batch leaf: split along axis ``leading`` (0, or 1 under a scan's steps)."""
    return PartitionSpec(*([None] * leading), axis)


def check_batch(name: str, batch: Any, n_devices: int, axis: str, leading: int = 0) -> None:
    """``ValueError`` unless every leaf's batch dimension divides by the device count."""
    leaves = jax.tree_util.tree_flatten_with_path(batch)[0]
    if not leaves:
        raise ValueError(f"{name}: the batch has no arrays")
    for path, leaf in leaves:
        shape = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
        where = f"batch{jax.tree_util.keystr(path)}"
        if len(shape) <= leading:
            raise ValueError(
                f"{name}: {where} has shape {shape}: a batch leaf needs a leading batch axis to "
                f"split over the devices of mesh axis {axis!r}"
            )
        if shape[leading] % n_devices:
            raise ValueError(
                f"{name}: the batch size {shape[leading]} ({where}) does not divide by the "
                f"{n_devices} devices of mesh axis {axis!r}; use a batch size that is a multiple "
                f"of {n_devices} (with fit: drop_last=True drops an epoch's final partial batch)"
            )


def shard_batch(batch: Any, mesh: Any, *, axis: str = "data") -> Any:
    """Put each leaf of ``batch`` on the mesh, split along its leading (batch) axis.

    Device i of ``axis`` holds rows [i·b/n, (i+1)·b/n) of a batch of b examples over n
    devices; the slices go straight from the host to their devices. Other mesh axes, if
    any, hold copies. Under a step compiled for this mesh, a mean over the batch axis is
    the mean over the global batch: XLA adds the cross-device sum.

    Args:
      batch: a pytree of arrays (numpy or jax) of shape (b, ...), b divisible by the
        number of devices along ``axis``.
      mesh: a ``jax.sharding.Mesh`` (:func:`fundl.parallel.data_mesh`).
      axis: the mesh axis to split the batch along.

    Returns:
      the batch as ``jax.Array`` leaves with ``NamedSharding(mesh, P(axis))``.

    Examples:
      >>> mesh = fundl.parallel.data_mesh()
      >>> x = fundl.parallel.shard_batch(np.zeros((4 * jax.device_count(), 3)), mesh)
      >>> x.sharding.spec == jax.sharding.PartitionSpec("data")
      True
    """
    n = axis_size("shard_batch", mesh, axis)
    check_batch("shard_batch", batch, n, axis)
    sharding = NamedSharding(mesh, batch_spec(axis))
    return jax.tree.map(lambda leaf: put(leaf, sharding), batch)


def replicate(tree: Any, mesh: Any) -> Any:
    """A full copy of every leaf of ``tree`` on every device of ``mesh`` (``P()``).

    How parameters, optimizer and model state live in plain data parallelism: each
    device computes the gradient of its slice of the batch and XLA's all-reduce gives
    every copy the same update. Like ``jax.device_put``, a leaf already where it should
    be is returned as it is, not copied: a donating step then consumes it. Any other
    leaf is copied (even the copy on the device it came from), so the caller's array
    survives a donating step.

    Examples:
      >>> mesh = fundl.parallel.data_mesh()
      >>> w = fundl.parallel.replicate({"W": jnp.ones((2, 3))}, mesh)["W"]
      >>> w.sharding.is_fully_replicated
      True
    """
    check_mesh("replicate", mesh)
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda leaf: put(leaf, sharding), tree)


def leaf_spec(shape: tuple[int, ...], n_devices: int, axis: str) -> PartitionSpec:
    """The ZeRO/FSDP spec of one leaf: split along its largest dimension that divides by
    ``n_devices`` (the first such, on a tie), or replicated (``P()``) when none does."""
    candidates = [d for d, size in enumerate(shape) if size >= n_devices and size % n_devices == 0]
    if not candidates:
        return PartitionSpec()
    dim = max(candidates, key=lambda d: (shape[d], -d))
    return PartitionSpec(*([None] * dim), axis)


def param_specs(tree: Any, mesh: Any, *, axis: str = "data") -> Any:
    """The ZeRO/FSDP partition of ``tree``: a ``PartitionSpec`` per leaf.

    Each leaf is split along its largest dimension that divides by the number n of
    devices along ``axis`` (so each device stores 1/n of it); a leaf with no such
    dimension (a scalar, a bias of 10 on 8 devices) is replicated. PRNG keys are
    replicated. The rule depends only on shapes, so an optimizer state whose leaves
    mirror the parameters (Adam's moments) is split the same way.

    Args:
      tree: a pytree of arrays (or of ``jax.ShapeDtypeStruct``).
      mesh: a ``jax.sharding.Mesh``.
      axis: the mesh axis to split along.

    Returns:
      a pytree of ``PartitionSpec`` shaped like ``tree``.

    Examples:
      >>> mesh = fundl.parallel.data_mesh()
      >>> n = jax.device_count()
      >>> specs = fundl.parallel.param_specs({"W": jnp.ones((n, 4 * n)), "c": jnp.ones(())}, mesh)
      >>> specs["W"] == jax.sharding.PartitionSpec(None, "data"), specs["c"] == jax.sharding.PartitionSpec()
      (True, True)
    """
    n = axis_size("param_specs", mesh, axis)

    def spec(leaf: Any) -> PartitionSpec:
        if _is_key(leaf) or jnp.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            return PartitionSpec()
        return leaf_spec(tuple(np.shape(leaf)), n, axis)

    return jax.tree.map(spec, tree)


def shard_params(tree: Any, mesh: Any, *, axis: str = "data") -> Any:
    """Put ``tree`` on the mesh split ZeRO/FSDP-style (:func:`param_specs`): each device
    stores about 1/n of every large leaf instead of a full copy.

    For parameters or optimizer state too large to replicate. A step compiled for this
    mesh with ``shard_params=True`` gathers what each layer needs and keeps its outputs
    split the same way; the updates are the same as with :func:`replicate` (up to float
    reduction order).

    Examples:
      >>> mesh = fundl.parallel.data_mesh()
      >>> w = fundl.parallel.shard_params({"W": jnp.ones((4 * jax.device_count(), 3))}, mesh)
      >>> w["W"].sharding.spec == jax.sharding.PartitionSpec("data")
      True
    """
    specs = param_specs(tree, mesh, axis=axis)
    return jax.tree.map(lambda leaf, s: put(leaf, NamedSharding(mesh, s)), tree, specs)


def host_copy(tree: Any) -> Any:
    """Every leaf of ``tree`` whole, on this host: numpy arrays (PRNG keys as local keys).

    A leaf split across processes is gathered with ``process_allgather`` — a collective:
    in a multi-process run every process must call it, in the same order. One process
    alone holds everything already, and the copy is a plain ``device_get``.

    Examples:
      >>> fundl.parallel.host_copy({"W": jnp.ones(2)})
      {'W': array([1., 1.], dtype=float32)}
    """

    def copy(leaf: Any) -> Any:
        if _is_key(leaf):
            return jax.random.wrap_key_data(
                copy(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf)
            )
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if leaf.is_fully_replicated:
                return np.asarray(leaf.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(jax.device_get(leaf))

    return jax.tree.map(copy, tree)
