"""Layers and models: configs of hyperparameters plus pure ``init``/``apply`` functions.

``Dense`` and the ``dense`` primitive, ``Activation``, ``Sequential`` and ``mlp``, and
``backprop`` — the notes' manual backpropagation.
"""

from fundl.nn.activation import Activation
from fundl.nn.backprop import LayerTrace, backprop
from fundl.nn.dense import Dense, dense
from fundl.nn.sequential import Sequential, mlp

__all__ = ["Activation", "Dense", "LayerTrace", "Sequential", "backprop", "dense", "mlp"]
