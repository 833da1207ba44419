"""fundl.precision: policies, casting, loss scaling, the steps and fit under a policy, the
hand-written rules in bfloat16, and bf16 training of the digits MLP and CNN against float32."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import data, gradcheck, losses, metrics, nn, optim, precision, train
from fundl import losses as L
from fundl.checkpoint import CheckpointManager
from fundl.precision import DynamicLossScale, NoOpLossScale, Policy, StaticLossScale

BF16, F16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16), jnp.dtype(jnp.float32)
MODEL = fundl.mlp([3, 8, 2], "tanh")


def _params():
    return MODEL.init(jax.random.key(1))


def _batch(n=8, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, 3))
    return {"x": x, "y": (x[:, 0] > 0).astype(jnp.int32)}


def _loss(params, batch):
    return losses.softmax_cross_entropy(MODEL.apply(params, batch["x"]), batch["y"])


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


# --- the policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("params=float32,compute=bfloat16,output=float32", (F32, BF16, F32)),
        ("p=f32,c=f16,o=f32", (F32, F16, F32)),
        ("params=float32,compute=bf16", (F32, BF16, BF16)),  # output defaults to compute
        ("c=half", (F32, F16, F16)),  # params default to float32
        ("bf16", (BF16, BF16, BF16)),  # one dtype: all three
        (" Compute = BFloat16 , params = single ", (F32, BF16, BF16)),
    ],
)
def test_policy_strings_parse_as_jmp_does(spec, expected):
    policy = Policy.from_string(spec)
    assert (policy.param_dtype, policy.compute_dtype, policy.output_dtype) == expected
    assert Policy.from_string(str(policy)) == policy  # str round-trips


def test_presets_and_hashability():
    assert precision.bf16_policy() == Policy(jnp.float32, "bf16", np.float32)
    assert str(precision.f16_policy()) == "params=float32,compute=float16,output=float32"
    assert precision.f32_policy() == Policy()
    assert len({precision.bf16_policy(), precision.bf16_policy(), precision.f16_policy()}) == 2
    assert precision.f16_policy().uses_float16 and not precision.bf16_policy().uses_float16


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: Policy(jnp.float32, jnp.int32),
            ValueError,
            "compute_dtype must be a floating.*int32",
        ),
        (lambda: Policy(output_dtype=bool), ValueError, "output_dtype must be a floating.*bool"),
        (
            lambda: Policy.from_string("params=float32,compute=int8"),
            ValueError,
            "int8.*not a dtype",
        ),
        (lambda: Policy.from_string("params=f32,weights=f16"), ValueError, "'weights=f16'.*keys"),
        (lambda: Policy.from_string("c=f16,c=bf16"), ValueError, "'c' given twice"),
        (lambda: Policy.from_string(""), ValueError, "expected a string"),
        (lambda: Policy("fp8"), ValueError, "'fp8' is not a dtype name"),
        (lambda: Policy(object()), TypeError, "param_dtype must be a floating dtype"),
        # jnp.dtype(None) is float64: parameters silently stored in float64
        (lambda: Policy(None), TypeError, "Policy: param_dtype must be a floating dtype, got None"),
        # casting weights to an integer dtype would truncate them without a word
        (
            lambda: precision.cast_floating({"W": jnp.ones(2)}, jnp.int32),
            ValueError,
            "cast_floating: dtype must be a floating dtype .*got int32",
        ),
        (
            lambda: precision.cast_floating({"W": jnp.ones(2)}, "foo"),
            ValueError,
            "cast_floating: dtype 'foo' is not a dtype name",
        ),
        # a broadcast, a promotion or a vector predicate would change the tree
        (
            lambda: precision.select_tree(
                jnp.asarray(True), {"w": jnp.ones((2, 1))}, {"w": jnp.zeros(2)}
            ),
            ValueError,
            r"select_tree: on_true and on_false differ in shape at \['w'\]: \(2, 1\) vs \(2,\)",
        ),
        (
            lambda: precision.select_tree(
                jnp.asarray(True), {"w": jnp.ones(2)}, {"v": jnp.zeros(2)}
            ),
            ValueError,
            r"select_tree: on_true and on_false differ in structure",
        ),
        (
            lambda: precision.select_tree(
                jnp.asarray(True), {"w": jnp.ones(2)}, {"w": jnp.zeros(2, jnp.int32)}
            ),
            ValueError,
            "select_tree: on_true and on_false differ in dtype: float32 vs int32",
        ),
        (
            lambda: precision.select_tree(
                jnp.array([True, False]), {"w": jnp.ones(2)}, {"w": jnp.zeros(2)}
            ),
            ValueError,
            r"select_tree: pred must be a scalar bool array, got dtype bool and shape \(2,\)",
        ),
        # a loss scale given another state than its LossScaleState read .scale off it
        (
            lambda: DynamicLossScale().scale(jnp.ones(()), None),
            TypeError,
            (
                r"DynamicLossScale.scale: state must be a fundl.precision.LossScaleState "
                r"\(made by DynamicLossScale\(...\).init\(\)\), got NoneType"
            ),
        ),
        (
            lambda: StaticLossScale().unscale({"w": jnp.ones(2)}, {"scale": jnp.ones(())}),
            TypeError,
            "StaticLossScale.unscale: state must be a fundl.precision.LossScaleState .*got dict",
        ),
        (  # StaticLossScale.adjust returned the dict unchanged
            lambda: NoOpLossScale().adjust({}, jnp.asarray(True)),
            TypeError,
            "NoOpLossScale.adjust: state must be a fundl.precision.LossScaleState .*got dict",
        ),
        (
            lambda: DynamicLossScale().adjust(optim.adam(0.1).init(jnp.ones(2)), True),
            TypeError,
            "DynamicLossScale.adjust: state must be .*LossScaleState .*got AdamState",
        ),
        (
            lambda: DynamicLossScale().adjust(
                precision.loss_scaled(optim.sgd(0.1), DynamicLossScale()).init(jnp.ones(2)), True
            ),
            TypeError,
            "got LossScaledState; pass opt_state.loss_scale",
        ),
    ],
)
def test_bad_policies_are_refused_when_built(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_casts_touch_floating_leaves_only():
    tree = {
        "x": jnp.ones((2, 3)),
        "n": np.ones(2, np.float64),
        "y": jnp.array([1, 0]),
        "mask": jnp.array([True, False]),
        "key": jax.random.key(0),
        "lr": 0.5,
    }
    policy = precision.bf16_policy()
    cast = policy.cast_to_compute(tree)
    assert cast["x"].dtype == BF16 and cast["n"].dtype == BF16
    assert cast["y"] is tree["y"] and cast["mask"] is tree["mask"] and cast["key"] is tree["key"]
    assert cast["lr"] == 0.5
    back = policy.cast_to_param(cast)
    assert back["x"].dtype == F32 and back["y"].dtype == jnp.int32
    assert policy.cast_to_output({"a": tree["x"]})["a"] is tree["x"]  # already float32: as is


# --- the step under a policy ------------------------------------------------------------------


def test_bf16_step_computes_in_bf16_and_keeps_float32_master_weights():
    seen = {}

    def loss_fn(params, batch):
        seen.update(W=params["dense1"]["W"].dtype, x=batch["x"].dtype, y=batch["y"].dtype)
        logits = MODEL.apply(params, batch["x"])
        return losses.softmax_cross_entropy(logits, batch["y"]), {
            "acc": metrics.accuracy(logits, batch["y"])
        }

    opt, policy = optim.adam(0.01), precision.bf16_policy()
    params, batch = _params(), _batch()
    step = train.make_train_step(loss_fn, opt, has_aux=True, policy=policy)
    new, state, m = step(_copy(params), opt.init(params), batch)
    assert seen == {"W": BF16, "x": BF16, "y": jnp.int32}
    assert m["loss"].dtype == F32 and m["acc"].dtype == F32
    assert {x.dtype for x in jax.tree.leaves((new, state.mu, state.nu))} == {F32}

    # The same update written out: the gradient of the bf16 loss w.r.t. the float32 params.
    def written_out(p):
        return loss_fn(policy.cast_to_compute(p), policy.cast_to_compute(batch))[0].astype(F32)

    loss, grads = jax.jit(jax.value_and_grad(written_out))(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    chex.assert_trees_all_close(new, optim.apply_updates(params, updates), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m["loss"], loss, rtol=1e-6)


def test_no_policy_and_a_float32_policy_trace_the_same_program():
    opt = optim.adam(0.01)
    args = (_params(), opt.init(_params()), _batch())
    plain = train.make_train_step(_loss, opt, jit=False)
    none = train.make_train_step(_loss, opt, jit=False, policy=None, loss_scale=None)
    f32 = train.make_train_step(_loss, opt, jit=False, policy="float32")
    assert str(jax.make_jaxpr(none)(*args)) == str(jax.make_jaxpr(plain)(*args))
    assert str(jax.make_jaxpr(f32)(*args)) == str(jax.make_jaxpr(plain)(*args))


def test_stateful_step_and_eval_step_apply_the_policy():
    model = nn.Sequential([nn.Dense(4), nn.BatchNorm(), nn.Activation("relu"), nn.Dense(2)])
    params, state = model.init_with_state(jax.random.key(0), (3,))

    def loss_fn(params, batch, *, state, key, train):
        logits, state = model.apply_with_state(params, state, batch["x"], key=key, train=train)
        return (
            losses.softmax_cross_entropy(logits, batch["y"]),
            {"dtype_is_bf16": jnp.asarray(logits.dtype == BF16, jnp.float32)},
            state,
        )

    opt = optim.sgd(0.1)
    step = train.make_train_step(loss_fn, opt, stateful=True, policy=precision.bf16_policy())
    ts = train.TrainState.create(params, opt, model_state=state)
    ts, m = step(ts, _batch())
    assert float(m["dtype_is_bf16"]) == 1.0 and m["loss"].dtype == F32
    # Running statistics stay float32 (the model state is not cast) and moved.
    assert {x.dtype for x in jax.tree.leaves((ts.params, ts.model_state))} == {F32}
    assert not np.allclose(ts.model_state["batch_norm1"]["mean"], 0.0)
    evaluate = train.make_eval_step(loss_fn, stateful=True, policy=precision.bf16_policy())
    out = evaluate(ts.params, ts.model_state, _batch())
    assert float(out["dtype_is_bf16"]) == 1.0 and out["loss"].dtype == F32


def _stateful_loss(params, batch, *, state, key, train):
    return _loss(params, batch), {}, state


def _run_under(builder, policy, params):
    """One call of ``builder`` (built with ``policy``) on ``params`` and a fresh optimizer state."""
    opt, batch = optim.sgd(0.1), _batch(16)
    if builder == "make_train_step":
        return train.make_train_step(_loss, opt, policy=policy)(params, opt.init(params), batch)
    if builder == "make_scan_steps":
        steps = train.make_scan_steps(_loss, opt, policy=policy)
        return steps(params, opt.init(params), jax.tree.map(lambda x: x[None], batch))
    if builder == "make_epoch":
        epoch = train.make_epoch(_loss, opt, 8, policy=policy)
        return epoch(params, opt.init(params), batch, 0, 0)
    if builder == "stateful":
        step = train.make_train_step(_stateful_loss, opt, stateful=True, policy=policy)
        return step(train.TrainState.create(params, opt), batch)
    return train.fit(
        _loss, params, opt, batch, epochs=1, batch_size=8, key=0, progress=False, policy=policy
    )


@pytest.mark.parametrize(
    "builder", ["make_train_step", "make_scan_steps", "make_epoch", "stateful", "fit"]
)
@pytest.mark.parametrize(
    "policy, dtype, match",
    [
        (  # bfloat16 master weights: every small update would round away
            precision.bf16_policy(),
            BF16,
            (
                r"params\['dense1'\]\['W'\] is bfloat16 \(and 3 more leaves\) but the "
                r"policy params=float32,compute=bfloat16,output=float32 keeps parameters in "
                r"float32, and the optimizer updates params in their own dtype \(in bfloat16 "
                r"small updates round away\); cast them before training, params = "
                r"policy.cast_to_param\(params\)"
            ),
        ),
        (  # a policy of bfloat16 params given float32 ones would silently train float32
            "bf16",
            F32,
            (
                r"params\['dense1'\]\['W'\] is float32 \(and 3 more leaves\) but the "
                r"policy params=bfloat16,compute=bfloat16,output=bfloat16 keeps parameters in "
                r"bfloat16, and the optimizer updates params in their own dtype; cast them .* or "
                r"pass a policy with params=float32"
            ),
        ),
    ],
)
def test_params_in_another_dtype_than_the_policy_keeps_are_refused(builder, policy, dtype, match):
    params = jax.tree.map(lambda x: x.astype(dtype), _params())
    name = "make_train_step" if builder == "stateful" else builder
    with pytest.raises(TypeError, match=rf"{name}: {match}"):
        _run_under(builder, policy, params)


def test_params_cast_to_the_policy_train_and_eval_does_not_check_the_dtype():
    policy = Policy.from_string("bf16")
    params = policy.cast_to_param(_params())  # the remedy the error names
    new, _, m = _run_under("make_train_step", policy, _copy(params))
    assert {x.dtype for x in jax.tree.leaves(new)} == {BF16} and m["loss"].dtype == BF16
    assert all(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)))
    # fit with float32 params under bf16_policy: float32 master weights, every leaf moved.
    start = _params()
    result = _run_under("fit", precision.bf16_policy(), start)
    assert {x.dtype for x in jax.tree.leaves(result.params)} == {F32}
    assert all(
        bool(jnp.all(a != b))
        for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(start))
    )
    # Evaluation updates nothing: bfloat16 params under bf16_policy are evaluated as the
    # float32 ones are, both cast to bfloat16 first.
    cast = jax.tree.map(lambda x: x.astype(BF16), start)
    evaluate_cast, evaluate = (
        train.make_eval_step(_loss, policy=precision.bf16_policy()) for _ in range(2)
    )
    assert evaluate_cast(cast, _batch()) == evaluate(start, _batch())


# --- loss scaling -----------------------------------------------------------------------------


def test_dynamic_scale_follows_the_rule_by_hand():
    ls = DynamicLossScale(initial=8.0, period=3, factor=2.0, min_scale=2.0)
    state = ls.init()
    adjust = jax.jit(ls.adjust)
    seen = []
    for finite in [True, True, True, True, False, False, False, True]:
        state = adjust(state, jnp.asarray(finite))
        seen.append((float(state.scale), int(state.good_steps)))
    # 3 good steps double S (8 → 16); a bad one halves it and restarts the count; S stops at 2.
    assert seen == [(8, 1), (8, 2), (16, 0), (16, 1), (8, 0), (4, 0), (2, 0), (2, 1)]
    top = DynamicLossScale(initial=2.0**127, period=1)
    assert float(top.adjust(top.init(), jnp.asarray(True)).scale) == 2.0**127  # never inf


def test_float16_step_with_an_inf_gradient_is_skipped_and_the_scale_halves():
    opt, ls = optim.adam(0.01), DynamicLossScale(initial=2.0**10, period=2)
    policy = precision.f16_policy()
    step = train.make_train_step(_loss, opt, policy=policy, loss_scale=ls)
    params = _params()
    state = precision.loss_scaled(opt, ls).init(params)
    assert isinstance(state, precision.LossScaledState)
    bad = _batch()
    bad["x"] = bad["x"].at[0, 0].set(jnp.inf)  # tanh(inf) = 1, but its gradient is NaN
    before = _copy((params, state))
    params, state, m = step(params, state, bad)
    chex.assert_trees_all_equal(params, before[0])
    chex.assert_trees_all_equal(state.inner, before[1].inner)  # Adam's moments and count
    assert float(m["skipped"]) == 1.0 and float(m["loss_scale"]) == 2.0**10
    assert float(state.loss_scale.scale) == 2.0**9 and int(state.skipped) == 1

    # Two good steps (period 2) double S back; each equals the update written out by hand:
    # the gradient of S·loss (float16 compute, float32 loss), divided by S, then Adam.
    @jax.jit
    def unscaled_grads(p, batch, S):
        def scaled(p):
            return _loss(policy.cast_to_compute(p), policy.cast_to_compute(batch)).astype(F32) * S

        return jax.tree.map(lambda g: g / S, jax.grad(scaled)(p))

    for i in range(2):
        grads = unscaled_grads(params, _batch(seed=i), state.loss_scale.scale)
        updates, inner = opt.update(grads, state.inner, params)
        expected = optim.apply_updates(params, updates)
        params, state, m = step(params, state, _batch(seed=i))
        chex.assert_trees_all_close(params, expected, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(state.inner, inner, rtol=1e-6, atol=1e-9)
        assert float(m["skipped"]) == 0.0
    assert float(state.loss_scale.scale) == 2.0**10 and int(state.skipped) == 1


def test_static_and_noop_scales():
    opt = optim.sgd(0.1)
    params, bad = _params(), _batch()
    bad["x"] = bad["x"].at[0, 0].set(jnp.nan)
    steps = {}
    for ls, skips in ((StaticLossScale(64.0), True), (NoOpLossScale(), False)):
        steps[skips] = step = train.make_train_step(_loss, opt, loss_scale=ls)
        state = precision.loss_scaled(opt, ls).init(params)
        new, state, m = step(_copy(params), state, bad)
        assert float(m["skipped"]) == float(skips)
        assert float(state.loss_scale.scale) == (64.0 if skips else 1.0)  # S never moves
        finite = bool(precision.all_finite(new))
        assert finite == skips  # the static scale kept the params; no-op applied the NaN
    # On finite gradients both give the plain update (S = 64 divides exactly).
    for skips, ls in ((True, StaticLossScale(64.0)), (False, NoOpLossScale())):
        state = precision.loss_scaled(opt, ls).init(params)
        scaled, _, _ = steps[skips](_copy(params), state, _batch())
        updates, _ = opt.update(jax.grad(_loss)(params, _batch()), opt.init(params), params)
        chex.assert_trees_all_close(
            scaled, optim.apply_updates(params, updates), rtol=1e-6, atol=1e-8
        )


def test_grad_health_reports_a_skipped_step_as_no_gradient():
    opt, ls = optim.sgd(0.1), StaticLossScale(8.0)
    step = train.make_train_step(_loss, opt, loss_scale=ls, grad_health=True)
    bad = _batch()
    bad["x"] = bad["x"].at[0, 0].set(jnp.nan)
    _, _, m = step(_params(), precision.loss_scaled(opt, ls).init(_params()), bad)
    assert float(m["skipped"]) == 1.0
    assert float(m["grad_norm/dense1"]) == 0.0 and float(m["update_ratio/dense1"]) == 0.0


def test_a_float16_loss_is_scaled_in_float32():
    ls = DynamicLossScale()  # 4 · 2¹⁵ = 131072 overflows float16 (65504), not float32
    scaled = ls.scale(jnp.asarray(4.0, jnp.float16), ls.init())
    assert scaled.dtype == F32 and float(scaled) == 4.0 * 2.0**15
    grads = ls.unscale({"w": jnp.full((2,), 2.0**15, jnp.float16)}, ls.init())
    assert grads["w"].dtype == F16 and np.all(np.asarray(grads["w"], np.float32) == 1.0)


def test_weighted_mean_takes_bfloat16_metrics():
    values = [{"loss": np.asarray(1.5, jnp.bfloat16)}, {"loss": np.asarray(3.0, jnp.bfloat16)}]
    assert data.weighted_mean(values, [2, 1]) == {"loss": 2.0}


def test_loss_scale_bad_input():
    opt = optim.sgd(0.1)
    params = _params()
    with pytest.raises(ValueError, match="DynamicLossScale: period must be a positive integer"):
        DynamicLossScale(period=0)
    with pytest.raises(ValueError, match=r"DynamicLossScale: factor must be .*\(1, inf\)"):
        DynamicLossScale(factor=1.0)
    with pytest.raises(ValueError, match="DynamicLossScale: min_scale must be"):
        DynamicLossScale(initial=4.0, min_scale=8.0)
    with pytest.raises(ValueError, match="StaticLossScale: scale_value"):
        StaticLossScale(0.0)
    with pytest.raises(TypeError, match="make_train_step: loss_scale must be a fundl.precision"):
        train.make_train_step(_loss, opt, loss_scale=2.0**15)
    with pytest.raises(TypeError, match="make_train_step: policy must be a fundl.precision.Policy"):
        train.make_train_step(_loss, opt, policy=jnp.bfloat16)
    step = train.make_train_step(_loss, opt, loss_scale=DynamicLossScale())
    with pytest.raises(TypeError, match=r"initialise it with fundl.precision.loss_scaled"):
        step(_copy(params), opt.init(params), _batch())
    plain = train.make_train_step(_loss, opt)
    with pytest.raises(TypeError, match="holds a loss scale .* built without one"):
        plain(_copy(params), precision.loss_scaled(opt, StaticLossScale()).init(params), _batch())

    def clashing(params, batch):
        return _loss(params, batch), {"skipped": jnp.zeros(())}

    step = train.make_train_step(clashing, opt, has_aux=True, loss_scale=NoOpLossScale())
    with pytest.raises(ValueError, match=r"metrics \['skipped'\] use the names loss_scale="):
        step(_copy(params), precision.loss_scaled(opt, NoOpLossScale()).init(params), _batch())


# --- float16 without loss scaling, and fit --------------------------------------------------


def test_float16_without_loss_scaling_warns_when_built_and_fit_names_the_cause():
    with pytest.warns(
        UserWarning, match=r"computes in float16 without loss scaling.*DynamicLossScale"
    ):
        train.make_train_step(_loss, optim.sgd(0.1), policy=precision.f16_policy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bfloat16, or float16 with a loss scale: no warning
        train.make_train_step(_loss, optim.sgd(0.1), policy=precision.bf16_policy())
        train.make_train_step(_loss, optim.sgd(0.1), policy="c=f16", loss_scale=DynamicLossScale())

    def overflow(params, batch):  # S·W·x in float16 overflows: 1e5 > 65504
        x = MODEL.apply(params, batch["x"])
        return jnp.mean(jnp.square(x * jnp.asarray(1e3, x.dtype))).astype(jnp.float32)

    train_data = jax.tree.map(np.asarray, _batch(16))
    with (
        pytest.warns(UserWarning, match="float16"),
        pytest.raises(
            FloatingPointError,
            match=r"loss became inf .* float16 without loss scaling.*DynamicLossScale",
        ),
    ):
        train.fit(
            overflow,
            _params(),
            optim.sgd(0.1),
            train_data,
            epochs=1,
            batch_size=8,
            key=0,
            progress=False,
            policy="c=f16",
        )


def test_fit_with_a_dynamic_loss_scale_records_it_and_resumes_with_it(tmp_path):
    train_data = jax.tree.map(np.asarray, _batch(16))
    common = {"batch_size": 8, "key": 1, "progress": False, "policy": precision.f16_policy()}
    ls = DynamicLossScale(initial=2.0**10, period=3)
    straight = train.fit(
        _loss, _params(), optim.adam(0.05), train_data, epochs=4, loss_scale=ls, **common
    )
    # Two steps an epoch, S doubles after steps 3 and 6: the epoch means of the S used.
    assert straight.history["loss_scale"] == [2.0**10, 1.5 * 2.0**10, 2.0**11, 2.0**12]
    assert straight.history["skipped"] == [0.0] * 4
    assert float(straight.opt_state.loss_scale.scale) == 2.0**12
    manager = CheckpointManager(tmp_path)
    train.fit(
        _loss,
        _params(),
        optim.adam(0.05),
        train_data,
        epochs=2,
        loss_scale=ls,
        checkpoints=manager,
        **common,
    )
    resumed = train.fit(
        _loss,
        _params(),
        optim.adam(0.05),
        train_data,
        epochs=4,
        loss_scale=ls,
        checkpoints=manager,
        resume=True,
        **common,
    )
    chex.assert_trees_all_equal(resumed.opt_state, straight.opt_state)
    chex.assert_trees_all_equal(resumed.params, straight.params)


def test_fit_stops_when_every_step_is_skipped_at_the_lowest_scale():
    def nan_loss(params, batch):  # a finite loss whose gradient is NaN: 0 · d√u/du at u = 0
        w = params["dense1"]["W"]
        return _loss(params, batch) + 0.0 * jnp.sqrt(0.0 * jnp.sum(w))

    train_data = jax.tree.map(np.asarray, _batch(16))
    ls = DynamicLossScale(initial=2.0, min_scale=1.0)
    with pytest.raises(FloatingPointError, match="every step of epoch 1 was skipped.*down to 1"):
        train.fit(
            nan_loss,
            _params(),
            optim.sgd(0.1),
            train_data,
            epochs=1,
            batch_size=4,
            key=0,
            progress=False,
            loss_scale=ls,
        )


# --- the hand-written rules in bfloat16 --------------------------------------------------------


def _normal(seed, shape, scale=1.0):
    return (scale * jax.random.normal(jax.random.key(seed), shape)).astype(jnp.bfloat16)


# (id, primitive, bfloat16 inputs, options, the differentiated inputs): each hand-written rule,
# run in bfloat16, against the float64 reference at gradcheck's bfloat16 tolerance (2⁻⁴ of the
# gradient's size, or twice what JAX autodiff of the reference reaches in bfloat16).
BF16_RULES = [
    (
        "dense",
        nn.dense,
        lambda: (_normal(0, (2, 3, 4)), _normal(1, (5, 4)), _normal(2, (5,))),
        {},
        (0, 1, 2),
    ),
    (
        "conv2d",
        nn.conv,
        lambda: (_normal(3, (2, 5, 5, 2)), _normal(4, (3, 3, 2, 3), 0.5), _normal(5, (3,))),
        {"stride": (2, 2), "padding": ((1, 1), (1, 1))},
        (0, 1, 2),
    ),
    (
        "batch_norm",
        nn.batch_norm,
        lambda: (_normal(6, (5, 3), 2.0) + 1.0, 1.0 + _normal(7, (3,), 0.3), _normal(8, (3,))),
        {},
        (0, 1, 2),
    ),
    (
        "softmax_cross_entropy",
        L.softmax_cross_entropy,
        lambda: (_normal(13, (4, 5), 2.0), jnp.array([0, 3, 4, 1])),
        {},
        (0,),
    ),
    (
        "dot_product_attention",
        nn.dot_product_attention,
        lambda: (
            _normal(14, (2, 3, 2)),
            _normal(15, (2, 4, 2)),
            _normal(16, (2, 4, 3)),
            jnp.ones((2, 3, 4), bool).at[0, :, 3].set(False),
        ),
        {},
        (0, 1, 2),
    ),
]


@pytest.mark.parametrize(
    "name, fn, inputs, options, argnums", BF16_RULES, ids=[r[0] for r in BF16_RULES]
)
def test_hand_written_rules_hold_in_bfloat16(name, fn, inputs, options, argnums):
    def f(*args):
        return fn(*args, **options)

    report = gradcheck.check(f, *inputs(), argnums=argnums, hvp=False, vmap=False, jit=False)
    assert "bfloat16" in report.precision
    report.assert_passed()


# --- bf16 training of the digits MLP and CNN, against float32 -----------------------------------


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    x, y = data.load_digits()
    train_set, test = data.split({"x": x, "y": y}, 0.2, key=jax.random.key(0))
    mean, std = data.standardize_stats(train_set["x"])
    for part in (train_set, test):
        part["x"] = data.standardize(part["x"], mean, std)
    return train_set, test


def _accuracy(model, params, train_set, test, epochs, **precision_options):
    """Test accuracy after ``epochs`` of Adam with fit (scan-fused epochs: one compile)."""

    def loss_fn(params, batch):
        return losses.softmax_cross_entropy(model.apply(params, batch["x"]), batch["y"])

    def accuracy(params, batch):
        return {"accuracy": metrics.accuracy(model.apply(params, batch["x"]), batch["y"])}

    result = train.fit(
        loss_fn,
        params,
        optim.adam(3e-3),
        train_set,
        epochs=epochs,
        batch_size=64,
        key=1,
        scan=True,
        progress=False,
        **precision_options,
    )
    evaluate = train.make_eval_step(accuracy, policy=precision_options.get("policy"))
    return float(evaluate(result.params, jax.tree.map(jnp.asarray, test))["accuracy"])


def _images(split):
    return {"x": split["x"].reshape(-1, 8, 8, 1), "y": split["y"]}


MLP = fundl.mlp([64, 32, 10], "relu")
CNN = nn.Sequential(
    [
        nn.Conv2D(6, 3, padding="SAME"),
        nn.Activation("relu"),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense(10),
    ]
)


@pytest.fixture(scope="module")
def float32_mlp(digits):
    """The float32 run every MLP comparison shares."""
    return _accuracy(MLP, MLP.init(jax.random.key(2)), *digits, epochs=10)


def test_bf16_mlp_on_digits_ends_within_a_point_of_float32(digits, float32_mlp):
    bf16 = _accuracy(MLP, MLP.init(jax.random.key(2)), *digits, epochs=10, policy="c=bf16,o=f32")
    assert float32_mlp > 0.95
    assert abs(bf16 - float32_mlp) <= 0.01


def test_f16_mlp_with_dynamic_loss_scaling_ends_within_a_point_of_float32(digits, float32_mlp):
    f16 = _accuracy(
        MLP,
        MLP.init(jax.random.key(2)),
        *digits,
        epochs=10,
        policy=precision.f16_policy(),
        loss_scale=DynamicLossScale(),
    )
    assert abs(f16 - float32_mlp) <= 0.01


def test_bf16_cnn_on_digits_ends_within_a_point_of_float32(digits):
    train_set, test = (_images(part) for part in digits)
    params = CNN.init(jax.random.key(3), (8, 8, 1))
    f32 = _accuracy(CNN, params, train_set, test, epochs=6)
    bf16 = _accuracy(CNN, params, train_set, test, epochs=6, policy=precision.bf16_policy())
    assert f32 > 0.88
    assert abs(bf16 - f32) <= 0.01
