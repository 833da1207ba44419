"""Pytree helpers shared by losses and optimizers: norms, weight masks, structure checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["global_norm", "is_weight", "mask_tree", "check_same_structure"]

PathPredicate = Callable[[tuple, Any], bool]


def global_norm(tree: Any) -> jax.Array:
    """‖tree‖ = sqrt(Σ over every leaf of Σ x²), accumulated in float32 (or wider).

    Args:
      tree: any pytree of arrays.
    Returns: a scalar.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    dtype = jnp.promote_types(jnp.float32, jnp.result_type(*leaves))
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.astype(dtype))) for leaf in leaves))


def is_weight(path: tuple, leaf: Any) -> bool:
    """The default "is this a weight?" rule: a leaf with two or more dims.

    Dense W and conv kernels are weights; biases and normalization scales (vectors) are
    not. Used by ``fundl.losses.l2_penalty`` and the optimizers' weight-decay masks.
    """
    del path
    return jnp.ndim(leaf) >= 2


def mask_tree(name: str, params: Any, mask: PathPredicate | Any | None) -> list[bool]:
    """One bool per leaf of ``params``: which leaves ``mask`` selects.

    ``mask`` is ``None`` (every leaf), a predicate ``(key_path, leaf) -> bool``, or a
    pytree of bools with the structure of ``params``.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if mask is None:
        return [True] * len(flat)
    if callable(mask):
        return [bool(mask(path, leaf)) for path, leaf in flat]
    check_same_structure(name, params, mask, "params", "mask")
    return [bool(m) for m in jax.tree.leaves(mask)]


def _first_difference(a: Any, b: Any) -> str:
    paths_a = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    paths_b = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(b)[0]]
    for pa, pb in zip(paths_a, paths_b):
        if pa != pb:
            return f"{pa or '(root)'} vs {pb or '(root)'}"
    if len(paths_a) != len(paths_b):
        longer, extra = (paths_a, "first") if len(paths_a) > len(paths_b) else (paths_b, "second")
        return f"{longer[min(len(paths_a), len(paths_b))] or '(root)'} only in the {extra}"
    return (
        "same leaves, different containers: "
        + f"{jax.tree.structure(a)} vs {jax.tree.structure(b)}"
    )


def check_same_structure(name: str, a: Any, b: Any, what_a: str, what_b: str) -> None:
    """Raise ``ValueError`` naming the first differing key path if a and b differ in structure."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        raise ValueError(
            f"{name}: {what_a} and {what_b} differ in structure at {_first_difference(a, b)}"
        )
