"""Initializers: every random weight in fundl comes from one of these.

(Named ``fundl.initializers``, as ``jax.nn.initializers``, so it does not read like a
model's ``init``; ``fundl.init`` remains as a deprecated alias.)

An initializer is ``init_fn(key, shape, dtype=jnp.float32) -> Array``; ``key`` is a PRNG
key or, as everywhere in fundl, an int seed s (``jax.random.key(s)``). All the random
ones are :func:`variance_scaling` with a fixed ``(scale, mode, distribution)``:

| initializer      | variance               | distribution             |
| ---------------- | ---------------------- | ------------------------ |
| `he_normal`      | 2 / fan_in             | N(0, var)                |
| `he_uniform`     | 2 / fan_in             | U(-a, a), a = sqrt(3 var) |
| `xavier_normal`  | 2 / (fan_in + fan_out) | N(0, var)                |
| `xavier_uniform` | 2 / (fan_in + fan_out) | U(-a, a)                 |
| `lecun_normal`   | 1 / fan_in             | N(0, var)                |
| `lecun_uniform`  | 1 / fan_in             | U(-a, a)                 |

(`glorot_normal` and `glorot_uniform` are the Xavier functions under their other name.)

Fans (see :func:`fans`): a dense weight ``(n_out, n_in)`` has fan_in = n_in and
fan_out = n_out; a conv kernel HWIO ``(kh, kw, c_in, c_out)`` (any number of spatial
dims) has fan_in = kh·kw·c_in and fan_out = kh·kw·c_out; a vector ``(n,)`` has both n.

Examples:
  Any function with the ``Initializer`` signature can be a layer's ``w_init``:

  >>> def small(key, shape, dtype=jnp.float32):
  ...     return 0.1 * fundl.initializers.he_normal(key, shape, dtype)
  >>> layer = fundl.nn.Dense(3, w_init=small)
  >>> params = layer.init(jax.random.key(0), (2,))
  >>> params["W"].shape, params["b"].shape
  ((3, 2), (3,))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from fundl._validate import as_single_key, check_choice, check_int, check_number

__all__ = [
    "Initializer",
    "fans",
    "variance_scaling",
    "he_normal",
    "he_uniform",
    "xavier_normal",
    "xavier_uniform",
    "glorot_normal",
    "glorot_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
    "normal",
    "uniform",
    "zeros",
    "ones",
    "for_activation",
]

Initializer = Callable[..., jax.Array]
"""``init_fn(key, shape, dtype=jnp.float32) -> Array``."""

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "truncated_normal", "uniform"]
_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")

# Standard deviation of N(0, 1) truncated to [-2, 2]; dividing by it restores the variance.
_TRUNCATED_STD = 0.87962566103423978


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a weight shape.

    ``(n,)`` -> (n, n); ``(n_out, n_in)`` -> (n_in, n_out) (fundl's dense layout);
    ``(*spatial, c_in, c_out)`` (HWIO) -> (prod(spatial)·c_in, prod(spatial)·c_out).

    Args:
      shape: a weight shape with at least one dim.

    Returns:
      ``(fan_in, fan_out)``, two ints.

    Raises:
      ValueError: for the scalar shape ``()``, or a shape that is not a tuple (or list)
        of ints ≥ 0.

    Examples:
      >>> fundl.initializers.fans((4, 3))  # dense W (n_out, n_in)
      (3, 4)
      >>> fundl.initializers.fans((3, 3, 8, 16))  # conv kernel HWIO: 3·3·8, 3·3·16
      (72, 144)
    """
    shape = _check_shape("fans", shape)
    if len(shape) == 0:
        raise ValueError("fans: a scalar shape () has no fan; expected at least 1 dim")
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        n_out, n_in = shape
        return n_in, n_out
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of ints ≥ 0; a bare int, a float or a bool dim is a ``ValueError``."""
    if not isinstance(shape, (tuple, list)):
        hint = ""
        if isinstance(shape, int) and not isinstance(shape, bool):
            hint = f"; pass ({shape},) for a vector"
        raise ValueError(f"{name}: shape must be a tuple of ints, got {shape!r}{hint}")
    return tuple(check_int(name, f"shape[{i}]", d, low=0) for i, d in enumerate(shape))


def _check_dtype(name: str, dtype: Any) -> jnp.dtype:
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"{name}: dtype must be a floating type (e.g. float32), got {dtype!r}"
        ) from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name}: dtype must be a floating type (e.g. float32), got {dtype}")
    return dtype


def variance_scaling(
    scale: float, mode: Mode, distribution: Distribution, *, name: str | None = None
) -> Initializer:
    """Build an initializer with variance ``scale / n``, n chosen by ``mode``.

    n = fan_in, fan_out or (fan_in + fan_out)/2 for ``mode`` = "fan_in", "fan_out",
    "fan_avg". ``distribution``: "normal" draws N(0, var); "truncated_normal" draws a
    normal cut at two standard deviations, rescaled so the variance is still var;
    "uniform" draws U(-a, a) with a = sqrt(3·var).

    Args:
      scale: positive variance multiplier (2 for He, 1 for LeCun and Xavier).
      mode: which fan divides the scale.
      distribution: the shape of the distribution.
      name: the name used in error messages (defaults to a description).

    Returns:
      ``init_fn(key, shape, dtype=jnp.float32) -> Array``.

    Examples:
      He with a normal truncated at 2σ (rescaled, so the std is still sqrt(2/fan_in)):

      >>> init = fundl.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
      >>> W = init(jax.random.key(0), (64, 256))
      >>> round(float(W.std()) / (2 / 256) ** 0.5, 1)  # sample std / sqrt(2/fan_in)
      1.0

    """

    scale = check_number("variance_scaling", "scale", scale, low=0.0, low_open=True)
    check_choice("variance_scaling", "mode", mode, _MODES)
    check_choice("variance_scaling", "distribution", distribution, _DISTRIBUTIONS)
    label = name or f"variance_scaling({scale}, {mode!r}, {distribution!r})"

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        key = as_single_key(label, key)
        dtype = _check_dtype(label, dtype)
        shape = _check_shape(label, shape)
        fan_in, fan_out = fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        if fan_in <= 0 or fan_out <= 0:
            raise ValueError(
                f"{label}: fans must be positive, got fan_in={fan_in}, fan_out={fan_out} "
                f"for shape {tuple(shape)}"
            )
        std = math.sqrt(scale / n)
        if distribution == "normal":
            return std * jax.random.normal(key, shape, dtype)
        if distribution == "truncated_normal":
            return (std / _TRUNCATED_STD) * jax.random.truncated_normal(
                key, -2.0, 2.0, shape, dtype
            )
        limit = math.sqrt(3.0) * std
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    init.__name__ = init.__qualname__ = label
    init.__doc__ = f"{label}: variance {scale}/{mode}, {distribution} distribution."
    return init


_he_normal = variance_scaling(2.0, "fan_in", "normal", name="he_normal")


def he_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """He (Kaiming) normal: W ~ N(0, 2/fan_in). The default for ReLU-family layers.

    ``variance_scaling(2.0, "fan_in", "normal")``; fans as in :func:`fans`.

    Args:
      key: a ``jax.random`` key, or an int seed.
      shape: the weight's shape: dense ``(n_out, n_in)``, conv HWIO, or a vector.
      dtype: a floating dtype (float32 by default).

    Returns:
      an array of ``shape`` and ``dtype``, std sqrt(2/fan_in).

    Examples:
      >>> W = fundl.initializers.he_normal(jax.random.key(0), (64, 256))
      >>> W.shape, W.dtype  # fan_in 256, fan_out 64
      ((64, 256), dtype('float32'))
      >>> round(float(W.std()) / (2 / 256) ** 0.5, 1)  # sample std / sqrt(2/fan_in)
      1.0
    """
    return _he_normal(key, shape, dtype)


_he_uniform = variance_scaling(2.0, "fan_in", "uniform", name="he_uniform")


def he_uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """He uniform: W ~ U(-a, a), a = sqrt(6/fan_in), so the variance is 2/fan_in.

    ``variance_scaling(2.0, "fan_in", "uniform")``; fans as in :func:`fans`.

    Args:
      key: a ``jax.random`` key, or an int seed.
      shape: the weight's shape: dense ``(n_out, n_in)``, conv HWIO, or a vector.
      dtype: a floating dtype (float32 by default).

    Returns:
      an array of ``shape`` and ``dtype``, values in [-a, a], a = sqrt(6/fan_in).

    Examples:
      >>> W = fundl.initializers.he_uniform(jax.random.key(0), (64, 256))
      >>> W.shape, W.dtype  # fan_in 256, fan_out 64
      ((64, 256), dtype('float32'))
      >>> round(float(W.std()) / (2 / 256) ** 0.5, 1)  # sample std / sqrt(2/fan_in)
      1.0
      >>> bool(abs(W).max() <= (6 / 256) ** 0.5)  # a
      True
    """
    return _he_uniform(key, shape, dtype)


_xavier_normal = variance_scaling(1.0, "fan_avg", "normal", name="xavier_normal")


def xavier_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Xavier (Glorot) normal: W ~ N(0, 2/(fan_in + fan_out)). For tanh/sigmoid layers.

    ``variance_scaling(1.0, "fan_avg", "normal")``; fans as in :func:`fans`.

    ``glorot_normal`` is this same function under its other name.

    Args:
      key: a ``jax.random`` key, or an int seed.
      shape: the weight's shape: dense ``(n_out, n_in)``, conv HWIO, or a vector.
      dtype: a floating dtype (float32 by default).

    Returns:
      an array of ``shape`` and ``dtype``, std sqrt(2/(fan_in + fan_out)).

    Examples:
      >>> W = fundl.initializers.xavier_normal(jax.random.key(0), (64, 256))
      >>> W.shape, W.dtype  # fan_in 256, fan_out 64
      ((64, 256), dtype('float32'))
      >>> round(float(W.std()) / (2 / (256 + 64)) ** 0.5, 1)  # std / sqrt(2/(fan_in+fan_out))
      1.0
    """
    return _xavier_normal(key, shape, dtype)


_xavier_uniform = variance_scaling(1.0, "fan_avg", "uniform", name="xavier_uniform")


def xavier_uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Xavier (Glorot) uniform: W ~ U(-a, a), a = sqrt(6/(fan_in + fan_out)).

    The variance is 2/(fan_in + fan_out), as :func:`xavier_normal`'s.

    ``variance_scaling(1.0, "fan_avg", "uniform")``; fans as in :func:`fans`.

    ``glorot_uniform`` is this same function under its other name.

    Args:
      key: a ``jax.random`` key, or an int seed.
      shape: the weight's shape: dense ``(n_out, n_in)``, conv HWIO, or a vector.
      dtype: a floating dtype (float32 by default).

    Returns:
      an array of ``shape`` and ``dtype``, values in [-a, a], a = sqrt(6/(fan_in + fan_out)).

    Examples:
      >>> W = fundl.initializers.xavier_uniform(jax.random.key(0), (64, 256))
      >>> W.shape, W.dtype  # fan_in 256, fan_out 64
      ((64, 256), dtype('float32'))
      >>> round(float(W.std()) / (2 / (256 + 64)) ** 0.5, 1)  # std / sqrt(2/(fan_in+fan_out))
      1.0
      >>> bool(abs(W).max() <= (6 / (256 + 64)) ** 0.5)  # a
      True
    """
    return _xavier_uniform(key, shape, dtype)


glorot_normal = xavier_normal
glorot_uniform = xavier_uniform

_lecun_normal = variance_scaling(1.0, "fan_in", "normal", name="lecun_normal")


def lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """LeCun normal: W ~ N(0, 1/fan_in). For SELU and linear layers.

    ``variance_scaling(1.0, "fan_in", "normal")``; fans as in :func:`fans`.

    Args:
      key: a ``jax.random`` key, or an int seed.
      shape: the weight's shape: dense ``(n_out, n_in)``, conv HWIO, or a vector.
      dtype: a floating dtype (float32 by default).

    Returns:
      an array of ``shape`` and ``dtype``, std sqrt(1/fan_in).

    Examples:
      >>> W = fundl.initializers.lecun_normal(jax.random.key(0), (64, 256))
      >>> W.shape, W.dtype  # fan_in 256, fan_out 64
      ((64, 256), dtype('float32'))
      >>> round(float(W.std()) / (1 / 256) ** 0.5, 1)  # sample std / sqrt(1/fan_in)
      1.0
    """
    return _lecun_normal(key, shape, dtype)


_lecun_uniform = variance_scaling(1.0, "fan_in", "uniform", name="lecun_uniform")


def lecun_uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """LeCun uniform: W ~ U(-a, a), a = sqrt(3/fan_in), so the variance is 1/fan_in.

    ``variance_scaling(1.0, "fan_in", "uniform")``; fans as in :func:`fans`.

    Args:
      key: a ``jax.random`` key, or an int seed.
      shape: the weight's shape: dense ``(n_out, n_in)``, conv HWIO, or a vector.
      dtype: a floating dtype (float32 by default).

    Returns:
      an array of ``shape`` and ``dtype``, values in [-a, a], a = sqrt(3/fan_in).

    Examples:
      >>> W = fundl.initializers.lecun_uniform(jax.random.key(0), (64, 256))
      >>> W.shape, W.dtype  # fan_in 256, fan_out 64
      ((64, 256), dtype('float32'))
      >>> round(float(W.std()) / (1 / 256) ** 0.5, 1)  # sample std / sqrt(1/fan_in)
      1.0
      >>> bool(abs(W).max() <= (3 / 256) ** 0.5)  # a
      True
    """
    return _lecun_uniform(key, shape, dtype)


def normal(stddev: float = 1e-2) -> Initializer:
    """Build an initializer drawing W ~ N(0, stddev²), whatever the fans.

    Args:
      stddev: the positive standard deviation (0.01 by default).

    Returns:
      ``init_fn(key, shape, dtype=jnp.float32) -> Array``.

    Examples:
      >>> W = fundl.initializers.normal(0.1)(jax.random.key(0), (64, 256))
      >>> W.shape, round(float(W.std()), 2)
      ((64, 256), 0.1)
    """
    stddev = check_number("normal", "stddev", stddev, low=0.0, low_open=True)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return stddev * jax.random.normal(
            as_single_key("normal", key),
            _check_shape("normal", shape),
            _check_dtype("normal", dtype),
        )

    init.__name__ = init.__qualname__ = f"normal({stddev})"
    return init


def uniform(scale: float = 1e-2) -> Initializer:
    """Build an initializer drawing W ~ U(-scale, scale), whatever the fans.

    The variance is scale²/3.

    Args:
      scale: the positive bound (0.01 by default).

    Returns:
      ``init_fn(key, shape, dtype=jnp.float32) -> Array``.

    Examples:
      >>> W = fundl.initializers.uniform(0.5)(jax.random.key(0), (64, 256))
      >>> W.shape, bool(abs(W).max() <= 0.5), round(float(W.std()) / (0.5 / 3**0.5), 1)
      ((64, 256), True, 1.0)
    """
    scale = check_number("uniform", "scale", scale, low=0.0, low_open=True)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        dtype = _check_dtype("uniform", dtype)
        shape = _check_shape("uniform", shape)
        return jax.random.uniform(as_single_key("uniform", key), shape, dtype, -scale, scale)

    init.__name__ = init.__qualname__ = f"uniform({scale})"
    return init


def orthogonal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """A (semi-)orthogonal matrix, for recurrent and deep linear layers.

    The weight is viewed as a matrix ``(prod(shape[:-1]), shape[-1])`` — for a dense
    ``(n_out, n_in)`` weight, the weight itself — and has orthonormal rows when it is
    wide and orthonormal columns when it is tall: Q from the QR of a Gaussian matrix,
    signs fixed by diag(R) so the draw is uniform (Haar) over orthogonal matrices.

    Args:
      key: a ``jax.random`` key, or an int seed.
      shape: a shape with at least 2 dims.
      dtype: a floating dtype (float32 by default; the QR runs in float32).

    Returns:
      an array of ``shape`` and ``dtype``.

    Raises:
      ValueError: for fewer than 2 dims, an empty dim, a shape that is not a tuple of
        ints, or a batch of keys.

    Examples:
      A wide ``(3, 5)`` weight has orthonormal rows, W Wᵀ = I:

      >>> W = fundl.initializers.orthogonal(jax.random.key(0), (3, 5))
      >>> with jax.default_matmul_precision("highest"):  # a float32 product on a GPU too
      ...     bool(jnp.allclose(W @ W.T, jnp.eye(3), atol=1e-5))
      True
    """
    key = as_single_key("orthogonal", key)
    dtype = _check_dtype("orthogonal", dtype)
    shape = _check_shape("orthogonal", shape)
    if len(shape) < 2:
        raise ValueError(f"orthogonal: expected a shape with at least 2 dims, got {shape}")
    rows, cols = math.prod(shape[:-1]), shape[-1]
    if rows <= 0 or cols <= 0:
        raise ValueError(f"orthogonal: fans must be positive, got shape {shape}")
    tall = (max(rows, cols), min(rows, cols))
    a = jax.random.normal(key, tall, jnp.float32)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    if rows < cols:
        q = q.T
    return q.reshape(shape).astype(dtype)


def zeros(key: jax.Array | None, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """All zeros (biases, batch-norm shifts). ``key`` is ignored.

    Args:
      key: ignored (``None`` is fine), so it fits the ``Initializer`` signature.
      shape: any shape.
      dtype: a floating dtype (float32 by default).

    Returns:
      zeros of ``shape`` and ``dtype``.

    Examples:
      >>> fundl.initializers.zeros(None, (3,))
      Array([0., 0., 0.], dtype=float32)
    """
    del key
    return jnp.zeros(_check_shape("zeros", shape), _check_dtype("zeros", dtype))


def ones(key: jax.Array | None, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """All ones (batch-norm scales). ``key`` is ignored.

    Args:
      key: ignored (``None`` is fine), so it fits the ``Initializer`` signature.
      shape: any shape.
      dtype: a floating dtype (float32 by default).

    Returns:
      ones of ``shape`` and ``dtype``.

    Examples:
      >>> fundl.initializers.ones(None, (2,), jnp.bfloat16)
      Array([1, 1], dtype=bfloat16)
    """
    del key
    return jnp.ones(_check_shape("ones", shape), _check_dtype("ones", dtype))


_HE_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu", "gelu", "silu", "swish", "softplus"})
_XAVIER_ACTIVATIONS = frozenset({"sigmoid", "tanh", "softmax", "log_softmax", "identity", "linear"})


def for_activation(activation: str | None) -> Initializer:
    """The notes' rule of thumb: He for ReLU-family layers, Xavier for the rest.

    He (``he_normal``) for relu, leaky_relu, elu, gelu, silu/swish, softplus; Xavier
    (``xavier_normal``) for sigmoid, tanh, softmax, log_softmax and a linear output
    (``None``, "identity" or "linear", as :func:`fundl.activations.get` names it).

    Args:
      activation: an activation name, or ``None`` for a linear layer.

    Returns:
      :func:`he_normal` or :func:`xavier_normal`.

    Raises:
      ValueError: for an unknown name, listing the known ones.

    Examples:
      >>> fundl.initializers.for_activation("relu").__name__
      'he_normal'
      >>> fundl.initializers.for_activation("tanh").__name__
      'xavier_normal'
    """

    if activation is None or activation in _XAVIER_ACTIVATIONS:
        return xavier_normal
    if activation in _HE_ACTIVATIONS:
        return he_normal
    known = sorted(_HE_ACTIVATIONS | _XAVIER_ACTIVATIONS)
    raise ValueError(f"for_activation: unknown activation {activation!r}; known: {known}")
