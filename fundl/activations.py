"""Activation functions g(z), each with its hand-written backward rule and g'(z).

Every activation is a :class:`fundl.rules.Primitive`: a plain ``jax.numpy`` reference,
a forward that saves the cheapest residual, and a backward rule ``dZ = dA ⊙ g'(Z)``
(the notes' backprop step 3) registered with ``jax.custom_vjp``. Elementwise ones also
export ``<name>_derivative(z)``, g'(z) itself, also reachable as ``<name>.derivative``.

All are stable for large |z|: no overflow in the forward and no NaN in the gradient at
|z| = 1e4 (where an untaken branch of a ``where`` could overflow, its input is clamped).

Examples:
  ``jax.grad`` runs the hand-written rule, which multiplies by g'(z):

  >>> z = jnp.array([-2.0, 0.0, 2.0])
  >>> dz = jax.grad(lambda z: fundl.activations.tanh(z).sum())(z)
  >>> [round(float(v), 4) for v in dz]
  [0.0707, 1.0, 0.0707]
  >>> [round(float(v), 4) for v in fundl.activations.tanh_derivative(z)]
  [0.0707, 1.0, 0.0707]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from fundl._validate import check_bool, check_floating, check_number
from fundl.rules import Primitive, primitive

__all__ = [
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "silu",
    "swish",
    "softplus",
    "softmax",
    "log_softmax",
    "identity",
    "sigmoid_derivative",
    "tanh_derivative",
    "relu_derivative",
    "leaky_relu_derivative",
    "elu_derivative",
    "gelu_derivative",
    "silu_derivative",
    "softplus_derivative",
    "identity_derivative",
    "get",
    "names",
]


def _floating(name: str) -> Callable[..., None]:
    def check(z: Any, **options: Any) -> None:
        check_floating(name, "a floating-point input", z)  # None and lists named too
        if "axis" not in options:
            return
        axis = options["axis"]
        if axis is None:
            return
        if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"{name}: axis must be an int (or None for all axes), got {axis!r}")
        if not -jnp.ndim(z) <= axis < max(jnp.ndim(z), 1):
            raise ValueError(
                f"{name}: axis {axis} is out of range for input of shape {jnp.shape(z)}"
            )
        if jnp.shape(z)[axis] == 0:
            raise ValueError(
                f"{name}: axis {axis} of the input of shape {jnp.shape(z)} is empty; "
                "it needs at least one class"
            )

    return check


# --- sigmoid -------------------------------------------------------------------------


@primitive(check=_floating("sigmoid"))
def sigmoid(z):
    """Logistic sigmoid σ(z) = 1 / (1 + e^{-z}); σ'(z) = σ(z)(1 − σ(z)).

    Computed as 1/(1 + e^{-z}) for z ≥ 0 and e^z/(1 + e^z) for z < 0, each branch fed
    only the z it is used for, so neither overflows (nor its gradient). Saves σ(z).

    Args:
      z: floating-point array of any shape.

    Returns:
      σ(z), same shape and dtype, in (0, 1).

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.sigmoid(z)]
      [0.1192, 0.5, 0.8808]
    """
    zeros = jnp.zeros_like(z)
    positive = z >= 0
    e_neg = jnp.exp(-jnp.where(positive, z, zeros))  # e^{-z} where z ≥ 0, else 1
    e_pos = jnp.exp(jnp.where(positive, zeros, z))  # e^{z} where z < 0, else 1
    return jnp.where(positive, 1 / (1 + e_neg), e_pos / (1 + e_pos))


def sigmoid_fwd(z):
    s = sigmoid.reference(z)
    return s, s


def sigmoid_bwd(s, g):
    return (g * s * (1 - s),)


def sigmoid_derivative(z):
    """σ'(z) = σ(z)(1 − σ(z)), elementwise; also ``sigmoid.derivative``.

    Args:
      z: floating-point array of any shape.

    Returns:
      σ'(z), same shape, in (0, 1/4].

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.sigmoid_derivative(z)]
      [0.105, 0.25, 0.105]
    """
    _floating("sigmoid_derivative")(z)
    s = sigmoid.reference(z)
    return s * (1 - s)


sigmoid.defvjp(sigmoid_fwd, sigmoid_bwd, derivative=sigmoid_derivative)


# --- tanh ----------------------------------------------------------------------------


@primitive(check=_floating("tanh"))
def tanh(z):
    """Hyperbolic tangent g(z) = (e^z − e^{−z})/(e^z + e^{−z}); g'(z) = 1 − tanh²(z).

    Saves tanh(z).

    Args:
      z: floating-point array of any shape.

    Returns:
      tanh(z), same shape and dtype, in (−1, 1).

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.tanh(z)]
      [-0.964, 0.0, 0.964]
    """
    return jnp.tanh(z)


def tanh_fwd(z):
    t = jnp.tanh(z)
    return t, t


def tanh_bwd(t, g):
    return (g * (1 - t * t),)


def tanh_derivative(z):
    """tanh'(z) = 1 − tanh²(z), elementwise; also ``tanh.derivative``.

    Args:
      z: floating-point array of any shape.

    Returns:
      tanh'(z), same shape, in (0, 1].

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.tanh_derivative(z)]
      [0.0707, 1.0, 0.0707]
    """
    _floating("tanh_derivative")(z)
    t = jnp.tanh(z)
    return 1 - t * t


tanh.defvjp(tanh_fwd, tanh_bwd, derivative=tanh_derivative)


# --- relu ----------------------------------------------------------------------------


@primitive(check=_floating("relu"))
def relu(z):
    """Rectified linear unit max(0, z); relu'(z) = 1 if z > 0 else 0 (0 at z = 0).

    A NaN input gives NaN (as ``jax.nn.relu``): the test is ``z <= 0``, false for NaN,
    so NaN takes the identity branch, and its gradient passes through there too.
    Saves only the boolean mask ¬(z ≤ 0) (a byte per element, not the float input).

    Args:
      z: floating-point array of any shape.

    Returns:
      max(0, z), same shape and dtype.

    Examples:
      >>> fundl.activations.relu(jnp.array([-2.0, 0.0, 2.0]))
      Array([0., 0., 2.], dtype=float32)
    """
    return jnp.where(z <= 0, jnp.zeros_like(z), z)


def relu_fwd(z):
    keep = ~(z <= 0)  # z > 0, or NaN
    return jnp.where(keep, z, jnp.zeros_like(z)), keep


def relu_bwd(keep, g):
    return (jnp.where(keep, g, jnp.zeros_like(g)),)


def relu_derivative(z):
    """relu'(z) = 1 where z > 0, else 0 (1 at NaN, as autodiff of the reference).

    Also ``relu.derivative``.

    Args:
      z: floating-point array of any shape.

    Returns:
      relu'(z), same shape and dtype, 0 or 1.

    Examples:
      >>> fundl.activations.relu_derivative(jnp.array([-2.0, 0.0, 2.0]))
      Array([0., 0., 1.], dtype=float32)
    """
    _floating("relu_derivative")(z)
    return (~(jnp.asarray(z) <= 0)).astype(jnp.result_type(z))


relu.defvjp(relu_fwd, relu_bwd, derivative=relu_derivative)


# --- leaky_relu ----------------------------------------------------------------------


def _check_leaky_relu(z, *, negative_slope, name="leaky_relu"):
    _floating(name)(z)
    check_number(name, "negative_slope", negative_slope)


@primitive(check=_check_leaky_relu)
def leaky_relu(z, *, negative_slope=0.01):
    """Leaky ReLU: z if z > 0 else negative_slope·z; derivative 1 or negative_slope.

    The derivative at z = 0 is ``negative_slope``. Saves the mask z > 0.

    Args:
      z: floating-point array of any shape.
      negative_slope: slope for z ≤ 0 (0.01 by default, as in the notes).

    Returns:
      g(z), same shape and dtype.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.leaky_relu(z)]
      [-0.02, 0.0, 2.0]
      >>> [round(float(v), 4) for v in fundl.activations.leaky_relu(z, negative_slope=0.2)]
      [-0.4, 0.0, 2.0]
    """
    return jnp.where(z > 0, z, negative_slope * z)


def leaky_relu_fwd(z, *, negative_slope):
    mask = z > 0
    return jnp.where(mask, z, negative_slope * z), mask


def leaky_relu_bwd(mask, g, *, negative_slope):
    return (jnp.where(mask, g, negative_slope * g),)


def leaky_relu_derivative(z, *, negative_slope=0.01):
    """leaky_relu'(z) = 1 where z > 0, else ``negative_slope``; also ``leaky_relu.derivative``.

    Args:
      z: floating-point array of any shape.
      negative_slope: slope for z ≤ 0 (0.01 by default).

    Returns:
      g'(z), same shape and dtype.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.leaky_relu_derivative(z)]
      [0.01, 0.01, 1.0]
    """
    _check_leaky_relu(z, negative_slope=negative_slope, name="leaky_relu_derivative")
    dtype = jnp.result_type(z)
    return jnp.where(z > 0, jnp.ones_like(z), jnp.full_like(z, negative_slope, dtype))


leaky_relu.defvjp(leaky_relu_fwd, leaky_relu_bwd, derivative=leaky_relu_derivative)


# --- elu -----------------------------------------------------------------------------


def _check_elu(z, *, alpha, name="elu"):
    _floating(name)(z)
    check_number(name, "alpha", alpha, low=0.0, low_open=True)


@primitive(check=_check_elu)
def elu(z, *, alpha=1.0):
    """Exponential linear unit: z if z > 0 else α(e^z − 1).

    elu'(z) = 1 if z > 0 else α e^z = elu(z) + α, so only the output is saved. That
    sum is exact to about one float32 rounding of α (1.2e-7·α) in absolute terms, so
    it keeps no relative digits where elu' itself is that small, z below about −16
    (as sigmoid's and tanh's rules from their outputs do when saturated);
    ``elu.derivative`` computes α e^z from z.

    Args:
      z: floating-point array of any shape.
      alpha: positive saturation value for z → −∞ (1.0 by default): elu(z) → −α.

    Returns:
      g(z), same shape and dtype, in (−α, ∞).

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.elu(z)]
      [-0.8647, 0.0, 2.0]
      >>> [round(float(v), 4) for v in fundl.activations.elu(z, alpha=0.5)]
      [-0.4323, 0.0, 2.0]
    """
    # expm1 sees only z ≤ 0: a large positive z in the untaken branch would overflow.
    negative_part = jnp.where(z > 0, jnp.zeros_like(z), z)
    return jnp.where(z > 0, z, alpha * jnp.expm1(negative_part))


def elu_fwd(z, *, alpha):
    a = elu.reference(z, alpha=alpha)
    return a, a


def elu_bwd(a, g, *, alpha):
    return (jnp.where(a > 0, g, g * (a + alpha)),)


def elu_derivative(z, *, alpha=1.0):
    """elu'(z) = 1 where z > 0, else α e^z; also ``elu.derivative``.

    Args:
      z: floating-point array of any shape.
      alpha: the same α as :func:`elu` (1.0 by default).

    Returns:
      g'(z), same shape and dtype.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.elu_derivative(z)]
      [0.1353, 1.0, 1.0]
    """
    _check_elu(z, alpha=alpha, name="elu_derivative")
    negative_part = jnp.where(z > 0, jnp.zeros_like(z), z)
    return jnp.where(z > 0, jnp.ones_like(z), alpha * jnp.exp(negative_part))


elu.defvjp(elu_fwd, elu_bwd, derivative=elu_derivative)


# --- gelu ----------------------------------------------------------------------------

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_CUBIC = 0.044715


def _check_gelu(z, *, approximate, name="gelu"):
    _floating(name)(z)
    check_bool(name, "approximate", approximate)


@primitive(check=_check_gelu)
def gelu(z, *, approximate=False):
    """Gaussian error linear unit z·Φ(z).

    Exact: 0.5 z (1 + erf(z/√2)), derivative Φ(z) + z φ(z).
    ``approximate=True``: 0.5 z (1 + tanh(u)), u = √(2/π)(z + 0.044715 z³), derivative
    0.5(1 + tanh u) + 0.5 z (1 − tanh² u) √(2/π)(1 + 3·0.044715 z²). Saves z.
    Φ and φ are the standard normal CDF and density.

    Args:
      z: floating-point array of any shape.
      approximate: use the tanh approximation (GPT-2, BERT) instead of erf.

    Returns:
      GELU(z), same shape and dtype.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.gelu(z)]
      [-0.0455, 0.0, 1.9545]
      >>> [round(float(v), 3) for v in fundl.activations.gelu(z, approximate=True)]
      [-0.045, 0.0, 1.955]
    """
    if approximate:
        u = _SQRT_2_OVER_PI * (z + _GELU_CUBIC * z**3)
        return 0.5 * z * (1 + jnp.tanh(u))
    return 0.5 * z * (1 + lax.erf(z / math.sqrt(2)))


def gelu_fwd(z, *, approximate):
    return gelu.reference(z, approximate=approximate), z


def gelu_bwd(z, g, *, approximate):
    return (g * gelu_derivative(z, approximate=approximate),)


def gelu_derivative(z, *, approximate=False):
    """GELU'(z): Φ(z) + z φ(z) (exact) or the derivative of the tanh form.

    Also ``gelu.derivative``; see :func:`gelu` for the tanh form's derivative.

    Args:
      z: floating-point array of any shape.
      approximate: the derivative of the tanh approximation instead.

    Returns:
      GELU'(z), same shape and dtype.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.gelu_derivative(z)]
      [-0.0852, 0.5, 1.0852]
    """
    _check_gelu(z, approximate=approximate, name="gelu_derivative")
    if approximate:
        t = jnp.tanh(_SQRT_2_OVER_PI * (z + _GELU_CUBIC * z**3))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * z * z)
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du
    cdf = 0.5 * (1 + lax.erf(z / math.sqrt(2)))
    pdf = jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


gelu.defvjp(gelu_fwd, gelu_bwd, derivative=gelu_derivative)


# --- silu / swish --------------------------------------------------------------------


@primitive(check=_floating("silu"))
def silu(z):
    """Sigmoid linear unit g(z) = z·σ(z); g'(z) = σ(z)(1 + z(1 − σ(z))). Saves z.

    ``swish`` is the same function (the same object), under its other name.

    Args:
      z: floating-point array of any shape.

    Returns:
      z·σ(z), same shape and dtype.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.silu(z)]
      [-0.2384, 0.0, 1.7616]
      >>> fundl.activations.swish is fundl.activations.silu
      True
    """
    return z * sigmoid.reference(z)


def silu_fwd(z):
    return silu.reference(z), z


def silu_bwd(z, g):
    return (g * silu_derivative(z),)


def silu_derivative(z):
    """silu'(z) = σ(z)(1 + z(1 − σ(z))); also ``silu.derivative`` (and swish's).

    Args:
      z: floating-point array of any shape.

    Returns:
      silu'(z), same shape and dtype.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.silu_derivative(z)]
      [-0.0908, 0.5, 1.0908]
    """
    _floating("silu_derivative")(z)
    s = sigmoid.reference(z)
    return s * (1 + z * (1 - s))


silu.defvjp(silu_fwd, silu_bwd, derivative=silu_derivative)
swish = silu


# --- softplus ------------------------------------------------------------------------


@primitive(check=_floating("softplus"))
def softplus(z):
    """Softplus g(z) = log(1 + e^z), computed as logaddexp(z, 0); g'(z) = σ(z). Saves z.

    Args:
      z: floating-point array of any shape.

    Returns:
      log(1 + e^z), same shape and dtype, positive.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.softplus(z)]
      [0.1269, 0.6931, 2.1269]
    """
    return jnp.logaddexp(z, jnp.zeros_like(z))


def softplus_fwd(z):
    return softplus.reference(z), z


def softplus_bwd(z, g):
    return (g * sigmoid.reference(z),)


def softplus_derivative(z):
    """softplus'(z) = σ(z), elementwise; also ``softplus.derivative``.

    Args:
      z: floating-point array of any shape.

    Returns:
      σ(z), same shape and dtype.

    Examples:
      >>> z = jnp.array([-2.0, 0.0, 2.0])
      >>> [round(float(v), 4) for v in fundl.activations.softplus_derivative(z)]
      [0.1192, 0.5, 0.8808]
    """
    _floating("softplus_derivative")(z)
    return sigmoid.reference(z)


softplus.defvjp(softplus_fwd, softplus_bwd, derivative=softplus_derivative)


# --- identity ------------------------------------------------------------------------


@primitive(check=_floating("identity"))
def identity(z):
    """The linear activation g(z) = z (regression outputs, logits); g'(z) = 1.

    Also found by :func:`get` as "linear".

    Args:
      z: floating-point array of any shape.

    Returns:
      z itself.

    Examples:
      >>> fundl.activations.identity(jnp.array([-2.0, 0.0, 2.0]))
      Array([-2.,  0.,  2.], dtype=float32)
    """
    return z


def identity_fwd(z):
    return z, None


def identity_bwd(_, g):
    return (g,)


def identity_derivative(z):
    """identity'(z) = 1 everywhere; also ``identity.derivative``.

    Args:
      z: array of any shape.

    Returns:
      ones of z's shape and dtype.

    Examples:
      >>> fundl.activations.identity_derivative(jnp.array([-2.0, 0.0, 2.0]))
      Array([1., 1., 1.], dtype=float32)
    """
    _floating("identity_derivative")(z)
    return jnp.ones_like(z)


identity.defvjp(identity_fwd, identity_bwd, derivative=identity_derivative)


# --- softmax and log_softmax ---------------------------------------------------------


@primitive(check=_floating("softmax"))
def softmax(z, *, axis=-1):
    """Softmax along ``axis``: s_i = e^{z_i − max z} / Σ_j e^{z_j − max z}.

    Not elementwise: the VJP is s ⊙ (g − Σ_j g_j s_j). Saves s.

    Args:
      z: array of any shape.
      axis: the class axis (last by default).

    Returns:
      array of the same shape; each slice along ``axis`` sums to 1.

    Examples:
      >>> z = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
      >>> s = fundl.activations.softmax(z)
      >>> [round(float(v), 4) for v in s[0]], [round(float(v), 4) for v in s[1]]
      ([0.09, 0.2447, 0.6652], [0.3333, 0.3333, 0.3333])
      >>> [round(float(v), 4) for v in s.sum(axis=-1)]
      [1.0, 1.0]
    """
    shifted = z - lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    e = jnp.exp(shifted)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def softmax_fwd(z, *, axis):
    s = softmax.reference(z, axis=axis)
    return s, s


def softmax_bwd(s, g, *, axis):
    return (s * (g - jnp.sum(g * s, axis=axis, keepdims=True)),)


softmax.defvjp(softmax_fwd, softmax_bwd)


@primitive(check=_floating("log_softmax"))
def log_softmax(z, *, axis=-1):
    """log softmax along ``axis``: z − max z − log Σ_j e^{z_j − max z}.

    VJP: g − softmax(z) Σ_j g_j, with softmax = exp(output). Saves the output.

    Args:
      z: array of any shape.
      axis: the class axis (last by default).

    Returns:
      array of the same shape, ≤ 0; exp of each slice along ``axis`` sums to 1.

    Examples:
      >>> z = jnp.array([1.0, 2.0, 3.0])
      >>> [round(float(v), 4) for v in fundl.activations.log_softmax(z)]
      [-2.4076, -1.4076, -0.4076]
    """
    shifted = z - lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def log_softmax_fwd(z, *, axis):
    out = log_softmax.reference(z, axis=axis)
    return out, out


def log_softmax_bwd(out, g, *, axis):
    return (g - jnp.exp(out) * jnp.sum(g, axis=axis, keepdims=True),)


log_softmax.defvjp(log_softmax_fwd, log_softmax_bwd)


# --- lookup by name ------------------------------------------------------------------

_BY_NAME: dict[str, Primitive] = {
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "gelu": gelu,
    "silu": silu,
    "swish": silu,
    "softplus": softplus,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "identity": identity,
    "linear": identity,
}


def names() -> list[str]:
    """The activation names :func:`get` accepts, sorted ("linear" is identity, "swish" silu).

    Returns:
      a list of str.

    Examples:
      >>> fundl.activations.names()[:4]
      ['elu', 'gelu', 'identity', 'leaky_relu']
      >>> len(fundl.activations.names())
      13
    """
    return sorted(_BY_NAME)


def get(name: str | Primitive) -> Primitive:
    """Look up an activation by name ("relu", "sigmoid", ...); a primitive passes through.

    Args:
      name: one of :func:`names`, or a :class:`fundl.rules.Primitive`.

    Returns:
      the activation primitive.

    Raises:
      ValueError: for an unknown name, listing the known ones.

    Examples:
      >>> fundl.activations.get("relu") is fundl.activations.relu
      True
      >>> fundl.activations.get("linear") is fundl.activations.identity
      True
      >>> fundl.activations.get("rleu")
      Traceback (most recent call last):
      ...
      ValueError: activation: unknown activation 'rleu'; known: elu, gelu, ...
    """

    if isinstance(name, Primitive):
        return name
    if not isinstance(name, str) or name not in _BY_NAME:
        raise ValueError(f"activation: unknown activation {name!r}; known: {', '.join(names())}")
    return _BY_NAME[name]
