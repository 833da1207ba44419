"""The named optimizers, each a ``chain`` of small blocks and a learning-rate scale.

Every learning rate is a float, a scalar array (to ``vmap`` over several) or a
schedule ``step -> α`` (see :mod:`fundl.optim.schedules`). Batch, stochastic and
mini-batch gradient descent are the same optimizer fed batches of different sizes —
the whole set, one example, or b examples per step: the batch size belongs to the data
pipeline, not the optimizer.

Each optimizer checks its hyperparameters when it is built, by the rules of
:data:`fundl.optim.HYPERPARAMETERS`, so an error names the optimizer you called.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from fundl.optim.base import (
    GradientTransformation,
    MomentDtype,
    ScalarOrSchedule,
    chain,
    validated,
)
from fundl.optim.regularization import add_decayed_weights
from fundl.optim.scaling import (
    scale_by_adagrad,
    scale_by_adam,
    scale_by_ema,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_momentum,
    scale_by_rms,
    scale_by_trust_ratio,
)
from fundl.tree import is_weight

__all__ = ["sgd", "momentum", "rmsprop", "adam", "adamw", "adagrad", "lion", "lamb"]


def _has_momentum(momentum: Any) -> bool:
    # Checked numbers arrive as floats. A traced or array momentum (a sweep) always gets
    # a velocity: the state's structure may not depend on a value.
    return not (isinstance(momentum, float) and momentum == 0)


def _is_zero(momentum: Any) -> bool:
    """Whether a checked momentum is known to be 0: a float, or a concrete (not traced) array."""
    if isinstance(momentum, jax.core.Tracer):
        return False  # a traced value cannot be read when the optimizer is built
    return float(np.asarray(momentum)) == 0


@validated
def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.0,
    *,
    nesterov: bool = False,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """Stochastic gradient descent, plain or with heavy-ball / Nesterov momentum.

    Plain: p ← p − αg. Momentum μ (PyTorch's SGD): v ← μv + g; p ← p − αv.
    Nesterov: p ← p − α(g + μv) with the new v.

    Args:
      learning_rate: α ≥ 0 or a schedule.
      momentum: μ in [0, 1); 0 keeps no state (an array μ, even 0, keeps a velocity).
      nesterov: use Nesterov momentum (needs μ > 0: a number or concrete array 0 is
        refused; a traced μ cannot be read when the optimizer is built).
      moment_dtype: dtype of v.

    Returns:
      a :class:`fundl.optim.GradientTransformation`: stateless (or a
      :class:`fundl.optim.ScheduleState` for a scheduled α) without momentum, a
      :class:`fundl.optim.TraceState` with it.

    Examples:
      Two steps from p = 0 with g = 1 and α = 0.1: −0.1 each (plain), or −0.1 then
      −0.1·(0.9 + 1) = −0.19 (momentum 0.9):

      >>> for opt in (fundl.optim.sgd(0.1), fundl.optim.sgd(0.1, momentum=0.9)):
      ...     params, g = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
      ...     state = opt.init(params)
      ...     for _ in range(2):
      ...         updates, state = opt.update(g, state, params)
      ...         params = fundl.optim.apply_updates(params, updates)
      ...     print(np.asarray(params["w"], np.float64).round(4).tolist())
      [-0.2, -0.2]
      [-0.29, -0.29]
    """
    if nesterov and _is_zero(momentum):
        got = momentum if isinstance(momentum, float) else "an array holding 0"
        raise ValueError(f"sgd: nesterov=True needs a momentum > 0, got momentum={got}")
    if not _has_momentum(momentum):
        return chain(scale_by_learning_rate(learning_rate))
    return chain(
        scale_by_momentum(momentum, nesterov=nesterov, moment_dtype=moment_dtype),
        scale_by_learning_rate(learning_rate),
    )


@validated
def momentum(
    learning_rate: ScalarOrSchedule, beta: float = 0.9, *, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Gradient descent with momentum in the notes' form: v ← βv + (1 − β)dW; W ← W − αv.

    v is an exponential moving average of the gradients, so its size is that of a
    gradient; heavy-ball momentum (``sgd(α, μ)``, v ← μv + g) sums them, and is
    1/(1 − β) times larger in a steady direction. ``momentum(α, β)`` equals
    ``sgd(α·(1 − β), β)``.

    Args:
      learning_rate: α ≥ 0 or a schedule.
      beta: β in [0, 1).
      moment_dtype: dtype of v.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`fundl.optim.EmaState`.

    Examples:
      Two steps from W = 0 with dW = 1, α = 0.1, β = 0.9: v = 0.1, then 0.19, so
      W = −0.01, then −0.029:

      >>> opt = fundl.optim.momentum(0.1, beta=0.9)
      >>> params, g = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> for _ in range(2):
      ...     updates, state = opt.update(g, state, params)
      ...     params = fundl.optim.apply_updates(params, updates)
      ...     print(np.asarray(params["w"], np.float64).round(4).tolist())
      [-0.01, -0.01]
      [-0.029, -0.029]
    """
    return chain(
        scale_by_ema(beta, moment_dtype=moment_dtype), scale_by_learning_rate(learning_rate)
    )


@validated
def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    *,
    centered: bool = False,
    momentum: float = 0.0,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """RMSprop (PyTorch's form): v ← ρv + (1 − ρ)g²; p ← p − α g/(√v + ε).

    Centered: divides by √(v − m²) + ε, m ← ρm + (1 − ρ)g. With momentum μ:
    b ← μb + g/(√v + ε); p ← p − αb.

    Args:
      learning_rate: α ≥ 0 or a schedule.
      decay: ρ in [0, 1).
      eps: ε > 0.
      centered: use the centered second moment.
      momentum: μ in [0, 1).
      moment_dtype: dtype of the moments.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an
      :class:`fundl.optim.RmsState` (and a :class:`fundl.optim.TraceState` with
      momentum, the two in a tuple).

    Examples:
      One step from v = 0: v = 0.1·g², so p moves by α·g/|g|·√10 = ±0.0316 (α = 0.01):

      >>> opt = fundl.optim.rmsprop(0.01, decay=0.9)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> updates, state = opt.update({"w": jnp.array([0.5, -1.0])}, opt.init(params), params)
      >>> np.asarray(fundl.optim.apply_updates(params, updates)["w"], np.float64).round(4).tolist()
      [0.9684, 2.0316]
    """
    blocks = [scale_by_rms(decay, eps, centered=centered, moment_dtype=moment_dtype)]
    if _has_momentum(momentum):
        blocks.append(scale_by_momentum(momentum, moment_dtype=moment_dtype))
    return chain(*blocks, scale_by_learning_rate(learning_rate))


@validated
def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """Adam (Kingma & Ba, 2015): p ← p − α m̂/(√v̂ + ε), with bias-corrected moments.

    Coupled L2 (the notes' λ/2 Σ‖W‖²): ``chain(add_l2(λ), adam(α))``; decoupled
    weight decay: :func:`adamw`.

    Args:
      learning_rate: α ≥ 0 or a schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε > 0.
      moment_dtype: dtype of m and v.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`fundl.optim.AdamState`.

    Examples:
      Adam's first step moves every coordinate by α against the sign of its gradient
      (m̂ = g, v̂ = g², so m̂/(√v̂ + ε) = ±1):

      >>> opt = fundl.optim.adam(0.1)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> updates, state = opt.update({"w": jnp.array([0.5, -1.0])}, opt.init(params), params)
      >>> np.asarray(fundl.optim.apply_updates(params, updates)["w"], np.float64).round(4).tolist()
      [0.9, 2.1]
      >>> int(state.count), np.asarray(state.mu["w"], np.float64).round(4).tolist()
      (1, [0.05, -0.1])
    """
    return chain(
        scale_by_adam(b1, b2, eps, moment_dtype=moment_dtype), scale_by_learning_rate(learning_rate)
    )


@validated
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    *,
    mask: Any = is_weight,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter, 2019): p ← p − α(m̂/(√v̂ + ε) + λp).

    The decay is decoupled from the adaptive scaling: every chosen weight shrinks by
    αλp whatever its gradient history (as PyTorch's AdamW; optax's default λ = 1e-4).

    Args:
      learning_rate: α ≥ 0 or a schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε > 0.
      weight_decay: λ ≥ 0.
      mask: which leaves decay (default: weights, not biases or norm scales).
      moment_dtype: dtype of m and v.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`fundl.optim.AdamState`.

    Examples:
      One step (α = 0.1, λ = 0.5) with a zero gradient: Adam's direction is 0, and the
      weight W (2-D) shrinks by αλW = 5%, the bias b (1-D) not at all:

      >>> opt = fundl.optim.adamw(0.1, weight_decay=0.5)
      >>> params = {"W": jnp.ones((1, 2)), "b": jnp.ones(2)}
      >>> grads = {"W": jnp.zeros((1, 2)), "b": jnp.zeros(2)}
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> new = fundl.optim.apply_updates(params, updates)
      >>> np.asarray(new["W"], np.float64).round(4).tolist(), new["b"].tolist()
      ([[0.95, 0.95]], [1.0, 1.0])
    """
    return chain(
        scale_by_adam(b1, b2, eps, moment_dtype=moment_dtype),
        add_decayed_weights(weight_decay, mask=mask),
        scale_by_learning_rate(learning_rate),
    )


@validated
def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011): G ← G + g²; p ← p − α g/(√G + ε).

    Args:
      learning_rate: α ≥ 0 or a schedule.
      initial_accumulator_value: G₀ ≥ 0.
      eps: ε > 0.
      moment_dtype: dtype of G.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`fundl.optim.AdagradState`.

    Examples:
      From G = 0 the first step is α·g/|g|, the second with the same g α/√2 = 0.0707:

      >>> opt = fundl.optim.adagrad(0.1)
      >>> params, g = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([0.5, -1.0])}
      >>> state = opt.init(params)
      >>> for _ in range(2):
      ...     updates, state = opt.update(g, state, params)
      ...     params = fundl.optim.apply_updates(params, updates)
      ...     print(np.asarray(params["w"], np.float64).round(4).tolist())
      [0.9, 2.1]
      [0.8293, 2.1707]
    """
    return chain(
        scale_by_adagrad(initial_accumulator_value, eps, moment_dtype=moment_dtype),
        scale_by_learning_rate(learning_rate),
    )


@validated
def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 0.0,
    *,
    mask: Any = is_weight,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """Lion (Chen et al., 2023): p ← p − α(sign(β₁m + (1 − β₁)g) + λp); m ← β₂m + (1 − β₂)g.

    Its steps have size α in every coordinate: use a learning rate 3–10× smaller than
    Adam's, and a weight decay as many times larger.

    Args:
      learning_rate: α ≥ 0 or a schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      weight_decay: λ ≥ 0, decoupled.
      mask: which leaves decay.
      moment_dtype: dtype of m.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with a :class:`fundl.optim.LionState`.

    Examples:
      Every coordinate moves by exactly α against the sign of its gradient:

      >>> opt = fundl.optim.lion(0.01)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> updates, state = opt.update({"w": jnp.array([0.003, -40.0])}, opt.init(params), params)
      >>> np.asarray(updates["w"], np.float64).round(4).tolist()
      [-0.01, 0.01]
    """
    return chain(
        scale_by_lion(b1, b2, moment_dtype=moment_dtype),
        add_decayed_weights(weight_decay, mask=mask),
        scale_by_learning_rate(learning_rate),
    )


@validated
def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    mask: Any = is_weight,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """LAMB (You et al., 2020): Adam's direction plus decay, rescaled per leaf by ‖p‖/‖u‖.

    u = m̂/(√v̂ + ε) + λp; p ← p − α·u·‖p‖/‖u‖ (ratio 1 where a norm is 0). For large
    batches.

    Args:
      learning_rate: α ≥ 0 or a schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε > 0.
      weight_decay: λ ≥ 0.
      mask: which leaves decay.
      moment_dtype: dtype of m and v.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`fundl.optim.AdamState`.

    Examples:
      The first Adam direction is u = [1, 1] (‖u‖ = √2); with ‖W‖ = 5 the step is
      α·u·5/√2 = 0.3536 per coordinate (α = 0.1):

      >>> opt = fundl.optim.lamb(0.1)
      >>> params = {"W": jnp.array([[3.0, 4.0]])}
      >>> updates, state = opt.update({"W": jnp.ones((1, 2))}, opt.init(params), params)
      >>> np.asarray(updates["W"], np.float64).round(4).tolist()
      [[-0.3536, -0.3536]]
    """
    return chain(
        scale_by_adam(b1, b2, eps, moment_dtype=moment_dtype),
        add_decayed_weights(weight_decay, mask=mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )
