"""fundl's optimizers: pure gradient transformations, without optax.

``opt = fundl.optim.adam(1e-3)``; ``state = opt.init(params)``;
``updates, state = opt.update(grads, state, params)``;
``params = fundl.optim.apply_updates(params, updates)``.

Modules: ``base`` (the contract, ``chain``, ``apply_updates``, and ``HYPERPARAMETERS``,
the rule of every hyperparameter, checked when a transformation is built), ``scaling``
(the ``scale_by_*`` blocks), ``regularization`` (L2 and weight decay), ``clipping``,
``accumulation``, ``hyperparams`` (hyperparameters in the state), ``plateau``
(``reduce_on_plateau``), ``alias`` (the named optimizers) and ``schedules``.
"""

from fundl.optim import schedules
from fundl.optim.accumulation import AccumulateState, accumulate
from fundl.optim.alias import adagrad, adam, adamw, lamb, lion, momentum, rmsprop, sgd
from fundl.optim.base import (
    HYPERPARAMETERS,
    EmptyState,
    GradientTransformation,
    MomentDtype,
    Range,
    ScalarOrSchedule,
    apply_updates,
    chain,
    identity,
    stateless,
    validated,
)
from fundl.optim.clipping import ZeroNansState, clip, clip_by_global_norm, zero_nans
from fundl.optim.hyperparams import InjectState, inject_hyperparams, with_hyperparams
from fundl.optim.plateau import PlateauState, reduce_on_plateau
from fundl.optim.regularization import add_decayed_weights, add_l2
from fundl.optim.scaling import (
    AdagradState,
    AdamState,
    EmaState,
    LionState,
    RmsState,
    ScheduleState,
    TraceState,
    scale,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_ema,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_momentum,
    scale_by_rms,
    scale_by_trust_ratio,
)
from fundl.tree import global_norm

__all__ = [
    "HYPERPARAMETERS",
    "AccumulateState",
    "AdagradState",
    "AdamState",
    "EmaState",
    "EmptyState",
    "GradientTransformation",
    "InjectState",
    "LionState",
    "MomentDtype",
    "PlateauState",
    "Range",
    "RmsState",
    "ScalarOrSchedule",
    "ScheduleState",
    "TraceState",
    "ZeroNansState",
    "accumulate",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "add_l2",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "global_norm",
    "identity",
    "inject_hyperparams",
    "lamb",
    "lion",
    "momentum",
    "reduce_on_plateau",
    "rmsprop",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_ema",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_momentum",
    "scale_by_rms",
    "scale_by_trust_ratio",
    "schedules",
    "stateless",
    "validated",
    "sgd",
    "with_hyperparams",
    "zero_nans",
]
