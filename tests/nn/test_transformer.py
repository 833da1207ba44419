"""fundl.nn Transformer blocks: pre-LN and post-LN against a hand-written float64
reference, gradient checks, dropout in training only, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf

from fundl import gradcheck
from fundl.nn import TransformerDecoderBlock, TransformerEncoderBlock


def _ln(x, p, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["gamma"][None, None] + p["beta"][None, None]


def _mha(p, x, c, allowed, heads=2):
    lin = lambda z, n: z @ p[f"W_{n}"].T + p[f"b_{n}"][None, None]
    split = lambda z: z.reshape(z.shape[:-1] + (heads, -1))
    q, k, v = split(lin(x, "q")), split(lin(c, "k")), split(lin(c, "v"))
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if allowed is not None:
        s = jnp.where(allowed[:, None], s, -jnp.inf)
    o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
    return lin(o.reshape(o.shape[:2] + (-1,)), "o")


def _ffn(p, x):
    z = x @ p["ff1"]["W"].T + p["ff1"]["b"][None, None]
    z = 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))
    return z @ p["ff2"]["W"].T + p["ff2"]["b"][None, None]


def _reference(p, x, sublayers, norm_first):
    for i, fn in enumerate(sublayers + [lambda h: _ffn(p, h)]):
        norm = p[f"norm{i + 1}"]
        x = x + fn(_ln(x, norm)) if norm_first else _ln(x + fn(x), norm)
    return x


def _perturbed(params, seed=0):
    """Non-trivial γ, β and biases, so the reference checks where each one enters."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        leaf + 0.2 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(tree, leaves)


# pre-LN on the encoder, post-LN on the decoder: both blocks share the wiring code
@pytest.mark.parametrize("block", ["encoder_pre_ln", "decoder_post_ln"])
def test_blocks_equal_a_float64_reference(x64, block):
    with x64():
        ks = jax.random.split(jax.random.key(1), 3)
        x = jax.random.normal(ks[0], (2, 4, 8), jnp.float64)
        c = jax.random.normal(ks[1], (2, 3, 6), jnp.float64)
        pad = jnp.array([[True] * 4, [True, True, True, False]])
        if block == "encoder_pre_ln":
            enc = TransformerEncoderBlock(2, 16, param_dtype=jnp.float64)
            p = _perturbed(enc.init(ks[2], (4, 8)))
            allowed = jnp.broadcast_to(pad[:, None], (2, 4, 4))
            want = _reference(p, x, [lambda h: _mha(p["attention"], h, h, allowed)], True)
            got = jax.jit(lambda p, x: enc.apply(p, x, padding_mask=pad))(p, x)
        else:
            dec = TransformerDecoderBlock(
                2, 16, context_features=6, norm_first=False, param_dtype=jnp.float64
            )
            p = _perturbed(dec.init(ks[2], (4, 8)))
            causal = jnp.tril(jnp.ones((4, 4), bool))[None] & pad[:, None]
            cpad = jnp.array([[True] * 3, [True, False, True]])
            sub = [
                lambda h: _mha(p["self_attention"], h, h, causal),
                lambda h: _mha(
                    p["cross_attention"], h, c, jnp.broadcast_to(cpad[:, None], (2, 4, 3))
                ),
            ]
            want = _reference(p, x, sub, False)
            got = jax.jit(
                lambda p, x: dec.apply(p, x, padding_mask=pad, context=c, context_padding_mask=cpad)
            )(p, x)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck_post_ln_decoder_block_with_cross_attention_and_masks():
    # the encoder block's pre-LN wiring is checked by its row in tests/nn/test_layers.py
    ks = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(ks[0], (2, 3, 8))
    c = jax.random.normal(ks[1], (2, 4, 8))
    cpad = jnp.array([[True] * 4, [True, True, False, True]])
    dec = TransformerDecoderBlock(2, 8, norm_first=False)
    p = _perturbed(dec.init(ks[2], (3, 8)))
    f = jax.jit(lambda p, x, c: dec.apply(p, x, context=c, context_padding_mask=cpad))
    report = gradcheck.check(f, p, x, c, hvp=False, vmap=False, jit=False, fd_max_elements=8)
    report.assert_passed()


def test_dropout_acts_in_training_only_and_needs_a_key():
    block = TransformerEncoderBlock(2, 8, dropout=0.5)
    params = block.init(0, (3, 8))
    x = jax.random.normal(jax.random.key(3), (2, 3, 8))
    plain = TransformerEncoderBlock(2, 8).apply(params, x)
    np.testing.assert_array_equal(block.apply(params, x), plain)
    trained = block.apply(params, x, key=1, train=True)
    assert not np.allclose(trained, plain)
    np.testing.assert_array_equal(trained, block.apply(params, x, key=1, train=True))
    with pytest.raises(
        ValueError, match=r"TransformerEncoderBlock\(2, 8, dropout=0.5\): train=True"
    ):
        block.apply(params, x, train=True)


def test_bad_input_names_the_block_and_shapes():
    x = jnp.ones((2, 3, 8))
    dec = TransformerDecoderBlock(2, 8)
    params = dec.init(0, (3, 8))
    with pytest.raises(
        ValueError, match=r"TransformerDecoderBlock\(2, 8\): cross_attention=True needs"
    ):
        dec.apply(params, x)
    with pytest.raises(ValueError, match=r"expected a context of shape \(2, 'L_k', 8\)"):
        dec.apply(params, x, context=jnp.ones((2, 4, 6)))
    with pytest.raises(
        ValueError,
        match=r"TransformerDecoderBlock\(2, 8\): expected context_padding_mask of dtype bool "
        r"and shape \(2, 4\) \(a 1 broadcasts\), got bool of shape \(2, 3\)",
    ):
        dec.apply(
            params, x, context=jnp.ones((2, 4, 8)), context_padding_mask=jnp.ones((2, 3), bool)
        )
    with pytest.raises(
        ValueError,
        match=r"expected context_mask of dtype bool and shape \(2, 3, 4\) .*got bool of shape "
        r"\(2, 4\); a key-padding mask \(\.\.\., L_k\) goes to context_padding_mask=",
    ):
        dec.apply(params, x, context=jnp.ones((2, 4, 8)), context_mask=jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"3 heads do not divide the input width 8"):
        TransformerEncoderBlock(3, 8).init(0, (3, 8))
    with pytest.raises(ValueError, match=r"TransformerEncoderBlock: dropout"):
        TransformerEncoderBlock(2, 8, dropout=1.0)


@pytest.mark.usefixtures("highest_precision")
def test_cached_decoding_with_a_padded_context_equals_the_full_pass():
    ks = jax.random.split(jax.random.key(5), 3)
    x = jax.random.normal(ks[0], (2, 4, 8))
    c = jax.random.normal(ks[1], (2, 3, 8))
    cpad = jnp.array([[True] * 3, [True, False, True]])
    dec = TransformerDecoderBlock(2, 8)
    params = _perturbed(dec.init(ks[2], (4, 8)))
    full = dec.apply(params, x, context=c, context_padding_mask=cpad)
    step = jax.jit(
        lambda cache, x_t, t: dec.decode(
            params, cache, x_t, t, context=c, context_padding_mask=cpad
        )
    )
    cache, rows = dec.init_cache((2,), 4, 8, x.dtype), []
    for t in range(4):
        y, cache = step(cache, x[:, t : t + 1], t)
        rows.append(y)
    np.testing.assert_allclose(jnp.concatenate(rows, axis=1), full, rtol=1e-5, atol=1e-5)
    # the padded context key changes nothing; unpadded, it does
    junk = c.at[1, 1].set(100.0)
    np.testing.assert_allclose(
        dec.apply(params, x, context=junk, context_padding_mask=cpad), full, rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(dec.apply(params, x, context=junk), full, atol=1e-3)
    with pytest.raises(ValueError, match=r"expected context_padding_mask .*\(2, 1, 3\)"):
        dec.decode(params, cache, x[:, :1], 0, context=c, context_padding_mask=cpad[:, None])
