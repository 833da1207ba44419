"""fundl: a functional deep-learning library on JAX with hand-written backward rules.

Modules: ``fundl.init`` (initializers), ``fundl.activations``, ``fundl.losses``,
``fundl.nn`` (layers, models, manual backprop), ``fundl.gradcheck`` (gradient
verification), ``fundl.optim`` (optimizers and schedules), ``fundl.tree`` (pytree
helpers) and ``fundl.rules`` (how primitives and their rules are declared).
"""

from fundl import activations, gradcheck, init, losses, nn, optim, rules, tree
from fundl.nn import Activation, Dense, Sequential, backprop, mlp
from fundl.rules import Primitive, primitive, reference_mode, using_reference

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "Dense",
    "Primitive",
    "Sequential",
    "activations",
    "backprop",
    "gradcheck",
    "init",
    "losses",
    "mlp",
    "nn",
    "optim",
    "primitive",
    "reference_mode",
    "rules",
    "tree",
    "using_reference",
]
