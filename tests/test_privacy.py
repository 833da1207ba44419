"""fundl.privacy: per-example gradients and the DP-SGD step equal Python loops over examples."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import losses, optim, privacy, train

MLP = fundl.mlp([3, 4, 2], "tanh")
CNN = fundl.Sequential(
    [fundl.Conv2D(2, 2), "relu", fundl.Flatten(), fundl.Dense(2)], input_shape=(4, 4, 1)
)
DROPOUT_MLP = fundl.Sequential(
    [fundl.Dense(4), "tanh", fundl.Dropout(0.5), fundl.Dense(2)], input_shape=(3,)
)


def _f64(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _batch(shape, n=4, seed=0, dtype=jnp.float32):
    x = jax.random.normal(jax.random.key(seed), (n, *shape), dtype)
    labels = jnp.int64 if dtype == jnp.float64 else jnp.int32  # argmax's dtype under x64
    return {"x": x, "y": jnp.arange(n, dtype=labels) % 2}


def _mlp_loss(params, batch, scale):
    logits = MLP.apply(params, batch["x"])
    loss = scale * losses.softmax_cross_entropy(logits, batch["y"])
    return loss, {"accuracy": fundl.metrics.accuracy(logits, batch["y"])}


def _example(batch, i):
    return jax.tree.map(lambda v: v[i : i + 1], batch)


@functools.cache
def _compiled_value_and_grad(loss_fn):
    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))  # one compilation per loss


def _loop(loss_fn, params, batch, *args, n):
    """Each example's (loss, aux) and gradient by jax.grad of ``loss_fn`` (returning (loss,
    aux)) on that example alone; the gradients stacked."""
    outs = [_compiled_value_and_grad(loss_fn)(params, _example(batch, i), *args) for i in range(n)]
    return [out[0] for out in outs], jax.tree.map(lambda *g: jnp.stack(g), *[o[1] for o in outs])


def _reference_private_grad(grads, key, clip, sigma, n):
    """Clip each example's gradient in NumPy, sum, add the documented noise, divide by n."""
    leaves, treedef = jax.tree.flatten(grads)
    norms = np.sqrt(sum(np.sum(np.asarray(g).reshape(n, -1) ** 2, axis=1) for g in leaves))
    with np.errstate(divide="ignore"):  # a zero gradient: C/0 = inf, factor 1
        factors = np.minimum(1.0, clip / norms)
    keys = jax.random.split(key, len(leaves))
    out = []
    for g, k in zip(leaves, keys):
        g = np.asarray(g)
        total = sum(g[i] * factors[i] for i in range(n))
        if sigma > 0:
            total = total + sigma * clip * np.asarray(jax.random.normal(k, g.shape[1:], g.dtype))
        out.append(jnp.asarray(total / n))
    return jax.tree.unflatten(treedef, out), norms


def test_per_example_grads_of_an_mlp_equal_a_loop_over_examples(x64):
    with x64():
        params = _f64(MLP.init(jax.random.key(1)))
        batch = _batch((3,), dtype=jnp.float64)
        compiled = jax.jit(functools.partial(privacy.per_example_grads, _mlp_loss, has_aux=True))
        grads, aux = compiled(params, batch, 2.0)
        values, expected = _loop(_mlp_loss, params, batch, 2.0, n=4)
        chex.assert_trees_all_close(grads, expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(aux["accuracy"], [v[1]["accuracy"] for v in values])


def test_per_example_grads_of_a_cnn_equal_a_loop_over_examples(x64):
    def loss_fn(params, batch):
        return losses.softmax_cross_entropy(CNN.apply(params, batch["x"]), batch["y"])

    with x64():
        params = _f64(CNN.init(jax.random.key(2)))
        batch = _batch((4, 4, 1), n=3, dtype=jnp.float64)
        grads = jax.jit(functools.partial(privacy.per_example_grads, loss_fn))(params, batch)
        _, expected = _loop(lambda *a: (loss_fn(*a), {}), params, batch, n=3)
        chex.assert_trees_all_close(grads, expected, rtol=1e-12, atol=1e-14)
        assert grads["conv1"]["W"].shape == (3, 2, 2, 1, 2)


def test_dp_step_equals_clip_sum_noise_divide_update_written_out(x64):
    clip, sigma = 5.0, 0.7
    with x64():
        opt = optim.adam(0.1)
        params = _f64(MLP.init(jax.random.key(1)))
        state = opt.init(params)
        step = privacy.make_dp_train_step(
            _mlp_loss, opt, l2_norm_clip=clip, noise_multiplier=sigma, has_aux=True, donate=False
        )
        ref_params, ref_state = params, state
        update = jax.jit(opt.update)
        root = jax.random.key(7)
        for t in range(2):
            batch = _batch((3,), seed=t, dtype=jnp.float64)
            key = jax.random.fold_in(root, t)
            params, state, metrics = step(params, state, batch, key, 2.0)

            values, grads = _loop(_mlp_loss, ref_params, batch, 2.0, n=4)
            private, norms = _reference_private_grad(grads, key, clip, sigma, n=4)
            updates, ref_state = update(private, ref_state, ref_params)
            ref_params = optim.apply_updates(ref_params, updates)

            chex.assert_trees_all_close(params, ref_params, rtol=1e-10, atol=1e-12)
            chex.assert_trees_all_close(state, ref_state, rtol=1e-10, atol=1e-12)
            assert t > 0 or 0 < np.sum(norms > clip) < 4  # some clipped, some not
            np.testing.assert_allclose(metrics["clipped_fraction"], np.mean(norms > clip))
            np.testing.assert_allclose(metrics["per_example_grad_norm"], norms.mean(), rtol=1e-12)
            np.testing.assert_allclose(metrics["loss"], np.mean([v[0] for v in values]), rtol=1e-12)
        assert set(metrics) == {"loss", "accuracy", *privacy.DP_METRICS}


def test_stateful_dp_step_gives_each_example_its_own_dropout_key(x64):
    """The TrainState form: model key and noise key from split(fold_in(key, step)); example i
    gets split(model_key, N)[i]."""
    clip, sigma = 1.0, 0.5

    def loss_fn(params, batch, *, state, key, train):
        logits, state = DROPOUT_MLP.apply_with_state(
            params, state, batch["x"], key=key, train=train
        )
        return losses.softmax_cross_entropy(logits, batch["y"]), {}, state

    with x64():
        opt = optim.sgd(0.1)
        params = _f64(DROPOUT_MLP.init(jax.random.key(3)))
        ts = train.TrainState.create(params, opt, key=5)
        step = privacy.make_dp_train_step(
            loss_fn, opt, l2_norm_clip=clip, noise_multiplier=sigma, stateful=True, donate=False
        )
        batch = _batch((3,), dtype=jnp.float64)
        ref = params
        grad = jax.jit(jax.grad(lambda p, ex, k: loss_fn(p, ex, state={}, key=k, train=True)[0]))
        for _ in range(2):
            model_key, noise_key = jax.random.split(ts.step_key())
            keys = jax.random.split(model_key, 4)
            grads = jax.tree.map(
                lambda *g: jnp.stack(g), *[grad(ref, _example(batch, i), keys[i]) for i in range(4)]
            )
            private, _ = _reference_private_grad(grads, noise_key, clip, sigma, n=4)
            ref = jax.tree.map(lambda p, g: p - 0.1 * g, ref, private)
            ts, _ = step(ts, batch)
            chex.assert_trees_all_close(ts.params, ref, rtol=1e-10, atol=1e-12)
        assert int(ts.step) == 2


def test_without_noise_or_clipping_the_dp_step_is_the_ordinary_step(x64):
    # float64: the per-example and the batch gradient sum in different orders, which
    # float32 at a GPU's default (TF32-class) matmul precision would not match to 1e-10
    opt = optim.sgd(0.1, 0.9)
    with x64():
        batch = _batch((3,), n=6, dtype=jnp.float64)
        dp = privacy.make_dp_train_step(
            _mlp_loss, opt, l2_norm_clip=1e6, noise_multiplier=0.0, has_aux=True
        )
        plain = train.make_train_step(_mlp_loss, opt, has_aux=True)
        params = _f64(MLP.init(1))
        p1, s1, m1 = dp(params, opt.init(params), batch, 0, 1.0)  # an int seed as the key
        params = _f64(MLP.init(1))
        p2, s2, m2 = plain(params, opt.init(params), batch, 1.0)
    chex.assert_trees_all_close(p1, p2, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(s1, s2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-12)
    np.testing.assert_allclose(m1["accuracy"], m2["accuracy"], rtol=1e-12)
    assert float(m1["clipped_fraction"]) == 0.0


def test_dp_aggregate_clips_each_example_and_counts_the_clipped():
    g = {
        "a": jnp.array([[3.0], [0.0], [0.0]]),
        "b": jnp.array([[4.0, 0.0], [0.0, 0.5], [0.0, 0.0]]),
    }
    private, metrics = privacy.dp_aggregate(g, 0, l2_norm_clip=1.0, noise_multiplier=0.0)
    # norms 5, 0.5 and 0: the first scaled to norm 1, the others kept
    np.testing.assert_allclose(private["a"], [0.6 / 3], rtol=1e-6)
    np.testing.assert_allclose(private["b"], [0.8 / 3, 0.5 / 3], rtol=1e-6)
    np.testing.assert_allclose(metrics["per_example_grad_norm"], 5.5 / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics["clipped_fraction"], 1 / 3, rtol=1e-6)
    noisy, _ = privacy.dp_aggregate(g, jax.random.key(1), l2_norm_clip=1.0, noise_multiplier=2.0)
    expected, _ = _reference_private_grad(g, jax.random.key(1), 1.0, 2.0, n=3)
    chex.assert_trees_all_close(noisy, expected, rtol=1e-6)
    bf16, _ = privacy.dp_aggregate(
        jax.tree.map(lambda x: x.astype(jnp.bfloat16), g), 0, l2_norm_clip=1.0, noise_multiplier=1.0
    )
    assert bf16["b"].dtype == jnp.bfloat16
    nan = {"a": g["a"].at[0, 0].set(jnp.nan), "b": g["b"]}
    assert np.isnan(
        privacy.dp_aggregate(nan, 0, l2_norm_clip=1.0, noise_multiplier=0.0)[0]["b"]
    ).all()


def test_dp_aggregate_clips_an_example_whose_sum_of_squares_overflows():
    # ‖g_0‖ = 5e19 is finite, but Σ g² = 2.5e39 is not in float32: C/inf = 0 dropped the
    # example silently. It is clipped to norm C like any other.
    g = {"w": jnp.array([[3e19, 4e19], [1.0, 0.0]], jnp.float32), "b": jnp.zeros((2, 1))}
    private, metrics = jax.jit(
        lambda g: privacy.dp_aggregate(g, 0, l2_norm_clip=1.0, noise_multiplier=0.0)
    )(g)
    np.testing.assert_allclose(private["w"], [(0.6 + 1.0) / 2, 0.8 / 2], rtol=1e-6)
    np.testing.assert_allclose(metrics["per_example_grad_norm"], (5e19 + 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(metrics["clipped_fraction"], 0.5)


def test_bad_input_is_refused_with_the_cause():
    opt = optim.sgd(0.1)
    build = functools.partial(privacy.make_dp_train_step, _mlp_loss, opt)
    for clip in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="make_dp_train_step: l2_norm_clip must be"):
            build(l2_norm_clip=clip, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise_multiplier must be a finite number in"):
        build(l2_norm_clip=1.0, noise_multiplier=-0.5)
    with pytest.raises(TypeError, match="optimizer must be a fundl.optim"):
        privacy.make_dp_train_step(_mlp_loss, None, l2_norm_clip=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="has_aux does not apply with stateful=True"):
        build(l2_norm_clip=1.0, noise_multiplier=1.0, has_aux=True, stateful=True)
    with pytest.raises(ValueError, match="dp_aggregate: l2_norm_clip must be"):
        privacy.dp_aggregate({"a": jnp.ones((2, 1))}, 0, l2_norm_clip=0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="the batch is empty"):
        privacy.dp_aggregate({"a": jnp.ones((0, 1))}, 0, l2_norm_clip=1, noise_multiplier=1.0)
    # integer gradients were clipped, noised and truncated back to int32
    with pytest.raises(
        TypeError,
        match=r"dp_aggregate: per_example_grads must be floating-point, got dtype int32 at per_example_grads\['a'\]",
    ):
        privacy.dp_aggregate(
            {"a": jnp.ones((2, 1), jnp.int32)}, 0, l2_norm_clip=1, noise_multiplier=1.0
        )
    with pytest.raises(
        ValueError,
        match=r"dp_aggregate: key must be a single PRNG key, got a batch of keys of shape \(2,\)",
    ):
        privacy.dp_aggregate(
            {"a": jnp.ones((2, 1))},
            jax.random.split(jax.random.key(0)),
            l2_norm_clip=1,
            noise_multiplier=1.0,
        )
    with pytest.raises(
        TypeError, match=r"make_dp_train_step: loss_fn must be a function, got 'mse'"
    ):
        privacy.make_dp_train_step("mse", opt, l2_norm_clip=1.0, noise_multiplier=1.0)
    with pytest.raises(TypeError, match=r"per_example_grads: loss_fn must be a function, got None"):
        privacy.per_example_grads(None, {}, {"x": jnp.ones((2, 1))})

    params = MLP.init(0)
    bad = {"x": jnp.ones((4, 3)), "y": jnp.zeros((3,), jnp.int32)}
    with pytest.raises(
        ValueError, match=r"disagree on the leading \(batch\) size: batch\['x'\] has 4"
    ):
        privacy.per_example_grads(_mlp_loss, params, bad, 1.0, has_aux=True)
    with pytest.raises(ValueError, match=r"batch\['y'\] is a scalar"):
        privacy.per_example_grads(_mlp_loss, params, {"x": jnp.ones((4, 3)), "y": 0}, 1.0)

    def per_example_loss(params, batch):
        logits = MLP.apply(params, batch["x"])
        return losses.softmax_cross_entropy(logits, batch["y"], reduction="none")

    with pytest.raises(
        TypeError, match=r"per_example_grads: loss_fn must return a floating-point scalar"
    ):
        jax.eval_shape(  # traced only: the error comes before any computation
            functools.partial(privacy.per_example_grads, per_example_loss), params, _batch((3,))
        )

    def clashing(params, batch):
        return per_example_loss(params, batch).mean(), {"clipped_fraction": jnp.zeros(())}

    step = privacy.make_dp_train_step(
        clashing, opt, l2_norm_clip=1.0, noise_multiplier=1.0, has_aux=True
    )
    with pytest.raises(ValueError, match=r"metrics \['clipped_fraction'\] clash"):
        step(params, opt.init(params), _batch((3,)), 0)

    bn = fundl.Sequential([fundl.Dense(2), fundl.BatchNorm()], input_shape=(3,))
    bn_params, bn_state = bn.init_with_state(0)

    def bn_loss(params, batch, *, state, key, train):
        out, state = bn.apply_with_state(params, state, batch["x"], key=key, train=train)
        return jnp.mean(out), {}, state

    step = privacy.make_dp_train_step(
        bn_loss, opt, l2_norm_clip=1.0, noise_multiplier=1.0, stateful=True
    )
    ts = train.TrainState.create(bn_params, opt, model_state=bn_state)
    with pytest.raises(ValueError, match="use LayerNorm or RMSNorm instead of BatchNorm"):
        step(ts, _batch((3,)))
