"""fundl: a functional deep-learning library on JAX with hand-written backward rules.

Modules: ``fundl.initializers``, ``fundl.activations``, ``fundl.losses``,
``fundl.nn`` (layers, containers, manual backprop), ``fundl.models`` (LeNet-5, VGG,
ResNet, Inception), ``fundl.gradcheck`` (gradient
verification), ``fundl.optim`` (optimizers and schedules), ``fundl.data`` (batching
and loaders), ``fundl.augment`` (random image transforms, mixup, the ``Augment``
layer), ``fundl.train`` (compiled steps and ``fit``), ``fundl.parallel`` (data parallelism
over devices and hosts), ``fundl.checkpoint``, ``fundl.privacy`` (per-example gradients,
DP-SGD), ``fundl.precision`` (mixed-precision policies and loss scaling),
``fundl.metrics``, ``fundl.plot`` (training curves, needs matplotlib), ``fundl.tree``
(pytree helpers) and ``fundl.rules`` (how primitives and their rules are declared).
"""

from fundl import (
    activations,
    augment,
    checkpoint,
    data,
    gradcheck,
    initializers,
    losses,
    metrics,
    models,
    nn,
    optim,
    parallel,
    plot,
    privacy,
    precision,
    rules,
    train,
    tree,
)
from fundl.compilation_cache import enable_compilation_cache
from fundl.nn import (
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    MaxPool2D,
    Parallel,
    Residual,
    RMSNorm,
    Sequential,
    backprop,
    mlp,
)
from fundl.rules import Primitive, primitive, reference_mode, using_reference

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "LayerNorm",
    "MaxPool2D",
    "Parallel",
    "RMSNorm",
    "Residual",
    "Primitive",
    "Sequential",
    "activations",
    "augment",
    "backprop",
    "checkpoint",
    "data",
    "enable_compilation_cache",
    "gradcheck",
    "initializers",
    "losses",
    "metrics",
    "mlp",
    "models",
    "nn",
    "optim",
    "parallel",
    "plot",
    "precision",
    "primitive",
    "privacy",
    "reference_mode",
    "rules",
    "train",
    "tree",
    "using_reference",
]
