"""Layers and models: configs of hyperparameters plus pure functions over plain pytrees.

Every layer follows one protocol (:mod:`fundl.nn.base`): ``init`` (params),
``init_state`` (state), ``apply_with_state(params, state, x, *, key, train)`` and
``output_shape``; ``apply(params, x)`` is the one-line call of a layer without state.

Layers: ``Dense`` (with the ``dense`` primitive), ``Conv1D`` and ``Conv2D`` (channels-last
convolutions: the ``conv`` primitive, ``conv1d``/``conv2d``), ``Activation``, ``Dropout``
(``dropout``), ``BatchNorm`` (``batch_norm``, ``batch_norm_inference``), ``LayerNorm``
(``layer_norm``), ``RMSNorm`` (``rms_norm``); pooling ``MaxPool1D``, ``MaxPool2D``
(``max_pool``), ``AvgPool1D``, ``AvgPool2D`` (``avg_pool``), ``GlobalAvgPool``
(``global_avg_pool``) and ``Flatten`` (``flatten``, a reshape); ``Embedding``
(``embedding``: token ids to vectors, ``attend`` for a tied output); the
``dot_product_attention`` primitive (masks, causal; p recomputed in the backward pass);
``MultiHeadAttention`` (self- and cross-attention, rotary ``rotary``); position
encodings ``SinusoidalPositionalEncoding`` (``sinusoidal_positions``),
``LearnedPositionalEmbedding``; ``TransformerEncoderBlock``, ``TransformerDecoderBlock``;
``RNN``, ``LSTM``, ``GRU`` (``rnn``, ``lstm``, ``gru``: hand-written backpropagation
through time; masks, reverse, stacking, bidirectional; ``params_from_torch`` /
``params_to_torch`` rename PyTorch's state dicts).
Containers:
``Sequential``, ``Residual``, ``Parallel``, and the ``mlp`` shortcut. ``backprop`` is
the notes' manual backpropagation; ``check_params`` / ``check_state`` are the checks
every layer makes that its trees fit its config.
"""

from fundl.nn.activation import Activation
from fundl.nn.attention import dot_product_attention
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
from fundl.nn.embedding import Embedding, embedding
from fundl.nn.multihead import MultiHeadAttention
from fundl.nn.norm import (
    BatchNorm,
    LayerNorm,
    RMSNorm,
    batch_norm,
    batch_norm_inference,
    layer_norm,
    rms_norm,
)
from fundl.nn.pool import (
    AvgPool1D,
    AvgPool2D,
    Flatten,
    GlobalAvgPool,
    MaxPool1D,
    MaxPool2D,
    avg_pool,
    flatten,
    global_avg_pool,
    max_pool,
)
from fundl.nn.position import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    rotary,
    sinusoidal_positions,
)
from fundl.nn.recurrent import gru, lstm, rnn
from fundl.nn.recurrent_layers import GRU, LSTM, RNN, params_from_torch, params_to_torch
from fundl.nn.transformer import TransformerDecoderBlock, TransformerEncoderBlock

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Activation",
    "AvgPool1D",
    "AvgPool2D",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LayerNorm",
    "LayerTrace",
    "LearnedPositionalEmbedding",
    "MaxPool1D",
    "MaxPool2D",
    "MultiHeadAttention",
    "Parallel",
    "RMSNorm",
    "Residual",
    "Sequential",
    "SinusoidalPositionalEncoding",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "avg_pool",
    "backprop",
    "batch_norm",
    "batch_norm_inference",
    "check_params",
    "check_state",
    "conv",
    "conv1d",
    "conv2d",
    "dense",
    "dot_product_attention",
    "dropout",
    "embedding",
    "expected_params",
    "expected_state",
    "flatten",
    "global_avg_pool",
    "gru",
    "layer_norm",
    "lstm",
    "max_pool",
    "mlp",
    "params_from_torch",
    "params_to_torch",
    "rms_norm",
    "rnn",
    "rotary",
    "sinusoidal_positions",
    "split_key",
]
