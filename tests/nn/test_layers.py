"""Every layer, one row each, through the checks the layer protocol promises.

A new layer gets all of them by adding a row to ``LAYERS_UNDER_TEST``: the output
shape and the new state's structure equal ``jax.eval_shape`` and ``output_shape``; a
hashable config usable as a static ``jit`` argument; jit equal to eager, in training
and in evaluation; evaluation deterministic (no key needed); the gradient check of the
layer in training mode (state and key held fixed); a clear error naming the layer for a
bad input; a train flag that is not a bool refused; output_shape of an int refused;
another config's parameters and state refused; an int seed accepted as a key.
"""

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import pytest

from fundl import augment, gradcheck, losses, models, nn
from fundl.augment import Augment, ColorJitter, RandomCrop, RandomFlip
from fundl.nn import (
    GRU,
    LSTM,
    RNN,
    Activation,
    AvgPool1D,
    AvgPool2D,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    LayerNorm,
    LearnedPositionalEmbedding,
    MaxPool1D,
    MaxPool2D,
    MultiHeadAttention,
    Parallel,
    Residual,
    RMSNorm,
    Sequential,
    SinusoidalPositionalEncoding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    mlp,
)


class Case(NamedTuple):
    """One row: a layer config, its input shape, and configs its trees must not fit."""

    id: str
    layer: Any
    input_shape: tuple[int, ...]  # batch first: (batch, features), (batch, H, W, C), ...
    other: Any = None  # a config whose parameters this layer must refuse
    bad_input: Any = None  # an input it must refuse (an array)
    bad_input_message: str = ""
    make_input: Any = None  # (key, shape) -> x, for inputs that are not normal floats


def _ones(*shape, dtype=jnp.float32):
    return jnp.ones(shape, dtype)


LAYERS_UNDER_TEST = [
    Case(
        "dense", Dense(3), (4, 5), Dense(4), _ones(4, 6), r"dense: expected input with last dim 5"
    ),
    Case(
        "dense_no_bias",
        Dense(3, use_bias=False),
        (4, 5),
        Dense(3),
        _ones(4, 2),
        r"dense: expected input with last dim 5",
    ),
    Case(
        "activation",
        Activation("leaky_relu", negative_slope=0.2),
        (4, 5),
        None,
        _ones(4, 5, dtype=jnp.int32),
        r"leaky_relu: expected a floating-point input",
    ),
    Case(
        "dropout",
        Dropout(0.4),
        (4, 5),
        None,
        _ones(4, 5, dtype=jnp.int32),
        r"Dropout\(drop_rate=0.4\): expected a floating-point input",
    ),
    Case(
        "batch_norm",
        BatchNorm(momentum=0.8),
        (6, 5),
        BatchNorm(),  # same params, so the table checks its state against (3,) features below
        _ones(6, 4),
        r"BatchNorm\(momentum=0.8\): params\['beta'\] has shape \(5,\); for inputs of shape "
        r"\(6, 4\) it expects \(4,\)",
    ),
    Case("layer_norm", LayerNorm(), (3, 5), None, _ones(3, 5, dtype=jnp.int32), r"floating"),
    Case("rms_norm", RMSNorm(), (3, 5), LayerNorm(), _ones(3, 4), r"RMSNorm\(\): params"),
    Case(
        "sequential",
        Sequential([Dense(4), BatchNorm(), "tanh", Dropout(0.3), Dense(2)]),
        (6, 5),
        Sequential([Dense(4), BatchNorm(), "tanh", Dropout(0.3), Dense(3)]),
        _ones(6, 7),
        r"dense1: dense: expected input with last dim 5",
    ),
    Case(
        "nested_sequential",
        Sequential([Sequential([Dense(4), "relu"]), Dense(2)]),
        (3, 5),
        Sequential([Sequential([Dense(6), "relu"]), Dense(2)]),
        _ones(3, 2),
        r"sequential1: dense1: dense: expected input with last dim 5",
    ),
    Case(
        "mlp",
        mlp([5, 4, 4, 2], "gelu", "sigmoid"),
        (3, 5),
        mlp([5, 4, 2], "gelu", "sigmoid"),
        _ones(3, 4),
        r"dense1: dense: expected input with last dim 5",
    ),
    Case(
        "residual",
        Residual(Sequential([Dense(5), LayerNorm(), "relu", Dense(5)])),
        (3, 5),
        Residual(Sequential([Dense(5), LayerNorm(), "relu", Dense(4)]), projection=Dense(4)),
        _ones(3, 4),
        r"block: dense1: dense: expected input with last dim 5",
    ),
    Case(
        "residual_projection",
        Residual(Sequential([Dense(3), BatchNorm(), "relu"]), projection=Dense(3, use_bias=False)),
        (4, 5),
        Residual(Sequential([Dense(3), BatchNorm(), "relu"]), projection=Dense(3)),
        _ones(4, 2),
        r"block: dense1: dense: expected input with last dim 5",
    ),
    Case(
        "parallel_concat",
        Parallel([Dense(3), Sequential([Dense(2), "tanh"]), Dropout(0.2)]),
        (4, 5),
        Parallel([Dense(2), Sequential([Dense(2), "tanh"]), Dropout(0.2)]),
        _ones(4, 3),
        r"branch1: dense: expected input with last dim 5",
    ),
    Case(
        "parallel_sum",
        Parallel([Dense(3), Sequential([Dense(3), RMSNorm()])], combine="sum"),
        (4, 5),
        Parallel([Dense(3, use_bias=False), Sequential([Dense(3), RMSNorm()])], combine="sum"),
        _ones(4, 3),
        r"branch1: dense: expected input with last dim 5",
    ),
    Case(
        "max_pool_2d",
        MaxPool2D(3, stride=2, padding=1),
        (2, 6, 6, 3),
        None,
        _ones(6, 3),
        r"^MaxPool2D\(\(3, 3\), stride=\(2, 2\), padding=\(\(1, 1\), \(1, 1\)\)\): expected an "
        r"input \(\.\.\., H, W, C\)",
    ),
    Case(
        "avg_pool_1d",
        AvgPool1D(2, padding="SAME", count_include_pad=False),
        (2, 7, 3),
        None,
        _ones(2, 7, 3, dtype=jnp.int32),
        r"^AvgPool1D\(\(2,\), padding='SAME', count_include_pad=False\): expected a floating",
    ),
    Case(
        "max_pool_1d",
        MaxPool1D(2),
        (2, 7, 3),
        None,
        _ones(2, 1, 3),
        r"^MaxPool1D\(\(2,\)\): ",
    ),
    Case(
        "avg_pool_2d",
        AvgPool2D((2, 3), stride=1),
        (2, 4, 5, 2),
        None,
        _ones(2, 4, 5, 2, dtype=jnp.int32),
        r"^AvgPool2D\(\(2, 3\), stride=\(1, 1\)\): expected a floating",
    ),
    Case(
        "global_avg_pool",
        GlobalAvgPool(),
        (2, 4, 4, 3),
        None,
        _ones(2, 3),
        r"^GlobalAvgPool\(\): expected an input \(\.\.\., H, W, C\), got shape \(2, 3\)",
    ),
    Case(
        "flatten",
        Flatten(),
        (2, 3, 3, 2),
        None,
        _ones(4, 5),
        r"^Flatten\(\): start_axis=-3 needs an input with at least 3 dims",
    ),
    Case(
        "augment",
        Augment((RandomCrop(2), RandomFlip(), ColorJitter(0.1, 0.2))),
        (2, 6, 6, 3),
        None,
        _ones(2, 6, 6, 3, dtype=jnp.int32),
        r"Augment\(\(RandomCrop\(padding=2\), RandomFlip\(\), ColorJitter\(brightness=0.1, "
        r"contrast=0.2\)\)\): expected a floating-point input for ColorJitter",
    ),
    Case(
        "conv1d",
        Conv1D(3, 2, stride=2, padding="SAME"),
        (2, 5, 2),
        Conv1D(3, 3),
        _ones(2, 2, 5),
        r"Conv1D\(3, 2, stride=2, padding='SAME'\): expected input with C_in = 2 channels .*"
        r"x\.transpose\(0, 2, 1\)",
    ),
    Case(
        "conv2d_groups",
        Conv2D(4, (3, 2), groups=2, dilation=(1, 2)),
        (2, 5, 5, 4),
        Conv2D(4, 3, groups=2, dilation=(1, 2)),
        _ones(2, 4, 5, 5),
        r"Conv2D\(4, \(3, 2\), dilation=\(1, 2\), groups=2\): expected input with C_in = 4 "
        r"channels .*channels-first",
    ),
    # BatchNorm on NHWC normalizes over every axis but the last: per channel, over the
    # batch and the positions
    Case(
        "cnn",
        Sequential([Conv2D(4, 3, padding="SAME"), BatchNorm(), "relu", Dropout(0.2), Conv2D(2, 3)]),
        (2, 5, 5, 3),
        Sequential([Conv2D(4, 3, padding="SAME"), BatchNorm(), "relu", Dropout(0.2), Conv2D(3, 3)]),
        _ones(2, 5, 5, 2),
        r"conv1: Conv2D\(4, 3, padding='SAME'\): expected input with C_in = 3 channels",
    ),
    Case(
        "embedding",
        Embedding(7, 3),
        (2, 5),
        Embedding(6, 3),
        jnp.array([[0, 7]]),
        r"embedding: token ids must be in \[0, 7\) for 7 classes, got values in \[0, 7\]",
        make_input=lambda key, shape: jax.random.randint(key, shape, 0, 7),
    ),
    Case(
        "rnn",
        RNN(4),
        (2, 5, 3),
        RNN(5),
        _ones(2, 5, 2),
        r"rnn: expected W_ih of shape \(4, 2\)|RNN\(4\): params",
    ),
    Case(
        "lstm",
        LSTM(4),
        (2, 5, 3),
        LSTM(5),
        _ones(2, 5),
        r"LSTM\(4\): expected x of shape \(batch, T, d\), got shape \(2, 5\)",
    ),
    Case(  # dropout between the two layers in training
        "gru_stacked_bidirectional",
        GRU(3, num_layers=2, bidirectional=True, dropout=0.3),
        (2, 4, 2),
        GRU(3, num_layers=2),
        _ones(2, 4, 3),
        r"GRU\(3, num_layers=2, bidirectional=True, dropout=0.3\): params\['l0'\]\['W_ih'\] "
        r"has shape \(9, 2\); for inputs of shape \(2, 4, 3\) it expects \(9, 3\)",
    ),
    # self-attention (cross-attention and rotary, which a compiled run fuses into FMAs
    # that differ from eager in the last bit: tests/nn/test_multihead.py)
    Case(
        "multi_head_attention",
        MultiHeadAttention(2, causal=True),
        (2, 3, 8),
        MultiHeadAttention(2, out_features=4),
        _ones(2, 0, 8),
        r"MultiHeadAttention\(2, causal=True\): sequence length 0",
    ),
    Case(
        "sinusoidal_positions",
        SinusoidalPositionalEncoding(),
        (2, 3, 4),
        None,
        _ones(2, 0, 4),
        r"SinusoidalPositionalEncoding\(\): expected an input of shape \(\.\.\., L, d\)",
    ),
    Case(
        "learned_positions",
        LearnedPositionalEmbedding(5),
        (2, 3, 4),
        LearnedPositionalEmbedding(6),
        _ones(2, 6, 4),
        r"LearnedPositionalEmbedding\(5\): a sequence of length 6 .* longer than max_length 5",
    ),
    Case(
        "encoder_block",
        TransformerEncoderBlock(2, 6, dropout=0.1),
        (2, 3, 4),
        TransformerEncoderBlock(2, 5),
        _ones(2, 3, 5),
        r"TransformerEncoderBlock\(2, 6, dropout=0.1\): 2 heads do not divide the input width 5",
    ),
    Case(  # decoder-only (GPT) form; cross-attention: tests/nn/test_transformer.py
        "decoder_block",
        TransformerDecoderBlock(2, 6, norm_first=False, cross_attention=False),
        (2, 3, 4),
        TransformerDecoderBlock(2, 6, cross_attention=True),
        _ones(2, 3, 5),
        r"TransformerDecoderBlock\(2, 6, norm_first=False, cross_attention=False\): 2 heads do not",
    ),
    Case(  # the decoder-only LM: token ids in, logits out
        "transformer_lm",
        models.transformer_lm(7, d_model=4, num_heads=2, num_layers=1, max_length=4, dropout=0.1),
        (2, 3),
        models.transformer_lm(7, d_model=4, num_heads=2, num_layers=1, max_length=5),
        jnp.zeros((2, 5), jnp.int32),
        r"TransformerLM\(7, 4, 2, 1, 4, dropout=0.1\): a sequence of length 5",
        make_input=lambda key, shape: jax.random.randint(key, shape, 0, 7),
    ),
]
IDS = [case.id for case in LAYERS_UNDER_TEST]
KEY = jax.random.key(7)
# First order against autodiff and finite differences: the grad-of-grad, vmap and jit
# checks run for every primitive in tests/test_primitives.py (the slow run).
CHECKS = {"jit": False, "hvp": False, "vmap": False}


def _setup(case):
    params, state = case.layer.init_with_state(jax.random.key(0), case.input_shape[1:])
    make = case.make_input or jax.random.normal
    x = make(jax.random.key(1), case.input_shape)
    return params, state, x


def _run(case, params, state, x, *, train, key=KEY):
    return case.layer.apply_with_state(params, state, x, key=key, train=train)


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_output_shape_and_new_state_equal_eval_shape(case):
    params, state, x = _setup(case)
    for train in (True, False):
        out, new_state = _run(case, params, state, x, train=train)
        shapes = jax.eval_shape(lambda p, s, x: _run(case, p, s, x, train=train), params, state, x)
        assert shapes[0].shape == out.shape
        assert tuple(case.layer.output_shape(case.input_shape)) == out.shape
        chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_config_is_hashable_and_a_static_jit_argument(case):
    params, state, x = _setup(case)
    assert hash(case.layer) == hash(case.layer) and case.layer == case.layer
    run = jax.jit(lambda layer, p, s, x: layer.apply_with_state(p, s, x), static_argnums=0)
    # atol as in test_jit_equals_eager_in_training_and_evaluation: compiled and eager round
    # differently, and an output near 0 makes ~1e-9 of rounding a large relative error
    chex.assert_trees_all_close(
        run(case.layer, params, state, x),
        _run(case, params, state, x, train=False),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_jit_equals_eager_in_training_and_evaluation(case):
    params, state, x = _setup(case)
    for train in (True, False):
        jitted = jax.jit(lambda p, s, x, k: _run(case, p, s, x, train=train, key=k))
        # atol: an output that is a sum with cancellation (a conv after batch norm) may be
        # near 0, where float32 rounding of order-1 terms (~1e-7) is a large relative error
        chex.assert_trees_all_close(
            jitted(params, state, x, KEY),
            _run(case, params, state, x, train=train),
            rtol=1e-6,
            atol=1e-6,
        )


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_evaluation_is_deterministic_and_needs_no_key(case):
    params, state, x = _setup(case)
    out, same_state = _run(case, params, state, x, train=False, key=None)
    again, _ = _run(case, params, state, x, train=False, key=jax.random.key(99))
    chex.assert_trees_all_equal(out, again)
    chex.assert_trees_all_equal(same_state, state)


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_gradcheck_in_training_mode(case):
    params, state, x = _setup(case)
    y = jax.random.normal(jax.random.key(2), case.layer.output_shape(case.input_shape))
    if jax.tree.leaves(params):
        report = gradcheck.check_model(
            case.layer, params, x, y, losses.mse, state=state, model_key=KEY, train=True, **CHECKS
        )
    else:  # no parameters: the gradient with respect to the input
        report = gradcheck.check(lambda x: _run(case, {}, state, x, train=True)[0], x, **CHECKS)
    report.assert_passed()


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_bad_input_gives_a_message_naming_the_layer(case):
    params, state, _ = _setup(case)
    with pytest.raises((ValueError, TypeError), match=case.bad_input_message):
        _run(case, params, state, case.bad_input, train=True)


@pytest.mark.parametrize(
    "case",
    [c for c in LAYERS_UNDER_TEST if c.other is not None and c.id != "batch_norm"],
    ids=[c.id for c in LAYERS_UNDER_TEST if c.other is not None and c.id != "batch_norm"],
)
def test_another_configs_params_are_refused(case):
    _, state, x = _setup(case)
    other = case.other.init(jax.random.key(0), case.input_shape[1:])
    with pytest.raises(ValueError, match=r"Are these another model's parameters\?|another model"):
        _run(case, other, state, x, train=True)


STATEFUL = [c for c in LAYERS_UNDER_TEST if jax.tree.leaves(c.layer.init_state(c.input_shape[1:]))]


@pytest.mark.parametrize("case", STATEFUL, ids=[c.id for c in STATEFUL])
def test_another_models_state_is_refused(case):
    params, _, x = _setup(case)
    narrower = case.input_shape[:-1] + (case.input_shape[-1] - 2,)
    other_state = case.layer.init_state(narrower[1:]) if case.id == "batch_norm" else {"bogus": {}}
    with pytest.raises(ValueError, match=r"another model's state"):
        _run(case, params, other_state, x, train=True)


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
@pytest.mark.parametrize("train", ["no", None, 1])
def test_a_train_flag_that_is_not_a_bool_is_refused(case, train):
    """Dense, Conv, Activation and Embedding ignored train="no" (they have no training
    mode), so a typo there ran as evaluation; every layer refuses it, as Dropout does."""
    params, state, x = jax.eval_shape(lambda: _setup(case))  # refused when traced: no compile
    with pytest.raises(ValueError, match=rf"train must be True or False, got {train!r}"):
        jax.eval_shape(lambda p, s, x: _run(case, p, s, x, train=train), params, state, x)


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_output_shape_of_a_width_is_refused_naming_the_layer(case):
    """output_shape(4) for (4,) ended in 'int' object is not iterable (or subscriptable)."""
    width = case.input_shape[-1]
    name = type(case.layer).__name__
    with pytest.raises(
        TypeError, match=rf"{name}.*: input_shape must be a tuple of ints .*got {width}$"
    ):
        case.layer.output_shape(width)


@pytest.mark.parametrize("case", LAYERS_UNDER_TEST, ids=IDS)
def test_an_int_seed_is_a_key(case):
    chex.assert_trees_all_equal(
        case.layer.init(5, case.input_shape[1:]),
        case.layer.init(jax.random.key(5), case.input_shape[1:]),
    )


def test_every_layer_kind_has_a_row():
    """Every layer class fundl exports is a row of the table (containers included)."""
    exported = [getattr(m, name) for m in (nn, augment, models) for name in m.__all__]
    layer_classes = {
        obj for obj in exported if isinstance(obj, type) and nn.Layer in obj.__mro__[1:]
    }
    assert layer_classes - {type(c.layer) for c in LAYERS_UNDER_TEST} == set()
