"""fundl.nn.dot_product_attention: the formula, masks, rows with no key, padded positions
that do not matter, the memory its backward rule saves, and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl.nn import dot_product_attention as attention


def _qkv(lq=3, lk=5, d=4, dv=2, batch=(2,), seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=batch + shape) for shape in ((lq, d), (lk, d), (lk, dv)))


def _naive(q, k, v, allowed):
    """Loops over rows in float64: softmax over the allowed keys, 0 when none."""
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            keys = [j for j in range(k.shape[-2]) if allowed[idx + (i, j)]]
            if not keys:
                continue
            s = np.array([q[idx + (i,)] @ k[idx + (j,)] for j in keys]) / np.sqrt(q.shape[-1])
            p = np.exp(s - s.max())
            out[idx + (i,)] = (p / p.sum()) @ v[idx][keys]
    return out


def test_output_equals_the_formula_with_causal_and_padding_masks(x64):
    q, k, v = _qkv()
    mask = np.ones((2, 3, 5), bool)
    mask[0, :, 4] = False  # a padded key
    mask[1, 0, :] = False  # a query that sees nothing
    causal = np.arange(5)[None, :] <= np.arange(3)[:, None] + 2  # the last query, the last key
    with x64():
        for kwargs, m, allowed in (
            ({}, None, np.ones((2, 3, 5), bool)),
            ({"causal": True}, None, np.broadcast_to(causal, (2, 3, 5))),
            ({"causal": True}, jnp.asarray(mask), mask & causal),
            ({}, jnp.asarray(mask), mask),
        ):
            out = attention(*map(jnp.asarray, (q, k, v)), m, **kwargs)
            np.testing.assert_allclose(out, _naive(q, k, v, allowed), rtol=1e-12, atol=1e-14)


def test_a_row_with_no_key_gives_zero_and_no_gradient(x64):
    q, k, v = map(jnp.asarray, _qkv(batch=()))
    mask = jnp.ones((3, 5), bool).at[1].set(False)
    with x64():
        out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, mask), q, k, v)
        dq, _, _ = vjp(jnp.ones_like(out))
        assert float(jnp.abs(out[1]).max()) == 0.0 and float(jnp.abs(dq[1]).max()) == 0.0
        assert np.isfinite(np.asarray(out)).all()


def test_padded_keys_change_no_output_or_gradient_of_real_positions(x64):
    q, k, v = map(jnp.asarray, _qkv())
    mask = jnp.ones((2, 3, 5), bool).at[:, :, 3:].set(False)  # keys 3 and 4 are padding
    other_k = k.at[:, 3:].set(100.0)
    other_v = v.at[:, 3:].set(-7.0)
    with x64():

        def run(k, v):
            out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, mask), q, k, v)
            dq, dk, dv = vjp(jnp.ones_like(out))
            return out, dq, dk[:, :3], dv[:, :3]

        chex.assert_trees_all_close(run(k, v), run(other_k, other_v), rtol=1e-13)


def test_the_backward_rule_keeps_no_score_matrix():
    """Residuals beyond the inputs: o and the log-sum-exp, not p (L_q × L_k)."""
    q = k = v = jnp.ones((1, 2, 256, 16))

    def residual_bytes(f):
        _, pullback = jax.vjp(f, q, k, v)
        inputs = {id(x) for x in (q, k, v)}
        leaves = {id(x): x for x in jax.tree.leaves(pullback) if hasattr(x, "nbytes")}
        return sum(x.nbytes for key, x in leaves.items() if key not in inputs)

    f = lambda q, k, v: attention(q, k, v, causal=True)  # noqa: E731
    hand = residual_bytes(f)
    with fundl.reference_mode():
        autodiff = residual_bytes(f)
    assert hand <= 2 * 256 * (16 + 1) * 4  # o and ℓ per head
    assert autodiff >= 2 * 256 * 256 * 4  # at least p per head


@pytest.mark.parametrize(
    "dtype, bounds",
    [
        # relative errors against float64: o, dq, dk, dv. With scores and softmax in the
        # inputs' dtype they were 8.1e-3, 3.8e-2, 4.0e-2, 2.7e-2 (bfloat16) and 1.1e-3,
        # 5.4e-3, 5.2e-3, 4.1e-3 (float16); float32 internals give about a quarter.
        (jnp.bfloat16, (4e-3, 1.5e-2, 1.5e-2, 6e-3)),
        (jnp.float16, (5e-4, 2e-3, 2e-3, 1e-3)),
    ],
)
def test_half_precision_inputs_keep_scores_and_softmax_in_float32(x64, dtype, bounds):
    ks = jax.random.split(jax.random.key(0), 4)
    q, k = (3 * jax.random.normal(key, (2, 128, 16)) for key in ks[:2])  # peaked softmax
    v, c = (jax.random.normal(key, (2, 128, 16)) for key in ks[2:])
    low = [x.astype(dtype) for x in (q, k, v)]
    with x64():
        high = [x.astype(jnp.float64) for x in low]  # the same inputs, computed exactly

    def run(inputs, cotangent):
        out, pullback = jax.vjp(lambda *a: attention(*a, causal=True), *inputs)
        return [out, *pullback(cotangent)]

    got = run(low, c.astype(dtype))
    with x64():
        exact = run(high, c.astype(jnp.float64))
    assert all(x.dtype == dtype for x in got)
    for name, a, b, bound in zip(("o", "dq", "dk", "dv"), got, exact, bounds):
        a, b = np.asarray(a, np.float64), np.asarray(b)
        assert b.dtype == np.float64
        error = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert error < bound, (name, error)


@pytest.mark.parametrize(
    "shapes, mask, message",
    [
        (((2, 3, 4), (2, 5, 3), (2, 5, 2)), None, r"expected k \(\.\.\., L_k, 4\)"),
        (((2, 3, 4), (3, 5, 4), (3, 5, 2)), None, r"share their leading \(batch, head\) dims"),
        (((2, 3, 4), (2, 5, 4), (2, 6, 2)), None, r"the same L_k"),
        (((2, 0, 4), (2, 5, 4), (2, 5, 2)), None, r"sequence length 0"),
        (
            ((2, 3, 4), (2, 5, 4), (2, 5, 2)),
            jnp.ones((2, 5), bool),
            r"bool mask of shape \(2, 3, 5\)",
        ),
        (((2, 3, 4), (2, 5, 4), (2, 5, 2)), jnp.ones((2, 3, 5)), r"got float32"),
        (((3, 4), (5, 4, 1), (5, 2)), None, r"of one rank"),
    ],
)
def test_bad_input_is_refused_naming_the_shapes(shapes, mask, message):
    q, k, v = (jnp.ones(s) for s in shapes)
    with pytest.raises(ValueError, match=r"dot_product_attention: .*" + message):
        attention(q, k, v, mask)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), "0.5"])
def test_a_scale_that_is_not_a_positive_number_is_refused(scale):
    q, k, v = (jnp.ones((2, 3)) for _ in range(3))
    with pytest.raises(ValueError, match=r"dot_product_attention: scale"):
        attention(q, k, v, scale=scale)
