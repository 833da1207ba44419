"""Emulates a GPU's or a TPU's float32 matrix products on the CPU, for the test suite.

FUNDL_TEST_EMULATE_MATMUL=tf32 (a GPU's default) or bf16 (a TPU's) runs the suite on a CPU
with float32 dots and convolutions at default precision computed as on that device (inputs
rounded to 10 or 7 mantissa bits, sums in float32), and `f32_tol` widened as on that
backend: a test that assumes the CPU's float32 products fails here as it would there.
On a device, products of different shapes (a vmapped and a looped one, a hand-written dW =
dZᵀ A and autodiff's transpose) run different kernels: one rounds to TF32, another computes
in float32, their sums run in different orders. A GPU failed three tests by 2e-5 to 8e-5 for
that reason. Here each set of shapes rounds at its own threshold (between a quarter and three
quarters of the dropped unit, from a hash of the shapes), so two such computations differ
as much as on the device, or a little more, every time rather than now and then.
"highest" (`highest_precision`) computes in float32, unchanged, as on the device.

conftest.py installs it for the whole run when ``FUNDL_TEST_EMULATE_MATMUL`` is set, and
`f32_tol` reads :func:`backend`. It wraps JAX's CPU lowering rules (``jax._src``), so it
follows JAX's internals: tests/test_matmul_emulation.py checks it on each JAX CI runs.
"""

import contextlib
import zlib

import jax
import jax.numpy as jnp
import numpy as np

_EMULATIONS = {"tf32": (10, "gpu"), "bf16": (7, "tpu")}


def round_mantissa(x, bits: int, threshold: float = 0.5):
    """``x`` (float32) rounded to ``bits`` mantissa bits: up where the dropped bits are at
    least ``threshold`` of the dropped unit (0.5: to nearest, ties away from zero), down
    otherwise; inf stays inf, NaN stays NaN."""
    drop = 23 - bits
    u = jax.lax.bitcast_convert_type(x, np.uint32)
    keep = np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)  # the sign, exponent and kept bits
    u = (u + np.uint32(round((1 - threshold) * (1 << drop)))) & keep
    return jax.lax.select(jnp.isnan(x), x, jax.lax.bitcast_convert_type(u, np.float32))


def install(mode: str):
    """From now on the CPU lowerings of ``dot_general`` and ``conv_general_dilated`` at default
    precision compute as ``mode``'s device does ("tf32": a GPU, "bf16": a TPU; see above):
    float32 operands rounded first; `f32_tol` widens as on that backend. Returns the function
    that restores both. Clears JAX's caches (a compiled program keeps its lowering)."""
    global _EMULATED_BACKEND
    from jax._src.interpreters import mlir
    from jax._src.lax import convolution
    from jax._src.lax import lax as lax_internal

    if mode not in _EMULATIONS:
        raise ValueError(
            f"FUNDL_TEST_EMULATE_MATMUL must be one of {sorted(_EMULATIONS)}, got {mode!r}"
        )
    bits, device = _EMULATIONS[mode]
    default = lax_internal.Precision.DEFAULT
    cpu_rules = mlir._platform_specific_lowerings["cpu"]

    def reduced(precision) -> bool:
        if precision is None:
            return True
        return isinstance(precision, tuple) and all(p == default for p in precision)

    def lower(fn, ctx, aval, value):
        return fn(ctx.replace(primitive=None, avals_in=[aval], avals_out=[aval]), value)[0]

    def wrapped(original):
        def rule(ctx, lhs, rhs, **params):
            if reduced(params["precision"]):
                shapes = repr([a.shape for a in ctx.avals_in]).encode()
                threshold = 0.25 + 0.5 * (zlib.crc32(shapes) % 1024) / 1024
                rnd = mlir.lower_fun(
                    lambda x: round_mantissa(x, bits, threshold), multiple_results=False
                )
                lhs_aval, rhs_aval = ctx.avals_in
                if lhs_aval.dtype == np.float32:
                    lhs = lower(rnd, ctx, lhs_aval, lhs)
                if rhs_aval.dtype == np.float32:
                    rhs = lower(rnd, ctx, rhs_aval, rhs)
            return original(ctx, lhs, rhs, **params)

        return rule

    primitives = (lax_internal.dot_general_p, convolution.conv_general_dilated_p)
    saved, saved_backend = {p: cpu_rules.get(p) for p in primitives}, _EMULATED_BACKEND
    for p in primitives:  # JAX's own rule, wrapped (also inside another emulation)
        unwrapped = _JAX_CPU_RULES.setdefault(p, saved[p] or mlir._lowerings[p])
        rule = getattr(unwrapped, "rule", unwrapped)  # JAX before 0.7 keeps the bare rule
        mlir.register_lowering(p, wrapped(rule), platform="cpu")
    _EMULATED_BACKEND = device
    jax.clear_caches()

    def restore():
        global _EMULATED_BACKEND
        for p, entry in saved.items():
            if entry is None:
                cpu_rules.pop(p, None)
            else:
                cpu_rules[p] = entry
        _EMULATED_BACKEND = saved_backend
        jax.clear_caches()

    return restore


@contextlib.contextmanager
def emulated(mode: str):
    """:func:`install` for the block."""
    restore = install(mode)
    try:
        yield
    finally:
        restore()


_EMULATED_BACKEND = None  # "gpu" or "tpu" while an emulation is installed
_JAX_CPU_RULES: dict = {}  # primitive -> JAX's CPU lowering, before any emulation


def backend() -> str | None:
    """The backend emulated now ("gpu" or "tpu"), or None."""
    return _EMULATED_BACKEND
