"""fundl.gradcheck: passes correct rules, flags planted wrong ones, names the leaf."""

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundl import activations, gradcheck, losses
from fundl.nn import Activation, Dense, Sequential, dense, mlp
from fundl.rules import primitive

# --- planted wrong rules ---------------------------------------------------------------


@primitive
def tanh_sign_flipped(z):
    return jnp.tanh(z)


tanh_sign_flipped.defvjp(activations.tanh_fwd, lambda t, g: (-g * (1 - t * t),))


@primitive
def relu_without_mask(z):
    return jnp.where(z > 0, z, jnp.zeros_like(z))


relu_without_mask.defvjp(activations.relu_fwd, lambda mask, g: (g,))


@primitive
def mse_without_mean(predictions, targets):
    diff = predictions - targets
    return jnp.mean(diff * diff)


def _mse_fwd(predictions, targets):
    diff = predictions - targets
    return jnp.mean(diff * diff), diff


mse_without_mean.defvjp(_mse_fwd, lambda diff, g: (2 * diff * g, -2 * diff * g))  # no 1/N


@primitive
def dense_transposed(x, W, b):
    return x @ W.T + b[None, :]


def _dense_transposed_bwd(residuals, g):
    x, W, b = residuals
    return g @ W.T, g.T @ x, g.sum(0)  # dx should be g @ W


dense_transposed.defvjp(lambda x, W, b: (x @ W.T + b[None, :], (x, W, b)), _dense_transposed_bwd)


@dataclasses.dataclass(frozen=True, repr=False)
class TransposedDense(Dense):
    def apply_with_state(self, params, state, x, *, key=None, train=False):
        return dense_transposed(x, params["W"], params["b"]), state


def _mlp_batch(seed=0, m=8, width=4):
    x = jax.random.normal(jax.random.key(seed), (m, width))
    y = jax.random.randint(jax.random.key(seed + 1), (m,), 0, width)
    return x, y


def _failing(report, check_prefix):
    return {row.leaf for row in report.failures() if row.check.startswith(check_prefix)}


def test_sign_flip_is_flagged_against_autodiff_and_finite_differences():
    z = jax.random.normal(jax.random.key(0), (3, 4))
    report = gradcheck.check(tanh_sign_flipped, z, jit=False, vmap=False)
    assert not report.passed
    assert _failing(report, "vjp: hand vs autodiff") == {"z"}
    assert _failing(report, "vjp: hand vs finite diff") == {"z"}
    assert _failing(report, "hvp") == {"z"}
    assert "FAIL" in str(report)


def test_dropped_activation_mask_is_flagged_below_the_activation_only():
    model = Sequential([Dense(4), relu_without_mask, Dense(4), "relu", Dense(4)], input_shape=(4,))
    params = model.init(jax.random.key(1))
    x, y = _mlp_batch()
    report = gradcheck.check_model(
        model, params, x, y, losses.softmax_cross_entropy, jit=False, vmap=False
    )
    bad = _failing(report, "vjp: hand vs autodiff")
    assert bad == {"params['dense1']['W']", "params['dense1']['b']"}
    assert _failing(report, "vjp: hand vs finite diff") == bad


def test_missing_one_over_m_is_flagged_on_every_parameter():
    model = mlp([4, 4, 4, 4, 4], "tanh")
    params = model.init(jax.random.key(2))
    x, _ = _mlp_batch()
    report = gradcheck.check_model(
        model, params, x, x, mse_without_mean, jit=False, vmap=False, hvp=False
    )
    expected = {f"params['dense{l}']['{p}']" for l in range(1, 5) for p in "Wb"}
    assert _failing(report, "vjp: hand vs autodiff") == expected
    assert _failing(report, "vjp: hand vs finite diff") == expected
    row = next(
        r
        for r in report.rows
        if r.leaf == "params['dense4']['b']" and r.check == "vjp: hand vs autodiff"
    )
    np.testing.assert_allclose(row.max_rel, x.size - 1, rtol=1e-6)  # off by exactly the factor N


def test_transposed_w_is_flagged_for_the_layers_below():
    model = Sequential(
        [Dense(4), "tanh", TransposedDense(4), "tanh", Dense(4), "tanh", Dense(4)], input_shape=(4,)
    )
    params = model.init(jax.random.key(3))
    x, y = _mlp_batch()
    report = gradcheck.check_model(
        model, params, x, y, losses.softmax_cross_entropy, jit=False, vmap=False
    )
    assert _failing(report, "vjp: hand vs autodiff") == {
        "params['dense1']['W']",
        "params['dense1']['b']",
    }


def test_wrong_rule_is_flagged_in_bfloat16_too():
    z = jax.random.normal(jax.random.key(4), (3, 4)).astype(jnp.bfloat16)
    report = gradcheck.check(tanh_sign_flipped, z, jit=False, vmap=False)
    assert "bfloat16" in report.precision
    assert _failing(report, "vjp: hand vs autodiff") == {"z"}
    assert not any(row.check == "vjp: hand vs finite diff" for row in report.rows)
    assert any("finite differences skipped" in note for note in report.notes)


def test_vmap_inconsistent_rule_is_flagged():
    @primitive
    def cumsum(x):
        return jnp.cumsum(x)

    def cumsum_bwd(_, g):
        def host(g):  # written for one 1-D example: flattens whatever it is given
            return np.cumsum(g.ravel()[::-1])[::-1].reshape(g.shape)

        shape = jax.ShapeDtypeStruct(g.shape, g.dtype)
        return (jax.pure_callback(host, shape, g, vmap_method="expand_dims"),)

    cumsum.defvjp(lambda x: (jnp.cumsum(x), None), cumsum_bwd)
    report = gradcheck.check(cumsum, jnp.arange(1.0, 4.0), hvp=False)
    assert [row.check for row in report.failures()] == ["vmap: batched vs stacked"]
    assert report.failures()[0].leaf == "x"


def test_a_rule_that_cannot_be_differentiated_again_is_a_failed_row_not_a_crash():
    @primitive
    def square(x):
        return x * x

    def square_bwd(x, g):
        host = lambda x, g: 2 * x * g  # noqa: E731
        return (
            jax.pure_callback(
                host, jax.ShapeDtypeStruct(x.shape, x.dtype), x, g, vmap_method="broadcast_all"
            ),
        )

    square.defvjp(lambda x: (x * x, x), square_bwd)
    report = gradcheck.check(square, jnp.arange(1.0, 4.0))
    (row,) = report.failures()
    assert row.check == "hvp: hand vs autodiff" and row.tolerance == "raised"
    assert "JVP" in row.note


# --- correct rules pass --------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=3)  # each example compiles new shapes
@given(
    widths=st.lists(st.integers(1, 4), min_size=5, max_size=5),
    m=st.integers(1, 5),
    activation=st.sampled_from(["relu", "tanh", "gelu", "leaky_relu"]),
)
def test_four_layer_mlp_passes(widths, m, activation):
    model = mlp(widths, activation)
    params = model.init(jax.random.key(sum(widths)))
    x = jax.random.normal(jax.random.key(m), (m, widths[0]))
    y = jax.random.randint(jax.random.key(5), (m,), 0, widths[-1])
    report = gradcheck.check_model(model, params, x, y, losses.softmax_cross_entropy, jit=False)
    report.assert_passed()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_model_passes_against_float64(dtype):
    model = mlp([6, 8, 8, 8, 3], "relu")
    params = jax.tree.map(lambda a: a.astype(dtype), model.init(jax.random.key(6)))
    x = jax.random.normal(jax.random.key(7), (16, 6)).astype(dtype)
    y = jax.random.randint(jax.random.key(8), (16,), 0, 3)
    report = gradcheck.check_model(model, params, x, y, losses.softmax_cross_entropy, jit=False)
    report.assert_passed()
    assert str(jnp.dtype(dtype)) in report.precision
    grad_rows = [r for r in report.rows if r.check == "vjp: hand vs autodiff"]
    assert all(r.max_rel < gradcheck.LOW_PRECISION_TOLERANCE[jnp.dtype(dtype)] for r in grad_rows)
    assert all(r.max_abs > 0 for r in grad_rows)  # really ran in low precision


_bce = losses.binary_cross_entropy


@pytest.mark.parametrize(
    "f, args, note",
    [
        # relu at exactly 0: the one-sided slopes are 0 and 1, no derivative to compare.
        (activations.relu, ([-1.0, 0.0, 2.0],), "3/3 elements, 1 at a kink skipped"),
        # 1e-7 and -3e-8 lie within the first step of relu's kink; finer steps clear it.
        (activations.relu, ([-1.0, 1e-7, -3e-8, 2.0, 0.0],), "5/5 elements, 1 at a kink skipped"),
        # BCE clipped at p = 0 and 1 (straight-through gradient): kinks of the value.
        (_bce, ([0.0, 1.0, 0.5], [1.0, 0.0, 1.0]), "3/3 elements, 2 at a kink skipped"),
        # −log p at p = 1e-4 has curvature 1e8: the one-sided slopes at h = 1e-6 differ
        # by 100, yet no kink; a step relative to p gives the derivative to 1e-10.
        (_bce, ([1e-4, 0.5, 2e-5, 3e-7], [1.0, 1.0, 1.0, 0.0]), "4/4 elements"),
    ],
)
def test_kinks_are_skipped_and_counted_and_curvature_is_no_kink(f, args, note):
    args = tuple(jnp.array(a) for a in args)
    report = gradcheck.check(f, *args, argnums=0, hvp=False, vmap=False, jit=False)
    report.assert_passed()
    fd = next(r for r in report.rows if r.check == "vjp: hand vs finite diff")
    assert fd.note == note


@primitive
def log_off_near_zero(x):
    return jnp.log(x)


# 5% wrong below 1e-3 only: finite differences must see it there, not skip it as a kink.
log_off_near_zero.defvjp(
    lambda x: (jnp.log(x), x), lambda x, g: (g * jnp.where(x < 1e-3, 1.05 / x, 1 / x),)
)


def test_a_rule_wrong_only_at_small_inputs_fails_finite_differences():
    x = jnp.array([1e-4, 2e-4, 5e-5])
    report = gradcheck.check(
        lambda x: jnp.sum(log_off_near_zero(x)), x, hvp=False, vmap=False, jit=False
    )
    fd = next(r for r in report.rows if r.check == "vjp: hand vs finite diff")
    assert not fd.passed and fd.note == "3/3 elements"
    np.testing.assert_allclose(fd.max_rel, 0.05, rtol=1e-6)


def test_large_leaves_are_sampled():
    report = gradcheck.check(
        activations.tanh,
        jnp.linspace(-2, 2, 50),
        fd_max_elements=10,
        hvp=False,
        jit=False,
        vmap=False,
    )
    fd = next(r for r in report.rows if r.check == "vjp: hand vs finite diff")
    assert fd.note == "10/50 elements"


def test_report_table_and_api():
    z = jnp.array([[0.5, -1.0]])
    report = gradcheck.check(activations.sigmoid, z)
    text = str(report)
    lines = text.splitlines()
    assert lines[0] == "gradcheck of sigmoid (float64; cotangent: random normal (seed 0))"
    assert lines[1].split() == [
        "check",
        "leaf",
        "max",
        "abs",
        "err",
        "max",
        "rel",
        "err",
        "tolerance",
        "ok",
    ]
    assert lines[-1] == f"PASSED ({len(report.rows)} checks)"
    assert {r.check for r in report.rows} == {
        "forward: hand vs reference",
        "vjp: hand vs autodiff",
        "vjp: hand vs finite diff",
        "hvp: hand vs autodiff",
        "jit: jitted vs eager",
        "vmap: batched vs stacked",
    }
    assert report.failures() == []
    report.assert_passed()
    scalar = gradcheck.check(lambda z: jnp.sum(activations.sigmoid(z)), z, jit=False)
    assert scalar.cotangent == "1 (full gradient of a scalar output)"


def test_assert_passed_raises_with_the_table():
    report = gradcheck.check(tanh_sign_flipped, jnp.ones(3), jit=False, vmap=False, hvp=False)
    with pytest.raises(AssertionError, match=r"gradcheck failed:\ngradcheck of tanh_sign_flipped"):
        report.assert_passed()


def test_x64_is_restored():
    before = jax.config.jax_enable_x64
    gradcheck.check(activations.tanh, jnp.ones(2), jit=False, vmap=False, hvp=False)
    assert jax.config.jax_enable_x64 == before
    assert jnp.ones(2).dtype == jnp.float32


def test_integer_inputs_are_held_fixed_and_argnums_selects():
    logits = jax.random.normal(jax.random.key(0), (3, 4))
    labels = jnp.array([0, 3, 1])
    report = gradcheck.check(losses.softmax_cross_entropy, logits, labels, jit=False)
    assert {r.leaf for r in report.rows if r.check.startswith("vjp")} == {"logits"}
    x = jnp.ones((2, 3))
    W = jnp.ones((4, 3))
    report = gradcheck.check(dense, x, W, jnp.zeros(4), argnums=1, jit=False, vmap=False, hvp=False)
    assert {r.leaf for r in report.rows if r.check.startswith("vjp")} == {"W"}


def test_function_without_fundl_primitives_is_noted():
    plain = gradcheck.check(lambda z: jnp.tanh(z), jnp.ones(2), jit=False, vmap=False, hvp=False)
    plain.assert_passed()
    assert any("no fundl primitive ran" in note for note in plain.notes)


def test_an_inner_jit_is_traced_again_for_the_reference_side():
    # Without a fresh trace, the reference pass would reuse the hand pass's jaxpr and
    # compare the wrong rule with itself.
    inner = jax.jit(tanh_sign_flipped)
    report = gradcheck.check(
        lambda z: inner(z) * 2.0, jnp.array([0.3, -0.7]), jit=False, vmap=False, hvp=False
    )
    assert _failing(report, "vjp: hand vs autodiff") == {"z"}
    assert report.notes == ()


@primitive
def sin_times_x(x):
    return jnp.sin(x) * x


def _sin_times_x_rule(factor, x, g):
    # the value is off by `factor`; stop_gradient also makes its second order wrong
    return (g * jax.lax.stop_gradient(jnp.cos(x) * x + jnp.sin(x)) * factor,)


@contextlib.contextmanager
def _global_precision(value):
    before = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", value)
    try:
        yield
    finally:
        jax.config.update("jax_default_matmul_precision", before)


@pytest.mark.parametrize("factor", [1.01, 1 + 2e-6])
@pytest.mark.parametrize(
    "precision",
    [
        lambda: jax.default_matmul_precision("highest"),
        lambda: _global_precision("highest"),
        lambda: jax.default_matmul_precision("float32"),
    ],
    ids=["highest", "global highest", "float32"],
)
def test_an_inner_jit_is_traced_again_whatever_the_callers_precision(factor, precision):
    # The reference pass once relied on running at "highest" to miss the inner jit's
    # cache: a caller already there got the hand trace back, the rule compared with itself.
    @primitive
    def f(x):
        return sin_times_x.reference(x)

    f.defvjp(lambda x: (sin_times_x.reference(x), x), functools.partial(_sin_times_x_rule, factor))
    inner = jax.jit(lambda x: jnp.sum(f(x)))
    x = jnp.array([0.3, -1.2, 2.0, 0.7, -0.4])
    before = gradcheck.check(inner, x, jit=False, vmap=False)  # caches traces at the default
    with precision():
        report = gradcheck.check(inner, x, jit=False, vmap=False)
    for r in (before, report):
        assert _failing(r, "vjp: hand vs autodiff") == {"x"}
        assert _failing(r, "hvp: hand vs autodiff") == {"x"}
        assert r.notes == ()
        row = next(row for row in r.rows if row.check == "vjp: hand vs autodiff")
        np.testing.assert_allclose(row.max_rel, factor - 1, rtol=1e-3)


def test_a_pass_that_reused_a_cached_trace_fails_instead_of_passing(monkeypatch):
    # Without a trace context of its own, the hand pass reuses the trace jit cached while
    # the check took the output shapes: its own pass traces no primitive. The check must
    # say so and fail, not compare a rule with itself.
    monkeypatch.setattr(gradcheck, "_pass_context", lambda key: contextlib.nullcontext())
    inner = jax.jit(lambda x: jnp.sum(activations.tanh(x)))
    report = gradcheck.check(inner, jnp.array([0.3, -0.7]), hvp=False, jit=False, vmap=False)
    assert _failing(report, "vjp: hand vs autodiff") == {"x"}
    (note,) = report.notes
    assert note == (
        "no fundl primitive was traced in hand mode: a jax.jit inside f reused a trace "
        "cached in the other mode, so 'hand vs autodiff' compared a side with itself and is "
        "marked failed; rerun the check in a fresh process"
    )


@primitive
def log_by_hand(x):
    return jnp.log(x)


log_by_hand.defvjp(lambda x: (jnp.log(x), x), lambda x, g: (g / x,))


def test_vmap_check_keeps_inputs_in_the_domain():
    # A perturbation of ±0.01·(1 + |x|) took 0.002 below 0: NaN on both sides, a failure.
    report = gradcheck.check(log_by_hand, jnp.array([0.002, 0.5, 0.003, 2.0]))
    report.assert_passed()
    assert any(r.check == "vmap: batched vs stacked" for r in report.rows)


@pytest.mark.parametrize(
    "a, b, passed, note",
    [
        ([np.nan, 1.0, np.inf], [np.nan, 1.0, np.inf], True, "2 non-finite in both"),
        ([np.nan, 1.0], [1.0, 1.0], False, ""),
        ([np.inf, 1.0], [-np.inf, 1.0], False, ""),
        ([np.nan, 1.0], [np.nan, 2.0], False, "1 non-finite in both"),
    ],
)
def test_vmap_comparison_counts_nan_in_the_same_place_as_agreement(a, b, passed, note):
    row = gradcheck._compare(
        "vmap: batched vs stacked",
        "x",
        a,
        b,
        rtol=1e-7,
        atol=1e-9,
        normwise=False,
        same_nonfinite=True,
    )
    assert (row.passed, row.note) == (passed, note)


def test_errors():
    with pytest.raises(
        ValueError, match=r"gradcheck.check: no inputs; call check\(f, \*example_args\)"
    ):
        gradcheck.check(activations.tanh)
    with pytest.raises(
        ValueError, match=r"gradcheck.check: no floating-point inputs to differentiate"
    ):
        gradcheck.check(lambda n: n * 2.0, jnp.arange(3))
    with pytest.raises(
        ValueError, match=r"gradcheck.check: argnums \(2,\) out of range for 1 args"
    ):
        gradcheck.check(activations.tanh, jnp.ones(2), argnums=2)
    with pytest.raises(
        ValueError, match=r"gradcheck.check: f has no floating-point output to differentiate"
    ):
        gradcheck.check(lambda z: jnp.argmax(z), jnp.ones(2))
    with pytest.raises(
        TypeError, match=r"gradcheck.check_model: expected a model with apply or a function, got 3"
    ):
        gradcheck.check_model(3, {}, jnp.ones(1), jnp.ones(1), losses.mse)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: gradcheck.Tolerances(rtol=-1.0),
            ValueError,
            r"Tolerances: rtol must be a finite number in \[0, inf\); got -1.0",
        ),
        (
            lambda: gradcheck.Tolerances(fd_atol="1e-6"),
            ValueError,
            r"Tolerances: fd_atol must be .*got '1e-6'",
        ),
        (
            lambda: gradcheck.check(activations.tanh, jnp.ones(2), tolerances={"rtol": 1.0}),
            TypeError,
            r"gradcheck.check: tolerances must be a gradcheck.Tolerances",
        ),
        (
            lambda: gradcheck.check(activations.tanh, jnp.ones(2), fd_step=float("inf")),
            ValueError,
            r"gradcheck.check: fd_step must be a finite number in \(0, inf\)",
        ),
        (
            lambda: gradcheck.check(activations.tanh, jnp.ones(2), fd_max_elements=2.5),
            ValueError,
            r"gradcheck.check: fd_max_elements must be a positive integer, got 2.5",
        ),
        (
            lambda: gradcheck.check(activations.tanh, jnp.ones(2), hvp="no"),
            ValueError,
            r"gradcheck.check: hvp must be True or False",
        ),
        (
            lambda: gradcheck.check(activations.tanh, jnp.ones(2), key="a"),
            ValueError,
            r"gradcheck.check: key must be a PRNG key",
        ),
        (
            lambda: gradcheck.check(activations.tanh, jnp.ones(2), key=True),
            ValueError,
            r"gradcheck.check: key must be a PRNG key or an int seed >= 0, got True",
        ),
        (
            lambda: gradcheck.check(activations.tanh, jnp.ones(2), argnums=True),
            ValueError,
            r"gradcheck.check: argnums \(True,\) out of range",
        ),
        (
            lambda: gradcheck.check(lambda a, b: a * b, jnp.ones(2), jnp.ones(2), argnums=(0, 0)),
            ValueError,
            r"gradcheck.check: argnums \(0, 0\) names an argument twice",
        ),
        (
            lambda: gradcheck.check(3, jnp.ones(2)),
            TypeError,
            r"gradcheck.check: f must be a function, got 3",
        ),
        (
            lambda: gradcheck.check_model(lambda p, x: x, {}, jnp.ones(1), jnp.ones(1), "mse"),
            TypeError,
            r"gradcheck.check_model: loss must be a function",
        ),
        (
            lambda: gradcheck.check_model(
                lambda p, x: x, {}, jnp.ones(1), jnp.ones(1), losses.mse, train="yes"
            ),
            ValueError,
            r"gradcheck.check_model: train must be True or False",
        ),
    ],
)
def test_bad_arguments_table(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_check_model_with_an_apply_function():
    model = mlp([3, 4, 2], "relu")
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y = jax.random.normal(jax.random.key(2), (5, 2))
    report = gradcheck.check_model(model.apply, params, x, y, losses.mse, jit=False)
    report.assert_passed()
    assert report.function == "mse(Sequential.apply)"
    assert Activation("relu") in model.layers


# --- the defaults must be tight enough to catch small errors -----------------------------


@primitive
def tanh_slightly_off(z):
    return jnp.tanh(z)


# A rule off by a relative 1e-5 (as a wrongly rounded constant would be): loosening the
# default tolerances a thousandfold would let it through; the defaults must not.
tanh_slightly_off.defvjp(activations.tanh_fwd, lambda t, g: ((1 + 1e-5) * g * (1 - t * t),))


def test_a_rule_off_by_one_part_in_a_hundred_thousand_fails():
    z = jnp.linspace(-2.0, 2.0, 7)
    report = gradcheck.check(tanh_slightly_off, z, jit=False, vmap=False, hvp=False)
    assert _failing(report, "vjp: hand vs autodiff") == {"z"}
    row = next(r for r in report.rows if r.check == "vjp: hand vs autodiff")
    np.testing.assert_allclose(row.max_rel, 1e-5, rtol=1e-3)


def test_finite_differences_are_central_at_a_sharply_curved_point():
    # −log p has curvature 1/p² = 1e4 at p = 0.01: a forward difference with h = 1e-6
    # is off by h/(2p) ≈ 5e-5 relative, five times fd_rtol; a central one by ~h²/p².
    p = jnp.array([0.01, 0.98, 0.5])
    y = jnp.array([1.0, 0.0, 1.0])
    bce = lambda p, y: losses.binary_cross_entropy(p, y, reduction="sum")  # noqa: E731
    report = gradcheck.check(bce, p, y, jit=False, vmap=False, hvp=False)
    fd = [r for r in report.rows if r.check == "vjp: hand vs finite diff"]
    assert fd and all(r.passed for r in fd), str(report)
    assert report.passed
