"""Layers and models: configs of hyperparameters plus pure functions over plain pytrees.

Every layer follows one protocol (:mod:`fundl.nn.base`): ``init`` (params),
``init_state`` (state), ``apply_with_state(params, state, x, *, key, train)`` and
``output_shape``; ``apply(params, x)`` is the one-line call of a layer without state.

Layers: ``Dense`` (with the ``dense`` primitive), ``Conv1D`` and ``Conv2D`` (channels-last
convolutions: the ``conv`` primitive, ``conv1d``/``conv2d``), ``Activation``, ``Dropout``
(``dropout``), ``BatchNorm`` (``batch_norm``, ``batch_norm_inference``), ``LayerNorm``
(``layer_norm``), ``RMSNorm`` (``rms_norm``). Containers: ``Sequential``, ``Residual``,
``Parallel``, and the ``mlp`` shortcut. ``backprop`` is the notes' manual
backpropagation; ``check_params`` / ``check_state`` are the checks every layer makes
that its trees fit its config.
"""

from fundl.nn.activation import Activation
from fundl.nn.backprop import LayerTrace, backprop
from fundl.nn.base import (
    Layer,
    check_params,
    check_state,
    expected_params,
    expected_state,
    split_key,
)
from fundl.nn.combinators import Parallel, Residual, Sequential, mlp
from fundl.nn.conv import Conv1D, Conv2D, conv, conv1d, conv2d
from fundl.nn.dense import Dense, dense
from fundl.nn.dropout import Dropout, dropout
from fundl.nn.norm import (
    BatchNorm,
    LayerNorm,
    RMSNorm,
    batch_norm,
    batch_norm_inference,
    layer_norm,
    rms_norm,
)

__all__ = [
    "Activation",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Layer",
    "LayerNorm",
    "LayerTrace",
    "Parallel",
    "RMSNorm",
    "Residual",
    "Sequential",
    "backprop",
    "batch_norm",
    "batch_norm_inference",
    "check_params",
    "check_state",
    "conv",
    "conv1d",
    "conv2d",
    "dense",
    "dropout",
    "expected_params",
    "expected_state",
    "layer_norm",
    "mlp",
    "rms_norm",
    "split_key",
]
