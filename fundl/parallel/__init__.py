"""Data parallelism on JAX's own machinery: a mesh, ``NamedSharding``, ``jax.jit``.

The batch is split along a mesh axis over the devices; parameters, optimizer state and
model state are replicated (or split ZeRO/FSDP-style); the step is compiled for the
mesh and XLA (GSPMD) inserts the gradient all-reduce. The user's loss function is the
same on one device and on many: ``make_train_step(..., mesh=mesh)`` and
``fit(..., mesh=mesh)`` take the mesh.

Modules: ``mesh`` (:func:`data_mesh`), ``placement`` (:func:`shard_batch`,
:func:`replicate`, :func:`param_specs`, :func:`shard_params`, :func:`host_copy`),
``plan`` (:class:`DataParallel`, the rule a compiled step follows) and ``distributed``
(:func:`initialize`, :func:`process_index`, :func:`process_count`,
:func:`is_main_process`, :func:`host_shard`, :func:`shard_local_batch`).
"""

from fundl.parallel.distributed import (
    host_shard,
    initialize,
    is_main_process,
    process_count,
    process_index,
    shard_local_batch,
)
from fundl.parallel.mesh import data_mesh
from fundl.parallel.placement import host_copy, param_specs, replicate, shard_batch, shard_params
from fundl.parallel.plan import DataParallel

__all__ = [
    "DataParallel",
    "data_mesh",
    "host_copy",
    "host_shard",
    "initialize",
    "is_main_process",
    "param_specs",
    "process_count",
    "process_index",
    "replicate",
    "shard_batch",
    "shard_local_batch",
    "shard_params",
]
