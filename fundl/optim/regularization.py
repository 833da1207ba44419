"""L2 regularization (coupled) and weight decay (decoupled).

Both add a multiple of the parameters, u ← u + λp; what differs is where they sit in a
chain, and so what the adaptive scaling sees:

- :func:`add_l2` goes *before* the adaptive scaling: it adds ∂/∂p of the notes'
  L_total = L + λ/2 Σ‖W‖², so ``chain(add_l2(λ), adam(α))`` is Adam on the regularized
  loss (the decay of a weight is divided by √v̂ like its gradient).
- :func:`add_decayed_weights` goes *after* it (Loshchilov & Hutter's AdamW):
  ``adamw`` is ``chain(scale_by_adam(), add_decayed_weights(λ), scale_by_learning_rate(α))``,
  so every weight decays by αλp whatever its gradient history.

For plain SGD the two are the same. By default only weights decay (leaves with two or
more dims, ``fundl.tree.is_weight``), not biases or normalization scales; ``mask``
chooses otherwise.
"""

from __future__ import annotations

from typing import Any

import jax

from fundl.optim.base import GradientTransformation, in_dtype, stateless, validated
from fundl.tree import check_same_shapes, is_weight, mask_tree

__all__ = ["add_l2", "add_decayed_weights"]


def _add_scaled_params(name: str, rate: float, mask: Any) -> GradientTransformation:
    def fn(updates: Any, params: Any) -> Any:
        if params is None:
            raise ValueError(f"{name}: needs params; call update(grads, state, params)")
        check_same_shapes(name, updates, params, "grads", "params")
        chosen = mask_tree(name, params, mask)
        leaves_u, treedef = jax.tree.flatten(updates)
        leaves_p = jax.tree.leaves(params)
        out = [
            (u + in_dtype(rate, u.dtype) * p.astype(u.dtype)).astype(u.dtype) if c else u
            for u, p, c in zip(leaves_u, leaves_p, chosen)
        ]
        return jax.tree.unflatten(treedef, out)

    return stateless(fn)


@validated
def add_l2(lam: float, *, mask: Any = is_weight) -> GradientTransformation:
    """Coupled L2: g ← g + λp, the gradient of λ/2 Σ‖W‖². Put it before the optimizer.

    Args:
      lam: λ ≥ 0.
      mask: which leaves: a predicate ``(key_path, leaf) -> bool`` (default: weights,
        leaves with ≥ 2 dims), a pytree of bools like params, or None for every leaf.

    Returns:
      a stateless :class:`fundl.optim.GradientTransformation`; ``update`` needs
      ``params``, a pytree like the gradients.

    Examples:
      The weight W (2-D) gets λW added to its gradient, the bias b (1-D) nothing:

      >>> opt = fundl.optim.add_l2(0.1)
      >>> params = {"W": jnp.array([[1.0, 2.0]]), "b": jnp.array([1.0, 2.0])}
      >>> grads = {"W": jnp.zeros((1, 2)), "b": jnp.zeros(2)}
      >>> updates, _ = opt.update(grads, opt.init(params), params)
      >>> np.asarray(updates["W"], np.float64).round(4).tolist(), updates["b"].tolist()
      ([[0.1, 0.2]], [0.0, 0.0])
    """
    return _add_scaled_params("add_l2", lam, mask)


@validated
def add_decayed_weights(weight_decay: float, *, mask: Any = is_weight) -> GradientTransformation:
    """Decoupled weight decay: u ← u + λp. Put it after the adaptive scaling (AdamW).

    Args:
      weight_decay: λ ≥ 0 (the step then multiplies it by the learning rate).
      mask: as in :func:`add_l2`.

    Returns:
      a stateless :class:`fundl.optim.GradientTransformation`; ``update`` needs
      ``params``, a pytree like the updates.

    Examples:
      ``mask=None`` decays every leaf, the vector too:

      >>> opt = fundl.optim.add_decayed_weights(0.1, mask=None)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> updates, _ = opt.update({"w": jnp.array([0.5, 0.5])}, opt.init(params), params)
      >>> np.asarray(updates["w"], np.float64).round(4).tolist()
      [0.6, 0.7]
    """
    return _add_scaled_params("add_decayed_weights", weight_decay, mask)
