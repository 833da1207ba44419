"""Normalization: batch norm (train and inference), layer norm, RMS norm.

The notes' batch normalization, per feature (the last axis):

    x̂ = (x − μ) / √(σ² + ε),   y = γ x̂ + β,

with μ, σ² the mean and (biased) variance over the batch — every axis but the last, so
a dense layer's (m, n) output and a conv layer's NHWC output are both normalized per
feature. Layer norm takes μ, σ² over the features of each example instead (the last
axis); RMS norm divides by the root mean square of the features, without centring.

All share one backward rule, the full one — μ and σ² are functions of x, not
constants. With N the number of elements each statistic averages and ∂x̂ = g ⊙ γ:

    dx = (1/√(σ² + ε)) (∂x̂ − mean(∂x̂) − x̂ ⊙ mean(∂x̂ ⊙ x̂)),   dγ = Σ g ⊙ x̂,   dβ = Σ g

(means over the normalized axes; sums over all but the last axis). RMS norm drops the
``mean(∂x̂)`` term. Statistics are computed in float32 at least, and outputs come back
in the input's dtype.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from fundl import initializers
from fundl._validate import check_bool, check_floating, check_number, check_param_dtype
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.rules import primitive
from fundl.tree import accumulation_dtype

__all__ = [
    "batch_norm",
    "batch_norm_inference",
    "layer_norm",
    "rms_norm",
    "BatchNorm",
    "LayerNorm",
    "RMSNorm",
]


# --- shared algebra -------------------------------------------------------------------


def _wide(x: jax.Array) -> jax.Array:
    """x in float32 at least: statistics of bfloat16 inputs are taken in float32."""
    return x.astype(accumulation_dtype(x))


def _features(x: jax.Array, v: jax.Array) -> jax.Array:
    """A per-feature vector (C,) shaped to broadcast against x (..., C)."""
    return v.reshape((1,) * (x.ndim - 1) + v.shape)


def _lead(x: jax.Array) -> tuple[int, ...]:
    """Every axis but the last: where the per-feature parameters are shared."""
    return tuple(range(x.ndim - 1))


def _normalize(x, gamma, beta, axes, eps):
    """(y, x̂, 1/√(σ² + ε)), statistics over ``axes``, in the wide dtype."""
    wx = _wide(x)
    mean = jnp.mean(wx, axis=axes, keepdims=True)
    centred = wx - mean
    inv = lax.rsqrt(jnp.mean(centred * centred, axis=axes, keepdims=True) + eps)
    xhat = centred * inv
    y = xhat * _features(x, _wide(gamma)) + _features(x, _wide(beta))
    return y.astype(x.dtype), xhat, inv


def _normalize_bwd(residuals, g, axes, center=True):
    """The full backward of ``_normalize`` (and, with ``center=False``, of RMS norm):
    (dx, dγ, dβ), in the dtypes of g (= x's), γ and γ."""
    xhat, inv, gamma = residuals[:3]
    wg = _wide(g)
    dxhat = wg * _features(xhat, _wide(gamma))
    correction = jnp.mean(dxhat * xhat, axis=axes, keepdims=True) * xhat
    if center:
        correction = correction + jnp.mean(dxhat, axis=axes, keepdims=True)
    dx = inv * (dxhat - correction)
    dgamma = jnp.sum(wg * xhat, axis=_lead(xhat))
    return dx.astype(g.dtype), dgamma.astype(gamma.dtype), jnp.sum(wg, axis=_lead(xhat))


def _check_norm(name: str, x: Any, *vectors: Any, eps: float) -> None:
    check_floating(name, "a floating-point input", x)
    if jnp.ndim(x) < 1:
        raise ValueError(f"{name}: expected an input with a feature axis (last), got a scalar")
    features = jnp.shape(x)[-1]
    for v in vectors:
        if jnp.shape(v) != (features,):
            raise ValueError(
                f"{name}: expected per-feature vectors of shape ({features},) for inputs of "
                f"shape {jnp.shape(x)}, got shape {jnp.shape(v)}"
            )
    check_number(name, "eps", eps, low=0.0, low_open=True)


# --- batch norm -----------------------------------------------------------------------


def _check_batch_norm(x, gamma, beta, *, eps):
    _check_norm("batch_norm", x, gamma, beta, eps=eps)
    count = math.prod(jnp.shape(x)[:-1])
    if count < 2:
        raise ValueError(
            f"batch_norm: batch statistics need at least 2 values per feature, got inputs of "
            f"shape {jnp.shape(x)}; use a batch of 2 or more (or evaluation mode)"
        )


@primitive(check=_check_batch_norm)
def batch_norm(x, gamma, beta, *, eps=1e-5):
    """Batch normalization with the batch's statistics (training mode).

    μ, σ² are the mean and biased variance of x over every axis but the last (the batch,
    and the spatial axes of NHWC images); y = γ (x − μ)/√(σ² + ε) + β. Backward: the full
    batch-statistics rule of the module docstring. Saves x̂ and 1/√(σ² + ε).

    Args:
      x: (..., C), at least 2 values per feature.
      gamma: the scale γ, (C,).
      beta: the shift β, (C,).
      eps: ε > 0.

    Returns:
      y, x's shape and dtype.

    Examples:
      Each feature (column) over the batch of 2: mean 0 and variance 1 (less ε):

      >>> x = jnp.array([[1.0, 10.0], [3.0, 30.0]])  # (m, C) = (2, 2)
      >>> y = fundl.nn.batch_norm(x, jnp.ones(2), jnp.zeros(2))
      >>> [round(float(v), 4) for v in y.ravel()]
      [-1.0, -1.0, 1.0, 1.0]
    """
    return _normalize(x, gamma, beta, _lead(x), eps)[0]


def batch_norm_fwd(x, gamma, beta, *, eps):
    y, xhat, inv = _normalize(x, gamma, beta, _lead(x), eps)
    return y, (xhat, inv, gamma, beta)


def batch_norm_bwd(residuals, g, *, eps):
    dx, dgamma, dbeta = _normalize_bwd(residuals, g, _lead(residuals[0]))
    return dx, dgamma, dbeta.astype(residuals[3].dtype)


batch_norm.defvjp(batch_norm_fwd, batch_norm_bwd)


def _check_batch_norm_inference(x, mean, var, gamma, beta, *, eps):
    _check_norm("batch_norm_inference", x, mean, var, gamma, beta, eps=eps)


@primitive(check=_check_batch_norm_inference)
def batch_norm_inference(x, mean, var, gamma, beta, *, eps=1e-5):
    """Batch normalization with given statistics (evaluation mode): an affine map per feature.

    y = γ (x − μ)/√(σ² + ε) + β with μ, σ² the running statistics. Backward, with
    r = 1/√(σ² + ε) and x̂ = (x − μ) r: dx = g γ r, dμ = −Σ g γ r, dσ² = −½ Σ g γ x̂ r²,
    dγ = Σ g x̂, dβ = Σ g. Saves x̂ and r.

    Args:
      x: (..., C).
      mean: the statistic μ, (C,).
      var: the statistic σ² ≥ 0, (C,).
      gamma: the scale γ, (C,).
      beta: the shift β, (C,).
      eps: ε > 0.

    Returns:
      y, x's shape and dtype.

    Examples:
      >>> x = jnp.array([[1.0, 10.0], [3.0, 30.0]])
      >>> mean, var = jnp.array([2.0, 20.0]), jnp.array([1.0, 100.0])
      >>> y = fundl.nn.batch_norm_inference(x, mean, var, jnp.ones(2), jnp.zeros(2))
      >>> [round(float(v), 4) for v in y.ravel()]
      [-1.0, -1.0, 1.0, 1.0]
    """
    return _with_statistics(x, mean, var, gamma, beta, eps)[0]


def _with_statistics(x, mean, var, gamma, beta, eps):
    """(y, x̂, r): x normalized by given statistics, r = 1/√(σ² + ε)."""
    inv = lax.rsqrt(_wide(var) + eps)
    xhat = (_wide(x) - _features(x, _wide(mean))) * _features(x, inv)
    y = xhat * _features(x, _wide(gamma)) + _features(x, _wide(beta))
    return y.astype(x.dtype), xhat, inv


def batch_norm_inference_fwd(x, mean, var, gamma, beta, *, eps):
    y, xhat, inv = _with_statistics(x, mean, var, gamma, beta, eps)
    return y, (xhat, inv, gamma, beta, mean, var)


def batch_norm_inference_bwd(residuals, g, *, eps):
    xhat, inv, gamma, beta, mean, var = residuals
    lead = _lead(xhat)
    wg = _wide(g)
    gs = wg * _features(xhat, _wide(gamma))  # g γ
    dx = gs * _features(xhat, inv)
    dmean = -jnp.sum(dx, axis=lead)
    dvar = -0.5 * jnp.sum(gs * xhat, axis=lead) * inv * inv
    dgamma = jnp.sum(wg * xhat, axis=lead)
    dbeta = jnp.sum(wg, axis=lead)
    return (
        dx.astype(g.dtype),
        dmean.astype(mean.dtype),
        dvar.astype(var.dtype),
        dgamma.astype(gamma.dtype),
        dbeta.astype(beta.dtype),
    )


batch_norm_inference.defvjp(batch_norm_inference_fwd, batch_norm_inference_bwd)


# --- layer norm and RMS norm ------------------------------------------------------------


def _check_layer_norm(x, gamma, beta, *, eps):
    _check_norm("layer_norm", x, gamma, beta, eps=eps)


@primitive(check=_check_layer_norm)
def layer_norm(x, gamma, beta, *, eps=1e-5):
    """Layer normalization (Ba et al., 2016): batch norm's formula over each example's features.

    μ, σ² over the last axis of each example; y = γ (x − μ)/√(σ² + ε) + β. Backward: the
    full rule of the module docstring, with means over the last axis. No batch
    dependence: the same in training and evaluation.

    Args:
      x: (..., C).
      gamma: the scale γ, (C,).
      beta: the shift β, (C,).
      eps: ε > 0.

    Returns:
      y, x's shape and dtype.

    Examples:
      >>> x = jnp.array([[1.0, 2.0, 3.0]])  # μ = 2, σ² = 2/3
      >>> y = fundl.nn.layer_norm(x, jnp.ones(3), jnp.zeros(3))
      >>> [round(float(v), 4) for v in y[0]]
      [-1.2247, 0.0, 1.2247]
    """
    return _normalize(x, gamma, beta, (-1,), eps)[0]


def layer_norm_fwd(x, gamma, beta, *, eps):
    y, xhat, inv = _normalize(x, gamma, beta, (-1,), eps)
    return y, (xhat, inv, gamma, beta)


def layer_norm_bwd(residuals, g, *, eps):
    dx, dgamma, dbeta = _normalize_bwd(residuals, g, (-1,))
    return dx, dgamma, dbeta.astype(residuals[3].dtype)


layer_norm.defvjp(layer_norm_fwd, layer_norm_bwd)


def _check_rms_norm(x, gamma, *, eps):
    _check_norm("rms_norm", x, gamma, eps=eps)


def _rms(x, gamma, eps):
    wx = _wide(x)
    inv = lax.rsqrt(jnp.mean(wx * wx, axis=-1, keepdims=True) + eps)
    xhat = wx * inv
    return (xhat * _features(x, _wide(gamma))).astype(x.dtype), xhat, inv


@primitive(check=_check_rms_norm)
def rms_norm(x, gamma, *, eps=1e-6):
    """RMS normalization (Zhang & Sennrich, 2019): y = γ x / √(mean(x²) + ε), per example.

    Layer norm without the centring (and without β). Backward, with r the reciprocal
    root mean square and x̂ = x r: dx = r (∂x̂ − x̂ ⊙ mean(∂x̂ ⊙ x̂)), dγ = Σ g ⊙ x̂.

    Args:
      x: (..., C).
      gamma: the scale γ, (C,).
      eps: ε > 0.

    Returns:
      y, x's shape and dtype.

    Examples:
      >>> x = jnp.array([[1.0, 2.0, 3.0]])  # mean(x²) = 14/3
      >>> y = fundl.nn.rms_norm(x, jnp.ones(3))
      >>> [round(float(v), 4) for v in y[0]]
      [0.4629, 0.9258, 1.3887]
    """
    return _rms(x, gamma, eps)[0]


def rms_norm_fwd(x, gamma, *, eps):
    y, xhat, inv = _rms(x, gamma, eps)
    return y, (xhat, inv, gamma)


def rms_norm_bwd(residuals, g, *, eps):
    dx, dgamma, _ = _normalize_bwd(residuals, g, (-1,), center=False)
    return dx, dgamma


rms_norm.defvjp(rms_norm_fwd, rms_norm_bwd)


# --- layers ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class _Norm(Layer):
    """What the normalization layers share: eps, the dtype of γ and β, shape checks."""

    eps: float = dataclasses.field(default=1e-5, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    def __post_init__(self) -> None:
        name = type(self).__name__
        object.__setattr__(self, "eps", check_number(name, "eps", self.eps, low=0.0, low_open=True))
        check_param_dtype(name, self.param_dtype)

    def _features(self, input_shape: tuple[int, ...]) -> int:
        input_shape = as_input_shape(f"{type(self).__name__}.init", input_shape)
        if len(input_shape) < 1 or input_shape[-1] <= 0:
            raise ValueError(
                f"{type(self).__name__}: expected an input shape (..., features), "
                f"got {tuple(input_shape)}"
            )
        return int(input_shape[-1])

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        """``{"gamma": ones (C,), "beta": zeros (C,)}`` for inputs (..., C)."""
        del key
        c = self._features(input_shape)
        return {
            "gamma": initializers.ones(None, (c,), self.param_dtype),
            "beta": initializers.zeros(None, (c,), self.param_dtype),
        }

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input shape."""
        return as_input_shape(f"{type(self).__name__}.output_shape", input_shape)

    def _check(self, params: Any, state: Any, x: jax.Array, train: bool) -> None:
        check_bool(repr(self), "train", train)
        check_floating(repr(self), "a floating-point input", x)
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))


@dataclasses.dataclass(frozen=True, repr=False)
class BatchNorm(_Norm):
    """Batch normalization (Ioffe & Szegedy, 2015), the notes' z̃ = γ ẑ + β, per feature.

    ``train=True`` normalizes with the batch's mean and variance (over every axis but
    the last) and updates the running statistics in the state:

        running_mean ← momentum · running_mean + (1 − momentum) · μ_batch
        running_var  ← momentum · running_var  + (1 − momentum) · σ²_batch · N/(N − 1)

    (the unbiased batch variance, as PyTorch keeps it; N values per feature). ``momentum``
    is the weight of the old value, as in fundl's optimizers, Flax, Keras and Equinox;
    PyTorch's ``momentum`` is the weight of the new batch, so ``BatchNorm(momentum=0.9)``
    is ``torch.nn.BatchNorm1d(momentum=0.1)``. ``train=False`` normalizes with the
    running statistics and leaves the state as it is. Place it after the linear layer,
    before the activation, as in the notes: ``[Dense(128), BatchNorm(), "relu"]``.

    Args:
      momentum: in [0, 1), the running statistics' decay.
      eps: ε > 0 inside the square root.
      param_dtype: dtype of γ and β; the running statistics are float32 at least.

    Params: ``{"gamma": (C,), "beta": (C,)}`` (ones, zeros). State: ``{"mean": (C,),
    "var": (C,)}`` (zeros, ones).

    Examples:
      >>> bn = BatchNorm()
      >>> params, state = bn.init_with_state(0, (3,))
      >>> y, state = bn.apply_with_state(params, state, jnp.arange(6.0).reshape(2, 3), train=True)
      >>> state["mean"]  # 0.9·0 + 0.1·[1.5, 2.5, 3.5]
      Array([0.15, 0.25, 0.35], dtype=float32)
    """

    momentum: float = 0.9

    kind: ClassVar[str] = "batch_norm"

    def __post_init__(self) -> None:
        super().__post_init__()
        momentum = check_number(
            "BatchNorm", "momentum", self.momentum, low=0.0, high=1.0, high_open=True
        )
        object.__setattr__(self, "momentum", momentum)

    def init_state(self, input_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        """``{"mean": zeros (C,), "var": ones (C,)}``, float32 at least."""
        c = self._features(input_shape)
        dtype = accumulation_dtype(jnp.dtype(self.param_dtype))
        return {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}

    def apply_with_state(
        self, params: dict, state: dict, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, dict]:
        """Training: ``(batch-normalized x, updated running statistics)``; evaluation:
        ``(x normalized by the running statistics, the same state)``."""
        del key
        self._check(params, state, x, train)
        gamma, beta = params["gamma"], params["beta"]
        if not train:
            y = batch_norm_inference(x, state["mean"], state["var"], gamma, beta, eps=self.eps)
            return y, state
        count = math.prod(x.shape[:-1])
        if count < 2:
            raise ValueError(
                f"{self!r}: train=True needs at least 2 values per feature for the batch "
                f"statistics, got inputs of shape {x.shape}; use a batch of 2 or more"
            )
        y = batch_norm(x, gamma, beta, eps=self.eps)
        wx = lax.stop_gradient(_wide(x))
        mean = jnp.mean(wx, axis=_lead(x))
        var = jnp.mean(jnp.square(wx - _features(x, mean)), axis=_lead(x)) * (count / (count - 1))
        m = self.momentum
        new_state = {
            "mean": (m * state["mean"] + (1 - m) * mean.astype(state["mean"].dtype)),
            "var": (m * state["var"] + (1 - m) * var.astype(state["var"].dtype)),
        }
        return y, new_state


@dataclasses.dataclass(frozen=True, repr=False)
class LayerNorm(_Norm):
    """Layer normalization (Ba et al., 2016): each example normalized over its features.

    y = γ (x − μ)/√(σ² + ε) + β with μ, σ² over the last axis of each example: the same
    in training and evaluation, no state.

    Args:
      eps: ε > 0.
      param_dtype: dtype of γ and β.

    Params: ``{"gamma": (C,), "beta": (C,)}`` (ones, zeros).

    Examples:
      >>> layer = fundl.nn.LayerNorm()
      >>> params = layer.init(0, (3,))
      >>> y = layer.apply(params, jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]))
      >>> [round(float(v), 4) for v in y.mean(axis=-1)]  # each example: mean 0
      [0.0, 0.0]
      >>> [round(float(v), 3) for v in y.std(axis=-1)]  # and std 1 (less ε)
      [1.0, 1.0]
    """

    kind: ClassVar[str] = "layer_norm"

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """``(layer-normalized x, state)``."""
        del key
        self._check(params, state, x, train)
        return layer_norm(x, params["gamma"], params["beta"], eps=self.eps), state


@dataclasses.dataclass(frozen=True, repr=False)
class RMSNorm(_Norm):
    """RMS normalization (Zhang & Sennrich, 2019): y = γ x / √(mean(x²) + ε) per example.

    Args:
      eps: ε > 0 (1e-6 by default).
      param_dtype: dtype of γ.

    Params: ``{"gamma": (C,)}`` (ones).

    Examples:
      >>> layer = fundl.nn.RMSNorm()
      >>> params = layer.init(0, (3,))
      >>> jax.tree.map(jnp.shape, params)
      {'gamma': (3,)}
      >>> y = layer.apply(params, jnp.array([[1.0, 2.0, 3.0]]))
      >>> round(float(jnp.mean(y * y)), 4)  # mean(y²) = 1
      1.0
    """

    eps: float = dataclasses.field(default=1e-6, kw_only=True)

    kind: ClassVar[str] = "rms_norm"

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict[str, jax.Array]:
        """``{"gamma": ones (C,)}`` for inputs (..., C)."""
        return {"gamma": super().init(key, input_shape)["gamma"]}

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """``(RMS-normalized x, state)``."""
        del key
        self._check(params, state, x, train)
        return rms_norm(x, params["gamma"], eps=self.eps), state
