"""Convolutions: the primitive ``conv``, the functions ``conv1d``/``conv2d``, the layers
``Conv1D``/``Conv2D``.

Layout (DESIGN.md): channels-last inputs and outputs, (batch, *spatial, C) — NWC in
1-D, NHWC in 2-D — and kernels (*window, C_in // groups, C_out) — WIO, HWIO — the
layouts XLA is fastest with on GPU and TPU. PyTorch's are NCHW and OIHW: a PyTorch
kernel becomes fundl's with ``W_torch.permute(2, 3, 1, 0)`` and an NCHW batch with
``x.transpose(0, 2, 3, 1)``.

Along each spatial dim, with input size n, kernel size k, stride s, padding (lo, hi)
and dilation d (the kernel's taps d apart, so it spans k_eff = d (k − 1) + 1), output
position p reads the padded input at p s + j d for taps j = 0, ..., k − 1, and

    o = ⌊(n + lo + hi − k_eff) / s⌋ + 1          ('SAME': o = ⌈n / s⌉).

``groups`` G splits the C_in input and C_out output channels into G groups; output
group g sees input group g only (G = C_in: a depthwise convolution).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from fundl import initializers
from fundl._validate import (
    as_key,
    check_bool,
    check_floating,
    check_initializers,
    check_int,
    check_param_dtype,
)
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.rules import primitive

__all__ = ["Conv1D", "Conv2D", "conv", "conv1d", "conv2d"]

_PADDINGS = ("SAME", "VALID")


# --- shapes and checks ----------------------------------------------------------------


def _layout(n: int, batched: bool = True) -> str:
    """The input layout in words: (batch, H, W, C_in) in 2-D, (H, W, C_in) unbatched."""
    spatial = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}.get(n)
    spatial = spatial or tuple(f"n{i + 1}" for i in range(n))
    return f"({'batch, ' * batched}{', '.join(spatial)}, C_in)"


def _window(n: int) -> str:
    """The kernel layout in words: (kh, kw, C_in // groups, C_out) in 2-D."""
    spatial = {1: ("k",), 2: ("kh", "kw"), 3: ("kd", "kh", "kw")}.get(n)
    spatial = spatial or tuple(f"k{i + 1}" for i in range(n))
    return f"({', '.join(spatial)}, C_in // groups, C_out)"


def _effective(window: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """The span of a dilated kernel, k_eff = d (k − 1) + 1, per spatial dim."""
    return tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))


def _same_padding(sizes, window, stride, dilation) -> tuple[tuple[int, int], ...]:
    """XLA's (and TensorFlow's) 'SAME' rule: o = ⌈n/s⌉, the total padding that needs
    split with the odd element at the end (hi)."""
    pads = []
    for n, k_eff, s in zip(sizes, _effective(window, dilation), stride):
        total = max((-(-n // s) - 1) * s + k_eff - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _output_sizes(name, sizes, window, stride, padding, dilation) -> tuple[int, ...]:
    """o = ⌊(n + lo + hi − k_eff)/s⌋ + 1 per spatial dim; ``ValueError`` if one is empty."""
    out = []
    for i, (n, k_eff, s, (lo, hi)) in enumerate(
        zip(sizes, _effective(window, dilation), stride, padding)
    ):
        if n + lo + hi < k_eff:
            raise ValueError(
                f"{name}: along spatial dim {i} the kernel spans {k_eff} (kernel size "
                f"{tuple(window)}, dilation {tuple(dilation)}) but the padded input has "
                f"only {n + lo + hi} ({n} + padding {(lo, hi)}): the output would be empty; "
                f"use a smaller kernel or pad the input (padding='SAME'); got input spatial "
                f"shape {tuple(sizes)}"
            )
        out.append((n + lo + hi - k_eff) // s + 1)
    return tuple(out)


def _check_kernel(name: str, W: Any, b: Any, n: int | None, groups: int) -> int:
    """The kernel (*window, C_in // groups, C_out) and bias (C_out,): the number of
    spatial dims n (from W when ``n`` is None)."""
    shape = jnp.shape(W)
    if len(shape) < 3 or (n is not None and len(shape) != n + 2):
        layout = _window(n or max(len(shape) - 2, 1))
        raise ValueError(f"{name}: expected a kernel W of shape {layout}, got shape {shape}")
    c_out = shape[-1]
    if c_out % groups:
        raise ValueError(
            f"{name}: groups={groups} must divide C_out (the kernel's last dim), got a kernel "
            f"of shape {shape}"
        )
    if b is not None and jnp.shape(b) != (c_out,):
        raise ValueError(
            f"{name}: expected b of shape {(c_out,)} (C_out), got shape {jnp.shape(b)}"
        )
    return len(shape) - 2


def _check_input(name: str, x: Any, n: int, c_in: int, *, unbatched: bool = True) -> bool:
    """x is (batch, *spatial, C_in) — or (*spatial, C_in) where ``unbatched`` — with C_in
    channels: True for a batched input. The error for a channels-first input says how
    to transpose it."""
    shape = jnp.shape(x)
    if len(shape) != n + 2 and not (unbatched and len(shape) == n + 1):
        wanted = f"{_layout(n)} or {_layout(n, False)}" if unbatched else _layout(n)
        raise ValueError(
            f"{name}: expected input of shape {wanted} ({n} spatial dim{'s' * (n > 1)}, "
            f"channels last), got shape {shape}"
        )
    batched = len(shape) == n + 2
    if shape[-1] != c_in:
        message = (
            f"{name}: expected input with C_in = {c_in} channels on the last axis "
            f"{_layout(n, batched)}, got shape {shape}"
        )
        first = 1 if batched else 0
        if shape[first] == c_in:
            order = (0,) * batched + tuple(range(first + 1, len(shape))) + (first,)
            message += (
                f"; it looks channels-first (PyTorch's layout) but fundl is channels-last: "
                f"transpose it with x.transpose{order}"
            )
        raise ValueError(message)
    return batched


def _ints(value: Any, n: int, low: int) -> bool:
    """Whether value is a tuple of n Python ints ≥ low."""
    return (
        isinstance(value, tuple)
        and len(value) == n
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)
    )


def _check_dtypes(name: str, x: Any, W: Any, b: Any) -> None:
    """x, W (and b) share one dtype: XLA's convolution does not promote."""
    dtypes = [jnp.result_type(a) for a in (x, W, b) if a is not None]
    if len(set(dtypes)) > 1:
        names = "x, W and b" if b is not None else "x and W"
        raise TypeError(
            f"{name}: expected {names} of one dtype, got {', '.join(map(str, dtypes))}; cast "
            "the input (x.astype(W.dtype)) or build the layer with that param_dtype"
        )


def _check_options(name, n, stride, padding, dilation) -> None:
    """The primitive's options: n positive ints, n (lo, hi) pairs of ints ≥ 0."""
    for arg, value in (("stride", stride), ("dilation", dilation)):
        if not _ints(value, n, 1):
            raise ValueError(
                f"{name}: {arg} must be a tuple of {n} positive ints (one per spatial dim; "
                f"conv1d and conv2d also take an int), got {value!r}"
            )
    pairs = isinstance(padding, tuple) and len(padding) == n
    if not (pairs and all(_ints(p, 2, 0) for p in padding)):
        raise ValueError(
            f"{name}: padding must be a tuple of {n} (lo, hi) pairs of non-negative ints "
            f"(conv1d and conv2d also take 'SAME', 'VALID' or an int), got {padding!r}"
        )


def _check_conv(x, W, b, *, stride, padding, dilation, groups):
    check_floating("conv", "a floating-point input", x)
    check_int("conv", "groups", groups)
    n = _check_kernel("conv", W, b, None, groups)
    stride, padding, dilation = _options(n, stride, padding, dilation)
    _check_options("conv", n, stride, padding, dilation)
    _check_input("conv", x, n, W.shape[-2] * groups, unbatched=False)
    _check_dtypes("conv", x, W, b)
    _output_sizes("conv", x.shape[1:-1], W.shape[:n], stride, padding, dilation)


def _options(n, stride, padding, dilation):
    """The primitive's options with its defaults (None) filled in: stride 1, no padding,
    dilation 1 along every spatial dim."""
    return (
        (1,) * n if stride is None else stride,
        ((0, 0),) * n if padding is None else padding,
        (1,) * n if dilation is None else dilation,
    )


# --- the primitive ----------------------------------------------------------------------


def _channels_last(n: int) -> lax.ConvDimensionNumbers:
    """(batch, *spatial, C) inputs and outputs, (*window, C_in/G, C_out) kernels.

    lax names each operand's dims in order (batch, feature, *spatial) for inputs and
    outputs and (out feature, in feature, *spatial) for kernels.
    """
    spatial = tuple(range(1, n + 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, n + 1) + spatial,
        rhs_spec=(n + 1, n) + tuple(range(n)),
        out_spec=(0, n + 1) + spatial,
    )


def _forward(x, W, b, stride, padding, dilation, groups):
    n = W.ndim - 2
    stride, padding, dilation = _options(n, stride, padding, dilation)
    z = lax.conv_general_dilated(
        x,
        W,
        window_strides=stride,
        padding=padding,
        rhs_dilation=dilation,
        dimension_numbers=_channels_last(n),
        feature_group_count=groups,
    )
    if b is None:
        return z
    return z + b.reshape((1,) * (n + 1) + b.shape)


@primitive(check=_check_conv)
def conv(x, W, b=None, *, stride=None, padding=None, dilation=None, groups=1):
    """N-d convolution (cross-correlation, as every DL library), channels-last.

        z[β, p, o] = b[o] + Σ_j Σ_i x̃[β, p s + j d, q C_in/G + i] W[j, i, o],

    x̃ the input zero-padded by (lo, hi) per spatial dim, p the output position, j the
    kernel tap, q = o ÷ (C_out/G) the group of output channel o and i the input
    channel within that group (positions and taps are per spatial dim).

    Backward, for upstream g of z's shape (per spatial dim; see the module docstring
    for o and k_eff):

    * dx is a convolution too, the transpose of the forward: spread g out by the
      stride (``lhs_dilation=s``: s − 1 zeros between its entries, as output rows
      came from input rows s apart) and correlate it, stepping by 1, with the kernel
      flipped in space and with in/out channels swapped within each group (dilation
      d kept), padded by (k_eff − 1 − lo, k_eff − 1 − hi + r), r = (n + lo + hi −
      k_eff) mod s. The r rows the last window never reached get zero gradient; the
      forward's padding rows never appear.
    * dW[j, i, o] = Σ_β Σ_p x̃[β, p s + j d, q C_in/G + i] g[β, p, o]: a convolution
      of x with g as the kernel — x's batch axis is the contraction (the "channels"),
      its channel axis the "batch", g's spatial dims a window whose taps are s apart
      (``rhs_dilation=s``), stepping by d (``window_strides=d``), padded by
      (lo, hi − r) so that exactly k positions come out. With groups,
      ``batch_group_count=G`` pairs input-channel group q with output-channel group q.
    * db = Σ g over the batch and spatial dims.

    Saves x and W (the rule's two convolutions read them) — what autodiff keeps too.

    Args:
      x: input (batch, *spatial, C_in), N spatial dims (1, 2 or 3).
      W: kernel (*window, C_in // groups, C_out).
      b: bias (C_out,), or None.
      stride: a tuple of N positive ints (default: 1s).
      padding: a tuple of N (lo, hi) pairs of non-negative ints (default: none);
        ``conv1d``/``conv2d`` resolve 'SAME' and 'VALID' to these.
      dilation: the kernel's dilation, a tuple of N positive ints (default: 1s).
      groups: G, dividing C_in and C_out (C_in: depthwise).

    Returns:
      z of shape (batch, *out, C_out).

    Examples:
      >>> x, W = jnp.ones((1, 5, 1)), jnp.ones((3, 1, 1))
      >>> fundl.nn.conv(x, W, stride=(2,), padding=((1, 1),))[0, :, 0]
      Array([2., 3., 2.], dtype=float32)
    """
    return _forward(x, W, b, stride, padding, dilation, groups)


def conv_fwd(x, W, b, *, stride, padding, dilation, groups):
    return _forward(x, W, b, stride, padding, dilation, groups), (x, W, b)


def _conv_dx(g, W, x_shape, stride, padding, dilation, groups):
    """dx: g spread out by the stride, correlated with the flipped, channel-swapped kernel."""
    n = W.ndim - 2
    window, c_in_g, c_out = W.shape[:n], W.shape[-2], W.shape[-1]
    pads = tuple(
        (k_eff - 1 - lo, size + lo - 1 - (o - 1) * s)  # = k_eff − 1 − hi + r
        for k_eff, (lo, _), size, o, s in zip(
            _effective(window, dilation), padding, x_shape[1:-1], g.shape[1:-1], stride
        )
    )
    flipped = jnp.flip(W, axis=tuple(range(n)))
    # (*window, C_in/G, C_out) -> (*window, C_out/G, C_in): in each group the kernel's
    # input channels become its output channels and back.
    swapped = flipped.reshape(window + (c_in_g, groups, c_out // groups))
    swapped = jnp.swapaxes(swapped, n, n + 2).reshape(window + (c_out // groups, groups * c_in_g))
    return lax.conv_general_dilated(
        g,
        swapped,
        window_strides=(1,) * n,
        padding=pads,
        lhs_dilation=stride,
        rhs_dilation=dilation,
        dimension_numbers=_channels_last(n),
        feature_group_count=groups,
    )


def _conv_dW(x, g, window, stride, padding, dilation, groups):
    """dW: x correlated with g, batch and channel axes swapped, over each group."""
    n = len(window)
    pads = tuple(
        (lo, hi - (size + lo + hi - k_eff) % s)  # (lo, hi − r): the unreached rows cut
        for k_eff, (lo, hi), size, s in zip(
            _effective(window, dilation), padding, x.shape[1:-1], stride
        )
    )
    spatial = tuple(range(1, n + 1))
    swapped = lax.ConvDimensionNumbers(
        lhs_spec=(n + 1, 0) + spatial,  # x: channels as the "batch", batch as the "features"
        rhs_spec=(n + 1, 0) + spatial,  # g: C_out as outputs, batch as inputs, positions
        out_spec=(n, n + 1) + tuple(range(n)),  # (*window, C_in/G, C_out): HWIO
    )
    return lax.conv_general_dilated(
        x,
        g,
        window_strides=dilation,
        padding=pads,
        rhs_dilation=stride,
        dimension_numbers=swapped,
        batch_group_count=groups,
    )


def conv_bwd(residuals, g, *, stride, padding, dilation, groups):
    x, W, b = residuals
    n = W.ndim - 2
    stride, padding, dilation = _options(n, stride, padding, dilation)
    d_x = _conv_dx(g, W, x.shape, stride, padding, dilation, groups).astype(x.dtype)
    d_W = _conv_dW(x, g, W.shape[:n], stride, padding, dilation, groups).astype(W.dtype)
    d_b = None if b is None else jnp.sum(g, axis=tuple(range(n + 1))).astype(b.dtype)
    return d_x, d_W, d_b


conv.defvjp(conv_fwd, conv_bwd)


# --- the functions ----------------------------------------------------------------------


def _tuple(name: str, arg: str, value: Any, n: int) -> tuple[int, ...]:
    """An int or a sequence of n ints, as n positive ints."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(
                f"{name}: {arg} must be a positive int or {n} of them (one per spatial dim), "
                f"got {tuple(value)!r}"
            )
        return tuple(check_int(name, arg, v) for v in value)
    return (check_int(name, arg, value),) * n


def _padding(name: str, padding: Any, n: int) -> str | tuple[tuple[int, int], ...]:
    """'SAME'/'VALID' (any case), an int p (p on both sides everywhere), n ints (per dim,
    both sides) or n (lo, hi) pairs: the upper-case string or n pairs."""
    if isinstance(padding, str):
        if padding.upper() in _PADDINGS:
            return padding.upper()
    elif isinstance(padding, Sequence) and len(padding) == n:
        try:
            pairs = tuple(
                tuple(check_int(name, "padding", v, low=0) for v in p)
                if isinstance(p, Sequence)
                else (check_int(name, "padding", p, low=0),) * 2
                for p in padding
            )
        except ValueError:
            pairs = None
        if pairs is not None and all(len(p) == 2 for p in pairs):
            return pairs
    elif not isinstance(padding, Sequence):
        try:
            return ((check_int(name, "padding", padding, low=0),) * 2,) * n
        except ValueError:
            pass
    raise ValueError(
        f"{name}: padding must be 'SAME', 'VALID', a non-negative int, {n} non-negative "
        f"ints (one per spatial dim) or {n} (lo, hi) pairs, got {padding!r}"
    )


def _resolve(padding, sizes, window, stride, dilation) -> tuple[tuple[int, int], ...]:
    """Explicit (lo, hi) pairs for an input of spatial shape ``sizes``."""
    if padding == "SAME":
        return _same_padding(sizes, window, stride, dilation)
    if padding == "VALID":
        return ((0, 0),) * len(sizes)
    return padding


def _conv_nd(name, n, x, W, b, stride, padding, dilation, groups):
    stride = _tuple(name, "stride", stride, n)
    dilation = _tuple(name, "dilation", dilation, n)
    padding = _padding(name, padding, n)
    groups = check_int(name, "groups", groups)
    check_floating(name, "a floating-point input", x)
    _check_kernel(name, W, b, n, groups)
    batched = _check_input(name, x, n, W.shape[-2] * groups)
    _check_dtypes(name, x, W, b)
    sizes = jnp.shape(x)[-n - 1 : -1]
    pairs = _resolve(padding, sizes, W.shape[:n], stride, dilation)
    _output_sizes(name, sizes, W.shape[:n], stride, pairs, dilation)
    xb = x if batched else x[None]
    z = conv(xb, W, b, stride=stride, padding=pairs, dilation=dilation, groups=groups)
    return z if batched else z[0]


def conv1d(x, W, b=None, *, stride=1, padding="VALID", dilation=1, groups=1):
    """1-d convolution of channels-last sequences: :func:`conv` with options made tuples.

    z[β, p, o] = b[o] + Σ_j Σ_i x̃[β, p s + j d, i] W[j, i, o] (per group), of length
    o = ⌊(n + lo + hi − d (k − 1) − 1)/s⌋ + 1 ('SAME': ⌈n/s⌉).

    Args:
      x: (batch, L, C_in), or one sequence (L, C_in).
      W: kernel (k, C_in // groups, C_out).
      b: bias (C_out,), or None.
      stride: a positive int (or a 1-tuple).
      dilation: a positive int (or a 1-tuple).
      padding: 'VALID' (none, the default), 'SAME' (XLA's rule: o = ⌈L/s⌉, the odd
        element at the end), an int, or ((lo, hi),).
      groups: G, dividing C_in and C_out.

    Returns:
      (batch, o, C_out), or (o, C_out) for one sequence.

    Examples:
      >>> fundl.nn.conv1d(jnp.arange(5.0)[:, None], jnp.ones((2, 1, 1)))[:, 0]
      Array([1., 3., 5., 7.], dtype=float32)
    """
    return _conv_nd("conv1d", 1, x, W, b, stride, padding, dilation, groups)


def conv2d(x, W, b=None, *, stride=1, padding="VALID", dilation=1, groups=1):
    """2-d convolution of NHWC images with an HWIO kernel: :func:`conv` with options made
    tuples.

    z[β, p, q, o] = b[o] + Σ_{j,l} Σ_i x̃[β, p s_h + j d_h, q s_w + l d_w, i] W[j, l, i, o]
    (per group); each spatial dim has o = ⌊(n + lo + hi − d (k − 1) − 1)/s⌋ + 1
    ('SAME': ⌈n/s⌉).

    Args:
      x: (batch, H, W, C_in), or one image (H, W, C_in). Channels last: an NCHW batch
        is ``x.transpose(0, 2, 3, 1)``.
      W: kernel (kh, kw, C_in // groups, C_out); a PyTorch (OIHW) weight is
        ``W_torch.permute(2, 3, 1, 0)``.
      b: bias (C_out,), or None.
      stride: an int or (h, w).
      dilation: an int or (h, w).
      padding: 'VALID' (none, the default), 'SAME' (XLA's rule: o = ⌈n/s⌉, the odd
        element at the end), an int, (p_h, p_w), or ((lo_h, hi_h), (lo_w, hi_w)).
      groups: G, dividing C_in and C_out (C_in: depthwise).

    Returns:
      (batch, o_h, o_w, C_out), or (o_h, o_w, C_out) for one image.

    Examples:
      >>> x = jnp.ones((2, 5, 5, 3))
      >>> fundl.nn.conv2d(x, jnp.ones((3, 3, 3, 8)), stride=2, padding="SAME").shape
      (2, 3, 3, 8)
    """
    return _conv_nd("conv2d", 2, x, W, b, stride, padding, dilation, groups)


# --- the layers -------------------------------------------------------------------------


def _compact(value: Any) -> Any:
    """A tuple option as it would be written: (3, 3) as 3, ((1, 1), (1, 1)) as 1."""
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        first = value[0]
        if not isinstance(first, tuple):
            return first
        if first[0] == first[1]:
            return first[0]
    return value


@dataclasses.dataclass(frozen=True, repr=False)
class _Conv(Layer):
    """What Conv1D and Conv2D share; ``_n`` is the number of spatial dims."""

    c_out: int
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = dataclasses.field(default=1, kw_only=True)
    padding: Any = dataclasses.field(default="VALID", kw_only=True)
    dilation: int | tuple[int, ...] = dataclasses.field(default=1, kw_only=True)
    groups: int = dataclasses.field(default=1, kw_only=True)
    use_bias: bool = dataclasses.field(default=True, kw_only=True)
    w_init: initializers.Initializer = dataclasses.field(
        default=initializers.he_normal, kw_only=True
    )
    b_init: initializers.Initializer = dataclasses.field(default=initializers.zeros, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    kind: ClassVar[str] = "conv"
    _n: ClassVar[int]

    def __post_init__(self) -> None:
        name, n = type(self).__name__, self._n
        check_int(name, "c_out", self.c_out)
        for arg in ("kernel_size", "stride", "dilation"):
            object.__setattr__(self, arg, _tuple(name, arg, getattr(self, arg), n))
        object.__setattr__(self, "padding", _padding(name, self.padding, n))
        check_int(name, "groups", self.groups)
        if self.c_out % self.groups:
            raise ValueError(
                f"{name}: groups={self.groups} must divide c_out={self.c_out} (each group "
                "has C_out/groups output channels)"
            )
        check_bool(name, "use_bias", self.use_bias)
        check_param_dtype(name, self.param_dtype)
        check_initializers(name, self, "w_init", "b_init")

    def __repr__(self) -> str:
        """The config as written: ``Conv2D(8, 3, stride=2, padding='SAME')``."""
        parts = [repr(self.c_out), repr(_compact(self.kernel_size))]
        for field in dataclasses.fields(self)[2:]:
            value = _compact(getattr(self, field.name))
            if field.name == "param_dtype":
                if jnp.dtype(value) != jnp.dtype(field.default):
                    parts.append(f"param_dtype=jnp.{jnp.dtype(value).name}")
            elif value is not field.default and value != field.default:
                shown = value.__name__ if callable(value) else repr(value)
                parts.append(f"{field.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _spatial_and_channels(self, input_shape: Sequence[int]) -> tuple[tuple[int, ...], int]:
        """((spatial sizes), C_in) of an input shape with or without its batch dim."""
        shape, n = as_input_shape(repr(self), input_shape), self._n
        if len(shape) not in (n + 1, n + 2) or min(shape, default=0) <= 0:
            raise ValueError(
                f"{self!r}: expected an input shape {_layout(n)} or {_layout(n, False)}, "
                f"got {shape}"
            )
        return shape[-n - 1 : -1], shape[-1]

    def init(self, key: Any, input_shape: Sequence[int]) -> dict[str, jax.Array]:
        """``{"W": (*kernel_size, C_in // groups, c_out), "b": (c_out,)}`` for inputs of
        shape ``input_shape`` ((*spatial, C_in), batch dim optional).

        ``key`` is a PRNG key or an int seed. He init by default: fan_in counts the
        taps a unit sees, prod(kernel_size) · C_in / groups.
        """
        key = as_key(f"{type(self).__name__}.init", key)
        self.output_shape(input_shape)  # a kernel larger than the input fails here
        _, c_in = self._spatial_and_channels(input_shape)
        if c_in % self.groups:
            raise ValueError(
                f"{self!r}: groups={self.groups} must divide the input's C_in = {c_in}, "
                f"got input shape {tuple(input_shape)}"
            )
        w_key, b_key = jax.random.split(key)
        shape = self.kernel_size + (c_in // self.groups, self.c_out)
        params = {"W": self.w_init(w_key, shape, self.param_dtype)}
        if self.use_bias:
            params["b"] = self.b_init(b_key, (self.c_out,), self.param_dtype)
        return params

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """(batch, *spatial, C_in) -> (batch, *out, c_out), batch dim optional, with
        o = ⌊(n + lo + hi − d (k − 1) − 1)/s⌋ + 1 per spatial dim ('SAME': ⌈n/s⌉)."""
        sizes, _ = self._spatial_and_channels(input_shape)
        pairs = _resolve(self.padding, sizes, self.kernel_size, self.stride, self.dilation)
        out = _output_sizes(repr(self), sizes, self.kernel_size, self.stride, pairs, self.dilation)
        return tuple(input_shape)[: -self._n - 1] + out + (self.c_out,)

    def apply_with_state(
        self,
        params: dict[str, jax.Array],
        state: Any,
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
    ) -> tuple[jax.Array, Any]:
        """(the convolution of x, state), for x of shape (batch, *spatial, C_in) or
        (*spatial, C_in); no state, no randomness.

        ``params`` must be what ``init`` makes for this input, and ``state`` empty
        (checked when traced: ``ValueError`` naming the leaf and both shapes otherwise).
        """
        del key
        name = repr(self)
        check_bool(name, "train", train)
        check_floating(name, "a floating-point input", x)
        if isinstance(params, dict) and hasattr(params.get("W"), "shape"):
            # An input whose channels disagree with W is the usual mistake: say so first.
            _check_input(name, x, self._n, params["W"].shape[-2] * self.groups)
        else:
            _check_input(name, x, self._n, jnp.shape(x)[-1])  # the rank only
        batched_shape = jnp.shape(x) if jnp.ndim(x) == self._n + 2 else (1,) + jnp.shape(x)
        check_params(self, params, batched_shape)
        check_state(self, state, batched_shape)
        self.output_shape(jnp.shape(x))  # a kernel larger than the input: say so here
        z = _conv_nd(
            name,
            self._n,
            x,
            params["W"],
            params["b"] if self.use_bias else None,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
        return z, state


@dataclasses.dataclass(frozen=True, repr=False)
class Conv1D(_Conv):
    """1-d convolution layer over channels-last sequences (batch, L, C_in).

    z = conv1d(x, W, b); ``params = {"W": (k, C_in // groups, c_out), "b": (c_out,)}``.

    Args:
      c_out: output channels.
      kernel_size: k, an int (or a 1-tuple).
      stride: a positive int.
      dilation: a positive int.
      padding: 'VALID' (the default, no padding — as PyTorch, Equinox and lax), 'SAME'
        (o = ⌈L/s⌉), an int, or ((lo, hi),).
      groups: G, dividing C_in and c_out.
      use_bias: whether the layer has b.
      w_init: initializer of W (He normal, fan_in = k · C_in / groups).
      b_init: initializer of b (zeros).
      param_dtype: dtype of the parameters.

    Takes (batch, L, C_in) or (L, C_in); returns (batch, o, c_out) or (o, c_out),
    o = ⌊(L + lo + hi − d (k − 1) − 1)/s⌋ + 1.

    Examples:
      >>> layer = Conv1D(4, 3, padding="SAME")
      >>> params = layer.init(0, (10, 2))   # {"W": (3, 2, 4), "b": (4,)}
      >>> layer.apply(params, jnp.ones((8, 10, 2))).shape
      (8, 10, 4)
    """

    _n: ClassVar[int] = 1


@dataclasses.dataclass(frozen=True, repr=False)
class Conv2D(_Conv):
    """2-d convolution layer over NHWC images, with an HWIO kernel.

    z = conv2d(x, W, b); ``params = {"W": (kh, kw, C_in // groups, c_out), "b": (c_out,)}``.

    Args:
      c_out: output channels.
      kernel_size: an int or (kh, kw).
      stride: an int or (h, w).
      dilation: an int or (h, w).
      padding: 'VALID' (the default, no padding — as PyTorch, Equinox and lax; the
        notes' formula with p = 0), 'SAME' (o = ⌈n/s⌉, XLA's rule), an int, (p_h, p_w)
        or ((lo_h, hi_h), (lo_w, hi_w)).
      groups: G, dividing C_in and c_out (G = C_in: depthwise).
      use_bias: whether the layer has b.
      w_init: initializer of W (He normal, fan_in = kh · kw · C_in / groups).
      b_init: initializer of b (zeros).
      param_dtype: dtype of the parameters.

    Takes (batch, H, W, C_in) or (H, W, C_in); returns (batch, o_h, o_w, c_out) (or
    without the batch dim), o = ⌊(n + lo + hi − d (k − 1) − 1)/s⌋ + 1 per spatial dim.

    Examples:
      >>> layer = Conv2D(8, 3, stride=2, padding="SAME")
      >>> params = layer.init(0, (28, 28, 1))   # {"W": (3, 3, 1, 8), "b": (8,)}
      >>> layer.apply(params, jnp.ones((4, 28, 28, 1))).shape
      (4, 14, 14, 8)
    """

    _n: ClassVar[int] = 2
