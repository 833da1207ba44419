"""Training: compiled update steps (jit, vmap, scan), and the ``fit`` loop built on them.

Modules: ``steps`` (:func:`make_train_step`, :func:`make_eval_step`,
:func:`make_scan_steps`, :func:`make_epoch`, :func:`init_ensemble`), ``recompile``
(the :class:`RecompilationWarning` every compiled step gives when traced again, naming
the argument that changed), ``state`` (:class:`TrainState`, what a stateful step
carries: params, optimizer state, model state, the key and the step), ``early_stopping`` (:class:`EarlyStopping`), ``progress``
(the bar or the per-epoch lines of ``fit``), ``grad_health`` (per-layer gradient norms
and update ratios, :func:`layer_norms`, :func:`update_ratios`, and the
:class:`GradHealth` rules that warn when they vanish or explode) and ``fit``
(:func:`fit`, :class:`FitResult`).
"""

from fundl.train.early_stopping import EarlyStopping
from fundl.train.fit import FitResult, fit
from fundl.train.grad_health import (
    GradHealth,
    GradHealthWarning,
    grad_health_metrics,
    layer_norms,
    update_ratios,
)
from fundl.train.recompile import RecompilationWarning
from fundl.train.state import TrainState
from fundl.train.steps import (
    init_ensemble,
    make_epoch,
    make_eval_step,
    make_scan_steps,
    make_train_step,
)

__all__ = [
    "RecompilationWarning",
    "TrainState",
    "make_train_step",
    "make_eval_step",
    "make_scan_steps",
    "make_epoch",
    "init_ensemble",
    "EarlyStopping",
    "FitResult",
    "fit",
    "GradHealth",
    "GradHealthWarning",
    "layer_norms",
    "update_ratios",
    "grad_health_metrics",
]
