"""Several processes (hosts), one run: ``jax.distributed`` wrapped, and each host's data.

Every process runs the same script. After :func:`initialize`, ``jax.devices()`` lists
the devices of all processes, so :func:`fundl.parallel.data_mesh` spans them all and
one compiled step runs on all of them; XLA's collectives cross the hosts. Each process
feeds only its own devices: either every process holds the same global batch and
:func:`fundl.parallel.shard_batch` sends each process's slices (what ``fit`` does), or
each process loads only its share (:func:`host_shard`) and :func:`shard_local_batch`
assembles the global batch from the processes' parts.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from fundl._validate import check_int
from fundl.parallel.mesh import axis_size
from fundl.parallel.placement import batch_spec, check_batch

__all__ = [
    "host_shard",
    "initialize",
    "is_main_process",
    "process_count",
    "process_index",
    "shard_local_batch",
]


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Any = None,
    cpu_collectives: str | None = "gloo",
) -> None:
    """Join this process to a multi-process run: ``jax.distributed.initialize``.

    Call it first, before any other JAX call, in every process, with the same
    coordinator address and process count and this process's own id. On a cluster
    JAX detects the three (SLURM, Cloud TPU, Open MPI); leave them None there.

    Args:
      coordinator_address: ``"host:port"`` of process 0, which the others connect to.
      num_processes: the number of processes.
      process_id: this process's index in [0, num_processes).
      local_device_ids: the local devices this process uses (default: all).
      cpu_collectives: the CPU backend's cross-process collectives (``"gloo"``, which
        jaxlib ships), so CPU-only processes can run together (tests, a laptop); None
        leaves JAX's setting alone. GPUs and TPUs use their own (NCCL, ICI).

    Raises:
      ValueError: for a negative ``process_id`` or one not below ``num_processes``.

    Examples:
      Two processes on one machine (``scripts/launch_local.py`` starts them), each
      running (not run here: it would join this process to a run)::

          fundl.parallel.initialize("localhost:12355", num_processes=2, process_id=rank)
          mesh = fundl.parallel.data_mesh()   # the devices of both processes

      Without it, a run is one process:

      >>> fundl.parallel.process_count(), fundl.parallel.process_index()
      (1, 0)
    """
    if num_processes is not None:
        num_processes = check_int("initialize", "num_processes", num_processes)
    if process_id is not None:
        high = None if num_processes is None else num_processes - 1
        process_id = check_int("initialize", "process_id", process_id, low=0, high=high)
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )


def process_index() -> int:
    """This process's index, 0 ≤ i < :func:`process_count` (0 in a one-process run).

    Returns:
      an int, ``jax.process_index()``.

    Examples:
      >>> fundl.parallel.process_index()  # one process: 0
      0
    """
    return jax.process_index()


def process_count() -> int:
    """The number of processes in the run (1 without :func:`initialize`).

    Returns:
      an int, ``jax.process_count()``.

    Examples:
      >>> fundl.parallel.process_count()
      1
    """
    return jax.process_count()


def is_main_process() -> bool:
    """Whether this is process 0: the one that writes checkpoints and logs.

    Returns:
      a bool, ``process_index() == 0``.

    Examples:
      >>> if fundl.parallel.is_main_process():  # true in a one-process run
      ...     print("saving a checkpoint")
      saving a checkpoint
    """
    return jax.process_index() == 0


def host_shard(data: Any, *, index: int | None = None, count: int | None = None) -> Any:
    """This process's share of ``data``: rows [i·n/p, (i+1)·n/p) of every leaf.

    For a run where each host loads only its part of the data set. With every host
    taking the share of its index, the shares tile the data set in process order.

    Args:
      data: a pytree of arrays with a shared leading dim n, divisible by p.
      index: i, default :func:`process_index`.
      count: p, default :func:`process_count`.

    Returns:
      the pytree of slices, each of n/p rows.

    Examples:
      >>> fundl.parallel.host_shard(np.arange(6), index=1, count=3)
      array([2, 3])
    """
    count = check_int("host_shard", "count", process_count() if count is None else count)
    index = process_index() if index is None else index
    index = check_int("host_shard", "index", index, low=0, high=count - 1)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"host_shard: every leaf of data needs the same leading dim, got {sorted(map(str, sizes))}"
        )
    (n,) = sizes
    if n % count:
        raise ValueError(
            f"host_shard: the {n} examples do not divide by the {count} processes; trim the "
            f"data to {n - n % count} examples (or pad it) so every process gets the same number"
        )
    part = n // count
    return jax.tree.map(lambda leaf: leaf[index * part : (index + 1) * part], data)


def shard_local_batch(local_batch: Any, mesh: Any, *, axis: str = "data") -> Any:
    """The global batch, split along ``axis``, from each process's own part of it.

    Process p passes its ``local_batch`` of b_p rows (the same b_p in every process);
    they are split in order over its own devices, and the global batch of b = Σ b_p
    rows holds every device's slice in the order the mesh lists the devices along
    ``axis`` (``jax.make_array_from_process_local_data``). For
    :func:`fundl.parallel.data_mesh` over ``jax.devices()``, which lists the devices
    process by process, that is the processes' parts one after the other in process
    order: the shares of :func:`host_shard` come back as the data set's rows in order.
    A mesh listing the devices in another order (reversed, or alternating between
    processes) orders the rows as it lists the devices. With one process it is
    :func:`fundl.parallel.shard_batch`.

    Args:
      local_batch: a pytree of arrays of shape (b_p, ...), b_p divisible by this
        process's number of devices on the mesh.
      mesh: a ``jax.sharding.Mesh`` spanning the processes.
      axis: the mesh axis to split the batch along.

    Returns:
      the pytree of global ``jax.Array`` s of shape (b, ...), split along ``axis``.

    Examples:
      One process, a 1-device mesh: the local batch is the global batch.

      >>> mesh = fundl.parallel.data_mesh(jax.devices()[:1])
      >>> batch = {"x": np.ones((4, 3), np.float32), "y": np.arange(4)}
      >>> out = fundl.parallel.shard_local_batch(batch, mesh)
      >>> out["x"].shape, out["y"].shape
      ((4, 3), (4,))
      >>> out["x"].sharding.spec == jax.sharding.PartitionSpec("data")
      True
    """

    n = axis_size("shard_local_batch", mesh, axis)
    local = max(1, n // jax.process_count())
    check_batch("shard_local_batch", local_batch, local, axis)
    sharding = NamedSharding(mesh, batch_spec(axis))
    return jax.tree.map(
        lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)),
        local_batch,
    )
