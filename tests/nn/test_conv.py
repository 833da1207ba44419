"""Convolutions: the primitive against a NumPy loop and against autodiff, the functions'
options and errors, the layers' init, shapes and errors."""

import functools
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fundl import initializers
from fundl.nn import Conv1D, Conv2D, conv, conv1d, conv2d

# --- a NumPy loop reference -------------------------------------------------------------


def _same(sizes, window, stride, dilation):
    """'SAME' padding as TensorFlow documents it: out = ceil(n/s), the extra row at the end."""
    pads = []
    for n, k, s, d in zip(sizes, window, stride, dilation):
        out = math.ceil(n / s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def naive_conv_and_vjp(x, W, b, g, stride, padding, dilation, groups):
    """z and (dx, dW, db) for cotangent g (of z's shape), by explicit loops.

    Every output position p, kernel tap j and group: z[:, p, group] += x̃[:, p s + j d,
    group] @ W[j, :, group]; the backward scatters the same products back.
    """
    n = W.ndim - 2
    x_pad = np.pad(x, [(0, 0), *padding, (0, 0)])
    window, c_in_g, c_out = W.shape[:n], W.shape[-2], W.shape[-1]
    c_out_g = c_out // groups
    out = tuple(
        (x_pad.shape[1 + i] - dilation[i] * (window[i] - 1) - 1) // stride[i] + 1 for i in range(n)
    )
    z = np.zeros((x.shape[0], *out, c_out))
    for p in np.ndindex(*out):
        for j in np.ndindex(*window):
            at = tuple(p[i] * stride[i] + j[i] * dilation[i] for i in range(n))
            for grp in range(groups):
                ins, outs = (
                    slice(grp * c_in_g, (grp + 1) * c_in_g),
                    slice(grp * c_out_g, (grp + 1) * c_out_g),
                )
                z[(slice(None), *p, outs)] += (
                    x_pad[(slice(None), *at, ins)] @ W[(*j, slice(None), outs)]
                )
    if b is not None:
        z = z + b
    dx_pad, dW = np.zeros_like(x_pad), np.zeros_like(W)
    for p in np.ndindex(*out):
        for j in np.ndindex(*window):
            at = tuple(p[i] * stride[i] + j[i] * dilation[i] for i in range(n))
            for grp in range(groups):
                ins, outs = (
                    slice(grp * c_in_g, (grp + 1) * c_in_g),
                    slice(grp * c_out_g, (grp + 1) * c_out_g),
                )
                gp = g[(slice(None), *p, outs)]  # (batch, C_out/G)
                dx_pad[(slice(None), *at, ins)] += gp @ W[(*j, slice(None), outs)].T
                dW[(*j, slice(None), outs)] += x_pad[(slice(None), *at, ins)].T @ gp
    crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(padding, x.shape[1:-1]))
    dx = dx_pad[(slice(None), *crop, slice(None))]
    db = None if b is None else g.sum(axis=tuple(range(n + 1)))
    return z, (dx, dW, db)


class Config(NamedTuple):
    id: str
    x: tuple[int, ...]  # input shape, channels last
    window: tuple[int, ...]
    c_out: int
    stride: Any = 1
    padding: Any = "VALID"
    dilation: Any = 1
    groups: int = 1
    bias: bool = True


CONFIGS = [
    Config("2d_odd_sizes", (2, 5, 7, 3), (3, 2), 4),
    Config("2d_stride2_same", (2, 5, 7, 2), (3, 3), 3, stride=2, padding="SAME"),
    Config("2d_stride21_asym", (1, 5, 7, 2), (3, 2), 2, (2, 1), ((1, 0), (0, 2)), bias=False),
    Config("2d_dilation2_same", (1, 5, 7, 2), (2, 3), 3, padding="SAME", dilation=2),
    Config("2d_groups2", (2, 5, 6, 4), (3, 2), 6, padding=((0, 1), (1, 1)), groups=2),
    Config("2d_depthwise", (1, 7, 5, 3), (3, 2), 6, 2, dilation=(1, 2), groups=3, bias=False),
    # stride (3, 2) on 6x5 with a 2x2 kernel: rows 5 and column 4 under no window
    Config("2d_untouched", (1, 6, 5, 2), (2, 2), 2, (3, 2)),
    Config("1d_stride2_untouched", (2, 8, 3), (3,), 2, 2),
    Config("1d_same_dilated_groups", (1, 7, 4), (3,), 2, 1, "SAME", 2, groups=2),
    # padding wider than the kernel: the transposed convolution pads negatively
    Config("1d_wide_padding", (1, 5, 2), (2,), 3, 1, ((3, 0),), bias=False),
    Config("3d", (1, 3, 4, 3, 2), (2, 2, 2), 2, (1, 2, 1), ((0, 1), (1, 0), (0, 0))),
]


def _options(config):
    """The primitive's options for a config: ints to tuples, 'SAME'/'VALID' to pairs."""
    n = len(config.window)
    as_tuple = lambda v: (v,) * n if isinstance(v, int) else tuple(v)
    stride, dilation = as_tuple(config.stride), as_tuple(config.dilation)
    padding = config.padding
    if padding == "SAME":
        padding = _same(config.x[1:-1], config.window, stride, dilation)
    elif padding == "VALID":
        padding = ((0, 0),) * n
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": config.groups}


def _arrays(config, dtype=np.float64):
    """x, W, b for a config: NumPy draws (jax.random would compile a sampler per shape)."""
    rng = np.random.default_rng(len(config.id))
    c_in = config.x[-1]
    x = rng.standard_normal(config.x).astype(dtype)
    W = rng.standard_normal(config.window + (c_in // config.groups, config.c_out)).astype(dtype)
    b = rng.standard_normal((config.c_out,)).astype(dtype) if config.bias else None
    return x, W, b


def _public(config):
    """The call a user writes: conv1d/conv2d with the config's options as given, or the
    primitive itself in 3-d."""
    n = len(config.window)
    if n == 3:
        return lambda x, W, b: conv(x, W, b, **_options(config))
    fn = {1: conv1d, 2: conv2d}[n]
    options = {"stride": config.stride, "padding": config.padding, "dilation": config.dilation}
    return lambda x, W, b: fn(x, W, b, groups=config.groups, **options)


def _forward_and_vjp(fn, x, W, b):
    """(z, (dx, dW, db)) for a fixed random cotangent, as NumPy: one compiled program."""
    g = np.random.default_rng(99).standard_normal(jax.eval_shape(fn, x, W, b).shape)

    def run(x, W, b, g):
        z, pullback = jax.vjp(fn, x, W, b)
        return z, pullback(g), g

    return jax.tree.map(np.asarray, jax.jit(run)(x, W, b, g))


@functools.cache
def _hand(config, x64):
    """The hand-written rule through the public function, float64: (x, W, b), z, grads, g.
    (Cached: the two tests below compare the same results with two references.)"""
    with x64():
        x, W, b = _arrays(config)
        return (x, W, b), *_forward_and_vjp(_public(config), x, W, b)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.id for c in CONFIGS])
def test_forward_and_vjp_equal_a_numpy_loop(config, x64):
    args, z, grads, g = _hand(config, x64)
    want_z, want_grads = naive_conv_and_vjp(*args, g, **_options(config))
    np.testing.assert_allclose(z, want_z, rtol=1e-12, atol=1e-12)
    for name, got, want in zip(("dx", "dW", "db"), grads, want_grads):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
    if config.id.endswith("untouched"):  # the last row was under no window: no gradient
        assert np.all(grads[0][:, -1] == 0) and np.any(want_grads[0][:, -2] != 0)


def _lax_reference(x, W, b, *, stride, padding, dilation, groups):
    n = W.ndim - 2
    spatial = tuple(range(1, n + 1))
    numbers = lax.ConvDimensionNumbers(
        (0, n + 1, *spatial), (n + 1, n, *range(n)), (0, n + 1, *spatial)
    )
    z = lax.conv_general_dilated(
        x,
        W,
        stride,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=numbers,
        feature_group_count=groups,
    )
    return z if b is None else z + b.reshape((1,) * (n + 1) + b.shape)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.id for c in CONFIGS])
def test_hand_vjp_equals_autodiff_of_lax_conv(config, x64):
    args, z, grads, _ = _hand(config, x64)
    options = _options(config)
    with x64():
        reference = lambda x, W, b: _lax_reference(x, W, b, **options)
        want_z, want_grads, _ = _forward_and_vjp(reference, *args)
    chex.assert_trees_all_close(z, want_z, rtol=1e-12, atol=1e-12)
    chex.assert_trees_all_close(grads, want_grads, rtol=1e-12, atol=1e-12)


# --- the functions ----------------------------------------------------------------------


def test_unbatched_input_equals_a_batch_of_one():
    x, W, b = _arrays(CONFIGS[1], np.float32)

    def both(x, W, b):
        one = conv2d(x[0], W, b, stride=2, padding="same")
        return one, conv2d(x[:1], W, b, stride=2, padding="SAME")[0]

    one, batch = jax.jit(both)(x, W, b)
    chex.assert_trees_all_close(one, batch)
    assert one.shape == (3, 4, 3)


def test_padding_forms_agree():
    x, W, _ = _arrays(CONFIGS[0], np.float32)  # 5x7 input, 3x2 kernel
    explicit = conv2d(x, W, padding=((1, 1), (1, 1)))
    chex.assert_trees_all_equal(conv2d(x, W, padding=1), explicit)
    chex.assert_trees_all_equal(conv2d(x, W, padding=(1, 1)), explicit)
    chex.assert_trees_all_equal(conv2d(x, W, padding="valid"), conv2d(x, W, padding=0))
    # SAME with an even kernel (width 2): the extra column is padded at the end, as XLA does
    chex.assert_trees_all_equal(
        conv2d(x, W, padding="SAME"), conv2d(x, W, padding=((1, 1), (0, 1)))
    )


def _ones(*shape, dtype=np.float32):
    """A NumPy input, ``_ones(2, 3)`` or ``_ones((2, 3))``: the checks run before anything
    is compiled."""
    return np.ones(shape[0] if isinstance(shape[0], tuple) else shape, dtype)


ERRORS = [
    (
        "rank",
        lambda: conv2d(_ones((5, 5)), _ones((3, 3, 1, 2))),
        r"conv2d: expected input of shape \(batch, H, W, C_in\) or \(H, W, C_in\) .*got shape \(5, 5\)",
    ),
    (
        "channels",
        lambda: conv2d(_ones((2, 5, 5, 4)), _ones((3, 3, 3, 2))),
        (
            r"conv2d: expected input with C_in = 3 channels on the last axis \(batch, H, W, C_in\), "
            r"got shape \(2, 5, 5, 4\)$"
        ),
    ),
    (
        "nchw",
        lambda: conv2d(_ones((2, 3, 5, 5)), _ones((3, 3, 3, 2))),
        r"C_in = 3 .*got shape \(2, 3, 5, 5\); it looks channels-first .*x\.transpose\(0, 2, 3, 1\)",
    ),
    (
        "nchw_unbatched",
        lambda: conv2d(_ones((3, 5, 6)), _ones((3, 3, 3, 2))),
        r"got shape \(3, 5, 6\); .*x\.transpose\(1, 2, 0\)",
    ),
    ("ncw", lambda: conv1d(_ones((2, 3, 8)), _ones((3, 3, 2))), r"x\.transpose\(0, 2, 1\)"),
    (
        "kernel_rank",
        lambda: conv2d(_ones((2, 5, 5, 3)), _ones((3, 3, 2))),
        r"conv2d: expected a kernel W of shape \(kh, kw, C_in // groups, C_out\), got shape \(3, 3, 2\)",
    ),
    (
        "empty",
        lambda: conv2d(_ones((1, 4, 5, 1)), _ones((3, 3, 1, 1)), dilation=2),
        r"conv2d: along spatial dim 0 the kernel spans 5 .*padded input has only 4 .*empty",
    ),
    (
        "stride",
        lambda: conv2d(_ones((1, 4, 4, 1)), _ones((3, 3, 1, 1)), stride=0),
        r"conv2d: stride must be a positive integer, got 0",
    ),
    (
        "dilation",
        lambda: conv1d(_ones((1, 4, 1)), _ones((3, 1, 1)), dilation=(1, 1)),
        r"conv1d: dilation must be a positive int or 1 of them .*got \(1, 1\)",
    ),
    (
        "groups_c_out",
        lambda: conv2d(_ones((1, 4, 4, 4)), _ones((3, 3, 2, 3)), groups=2),
        r"conv2d: groups=2 must divide C_out .*\(3, 3, 2, 3\)",
    ),
    (
        "padding_string",
        lambda: conv2d(_ones((1, 4, 4, 1)), _ones((3, 3, 1, 1)), padding="FULL"),
        r"conv2d: padding must be 'SAME', 'VALID', .*got 'FULL'",
    ),
    (
        "padding_pair",
        lambda: conv2d(_ones((1, 4, 4, 1)), _ones((3, 3, 1, 1)), padding=((1, 2, 3), (0, 0))),
        r"conv2d: padding must be .*2 \(lo, hi\) pairs, got \(\(1, 2, 3\), \(0, 0\)\)",
    ),
    (
        "padding_negative",
        lambda: conv1d(_ones((1, 4, 1)), _ones((3, 1, 1)), padding=-1),
        r"conv1d: padding must be",
    ),
    (
        "bias",
        lambda: conv1d(_ones((1, 4, 1)), _ones((3, 1, 2)), _ones(3)),
        r"conv1d: expected b of shape \(2,\) \(C_out\), got shape \(3,\)",
    ),
    (
        "primitive_options",
        lambda: conv(_ones((1, 4, 1)), _ones((3, 1, 1)), stride=2),
        r"conv: stride must be a tuple of 1 positive ints",
    ),
    (
        "primitive_unbatched",
        lambda: conv(_ones((4, 1)), _ones((3, 1, 1))),
        r"conv: expected input of shape \(batch, L, C_in\) \(1 spatial dim",
    ),
    (
        "primitive_dtypes",
        lambda: conv(_ones((1, 4, 1)), _ones(3, 1, 1, dtype=jnp.bfloat16)),
        r"conv: expected x and W of one dtype, got float32, bfloat16; cast the input",
    ),
]


@pytest.mark.parametrize("make, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_input_gives_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_integer_input_is_refused():
    with pytest.raises(
        TypeError, match=r"conv2d: expected a floating-point input, got dtype int32"
    ):
        conv2d(_ones(1, 4, 4, 1, dtype=np.int32), _ones((3, 3, 1, 1)))


# --- the layers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, input_shape",
    [
        (Conv2D(3, (3, 2)), (5, 7, 2)),
        (Conv2D(4, 3, stride=2, padding="SAME"), (2, 5, 7, 2)),
        (Conv2D(2, (2, 3), stride=(2, 1), padding=((1, 0), (0, 2)), dilation=2), (1, 6, 7, 2)),
        (Conv2D(6, 3, padding=1, groups=3), (2, 5, 5, 3)),
        (Conv1D(2, 3, stride=2), (2, 8, 3)),
        (Conv1D(2, 4, padding="SAME", dilation=2), (7, 3)),
    ],
    ids=lambda v: repr(v) if not isinstance(v, tuple) else "x".join(map(str, v)),
)
def test_output_shape_formula_equals_the_output(layer, input_shape):
    params = jax.eval_shape(lambda: layer.init(0, input_shape))
    out = jax.eval_shape(layer.apply, params, jax.ShapeDtypeStruct(input_shape, jnp.float32))
    assert layer.output_shape(input_shape) == out.shape
    n = len(layer.kernel_size)
    sizes = input_shape[-n - 1 : -1]
    if layer.padding == "SAME":
        want = tuple(math.ceil(size / s) for size, s in zip(sizes, layer.stride))
    else:
        pads = ((0, 0),) * n if layer.padding == "VALID" else layer.padding
        want = tuple(
            (size + lo + hi - d * (k - 1) - 1) // s + 1
            for size, (lo, hi), d, k, s in zip(
                sizes, pads, layer.dilation, layer.kernel_size, layer.stride
            )
        )
    assert out.shape == input_shape[: -n - 1] + want + (layer.c_out,)


def test_he_init_variance_uses_the_conv_fan_in():
    layers = {groups: Conv2D(64, 3, groups=groups) for groups in (1, 4)}
    init = jax.jit(lambda key: {g: layer.init(key, (8, 8, 32)) for g, layer in layers.items()})
    for groups, params in init(jax.random.key(3)).items():
        W = params["W"]
        assert W.shape == (3, 3, 32 // groups, 64)
        fan_in = 3 * 3 * 32 // groups  # the taps one output unit sees
        np.testing.assert_allclose(float(jnp.var(W)), 2.0 / fan_in, rtol=0.05)
        np.testing.assert_allclose(float(jnp.mean(W)), 0.0, atol=0.05 * math.sqrt(2.0 / fan_in))


def test_layer_params_and_bias():
    layer = Conv1D(
        4, 3, use_bias=False, w_init=initializers.xavier_normal, param_dtype=jnp.bfloat16
    )
    params = layer.init(0, (10, 2))
    assert set(params) == {"W"} and params["W"].shape == (3, 2, 4)
    assert params["W"].dtype == jnp.bfloat16
    x = np.random.default_rng(1).standard_normal((10, 2)).astype(jnp.bfloat16)
    y, want = jax.jit(lambda p, x: (layer.apply(p, x), conv1d(x, p["W"])))(params, x)
    assert y.dtype == jnp.bfloat16 and y.shape == (8, 4)
    chex.assert_trees_all_equal(y, want)


def test_config_is_normalized_and_written_as_given():
    assert Conv2D(8, 3) == Conv2D(8, (3, 3), stride=(1, 1), padding="valid")
    assert hash(Conv2D(8, 3, padding=1)) == hash(Conv2D(8, 3, padding=((1, 1), (1, 1))))
    layer = Conv2D(8, (3, 2), stride=2, padding="same", groups=2, use_bias=False)
    assert layer.kernel_size == (3, 2) and layer.stride == (2, 2) and layer.padding == "SAME"
    assert repr(layer) == "Conv2D(8, (3, 2), stride=2, padding='SAME', groups=2, use_bias=False)"
    assert repr(Conv1D(4, 3, padding=((2, 1),))) == "Conv1D(4, 3, padding=((2, 1),))"


LAYER_ERRORS = [
    ("c_out", lambda: Conv2D(0, 3), r"Conv2D: c_out must be a positive integer, got 0"),
    ("kernel", lambda: Conv2D(4, (3, 0)), r"Conv2D: kernel_size must be a positive integer, got 0"),
    (
        "kernel_dims",
        lambda: Conv1D(4, (3, 3)),
        r"Conv1D: kernel_size must be a positive int or 1 of",
    ),
    (
        "stride",
        lambda: Conv2D(4, 3, stride=-1),
        r"Conv2D: stride must be a positive integer, got -1",
    ),
    ("dilation", lambda: Conv1D(4, 3, dilation=0), r"Conv1D: dilation must be a positive integer"),
    ("groups", lambda: Conv2D(6, 3, groups=4), r"Conv2D: groups=4 must divide c_out=6"),
    ("padding", lambda: Conv2D(6, 3, padding="full"), r"Conv2D: padding must be 'SAME', 'VALID'"),
    (
        "dtype",
        lambda: Conv2D(6, 3, param_dtype=jnp.int32),
        r"Conv2D: param_dtype must be a floating",
    ),
    (
        "init_groups",
        lambda: Conv2D(6, 3, groups=2).init(0, (5, 5, 3)),
        r"Conv2D\(6, 3, groups=2\): groups=2 must divide the input's C_in = 3",
    ),
    (
        "init_rank",
        lambda: Conv2D(6, 3).init(0, (5, 3)),
        r"Conv2D\(6, 3\): expected an input shape \(batch, H, W, C_in\) or \(H, W, C_in\), got \(5, 3\)",
    ),
    (
        "init_small",
        lambda: Conv2D(6, 3).init(0, (5, 2, 3)),
        r"Conv2D\(6, 3\): along spatial dim 1 the kernel spans 3 .*only 2",
    ),
]


@pytest.mark.parametrize(
    "make, message", [e[1:] for e in LAYER_ERRORS], ids=[e[0] for e in LAYER_ERRORS]
)
def test_bad_config_gives_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_layer_refuses_bad_inputs_naming_itself():
    layer = Conv2D(4, 3)
    params = jax.eval_shape(lambda: layer.init(0, (5, 5, 3)))  # shapes are all the checks read
    with pytest.raises(
        ValueError,
        match=r"^Conv2D\(4, 3\): expected input with C_in = 3 .*x\.transpose\(0, 2, 3, 1\)",
    ):
        layer.apply(params, _ones((2, 3, 5, 5)))
    with pytest.raises(
        ValueError, match=r"^Conv2D\(4, 3\): expected input of shape \(batch, H, W, C_in\)"
    ):
        layer.apply(params, _ones((2, 1, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"^Conv2D\(4, 3\): along spatial dim 0 .*empty"):
        layer.apply(params, _ones((2, 2, 5, 3)))
    with pytest.raises(TypeError, match=r"^Conv2D\(4, 3\): expected x, W and b of one dtype"):
        layer.apply(params, _ones(2, 5, 5, 3, dtype=jnp.bfloat16))
    with pytest.raises(TypeError, match=r"^Conv2D\(4, 3\): expected a floating-point input"):
        layer.apply(params, _ones(2, 5, 5, 3, dtype=np.int32))
    with pytest.raises(ValueError, match=r"another model's parameters"):
        layer.apply(jax.eval_shape(lambda: Conv2D(4, 2).init(0, (5, 5, 3))), _ones(2, 5, 5, 3))
