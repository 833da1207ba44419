"""Layers and models: configs of hyperparameters plus pure ``init``/``apply`` functions.

``Dense`` and the ``dense`` primitive, ``Activation``, ``Sequential`` and ``mlp``,
``backprop`` — the notes' manual backpropagation — and ``check_params``, the check every
layer's ``apply`` makes that its parameters fit its config.
"""

from fundl.nn.activation import Activation
from fundl.nn.backprop import LayerTrace, backprop
from fundl.nn.base import check_params, expected_params
from fundl.nn.dense import Dense, dense
from fundl.nn.sequential import Sequential, mlp

__all__ = [
    "Activation",
    "Dense",
    "LayerTrace",
    "Sequential",
    "backprop",
    "check_params",
    "dense",
    "expected_params",
    "mlp",
]
