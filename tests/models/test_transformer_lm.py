"""The decoder-only Transformer LM and cached generation: the cache equals the full pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import gradcheck, losses, models
from fundl.models import TransformerLM, generate, sample_token, transformer_lm

VOCAB = 7


def _lm(**options):
    config = {"d_model": 8, "num_heads": 2, "num_layers": 2, "max_length": 9} | options
    return transformer_lm(VOCAB, **config)


def _tokens(shape, seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 0, VOCAB)


def _f64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64), tree)


def _pieces(lm, params, tokens, cuts, dtype):
    """Logits from decode: the prompt tokens[:, :cuts[0]], then the pieces between cuts."""
    cache = lm.init_cache(tokens.shape[0], dtype=dtype)
    decode = jax.jit(lm.decode)
    out, start = [], 0
    for end in list(cuts) + [tokens.shape[1]]:
        logits, cache = decode(params, cache, tokens[:, start:end], start)
        out.append(logits)
        start = end
    return jnp.concatenate(out, axis=1)


@pytest.mark.parametrize(
    "options",
    [
        {"positional": "learned"},
        {"positional": "sinusoidal", "tie_embeddings": False},
        {"positional": "rotary", "norm_first": False},
    ],
    ids=["learned", "sinusoidal_untied", "rotary_post_ln"],
)
def test_cached_logits_equal_the_full_pass(x64, options):
    lm = _lm(**options)
    tokens = _tokens((2, 8))
    with x64():
        params = _f64(lm.init(jax.random.key(0)))
        full = lm.apply(params, tokens)
        # a prompt of 3, then one token at a time, then two at once
        cached = _pieces(lm, params, tokens, (3, 4, 5, 6), jnp.float64)
    np.testing.assert_allclose(cached, full, rtol=0, atol=1e-12)


def test_cached_logits_equal_the_full_pass_in_float32():
    lm = _lm()
    params = lm.init(jax.random.key(0))
    tokens = _tokens((2, 6))
    with jax.default_matmul_precision("highest"):  # TF32-class products on a GPU otherwise
        full = lm.apply(params, tokens)
        cached = _pieces(lm, params, tokens, (2, 3, 4, 5), jnp.float32)
    np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)


def test_greedy_generation_is_the_argmax_of_the_full_pass_step_by_step():
    lm = _lm(num_layers=1, max_length=10)
    params = lm.init(jax.random.key(3))
    prompt = _tokens((2, 3), seed=4)
    with jax.default_matmul_precision("highest"):
        out = generate(lm, params, prompt, max_new_tokens=5, temperature=0.0)
        # causal: the full pass over the generated sequence gives every step's logits
        full = lm.apply(params, out[:, :-1])
        top1 = generate(lm, params, prompt, max_new_tokens=5, key=7, temperature=1.5, top_k=1)
    sequence = jnp.concatenate([prompt, jnp.argmax(full[:, 2:], axis=-1)], axis=1)
    assert out.dtype == jnp.int32 and out.shape == (2, 8)
    np.testing.assert_array_equal(out, sequence)
    np.testing.assert_array_equal(top1, out)  # top-1 sampling is greedy
    np.testing.assert_array_equal(out[:, :3], prompt)


def test_sampling_follows_softmax_over_temperature_and_top_k():
    logits = jnp.log(jnp.array([0.05, 0.15, 0.3, 0.5]))
    n, temperature = 4000, 2.0
    keys = jax.random.split(jax.random.key(0), n)
    draw = jax.jit(jax.vmap(lambda k: sample_token(logits, k, temperature=temperature)))
    frequencies = np.bincount(np.asarray(draw(keys)), minlength=4) / n
    p = np.asarray(jax.nn.softmax(logits / temperature))
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(frequencies - p) < 4 * se), (frequencies, p)
    top2 = jax.vmap(lambda k: sample_token(logits, k, temperature=1.0, top_k=2))(keys)
    counts = np.bincount(np.asarray(top2), minlength=4)
    assert counts[0] == counts[1] == 0  # never outside the two largest logits
    p2 = 0.3 / 0.8
    assert abs(counts[2] / n - p2) < 4 * np.sqrt(p2 * (1 - p2) / n)


@pytest.mark.parametrize(
    "dtype, temperature", [(jnp.float16, 1e-3), (jnp.float16, 1e-8), (jnp.float32, 1e-39)]
)
def test_a_tiny_temperature_samples_the_largest_logit_in_any_dtype(dtype, temperature):
    # z/T in float16 overflowed to +inf for two logits, and categorical took the first
    logits = jnp.array([[70.0, 80.0, 75.0]], dtype)
    keys = jax.random.split(jax.random.key(0), 64)
    tokens = jax.vmap(lambda k: sample_token(logits, k, temperature=temperature))(keys)
    assert np.all(np.asarray(tokens) == 1)


@pytest.mark.parametrize(
    "dtype, temperature, top_k",
    [
        (jnp.float32, 1.0, None),
        (jnp.float32, 5.0, 1),
        (jnp.float16, 0.5, 2),
        (jnp.bfloat16, 1.0, 3),
    ],
)
def test_several_plus_inf_logits_are_sampled_uniformly(dtype, temperature, top_k):
    # categorical (Gumbel + argmax) took the first +inf token every time; the limit of
    # softmax(z / T) as those logits grow together is uniform among them (top_k=1 keeps
    # both: ties at the k-th value are kept)
    logits = jnp.array([[3.0, jnp.inf, 1e4, jnp.inf, -jnp.inf]], dtype)
    n = 2000
    keys = jax.random.split(jax.random.key(0), n)
    draw = jax.vmap(lambda k: sample_token(logits, k, temperature=temperature, top_k=top_k))
    counts = np.bincount(np.asarray(draw(keys)).ravel(), minlength=5)
    assert counts[0] == counts[2] == counts[4] == 0, counts
    assert abs(counts[1] / n - 0.5) < 4 * np.sqrt(0.25 / n), counts
    assert sample_token(logits, temperature=0.0).tolist() == [1]  # greedy: the first, as argmax


def test_a_nan_row_of_logits_gives_no_token_not_an_arbitrary_one():
    logits = jnp.array([[0.1, jnp.nan, 0.3], [0.1, 0.2, 0.3]])
    for options in ({"temperature": 0.0}, {"temperature": 1.0, "key": 0, "top_k": 2}):
        tokens = sample_token(logits, **options)
        assert int(tokens[0]) == -1 and 0 <= int(tokens[1]) < 3


def test_a_row_of_all_minus_inf_logits_gives_no_token_not_token_zero():
    # every token masked: softmax is 0/0; argmax and categorical both gave token 0
    logits = jnp.array([[-jnp.inf, -jnp.inf, -jnp.inf], [-jnp.inf, 0.2, -jnp.inf]])
    for options in ({"temperature": 0.0}, {"temperature": 1.0, "key": 0, "top_k": 2}):
        assert sample_token(logits, **options).tolist() == [-1, 1]


def test_sampled_generation_is_deterministic_per_key_and_differs_across_keys():
    lm = _lm(num_layers=1)
    params = lm.init(jax.random.key(0))
    prompt = _tokens((4, 2))
    a = generate(lm, params, prompt, max_new_tokens=6, key=1, temperature=1.0)
    b = generate(lm, params, prompt, max_new_tokens=6, key=1, temperature=1.0)
    c = generate(lm, params, prompt, max_new_tokens=6, key=2, temperature=1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < VOCAB


def test_the_lm_gradient_equals_autodiff_and_finite_differences():
    lm = _lm(num_layers=1, dropout=0.0, tie_embeddings=True)
    tokens = _tokens((2, 4))
    targets = _tokens((2, 4), seed=5)

    def loss(params):
        return losses.softmax_cross_entropy(lm.apply(params, tokens), targets)

    params = lm.init(jax.random.key(0))
    gradcheck.check(
        loss, params, hvp=False, vmap=False, jit=False, fd_max_elements=8
    ).assert_passed()


def test_parameter_count_and_tied_head():
    lm = _lm(num_layers=2)
    params = lm.init(jax.random.key(0))
    d, f = 8, 32
    block = 4 * (d * d + d) + 2 * (2 * d) + (f * d + f) + (d * f + d)
    expected = VOCAB * d + 9 * d + 2 * block + 2 * d
    assert sum(a.size for a in jax.tree.leaves(params)) == expected
    untied = _lm(tie_embeddings=False).init(jax.random.key(0))
    assert set(untied) - set(params) == {"head"}
    assert "positions" not in _lm(positional="rotary").init(jax.random.key(0))


def test_right_padding_leaves_real_positions_unchanged():
    lm = _lm(num_layers=1)
    params = lm.init(jax.random.key(0))
    tokens = _tokens((2, 6))
    mask = jnp.arange(6)[None, :] < jnp.array([[4], [6]])
    padded = jnp.where(mask, tokens, 0)
    a = lm.apply(params, tokens, padding_mask=mask)
    b = lm.apply(params, padded, padding_mask=mask)
    np.testing.assert_array_equal(np.asarray(a)[0, :4], np.asarray(b)[0, :4])


def test_bad_input_is_refused_naming_the_model_and_shapes():
    lm = _lm()
    params = lm.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"length 10 .* longer than max_length 9"):
        lm.apply(params, jnp.zeros((1, 10), jnp.int32))
    with pytest.raises(TypeError, match="expected integer token ids"):
        lm.apply(params, jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="L ≥ 1"):
        lm.apply(params, jnp.zeros((1, 0), jnp.int32))
    with pytest.raises(
        ValueError, match=r"shape \(N, L\) .* got \(3,\); one sequence is ids\[None\]"
    ):
        lm.apply(params, jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"generate: .* got shape \(3,\); one sequence is prompt"):
        generate(lm, params, jnp.array([1, 2, 3]), max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match=r"generate: prompt token ids must be in \[0, 7\)"):
        generate(lm, params, jnp.array([[1, VOCAB, 3]]), max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match=r"2 new tokens at position 8 do not fit"):
        lm.decode(params, lm.init_cache(1), jnp.zeros((1, 2), jnp.int32), 8)
    with pytest.raises(TypeError, match="integer scalar position"):
        lm.decode(params, lm.init_cache(1), jnp.zeros((1, 2), jnp.int32), 2.0)
    with pytest.raises(ValueError, match="3 heads do not divide d_model 8"):
        transformer_lm(VOCAB, d_model=8, num_heads=3, num_layers=1, max_length=4)
    with pytest.raises(ValueError, match="positional"):
        transformer_lm(VOCAB, d_model=8, num_heads=2, num_layers=1, max_length=4, positional="x")
    prompt = jnp.zeros((1, 5), jnp.int32)
    with pytest.raises(ValueError, match=r"5 tokens plus 5 new ones is longer than .* 9"):
        generate(lm, params, prompt, max_new_tokens=5, temperature=0.0)
    with pytest.raises(ValueError, match="needs a key"):
        generate(lm, params, prompt, max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature"):
        generate(lm, params, prompt, max_new_tokens=2, temperature=-1.0, key=0)
    with pytest.raises(ValueError, match="top_k"):
        generate(lm, params, prompt, max_new_tokens=2, key=0, top_k=VOCAB + 1)


def test_decode_past_the_cache_under_jit_gives_nan_not_a_clamped_write():
    lm = _lm(num_layers=1)
    params = lm.init(jax.random.key(0))
    cache = lm.init_cache(1)
    logits, _ = jax.jit(lm.decode)(params, cache, jnp.zeros((1, 2), jnp.int32), jnp.int32(8))
    assert bool(jnp.all(jnp.isnan(logits)))
    logits, _ = jax.jit(lm.decode)(params, cache, jnp.zeros((1, 2), jnp.int32), jnp.int32(-1))
    assert bool(jnp.all(jnp.isnan(logits)))
    logits, _ = jax.jit(lm.decode)(params, cache, jnp.zeros((1, 2), jnp.int32), jnp.int32(7))
    assert bool(jnp.all(jnp.isfinite(logits)))
    # the block alone: refused when concrete, NaN under jit (its write would be clamped)
    block, h = lm.block, jnp.ones((1, 2, 8))
    with pytest.raises(ValueError, match=r"TransformerDecoderBlock.*2 new tokens at position 8"):
        block.decode(params["block0"], cache["block0"], h, 8)
    y, _ = jax.jit(block.decode)(params["block0"], cache["block0"], h, jnp.int32(-1))
    assert bool(jnp.all(jnp.isnan(y)))


def test_transformer_lm_is_a_model_export():
    assert isinstance(_lm(), TransformerLM) and models.TransformerLM is TransformerLM


_BAD = [
    (
        "eps_negative",
        lambda lm, p: TransformerLM(VOCAB, 8, 2, 1, 9, eps=-1.0),
        ValueError,
        r"TransformerLM: eps must be a finite number in \(0, inf\); got -1\.0",
    ),
    (
        "init_cache_float_batch",
        lambda lm, p: lm.init_cache(2.0),
        ValueError,
        r"init_cache: batch must be a positive int .*got 2\.0",
    ),
    (
        "init_cache_int_dtype",
        lambda lm, p: lm.init_cache(2, dtype=jnp.int32),
        ValueError,
        r"init_cache: dtype must be a floating dtype",
    ),
    (
        "decode_cache_of_another_batch",
        lambda lm, p: lm.decode(p, lm.init_cache(2), _tokens((3, 1)), 0),
        ValueError,
        r"expected the cache init_cache\(3\) makes",
    ),
    (
        "decode_no_cache",
        lambda lm, p: lm.decode(p, None, _tokens((2, 1)), 0),
        ValueError,
        r"expected the cache init_cache\(2\) makes .*got NoneType",
    ),
    (
        "decode_string_position",
        lambda lm, p: lm.decode(p, lm.init_cache(2), _tokens((2, 1)), "1"),
        TypeError,
        r"expected an integer scalar position, got '1'",
    ),
    (
        "generate_empty_params",
        lambda lm, p: generate(lm, {}, _tokens((2, 3)), max_new_tokens=2, temperature=0.0),
        ValueError,
        r"TransformerLM\(.*\): missing params",
    ),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in _BAD], ids=[c[0] for c in _BAD])
def test_bad_cache_position_and_config_are_refused_naming_the_model(call, error, message):
    lm = _lm(num_layers=1)
    params = jax.eval_shape(lm.init, jax.random.key(0))
    with pytest.raises(error, match=message):
        call(lm, params)
