"""fundl.losses: values against float64 formulas, the notes' fused gradients, rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundl import gradcheck
from fundl import losses as L


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _batch(seed, m=6, k=4):
    keys = jax.random.split(jax.random.key(seed), 4)
    logits = jax.random.normal(keys[0], (m, k)) * 2
    labels = jax.random.randint(keys[1], (m,), 0, k)
    soft = jax.nn.softmax(jax.random.normal(keys[2], (m, k)))
    binary = jax.random.bernoulli(keys[3], 0.5, (m, 1)).astype(jnp.float32)
    return logits, labels, soft, binary


# --- values ---------------------------------------------------------------------------


def test_mse_value():
    p = np.array([[1.0, 2.0], [3.0, 5.0]])
    t = np.array([[0.0, 2.0], [1.0, 1.0]])
    np.testing.assert_allclose(L.mse(jnp.asarray(p), jnp.asarray(t)), np.mean((p - t) ** 2))
    np.testing.assert_allclose(
        L.mse(jnp.asarray(p), jnp.asarray(t), reduction="sum"), np.sum((p - t) ** 2)
    )
    np.testing.assert_allclose(
        L.mse(jnp.asarray(p), jnp.asarray(t), reduction="none"), (p - t) ** 2
    )


def test_binary_cross_entropy_values():
    p = np.array([0.9, 0.2, 0.5, 0.999])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(
        L.binary_cross_entropy(
            jnp.asarray(p, jnp.float32), jnp.asarray(y, jnp.float32), reduction="none"
        ),
        expected,
        rtol=1e-5,
    )
    z = np.array([3.0, -1.5, 0.0, 7.0])
    expected = -(y * np.log(_np_sigmoid(z)) + (1 - y) * np.log(1 - _np_sigmoid(z)))
    np.testing.assert_allclose(
        L.binary_cross_entropy_with_logits(jnp.asarray(z), jnp.asarray(y)),
        expected.mean(),
        rtol=1e-6,
    )


def test_categorical_and_softmax_cross_entropy_values():
    logits, labels, soft, _ = _batch(0)
    z = np.asarray(logits, np.float64)
    log_p = _np_log_softmax(z)
    onehot = np.eye(4)[np.asarray(labels)]
    per_example = -(onehot * log_p).sum(-1)
    np.testing.assert_allclose(
        L.softmax_cross_entropy(logits, labels), per_example.mean(), rtol=1e-6
    )
    np.testing.assert_allclose(
        L.softmax_cross_entropy(logits, jnp.asarray(onehot, jnp.float32), reduction="none"),
        per_example,
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        L.softmax_cross_entropy(logits, soft, reduction="sum"),
        -(np.asarray(soft) * log_p).sum(),
        rtol=1e-6,
    )
    probs = jax.nn.softmax(logits)
    np.testing.assert_allclose(
        L.categorical_cross_entropy(probs, labels), per_example.mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        L.categorical_cross_entropy(probs, jnp.asarray(onehot, jnp.float32), reduction="none"),
        per_example,
        rtol=1e-5,
        atol=1e-6,
    )


def test_label_smoothing_value():
    logits, labels, _, _ = _batch(1)
    eps = 0.1
    target = (1 - eps) * np.eye(4)[np.asarray(labels)] + eps / 4
    expected = -(target * _np_log_softmax(np.asarray(logits, np.float64))).sum(-1).mean()
    np.testing.assert_allclose(
        L.softmax_cross_entropy(logits, labels, label_smoothing=eps), expected, rtol=1e-6
    )


def test_l2_penalty_value_and_default_selection():
    params = {
        "dense1": {"W": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.array([10.0, 10.0])},
        "dense2": {"W": jnp.array([[1.0, -1.0]])},
    }
    # λ/2 Σ‖W‖² over the matrices only: 0.5·0.1·(30 + 2)
    np.testing.assert_allclose(L.l2_penalty(params, 0.1), 1.6, rtol=1e-6)
    everything = L.l2_penalty(params, 0.1, include=lambda path, leaf: True)
    np.testing.assert_allclose(everything, 0.05 * (30 + 200 + 2), rtol=1e-6)
    grads = jax.grad(L.l2_penalty)(params, 0.1)
    np.testing.assert_allclose(grads["dense1"]["W"], 0.1 * params["dense1"]["W"], rtol=1e-6)
    np.testing.assert_array_equal(grads["dense1"]["b"], np.zeros(2))


# --- the notes' fused gradients --------------------------------------------------------


def test_softmax_cross_entropy_gradient_is_prediction_minus_target_over_m():
    logits, labels, _, _ = _batch(2)
    grad = jax.grad(L.softmax_cross_entropy)(logits, labels)
    expected = (jax.nn.softmax(logits) - jax.nn.one_hot(labels, 4)) / 6
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_sigmoid_bce_gradient_is_prediction_minus_target_over_m():
    z = jnp.array([[2.0], [-1.0], [0.5], [-3.0]])
    y = jnp.array([[1.0], [0.0], [0.0], [1.0]])
    grad = jax.grad(L.binary_cross_entropy_with_logits)(z, y)
    np.testing.assert_allclose(grad, (jax.nn.sigmoid(z) - y) / 4, rtol=1e-6)


def test_bce_clipping_keeps_a_saturated_prediction_learning():
    p = jnp.array([0.0, 1.0])
    y = jnp.array([1.0, 0.0])
    loss = L.binary_cross_entropy(p, y)
    eps = float(jnp.finfo(jnp.float32).eps)
    np.testing.assert_allclose(loss, -np.log(eps), rtol=1e-3)
    grad = jax.grad(L.binary_cross_entropy)(p, y)
    assert grad[0] < 0 < grad[1]  # pulled toward the targets, not a dead zero
    with jax.numpy_rank_promotion("allow"):
        ref_grad = jax.grad(L.binary_cross_entropy.reference)(p, y)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5)


# --- rules against autodiff and finite differences -----------------------------------

shapes = st.tuples(st.integers(1, 5), st.integers(1, 4))


@pytest.mark.slow
@settings(max_examples=3)  # each example compiles new shapes
@given(shape=shapes, seed=st.integers(0, 100), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_gradcheck_elementwise_losses(shape, seed, reduction):
    k1, k2 = jax.random.split(jax.random.key(seed))
    p = jax.random.uniform(k1, shape, minval=0.05, maxval=0.95)
    t = jax.random.uniform(k2, shape)
    for loss in (L.mse, L.binary_cross_entropy, L.binary_cross_entropy_with_logits):
        gradcheck.check(
            lambda a, b: loss(a, b, reduction=reduction), p, t, jit=False
        ).assert_passed()


@pytest.mark.slow
@settings(max_examples=3)  # each example compiles new shapes
@given(
    shape=shapes,
    seed=st.integers(0, 100),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    smoothing=st.sampled_from([0.0, 0.2]),
)
def test_gradcheck_categorical_losses(shape, seed, reduction, smoothing):
    m, k = shape[0], shape[1] + 1
    keys = jax.random.split(jax.random.key(seed), 3)
    logits = jax.random.normal(keys[0], (m, k)) * 3
    labels = jax.random.randint(keys[1], (m,), 0, k)
    soft = jax.nn.softmax(jax.random.normal(keys[2], (m, k)))
    for targets in (labels, soft):
        sce = lambda z, y: L.softmax_cross_entropy(
            z, y, label_smoothing=smoothing, reduction=reduction
        )  # noqa: E731
        gradcheck.check(sce, logits, targets, jit=False).assert_passed()
        cce = lambda p, y: L.categorical_cross_entropy(p, y, reduction=reduction)  # noqa: E731
        gradcheck.check(cce, jax.nn.softmax(logits), targets, jit=False).assert_passed()


# --- stability and bad input -----------------------------------------------------------


def test_stable_for_extreme_logits():
    z = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]])
    labels = jnp.array([0, 2])
    loss = L.softmax_cross_entropy(z, labels, reduction="none")
    np.testing.assert_allclose(loss, [0.0, 1e4 - 3.0], rtol=1e-6)
    grad = jax.grad(L.softmax_cross_entropy)(z, labels)
    assert bool(jnp.all(jnp.isfinite(grad)))
    zb = jnp.array([1e4, -1e4, 1e4, -1e4])
    yb = jnp.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(
        L.binary_cross_entropy_with_logits(zb, yb, reduction="none"), [0.0, 0.0, 1e4, 1e4]
    )
    assert bool(jnp.all(jnp.isfinite(jax.grad(L.binary_cross_entropy_with_logits)(zb, yb))))


def test_labels_out_of_range():
    logits = jnp.zeros((3, 4))
    with pytest.raises(
        ValueError,
        match=r"softmax_cross_entropy: labels must be in \[0, 4\) for 4 classes, got values in \[0, 4\]",
    ):
        L.softmax_cross_entropy(logits, jnp.array([0, 4, 1]))
    with pytest.raises(
        ValueError,
        match=r"categorical_cross_entropy: labels must be in \[0, 4\) for 4 classes, got values in \[-1, 1\]",
    ):
        L.categorical_cross_entropy(jax.nn.softmax(logits), jnp.array([-1, 0, 1]))


def test_labels_out_of_range_under_jit_give_nan_not_a_wrong_number():
    logits = jnp.zeros((3, 4))
    loss = jax.jit(L.softmax_cross_entropy)(logits, jnp.array([0, 7, 1]))
    assert bool(jnp.isnan(loss))
    per_example = jax.jit(lambda z, y: L.softmax_cross_entropy(z, y, reduction="none"))(
        logits, jnp.array([0, 7, 1])
    )
    np.testing.assert_allclose(np.asarray(per_example)[[0, 2]], [np.log(4)] * 2, rtol=1e-6)
    assert bool(jnp.isnan(per_example[1]))


def test_shape_and_dtype_errors():
    with pytest.raises(
        ValueError,
        match=r"mse: targets must have the shape of the predictions \(3, 1\), got \(3,\)",
    ):
        L.mse(jnp.ones((3, 1)), jnp.ones(3))
    with pytest.raises(
        ValueError,
        match=r"softmax_cross_entropy: integer labels must have shape \(3,\) \(scores without the class axis\), got \(3, 1\)",
    ):
        L.softmax_cross_entropy(jnp.ones((3, 4)), jnp.zeros((3, 1), jnp.int32))
    with pytest.raises(
        ValueError,
        match=r"one-hot or probability targets must have the scores' shape \(3, 4\), got \(3, 5\)",
    ):
        L.softmax_cross_entropy(jnp.ones((3, 4)), jnp.ones((3, 5)))
    with pytest.raises(
        TypeError,
        match=r"binary_cross_entropy_with_logits: expected floating-point predictions, got dtype int32",
    ):
        L.binary_cross_entropy_with_logits(jnp.ones(3, jnp.int32), jnp.ones(3))
    with pytest.raises(
        ValueError, match=r"mse: reduction must be one of 'mean', 'sum', 'none'; got 'avg'"
    ):
        L.mse(jnp.ones(3), jnp.ones(3), reduction="avg")
    with pytest.raises(
        ValueError,
        match=r"softmax_cross_entropy: label_smoothing must be a finite number in \[0, 1\); got 1.5",
    ):
        L.softmax_cross_entropy(jnp.ones((2, 3)), jnp.zeros(2, jnp.int32), label_smoothing=1.5)
    with pytest.raises(
        ValueError, match=r"l2_penalty: lam must be a finite number in \[0, inf\).*; got -0.1"
    ):
        L.l2_penalty({"W": jnp.ones((2, 2))}, -0.1)
    with pytest.raises(ValueError, match=r"l2_penalty: lam must be .*; got True \(a bool"):
        L.l2_penalty({"W": jnp.ones((2, 2))}, True)
    with pytest.raises(
        TypeError, match=r"l2_penalty: expected floating-point weights at params\['W'\]"
    ):
        L.l2_penalty({"W": jnp.ones((2, 2), jnp.int32)}, 0.1)
    with pytest.raises(
        ValueError,
        match=r"binary_cross_entropy: eps must be a finite number in \(0, 0.5\); got 0.7",
    ):
        L.binary_cross_entropy(jnp.ones(2) * 0.5, jnp.ones(2), eps=0.7)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: L.mse(None, jnp.ones(2)), r"mse: predictions must be an array, got NoneType"),
        (lambda: L.mse(jnp.ones(2), None), r"mse: targets must be an array, got NoneType"),
        (
            lambda: L.binary_cross_entropy_with_logits(jnp.ones(2), [1.0, 0.0]),
            r"binary_cross_entropy_with_logits: targets must be an array, got list; pass jnp.asarray",
        ),
        (
            lambda: L.softmax_cross_entropy({"z": jnp.ones((2, 3))}, jnp.zeros(2, jnp.int32)),
            r"softmax_cross_entropy: scores must be an array, got dict",
        ),
        (
            lambda: L.categorical_cross_entropy(jnp.ones((2, 3)) / 3, [0, 1]),
            r"categorical_cross_entropy: targets must be an array, got list",
        ),
    ],
)
def test_non_array_inputs_are_named(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_dtype_preserved_and_low_precision_finite():
    for dtype in (jnp.bfloat16, jnp.float16):
        p = jnp.array([0.0, 0.5, 1.0], dtype)
        y = jnp.array([1.0, 0.0, 0.0], dtype)
        loss = L.binary_cross_entropy(p, y)
        assert loss.dtype == dtype and bool(jnp.isfinite(loss))
        assert jax.grad(L.binary_cross_entropy)(p, y).dtype == dtype


def _low_precision_cases():
    """(id, loss of its differentiated inputs, float32 inputs): well-conditioned values."""
    keys = jax.random.split(jax.random.key(7), 3)
    z = 3 * jax.random.normal(keys[0], (8, 6))  # peaked rows: softmax far from uniform
    t = jax.random.uniform(keys[1], (8, 6))
    labels = jax.random.randint(keys[2], (8,), 0, 6)
    soft = jax.nn.softmax(z / 2 + t)
    return [
        ("mse", L.mse, (z, t)),
        ("bce", lambda p, y: L.binary_cross_entropy(p, y, eps=1e-2), (0.05 + 0.9 * t, t)),
        ("bce_with_logits", L.binary_cross_entropy_with_logits, (z, t)),
        ("cce", lambda p, y: L.categorical_cross_entropy(p, y, eps=1e-3), (soft, t / 3)),
        ("softmax_ce_soft", L.softmax_cross_entropy, (z, soft)),
        ("softmax_ce_labels", lambda z: L.softmax_cross_entropy(z, labels), (z,)),
        ("l2_penalty", lambda w: L.l2_penalty({"W": w}, 0.1), (z,)),
    ]


LOW_PRECISION_CASES = _low_precision_cases()


# A bfloat16 or float16 loss is computed in float32 and rounded once: the loss and every
# gradient element lie within one rounding of the exact (float64) value on the same
# half-precision inputs, |got − exact| ≤ u·(|exact| + 1% of the largest), u = eps/2 of the
# dtype. Computed in half precision, the rounding of each log, exp and partial sum added up:
# softmax cross-entropy's dz was off by 11-20 roundings in bfloat16, the logits BCE's by 45.
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize(
    "fn, inputs", [c[1:] for c in LOW_PRECISION_CASES], ids=[c[0] for c in LOW_PRECISION_CASES]
)
def test_half_precision_losses_are_computed_in_float32_and_rounded_once(x64, dtype, fn, inputs):
    low = [x.astype(dtype) for x in inputs]
    argnums = tuple(range(len(low)))
    loss, grads = jax.value_and_grad(fn, argnums=argnums)(*low)
    with x64():
        exact = jax.value_and_grad(fn, argnums=argnums)(*(x.astype(jnp.float64) for x in low))
    assert loss.dtype == dtype and {g.dtype for g in grads} == {jnp.dtype(dtype)}
    u = float(jnp.finfo(dtype).eps) / 2
    for got, want in zip(jax.tree.leaves((loss, grads)), jax.tree.leaves(exact)):
        got, want = np.asarray(got, np.float64), np.asarray(want)
        assert want.dtype == np.float64
        floor = 0.01 * np.max(np.abs(want))
        np.testing.assert_array_less(np.abs(got - want), 1.05 * u * (np.abs(want) + floor))


# --- silent wrong results that must not happen -------------------------------------------


def test_probabilities_outside_zero_one_are_refused_pointing_to_the_logits_loss():
    logits = jnp.array([2.5, -1.0, 0.3])
    with pytest.raises(
        ValueError,
        match=r"binary_cross_entropy: probabilities must lie in \[0, 1\], got values in "
        r"\[-1, 2.5\] \(2 outside\); if these are logits \(raw scores\), use "
        r"binary_cross_entropy_with_logits",
    ):
        L.binary_cross_entropy(logits, jnp.array([1.0, 0.0, 1.0]))
    with pytest.raises(
        ValueError, match=r"categorical_cross_entropy: .* use softmax_cross_entropy"
    ):
        L.categorical_cross_entropy(jnp.array([[3.0, -1.0]]), jnp.array([0]))
    # under jit the values are not known: no check, no host sync
    jax.jit(L.binary_cross_entropy)(jnp.array([0.2, 0.7]), jnp.array([0.0, 1.0]))


def test_minus_infinity_masks_a_class_in_softmax_cross_entropy():
    z = jnp.array([[1.0, -jnp.inf, 0.5, -jnp.inf]])
    y = jnp.array([0])
    expected = np.log1p(np.exp(0.5 - 1.0))  # the loss over the two unmasked classes: 0.4741
    np.testing.assert_allclose(L.softmax_cross_entropy(z, y), expected, rtol=1e-6)
    onehot = jnp.array([[1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(L.softmax_cross_entropy(z, onehot), expected, rtol=1e-6)
    grad = jax.grad(L.softmax_cross_entropy)(z, y)
    p = np.exp([1.0, 0.5]) / np.exp([1.0, 0.5]).sum()
    np.testing.assert_allclose(grad, [[p[0] - 1, 0.0, p[1], 0.0]], rtol=1e-6, atol=1e-7)
    with __import__("fundl").reference_mode():
        np.testing.assert_allclose(jax.grad(L.softmax_cross_entropy)(z, y), grad, atol=1e-7)
    # the true class masked: the loss is infinite, not NaN
    assert float(L.softmax_cross_entropy(z, jnp.array([1]))) == np.inf


def test_l2_penalty_takes_a_dict_mask():
    params = {"W": jnp.array([[1.0, 2.0]]), "b": jnp.array([3.0])}
    np.testing.assert_allclose(
        L.l2_penalty(params, 0.5, include={"W": False, "b": True}), 0.25 * 9.0, rtol=1e-6
    )
    grads = jax.jit(jax.grad(lambda p: L.l2_penalty(p, 0.5, include={"W": False, "b": True})))(
        params
    )
    np.testing.assert_allclose(grads["b"], [1.5])
    np.testing.assert_array_equal(grads["W"], [[0.0, 0.0]])
