"""A 1-D device mesh for data parallelism, and the checks on a mesh and its axis.

A :class:`jax.sharding.Mesh` names the axes along which arrays are split. Data
parallelism needs one: every device holds a slice of the batch along ``axis``. The
mesh spans ``jax.devices()`` — after :func:`fundl.parallel.initialize`, the devices of
every process, so one mesh describes the whole multi-host run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

__all__ = ["axis_size", "check_mesh", "data_mesh"]


def data_mesh(devices: Sequence[jax.Device] | None = None, *, axis: str = "data") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes) with one axis.

    The batch is split along ``axis`` into ``len(devices)`` equal slices, one per device
    (:func:`fundl.parallel.shard_batch`); parameters are replicated
    (:func:`fundl.parallel.replicate`) or split as well
    (:func:`fundl.parallel.shard_params`).

    Args:
      devices: a non-empty sequence of ``jax.Device`` (e.g. ``jax.local_devices()[:4]``),
        each at most once; None for ``jax.devices()``.
      axis: the name of the mesh axis, a non-empty string.

    Returns:
      a ``jax.sharding.Mesh`` of shape ``{axis: len(devices)}``.

    Examples:
      >>> mesh = fundl.parallel.data_mesh()
      >>> mesh.axis_names, mesh.devices.size == jax.device_count()
      (('data',), True)
    """
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"data_mesh: axis must be a non-empty string, got {axis!r}")
    if devices is None:
        devices = jax.devices()
    if isinstance(devices, (jax.Device, str)) or not isinstance(devices, Sequence):
        raise TypeError(
            f"data_mesh: devices must be a sequence of jax.Device (e.g. jax.devices()), "
            f"got {devices!r}"
        )
    devices = list(devices)
    if not devices:
        raise ValueError(
            "data_mesh: devices is empty; pass at least one device (e.g. jax.devices())"
        )
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise TypeError(f"data_mesh: devices must be jax.Device objects, got {bad[0]!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"data_mesh: devices holds a device more than once: {devices}")
    return Mesh(np.array(devices), (axis,))


def check_mesh(name: str, mesh: Any) -> None:
    """``TypeError`` unless ``mesh`` is a ``jax.sharding.Mesh``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"{name}: mesh must be a jax.sharding.Mesh (fundl.parallel.data_mesh()), got {mesh!r}"
        )


def axis_size(name: str, mesh: Any, axis: str) -> int:
    """The number of devices along ``axis`` of ``mesh``; errors name ``name``, the function.

    ``TypeError`` unless ``mesh`` is a ``jax.sharding.Mesh``; ``ValueError`` naming the
    mesh's axes when it has no ``axis``.
    """
    check_mesh(name, mesh)
    if axis not in mesh.axis_names:
        raise ValueError(
            f"{name}: the mesh has no axis {axis!r}; its axes are {tuple(mesh.axis_names)} "
            f"(pass axis= one of them, or build the mesh with data_mesh(axis={axis!r}))"
        )
    return int(mesh.shape[axis])
