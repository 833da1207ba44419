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
      momentum: μ in [0, 1); 0 keeps no state.
      nesterov: use Nesterov momentum (needs μ > 0).
      moment_dtype: dtype of v.
    """
    if nesterov and not _has_momentum(momentum):
        raise ValueError("sgd: nesterov=True needs a momentum > 0, got momentum=0")
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
    """
    return chain(
        scale_by_adam(b1, b2, eps, moment_dtype=moment_dtype),
        add_decayed_weights(weight_decay, mask=mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )
