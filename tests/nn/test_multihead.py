"""fundl.nn.MultiHeadAttention: a plain-jnp float64 reference, PyTorch where installed,
gradient checks (self, cross, causal, padded), padding that changes nothing real, the
public pieces project/merge, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import gradcheck
from fundl.nn import MultiHeadAttention, rotary


def _reference(params, x, context, allowed, heads):
    """softmax(q kᵀ/√d_h) v per head with einsum; allowed: bool (B, L_q, L_k) or None."""
    c = x if context is None else context
    q = x @ params["W_q"].T + params["b_q"][None, None]
    k = c @ params["W_k"].T + params["b_k"][None, None]
    v = c @ params["W_v"].T + params["b_v"][None, None]
    split = lambda z: z.reshape(z.shape[:-1] + (heads, -1))
    q, k, v = split(q), split(k), split(v)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    if allowed is not None:
        s = jnp.where(allowed[:, None], s, -jnp.inf)
    o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
    return o.reshape(o.shape[:2] + (-1,)) @ params["W_o"].T + params["b_o"][None, None]


def _data(seed=0, lq=4, lk=3, d=8, d_ctx=6):
    ks = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(ks[0], (2, lq, d))
    c = jax.random.normal(ks[1], (2, lk, d_ctx))
    pad = jnp.array([[True, True, True], [True, True, False]])  # (B, L_k) for the context
    return x, c, pad, ks[2]


def _biased(layer, key, shape):
    """Parameters with non-zero biases, so the reference checks them too."""
    params = layer.init(key, shape)
    return {
        n: p + 0.1 * jax.random.normal(jax.random.key(i), p.shape) if n.startswith("b") else p
        for i, (n, p) in enumerate(params.items())
    }


def test_equals_a_float64_einsum_reference(x64):
    with x64():
        x, c, pad, key = _data()
        causal = jnp.tril(jnp.ones((4, 4), bool))
        mha = MultiHeadAttention(2, param_dtype=jnp.float64)
        p = _biased(mha, key, (4, 8))
        x64_ = x.astype(jnp.float64)
        np.testing.assert_allclose(mha.apply(p, x64_), _reference(p, x64_, None, None, 2), 1e-12)
        mc = MultiHeadAttention(2, causal=True, param_dtype=jnp.float64)
        want = _reference(p, x64_, None, jnp.broadcast_to(causal, (2, 4, 4)), 2)
        np.testing.assert_allclose(mc.apply(p, x64_), want, rtol=1e-12)
        cross = MultiHeadAttention(2, context_features=6, out_features=5, param_dtype=jnp.float64)
        p = _biased(cross, key, (4, 8))
        c64 = c.astype(jnp.float64)
        got = cross.apply(p, x64_, context=c64, padding_mask=pad)
        want = _reference(p, x64_, c64, jnp.broadcast_to(pad[:, None], (2, 4, 3)), 2)
        assert got.shape == (2, 4, 5)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_equals_torch_multihead_attention(f32_tol):
    torch = pytest.importorskip("torch")
    x, _, _, key = _data()
    mha = MultiHeadAttention(2)
    p = _biased(mha, key, (4, 8))
    t = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        t.in_proj_weight.copy_(torch.tensor(np.concatenate([p["W_q"], p["W_k"], p["W_v"]])))
        t.in_proj_bias.copy_(torch.tensor(np.concatenate([p["b_q"], p["b_k"], p["b_v"]])))
        t.out_proj.weight.copy_(torch.tensor(np.asarray(p["W_o"])))
        t.out_proj.bias.copy_(torch.tensor(np.asarray(p["b_o"])))
        xt = torch.tensor(np.asarray(x))
        pad = np.array([[False] * 4, [False, False, False, True]])  # torch: True = padded
        want, _ = t(xt, xt, xt, key_padding_mask=torch.tensor(pad), need_weights=False)
    got = mha.apply(p, x, padding_mask=jnp.asarray(~pad))
    np.testing.assert_allclose(
        got, want.numpy(), **f32_tol(1e-5, 1e-6)
    )  # torch: float32 on the CPU


@pytest.mark.parametrize(
    "config",
    [
        {"causal": True, "mask": "pad"},  # self, causal, key padding
        {"context_features": 6, "mask": "full"},  # cross, a (B, L_q, L_k) mask
        {"rotary": True, "causal": True},
    ],
    ids=["self_causal_padded", "cross_masked", "rotary"],
)
def test_gradcheck(config):
    config = dict(config)
    which = config.pop("mask", None)
    x, c, _, key = _data(1)
    mha = MultiHeadAttention(2, **config)
    params = _biased(mha, key, (4, 8))
    context = c if "context_features" in config else None
    lk = 3 if context is not None else 4
    mask = padding = None
    if which == "pad":
        padding = jnp.ones((2, lk), bool).at[1, -1].set(False)
    elif which == "full":
        mask = jax.random.bernoulli(jax.random.key(3), 0.7, (2, 4, lk)).at[:, :, 0].set(True)

    def f(params, x, context):
        return mha.apply(params, x, context=context, mask=mask, padding_mask=padding)

    args = (params, x, context) if context is not None else (params, x)
    fn = jax.jit(f if context is not None else (lambda p, x: f(p, x, None)))
    gradcheck.check(fn, *args, hvp=False, vmap=False, jit=False).assert_passed()


def test_padded_keys_change_no_output_or_gradient_of_real_positions():
    x, _, _, key = _data(2, lq=5)
    mha = MultiHeadAttention(2)
    params = _biased(mha, key, (5, 8))
    pad = jnp.array([[True] * 5, [True, True, True, False, False]])
    real = (jnp.arange(5)[None, :, None] < jnp.array([5, 3])[:, None, None]).astype(x.dtype)

    def loss(params, x):
        return jnp.sum(mha.apply(params, x, padding_mask=pad) * real)

    y = mha.apply(params, x, padding_mask=pad)
    g_p, g_x = jax.grad(loss, argnums=(0, 1))(params, x)
    junk = x.at[1, 3:].set(100.0 * jax.random.normal(jax.random.key(9), (2, 8)))
    y2 = mha.apply(params, junk, padding_mask=pad)
    g_p2, g_x2 = jax.grad(loss, argnums=(0, 1))(params, junk)
    np.testing.assert_allclose(y2[1, :3], y[1, :3], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g_x2[1, :3], g_x[1, :3], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(g_x[1, 3:]).max()) == 0.0
    for n in g_p:
        np.testing.assert_allclose(g_p2[n], g_p[n], rtol=1e-5, atol=1e-6)


def test_project_and_merge_compose_to_apply_and_rotary_uses_positions(highest_precision):
    # full float32 matmuls: one token and four tokens are products of different shapes, which
    # a GPU at its default TF32 precision may round differently
    x, _, _, key = _data(3)
    mha = MultiHeadAttention(2, rotary=True, causal=True)
    params = mha.init(key, (4, 8))
    q, k, v = mha.project(params, x)
    assert q.shape == k.shape == v.shape == (2, 2, 4, 4)
    # the last token alone at position 3 against the full cache: the full run's last row
    q3, k3, _ = mha.project(params, x[:, 3:], positions=jnp.array([3]))
    np.testing.assert_allclose(q3, q[:, :, 3:], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(k3, k[:, :, 3:], rtol=1e-6, atol=1e-6)
    from fundl.nn import dot_product_attention

    o = dot_product_attention(q3, k, v, causal=True)
    np.testing.assert_allclose(mha.merge(params, o), mha.apply(params, x)[:, 3:], rtol=1e-5)
    # per-example positions (B, L): each row rotated at its own offset
    q_b, _, _ = mha.project(params, x[:, :1], positions=jnp.array([[0], [3]]))
    q0, _, _ = mha.project(params, x[:, :1])  # position 0: no rotation
    np.testing.assert_allclose(q_b[0], q0[0], atol=1e-6)
    np.testing.assert_allclose(q_b[1], rotary(q0[1], jnp.array([3])), atol=1e-6)


def test_bad_input_names_the_layer_and_shapes():
    x, c, _, key = _data()
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(3\): 3 heads do not divide .*8"):
        MultiHeadAttention(3).init(key, (4, 8))
    mha = MultiHeadAttention(2)
    params = mha.init(key, (4, 8))
    with pytest.raises(
        ValueError, match=r"expected a context of shape \(2, 'L_k', 8\).*\(2, 3, 6\)"
    ):
        mha.apply(params, x, context=c)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\): sequence length 0"):
        mha.apply(params, jnp.ones((2, 0, 8)))
    with pytest.raises(ValueError, match=r"even head width"):
        MultiHeadAttention(2, rotary=True).init(key, (4, 6))
    with pytest.raises(ValueError, match=r"MultiHeadAttention: num_heads"):
        MultiHeadAttention(0)


# Masks, with batch B = L_q = 4: an unbatched (L_q, L_k) mask and a (B, L_k) key-padding mask
# have the same shape, so each has its own argument and an unbatched mask is never broadcast.
MASK_ERRORS = [
    (
        {"mask": jnp.tril(jnp.ones((4, 4), bool))},  # PyTorch's and Flax's unbatched mask
        r"mask of dtype bool and shape \(4, 4, 4\) \(a 1 broadcasts\), got bool of "
        r"shape \(4, 4\); a key-padding mask \(\.\.\., L_k\) goes to padding_mask=; "
        r"mask\[None\] broadcasts it over x's batch axes \(4,\)",
    ),
    ({"mask": jnp.ones((4, 4, 4), jnp.int32)}, r"mask of dtype bool .*got int32"),
    (
        {"mask": jnp.ones((4, 1, 4, 4), bool)},
        r"mask .*shape \(4, 4, 4\) .*of shape \(4, 1, 4, 4\)$",
    ),
    ({"mask": jnp.ones((4, 4, 3), bool)}, r"mask .*shape \(4, 4, 4\) .*of shape \(4, 4, 3\)$"),
    ({"padding_mask": jnp.ones((4, 3), bool)}, r"padding_mask of dtype bool and shape \(4, 4\)"),
    (
        {"padding_mask": jnp.ones((4,), bool)},
        r"padding_mask .*; padding_mask\[None\] broadcasts it",
    ),
    ({"padding_mask": jnp.ones((4, 4), jnp.float32)}, r"padding_mask .*got float32"),
]


@pytest.mark.parametrize("masks, match", MASK_ERRORS)
def test_masks_of_another_shape_or_dtype_are_refused_naming_the_argument(masks, match):
    mha = MultiHeadAttention(2)
    x = jnp.ones((4, 4, 8))
    with pytest.raises(ValueError, match=r"^MultiHeadAttention\(2\): expected " + match):
        mha.apply(mha.init(0, (4, 8)), x, **masks)


@pytest.mark.usefixtures("highest_precision")
def test_mask_and_padding_mask_combine_and_a_one_broadcasts():
    mha = MultiHeadAttention(2)
    x = jax.random.normal(jax.random.key(0), (4, 4, 8))
    params = _biased(mha, jax.random.key(1), (4, 8))
    band = jnp.abs(jnp.arange(4)[:, None] - jnp.arange(4)[None, :]) <= 1  # (L_q, L_k)
    pad = jnp.arange(4)[None, :] < jnp.array([[4], [3], [2], [1]])  # (B, L_k)
    full = band[None] & pad[:, None, :]  # (B, L_q, L_k): what both say
    want = mha.apply(params, x, mask=full)
    np.testing.assert_array_equal(mha.apply(params, x, mask=band[None], padding_mask=pad), want)
    np.testing.assert_array_equal(
        mha.apply(params, x, mask=jnp.broadcast_to(band, (4, 4, 4)), padding_mask=pad), want
    )
    # the padding alone is the full mask with every query row the same
    np.testing.assert_array_equal(
        mha.apply(params, x, padding_mask=pad),
        mha.apply(params, x, mask=jnp.broadcast_to(pad[:, None, :], (4, 4, 4))),
    )
    assert not np.allclose(want, mha.apply(params, x, mask=jnp.broadcast_to(band, (4, 4, 4))))
