"""fundl.nn.base: the parameter check every layer makes."""

import jax
import jax.numpy as jnp
import pytest

from fundl import nn
from fundl.nn import Dense, check_params, expected_params, mlp


def test_expected_params_are_the_shapes_init_makes_without_arrays():
    spec = expected_params(Dense(3), (5, 2))
    assert jax.tree.map(lambda s: (s.shape, s.dtype), spec) == {
        "W": ((3, 2), jnp.float32),
        "b": ((3,), jnp.float32),
    }
    assert expected_params(Dense(3), (2,)) is expected_params(Dense(3), (7, 2))  # cached


def test_check_params_accepts_its_own_and_names_the_first_misfit():
    model = mlp([2, 4, 1])
    check_params(model, model.init(0), (8, 2))
    with pytest.raises(
        ValueError, match=r"params\['dense1'\]\['W'\] has shape \(4, 2\); .* expects \(5, 2\)"
    ):
        check_params(mlp([2, 5, 1]), model.init(0), (8, 2))
    with pytest.raises(ValueError, match=r"missing params\['W'\]"):
        check_params(Dense(1), 3.0, (8, 2))
    # another floating dtype is mixed precision, cast on purpose: it passes
    check_params(model, jax.tree.map(lambda p: p.astype(jnp.bfloat16), model.init(0)), (8, 2))


def test_a_first_check_inside_a_trace_stages_nothing_into_it():
    """The check's shapes come from ``eval_shape``; its key is made inside it, so the
    first check of a layer under ``make_jaxpr``/``jit`` adds no op to the traced program
    (the jaxpr equals a second trace's)."""
    layer = Dense(7, use_bias=False)  # a config no other test checks first
    params = layer.init(jax.random.key(0), (2, 5))
    x = jnp.ones((2, 5))
    first = str(jax.make_jaxpr(lambda p: layer.apply(p, x))(params))
    assert "random_seed" not in first
    assert first == str(jax.make_jaxpr(lambda p: layer.apply(p, x))(params))


# Bad input that used to end in a raw Python/JAX error ('int' object has no len(),
# MLIR "invalid tensor dimension size", AttributeError, KeyError) or was accepted.
_K = jax.random.key(0)
_BAD_INPUT = [
    (
        "dense_init_int_shape",
        lambda: Dense(3).init(_K, 4),
        TypeError,
        r"Dense\.init: input_shape must be a tuple of ints.*got 4",
    ),
    (
        "dense_init_float_dim",
        lambda: Dense(3).init(_K, (4.0,)),
        TypeError,
        r"Dense\.init: input_shape .*got \(4\.0,\)",
    ),
    (
        "layernorm_init_none",
        lambda: nn.LayerNorm().init(_K, None),
        TypeError,
        r"LayerNorm\.init: input_shape",
    ),
    (
        "conv_init_int_shape",
        lambda: nn.Conv2D(3, 3).init(_K, 8),
        TypeError,
        r"Conv2D\(3, 3\): input_shape",
    ),
    (
        "lstm_init_negative_width",
        lambda: nn.LSTM(3).init(_K, (5, -4)),
        ValueError,
        r"LSTM\(3\): expected an input shape \(\.\.\., T, d\)",
    ),
    (
        "residual_init_int_shape",
        lambda: nn.Residual(Dense(4)).init(_K, 4),
        TypeError,
        r"Residual\.init: input_shape must be a tuple",
    ),
    (
        "expected_params_int_shape",
        lambda: expected_params(Dense(3), 4),
        TypeError,
        r"expected_params: input_shape",
    ),
    (
        "split_key_negative_n",
        lambda: nn.split_key(_K, -1),
        ValueError,
        r"split_key: n must be a non-negative integer, got -1",
    ),
    ("mlp_one_int", lambda: mlp(784), ValueError, r"mlp: sizes must be a list .*got 784"),
    (
        "activation_option_value",
        lambda: nn.Activation("leaky_relu", negative_slope="a"),
        ValueError,
        r"leaky_relu: negative_slope must be a finite number",
    ),
    (
        "activation_unhashable_option",
        lambda: nn.Activation("leaky_relu", negative_slope=[0.1]),
        TypeError,
        r"Activation\('leaky_relu'\): option negative_slope=\[0\.1\] must be hashable",
    ),
    (
        "embedding_apply_list_ids",
        lambda: nn.Embedding(10, 4).apply({"E": jnp.ones((10, 4))}, [1, 2]),
        TypeError,
        r"Embedding\(10, 4\): the token ids x must be an array, got list; pass jnp\.asarray",
    ),
    (
        "mha_context_features_without_context",
        lambda: nn.MultiHeadAttention(2, context_features=3).apply(
            nn.MultiHeadAttention(2, context_features=3).init(_K, (5, 4)), jnp.ones((2, 5, 4))
        ),
        ValueError,
        r"MultiHeadAttention\(2, context_features=3\): context_features=3 is cross-attention.*pass context=",
    ),
    (
        "sinusoidal_int_dtype",
        lambda: nn.sinusoidal_positions(5, 4, dtype=jnp.int32),
        ValueError,
        r"sinusoidal_positions: dtype must be a floating dtype",
    ),
    (
        "params_from_torch_none",
        lambda: nn.params_from_torch(None),
        TypeError,
        r"params_from_torch: expected a state dict",
    ),
    (
        "params_to_torch_list",
        lambda: nn.params_to_torch([1]),
        TypeError,
        r"params_to_torch: expected the params of an RNN",
    ),
    (  # integer weights ran: Dense computed x @ W.T in int32 and promoted, silently
        "dense_apply_int_params",
        lambda: Dense(3).apply(
            jax.tree.map(lambda p: p.astype(jnp.int32), Dense(3).init(_K, (2,))), jnp.ones((1, 2))
        ),
        TypeError,
        (
            r"Dense\(3\): params\['W'\] has dtype int32; it expects a floating dtype "
            r"\(init makes float32\)\. Cast it"
        ),
    ),
    (
        "sequential_apply_bool_params",
        lambda: mlp([2, 3]).apply(
            {"dense1": {"W": jnp.ones((3, 2), bool), "b": jnp.zeros(3)}}, jnp.ones((1, 2))
        ),
        TypeError,
        r"dense1: Dense\(3.*\): params\['W'\] has dtype bool; it expects a floating dtype",
    ),
    (  # the state's dtypes are checked as the params': running statistics are floats
        "batchnorm_int_state",
        lambda: nn.BatchNorm().apply_with_state(
            nn.BatchNorm().init(_K, (2,)),
            {"mean": jnp.zeros(2, jnp.int32), "var": jnp.ones(2)},
            jnp.ones((4, 2)),
            train=True,
        ),
        TypeError,
        r"BatchNorm\(\): state\['mean'\] has dtype int32; it expects a floating dtype",
    ),
    (
        "rnn_lengths_as_a_list",
        lambda: (
            nn.RNN(3).run(nn.RNN(3).init(_K, (5, 4)), jnp.ones((2, 5, 4)), lengths=[2, 5])[0].shape
        ),
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    "call, error, message", [c[1:] for c in _BAD_INPUT], ids=[c[0] for c in _BAD_INPUT]
)
def test_bad_input_is_refused_naming_the_function(call, error, message):
    if error is None:  # a list where an array is meant: taken as the array it spells
        call()
        return
    with pytest.raises(error, match=message):
        call()


# one sequence and the same sequence as a batch of one: two computations of the same values,
# held to each other at full float32 matmul precision on every backend
@pytest.mark.usefixtures("highest_precision")
def test_an_encoder_block_takes_one_unbatched_sequence():
    # (L, d) was refused with "expected an input shape (..., L, d), got (4,)": the params
    # check passed init (d,), one example's shape
    block = nn.TransformerEncoderBlock(2, 8)
    params = block.init(_K, (5, 4))
    x = jax.random.normal(jax.random.key(1), (5, 4))
    assert jnp.allclose(block.apply(params, x), block.apply(params, x[None])[0], atol=1e-6)
    with pytest.raises(
        ValueError,
        match=r"TransformerEncoderBlock\(2, 8\): expected x of shape \(\.\.\., L, d\), got shape \(4,\)",
    ):
        block.apply(params, jnp.ones(4))
