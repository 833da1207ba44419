"""The test suite's emulation of a GPU's and a TPU's float32 matmul precision on a CPU
(``FUNDL_TEST_EMULATE_MATMUL``, tests/_matmul_emulation.py): the rounding against a float64
reference, and the rounded products' errors, on and off."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_RUN_EMULATED = bool(os.environ.get("FUNDL_TEST_EMULATE_MATMUL"))


def _rounded_reference(x: np.ndarray, bits: int, threshold: float) -> np.ndarray:
    """``x`` to ``bits`` mantissa bits in float64: the lower neighbour (in magnitude) on the
    coarse grid, or the upper one where the remainder is at least ``threshold`` of a step."""
    out = x.astype(np.float64)
    finite = np.isfinite(out) & (out != 0)
    mag = np.abs(out[finite])
    step = np.exp2(np.floor(np.log2(mag)) - bits)
    below = np.floor(mag / step)
    out[finite] = np.sign(out[finite]) * (below + (mag / step - below >= threshold)) * step
    return out


@pytest.mark.parametrize("bits", [10, 7])
@pytest.mark.parametrize("threshold", [0.25, 0.5, 0.7])
def test_round_mantissa_equals_the_float64_reference(emulate_matmul, bits, threshold):
    round_mantissa = emulate_matmul.round_mantissa
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(2000) * np.exp2(rng.integers(-20, 20, 2000))).astype(np.float32)
    half = np.float32([1 + 2.0**-bits / 2, -(2 - 2.0**-bits / 2)])  # halfway between two
    x = np.concatenate([x, half, np.float32([0.0, -0.0, np.inf, -np.inf, 1.0, -3.0])])
    got = np.asarray(jax.jit(lambda v: round_mantissa(v, bits, threshold))(x))
    np.testing.assert_array_equal(got, _rounded_reference(x, bits, threshold))
    up = threshold <= 0.5
    np.testing.assert_array_equal(
        got[2000:2002], [1 + up * 2.0**-bits, -2.0 if up else -(2 - 2.0**-bits)]
    )
    assert np.isnan(np.asarray(round_mantissa(jnp.float32(np.nan), bits, threshold)))


def _relative_errors():
    """The relative error of a float32 dot and convolution at default precision and at
    "highest", against float64."""
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((32, 32)).astype(np.float32) for _ in range(2))
    x, w = a[None, None], b[None, None, :3, :3]

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")

    want_dot = a.astype(np.float64) @ b.astype(np.float64)
    want_conv = np.asarray(jax.jit(conv)(x.astype(np.float64), w.astype(np.float64)))

    def rel(got, want):
        return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))

    errors = {}
    for precision in ("default", "highest"):
        with jax.default_matmul_precision(None if precision == "default" else "highest"):
            errors[precision] = (
                rel(jax.jit(jnp.dot)(a, b), want_dot),
                rel(jax.jit(conv)(x, w), want_conv),
            )
    return errors


@pytest.mark.parametrize("mode, low, high", [("tf32", 1e-5, 2e-3), ("bf16", 2e-4, 2e-2)])
def test_emulation_rounds_default_precision_products_only(
    x64, emulate_matmul, f32_tol, mode, low, high
):
    # on the CPU device, which the emulation changes, also where the default one is a GPU
    with x64(), jax.default_device(jax.devices("cpu")[0]):
        with emulate_matmul.emulated(mode):
            errors = _relative_errors()
            assert f32_tol()["rtol"] > 1e-3  # tolerances widened as on the device
            a, b = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
            batched, looped = jax.jit(jax.vmap(jnp.dot))(a, b), jax.jit(jnp.dot)(a[0], b[0])
        assert all(low < e < high for e in errors["default"]), errors
        # a batched and a single product of the same values: different kernels, as on a device
        assert not np.array_equal(batched[0], looped)
        np.testing.assert_allclose(batched[0], looped, rtol=0, atol=high * np.max(np.abs(looped)))
        assert all(e < 1e-6 for e in errors["highest"]), errors
        if not _RUN_EMULATED:  # left as it was: float32 products on the CPU
            assert all(e < 1e-6 for e in _relative_errors()["default"])
            if jax.default_backend() == "cpu":
                assert f32_tol() == {"rtol": 1e-5, "atol": 1e-6}


def test_unknown_mode_is_an_error(emulate_matmul):
    with pytest.raises(ValueError, match="tf32"):
        emulate_matmul.install("fp8")
