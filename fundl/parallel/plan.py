"""``DataParallel``: where a data-parallel step keeps each of its arrays.

One frozen object holds the mesh, the data axis and whether parameters are split, and
applies the same rule outside ``jit`` (placing arrays: :meth:`DataParallel.place`,
:meth:`DataParallel.place_batch`) and inside it (``with_sharding_constraint``:
:meth:`DataParallel.constrain`, :meth:`DataParallel.constrain_batch`). A step built
with ``mesh=`` constrains its batch to the data axis and its outputs to the rule, which
is what ``jax.jit(out_shardings=...)`` does, for any tree the step is called with —
the parameters' shapes are known only when it is traced.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fundl._validate import check_bool
from fundl.parallel.mesh import axis_size
from fundl.parallel.placement import (
    batch_spec,
    check_batch,
    param_specs,
    replicate,
    shard_batch,
    shard_params,
)

__all__ = ["DataParallel"]


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """Data parallelism over ``axis`` of ``mesh``: the batch split, parameters replicated
    or (``shard_params=True``) split ZeRO/FSDP-style by :func:`fundl.parallel.param_specs`.

    Args:
      mesh: a ``jax.sharding.Mesh`` (:func:`fundl.parallel.data_mesh`).
      axis: the mesh axis the batch is split along.
      shard_params: split parameters and optimizer state too, instead of replicating.

    Examples:
      >>> dp = fundl.parallel.DataParallel(fundl.parallel.data_mesh())
      >>> dp.devices == jax.device_count()
      True
    """

    mesh: Mesh
    axis: str = "data"
    shard_params: bool = False

    def __post_init__(self) -> None:
        axis_size("DataParallel", self.mesh, self.axis)
        check_bool("DataParallel", "shard_params", self.shard_params)

    @property
    def devices(self) -> int:
        """The number of devices along the data axis: the batch is split in as many parts."""
        return int(self.mesh.shape[self.axis])

    # --- outside jit ----------------------------------------------------------------------

    def place(self, tree: Any) -> Any:
        """Parameters or optimizer state on the mesh: replicated, or split with shard_params."""
        if self.shard_params:
            return shard_params(tree, self.mesh, axis=self.axis)
        return replicate(tree, self.mesh)

    def place_replicated(self, tree: Any) -> Any:
        """A full copy of ``tree`` on every device (model state, keys, counters)."""
        return replicate(tree, self.mesh)

    def place_batch(self, batch: Any) -> Any:
        """The batch split along the data axis (:func:`fundl.parallel.shard_batch`)."""
        return shard_batch(batch, self.mesh, axis=self.axis)

    def check_batch(self, name: str, batch: Any, leading: int = 0) -> None:
        """``ValueError`` naming ``name`` unless the batch size divides by the devices."""
        check_batch(name, batch, self.devices, self.axis, leading)

    # --- inside jit -----------------------------------------------------------------------

    def replicated(self, tree: Any) -> Any:
        """``tree`` constrained to a full copy on every device."""
        sharding = NamedSharding(self.mesh, PartitionSpec())
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    def constrain(self, tree: Any) -> Any:
        """Parameters or optimizer state constrained to the rule (as :meth:`place` puts them)."""
        if not self.shard_params:
            return self.replicated(tree)
        specs = param_specs(tree, self.mesh, axis=self.axis)
        return jax.tree.map(
            lambda x, s: jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, s)),
            tree,
            specs,
        )

    def constrain_batch(self, batch: Any, leading: int = 0) -> Any:
        """The batch constrained to be split along its axis ``leading`` (1 for a scan's
        stacked batches of shape (k, b, ...))."""
        sharding = NamedSharding(self.mesh, batch_spec(self.axis, leading))
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), batch)
