"""fundl.train.steps and recompile: compiled steps, scan and ensembles equal plain loops."""

import operator
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import data, optim, train

MODEL = fundl.mlp([3, 8, 2], "tanh")  # the toy model (tests/train/conftest.py)

# These tests hold two computations of the same float32 values to each other (a step and its
# written-out update, scan and single steps, an ensemble and separate runs): they run with full-
# float32 matmuls on every backend (a GPU's default TF32 rounds a batched and an unbatched product
# differently; see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("highest_precision")

# --- compiled steps -------------------------------------------------------------------------


def test_train_step_equals_the_update_written_out(toy):
    opt = optim.adam(0.01)
    step = train.make_train_step(toy.loss_fn, opt)
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    params, state = toy.params(), opt.init(toy.params())
    expected_params, expected_state = toy.manual_step(opt, params, state, batch)
    new_params, new_state, metrics_ = step(toy.params(), opt.init(toy.params()), batch)
    chex.assert_trees_all_close(new_params, expected_params, rtol=1e-6)
    chex.assert_trees_all_close(new_state, expected_state, rtol=1e-6)
    np.testing.assert_allclose(metrics_["loss"], toy.loss_fn(params, batch), rtol=1e-6)


def test_params_and_opt_state_are_donated(toy):
    opt = optim.sgd(0.1, 0.9)
    step = train.make_train_step(toy.loss_fn, opt)
    params = toy.params()
    state = opt.init(params)
    step(params, state, jax.tree.map(jnp.asarray, toy.data(8)))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(params))
    kept = toy.params()
    train.make_train_step(toy.loss_fn, opt, donate=False)(
        kept, opt.init(kept), jax.tree.map(jnp.asarray, toy.data(8))
    )
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(kept))


def test_aux_metrics_are_reported(toy):
    step = train.make_train_step(toy.loss_with_accuracy, optim.sgd(0.1), has_aux=True)
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    _, _, m = step(toy.params(), optim.sgd(0.1).init(toy.params()), batch)
    assert set(m) == {"loss", "accuracy"}
    np.testing.assert_allclose(
        m["accuracy"], toy.loss_with_accuracy(toy.params(), batch)[1]["accuracy"]
    )


def test_no_retrace_across_epochs_and_the_partial_batch_is_expected(toy):
    opt = optim.adam(0.01)
    step = train.make_train_step(toy.loss_fn, opt)
    params, state = toy.params(), opt.init(toy.params())
    key = jax.random.key(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.RecompilationWarning)
        for epoch in range(3):
            for batch in data.batches(toy.data(40), 16, key=key, epoch=epoch):  # 16, 16, 8
                params, state, _ = step(params, state, batch)
    assert step.traces == 2  # the full batches, and once the final partial batch


def test_recompilation_warns_once_and_names_the_argument(toy):
    def scaled_loss(params, batch, scale):
        return jnp.asarray(scale, jnp.float32) * toy.loss_fn(params, batch)

    opt = optim.sgd(0.1)
    step = train.make_train_step(scaled_loss, opt)
    params, state = toy.params(), opt.init(toy.params())
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    params, state, _ = step(params, state, batch, 0.5)
    with pytest.warns(
        train.RecompilationWarning,
        match=r"train step is being compiled again \(trace 2\) because args\[0\] changed from ~float32\[\] to float32\[\] \('~' marks a weak type",
    ):
        params, state, _ = step(params, state, batch, jnp.float32(0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.RecompilationWarning)
        step(params, state, batch, jnp.float16(0.5))  # a third signature: warned once already
    assert step.traces == 3


def test_retrace_for_a_changed_batch_shape_names_the_leaf(toy):
    opt = optim.sgd(0.1)
    step = train.make_train_step(toy.loss_fn, opt)
    params, state = toy.params(), opt.init(toy.params())
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    params, state, _ = step(params, state, batch)
    bigger = jax.tree.map(jnp.asarray, toy.data(12))
    with pytest.warns(
        train.RecompilationWarning,
        match=r"batch\['x'\] changed from float32\[8,3\] to float32\[12,3\]",
    ):
        step(params, state, bigger)


def test_a_changed_structure_names_the_argument_and_the_leaves_added_or_removed():
    # a leaf added to the batch changed the number of leaves, and the message said only
    # "the number or structure of the arguments changed", naming no argument
    from fundl.train.recompile import _TraceWatch, watched_jit

    step = watched_jit(
        lambda params, batch: params * jnp.sum(batch["x"]),
        name="train step",
        arg_names=("params", "batch"),
        batch_arg="batch",
    )
    params, x = jnp.ones(2), jnp.ones((4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.RecompilationWarning)  # the first trace: silent
        step(params, {"x": x})
    with pytest.warns(
        train.RecompilationWarning,
        match=r"compiled again \(trace 2\) because the structure of batch changed "
        r"\(added batch\['y'\]\)\.",
    ):
        step(params, {"x": x, "y": jnp.ones(4)})
    assert step.traces == 2
    with warnings.catch_warnings():  # a third trace: warned once already
        warnings.simplefilter("error", train.RecompilationWarning)
        step(params, {"x": x, "w": x})
    assert step.traces == 3
    watch = _TraceWatch("step", ("params", "batch"), "batch", False)
    watch.on_trace((params, {"x": x, "y": x}))
    with pytest.warns(train.RecompilationWarning, match=r"\(removed batch\['y'\]\)"):
        watch.on_trace((params, {"x": x}))
    watch = _TraceWatch("step", ("params", "batch"), "batch", False)
    watch.on_trace(((params, params), {"x": x}))
    with pytest.warns(
        train.RecompilationWarning,
        match=r"structure of params changed \(same leaves, other containers: "
        r"PyTreeDef\(\(\*, \*\)\) became PyTreeDef\(\[\*, \*\]\)\)",
    ):
        watch.on_trace(([params, params], {"x": x}))


def test_scan_steps_equal_single_steps(toy):
    opt = optim.adam(0.01)
    batches = [jax.tree.map(jnp.asarray, toy.data(8, seed=s)) for s in range(4)]
    params, state = toy.params(), opt.init(toy.params())
    for b in batches:
        params, state = toy.manual_step(opt, params, state, b)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    scan = train.make_scan_steps(toy.loss_fn, opt)
    p2, s2, m = scan(toy.params(), opt.init(toy.params()), stacked)
    chex.assert_trees_all_close(p2, params, rtol=1e-5, atol=1e-6)
    chex.assert_shape(m["loss"], (4,))


def test_epoch_on_device_equals_the_batcher_loop(toy):
    opt = optim.sgd(0.05, 0.9)
    d = toy.data(40)
    key = jax.random.key(7)
    params, state = toy.params(), opt.init(toy.params())
    for batch in data.batches(d, 16, key=key, epoch=3, drop_last=True):
        params, state = toy.manual_step(opt, params, state, jax.tree.map(jnp.asarray, batch))
    run = train.make_epoch(toy.loss_fn, opt, 16)
    p2, _, m = run(toy.params(), opt.init(toy.params()), jax.device_put(d), key, 3)
    chex.assert_trees_all_close(p2, params, rtol=1e-5, atol=1e-6)
    chex.assert_shape(m["loss"], (2,))


def test_ensemble_of_seeds_equals_separate_runs(toy):
    opt = optim.adam(0.01)
    n = 3
    stacked = train.init_ensemble(toy.model.init, jax.random.key(5), n)
    chex.assert_shape(stacked["dense1"]["W"], (n, 8, 3))
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    step = train.make_train_step(toy.loss_fn, opt, ensemble=True)
    state = jax.vmap(opt.init)(stacked)
    together, _, m = step(jax.tree.map(jnp.copy, stacked), state, batch)
    chex.assert_shape(m["loss"], (n,))
    for i, k in enumerate(jax.random.split(jax.random.key(5), n)):
        single = toy.model.init(k)
        alone, _ = toy.manual_step(opt, single, opt.init(single), batch)
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[i], together), alone, rtol=1e-5, atol=1e-6
        )


def test_ensemble_of_learning_rates_equals_separate_runs(toy):
    rates = [0.001, 0.01, 0.1]
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=0.01)
    start = toy.params()
    params = jax.tree.map(lambda p: jnp.stack([p] * len(rates)), start)
    state = jax.vmap(lambda lr: optim.with_hyperparams(opt.init(start), learning_rate=lr))(
        jnp.array(rates)
    )
    step = train.make_train_step(toy.loss_fn, opt, ensemble=True)
    batches = [jax.tree.map(jnp.asarray, toy.data(8, seed=s)) for s in range(3)]
    for b in batches:
        params, state, _ = step(params, state, b)
    assert step.traces == 1
    for i, lr in enumerate(rates):
        alone, alone_state = toy.params(), optim.adam(lr).init(toy.params())
        for b in batches:
            alone, alone_state = toy.manual_step(optim.adam(lr), alone, alone_state, b)
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[i], params), alone, rtol=1e-5, atol=1e-6
        )


def test_scan_steps_and_epoch_train_an_ensemble_as_separate_runs(toy):
    rates = [0.001, 0.01, 0.1]
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=0.01)
    start = toy.params()

    def ensemble():  # N copies of the start, each Adam state with its own learning rate
        state = jax.vmap(lambda lr: optim.with_hyperparams(opt.init(start), learning_rate=lr))
        return jax.tree.map(lambda p: jnp.stack([p] * len(rates)), start), state(jnp.array(rates))

    batches = [jax.tree.map(jnp.asarray, toy.data(8, seed=s)) for s in range(3)]
    scan = train.make_scan_steps(toy.loss_fn, opt, ensemble=True)
    scanned, _, m = scan(*ensemble(), jax.tree.map(lambda *xs: jnp.stack(xs), *batches))
    chex.assert_shape(m["loss"], (3, len(rates)))  # (k steps, N models)
    d, key = jax.device_put(toy.data(24)), jax.random.key(4)
    epoch = train.make_epoch(toy.loss_fn, opt, 8, ensemble=True)
    epoched, _, m = epoch(*ensemble(), d, key, 1)
    chex.assert_shape(m["loss"], (3, len(rates)))
    for i, lr in enumerate(rates):
        alone, alone_state = start, optim.adam(lr).init(start)
        for b in batches:
            alone, alone_state = toy.manual_step(optim.adam(lr), alone, alone_state, b)
        chex.assert_trees_all_close(
            jax.tree.map(operator.itemgetter(i), scanned), alone, rtol=1e-5, atol=1e-6
        )
        one_epoch = train.make_epoch(toy.loss_fn, optim.adam(lr), 8, donate=False)
        alone, _, _ = one_epoch(start, optim.adam(lr).init(start), d, key, 1)
        chex.assert_trees_all_close(
            jax.tree.map(operator.itemgetter(i), epoched), alone, rtol=1e-5, atol=1e-6
        )


# Every builder's bool options, each given a truthy non-bool ("no" would switch it on).
_BUILDERS = {
    "make_train_step": lambda loss_fn, **kw: train.make_train_step(loss_fn, optim.sgd(0.1), **kw),
    "make_scan_steps": lambda loss_fn, **kw: train.make_scan_steps(loss_fn, optim.sgd(0.1), **kw),
    "make_epoch": lambda loss_fn, **kw: train.make_epoch(loss_fn, optim.sgd(0.1), 8, **kw),
    "make_eval_step": lambda loss_fn, **kw: train.make_eval_step(loss_fn, **kw),
}
_TRAIN_FLAGS = ("has_aux", "stateful", "ensemble", "grad_health", "jit", "donate", "shard_params")


@pytest.mark.parametrize(
    "builder, flag, value",
    [(b, f, "no") for b in _BUILDERS if b != "make_eval_step" for f in _TRAIN_FLAGS]
    + [("make_eval_step", f, "no") for f in ("stateful", "jit", "ensemble")]
    + [("make_scan_steps", "ensemble", "yes"), ("make_epoch", "ensemble", 1)]
    + [("make_eval_step", "jit", 0), ("make_epoch", "has_aux", 1)],
)
def test_every_bool_option_of_every_builder_must_be_a_bool(toy, builder, flag, value):
    with pytest.raises(ValueError, match=rf"{builder}: {flag} must be True or False, got"):
        _BUILDERS[builder](toy.loss_fn, **{flag: value})


@pytest.mark.parametrize("builder", list(_BUILDERS))
def test_a_train_state_given_to_a_plain_step_names_stateful(toy, builder):
    opt = optim.sgd(0.1)
    ts = train.TrainState.create(toy.params(), opt)
    d = jax.tree.map(jnp.asarray, toy.data(16))
    kwargs = {} if builder == "make_eval_step" else {"donate": False}
    run = _BUILDERS[builder](toy.loss_fn, **kwargs)
    args = {
        "make_train_step": (ts, d),
        "make_scan_steps": (ts, jax.tree.map(lambda x: x.reshape(2, 8, *x.shape[1:]), d)),
        "make_epoch": (ts, d, 0, 0),
        "make_eval_step": (ts, d),
    }[builder]
    hint = "pass train_state.params" if builder == "make_eval_step" else "stateful=True"
    with pytest.raises(
        TypeError, match=rf"{builder}: got a TrainState where params are expected.*{hint}"
    ):
        run(*args)


def _stateful_loss(params, batch, *, state, key, train):  # the stateful form, no state of its own
    return _plain_loss(params, batch), {}, state


def _plain_loss(params, batch):
    return fundl.losses.softmax_cross_entropy(MODEL.apply(params, batch["x"]), batch["y"])


@pytest.mark.parametrize("builder", list(_BUILDERS))
@pytest.mark.parametrize("stateful", [True, False])
def test_a_loss_of_the_other_form_names_the_stateful_option(toy, builder, stateful):
    # A plain loss to a stateful=True step failed with Python's "unexpected keyword argument
    # 'state'" (and a stateful loss to a plain step with "missing ... 'state'"), naming neither
    # the step nor the option; each is now refused when traced, naming both.
    loss_fn = _plain_loss if stateful else _stateful_loss
    opt = optim.sgd(0.1)
    params = toy.params()
    d = jax.tree.map(jnp.asarray, toy.data(16))
    stacked = jax.tree.map(lambda x: x.reshape(2, 8, *x.shape[1:]), d)
    run = _BUILDERS[builder](loss_fn, stateful=stateful)
    if builder == "make_eval_step":
        args = (params, {}, d) if stateful else (params, d)
    else:
        first = (
            train.TrainState.create(params, opt, key=0) if stateful else (params, opt.init(params))
        )
        first = (first,) if stateful else first
        data_args = {
            "make_train_step": (d,),
            "make_scan_steps": (stacked,),
            "make_epoch": (d, 0, 0),
        }
        args = (*first, *data_args[builder])
    role = "metrics_fn" if builder == "make_eval_step" else "loss_fn"
    with pytest.raises(
        TypeError,
        match=rf"{builder}: with stateful={stateful} the step calls {role}\(params, batch"
        rf"{', state=...' if stateful else ''}.*{loss_fn.__name__}.*needs stateful={not stateful}",
    ):
        run(*args)


def test_an_optimizer_state_of_another_optimizer_is_refused_when_traced(toy):
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    params = toy.params()
    momentum = optim.sgd(0.1, 0.9).init(params)  # a TraceState, Adam wants an AdamState
    match = (
        r"make_train_step: the optimizer state does not have the structure of "
        r"optimizer.init\(params\) .*expected CustomNode\(namedtuple\[.*AdamState\].*<params>.*"
        r"got CustomNode\(namedtuple\[.*TraceState\].*optimizer.init\(params\)"
    )
    step = train.make_train_step(toy.loss_fn, optim.adam(0.1), donate=False)
    with pytest.raises(TypeError, match=match):
        step(params, momentum, batch)
    scan = train.make_scan_steps(toy.loss_fn, optim.adam(0.1), donate=False)
    with pytest.raises(TypeError, match=match.replace("make_train_step", "make_scan_steps")):
        scan(params, momentum, jax.tree.map(lambda x: x[None], batch))
    # The right optimizer's state passes (the compiled program is unchanged by the check:
    # test_grad_health's test_with_the_option_off_the_step_is_the_plain_update).
    step = train.make_train_step(toy.loss_fn, optim.adam(0.1), donate=False)
    new, _, _ = step(params, optim.adam(0.1).init(params), batch)
    expected, _ = toy.manual_step(optim.adam(0.1), params, optim.adam(0.1).init(params), batch)
    chex.assert_trees_all_close(new, expected, rtol=1e-5, atol=1e-6)


def test_eval_step_accepts_the_three_return_forms(toy):
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    p = toy.params()
    loss = toy.loss_fn(p, batch)
    accuracy = toy.loss_with_accuracy(p, batch)[1]["accuracy"]
    chex.assert_trees_all_close(train.make_eval_step(toy.loss_fn)(p, batch), {"loss": loss})
    chex.assert_trees_all_close(
        train.make_eval_step(toy.loss_with_accuracy)(p, batch),
        {"loss": loss, "accuracy": accuracy},
    )
    assert train.make_eval_step(lambda p, b: {"acc": jnp.ones(())})(p, batch) == {"acc": 1.0}
    # A metrics function's own "loss" is its to report (fit's eval_fn contract).
    own = train.make_eval_step(lambda p, b: {"loss": 2.0 * toy.loss_fn(p, b), "n": jnp.sum(b["y"])})
    chex.assert_trees_all_close(own(p, batch), {"loss": 2.0 * loss, "n": jnp.sum(batch["y"])})


def _per_example(params, batch):
    logits = MODEL.apply(params, batch["x"])
    return fundl.losses.softmax_cross_entropy(logits, batch["y"], reduction="none")


@pytest.mark.parametrize(
    "metrics_fn, error, match",
    [
        (
            _per_example,
            TypeError,
            r"metrics_fn must return a floating-point scalar loss, got float32\[8\]",
        ),
        (
            lambda p, b: {"loss": _per_example(p, b)},
            TypeError,
            r"metrics_fn must return scalar metrics, got 'loss' of float32\[8\]; reduce it",
        ),
        (
            lambda p, b: (jnp.mean(_per_example(p, b)), jnp.float32(0.5)),
            TypeError,
            (
                r"metrics_fn must return a dict of scalar metrics, a scalar loss or \(loss, dict "
                r"of metrics\), got a tuple whose second item is a .*, not a dict"
            ),
        ),
        (
            lambda p, b: (jnp.mean(_per_example(p, b)), {}, {}),
            TypeError,
            r"metrics_fn must return .*, got a tuple of 3",
        ),
        (
            lambda p, b: (jnp.sum(b["y"]), {}),
            TypeError,
            r"metrics_fn must return a floating-point scalar loss, got int32\[\]",
        ),
        (
            lambda p, b: (jnp.mean(_per_example(p, b)), {"loss": jnp.float32(0.0)}),
            ValueError,
            r"the loss function's metrics hold a 'loss', the name the step reports the loss under",
        ),
        # None was returned as {"loss": None}; a str or a list failed inside JAX
        (
            lambda p, b: None,
            TypeError,
            r"metrics_fn must return a floating-point scalar loss, got None",
        ),
        (
            lambda p, b: "a",
            TypeError,
            r"metrics_fn must return a floating-point scalar loss, got 'a'",
        ),
        (
            lambda p, b: {"acc": [1.0]},
            TypeError,
            r"metrics_fn must return .*, got 'acc' = \[1\.0\] \(a list, not a number\)",
        ),
    ],
)
def test_eval_step_checks_what_the_metrics_function_returns(toy, metrics_fn, error, match):
    evaluate = train.make_eval_step(metrics_fn)
    with pytest.raises(error, match=rf"make_eval_step: {match}"):
        evaluate(toy.params(), jax.tree.map(jnp.asarray, toy.data(8)))


def test_one_eval_step_serves_the_validation_and_the_test_set(toy):
    evaluate = train.make_eval_step(toy.loss_with_accuracy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.RecompilationWarning)
        for n in (20, 13, 40):  # the validation set, a partial batch, the test set
            evaluate(toy.params(), jax.tree.map(jnp.asarray, toy.data(n)))
    assert evaluate.traces == 3


def test_forgetting_has_aux_says_what_to_do(toy):
    step = train.make_train_step(toy.loss_with_accuracy, optim.sgd(0.1))
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    with pytest.raises(
        TypeError,
        match=r"make_train_step: loss_fn returned a tuple of 2; if it returns \(loss, dict of "
        r"metrics\), pass has_aux=True",
    ):
        step(toy.params(), optim.sgd(0.1).init(toy.params()), batch)
    with_aux = train.make_train_step(toy.loss_fn, optim.sgd(0.1), has_aux=True)
    with pytest.raises(TypeError, match=r"make_train_step: with has_aux=True, loss_fn must return"):
        with_aux(toy.params(), optim.sgd(0.1).init(toy.params()), batch)


def test_a_loss_that_is_not_a_scalar_says_so(toy):
    def per_example(params, batch):
        logits = toy.model.apply(params, batch["x"])
        return fundl.losses.softmax_cross_entropy(logits, batch["y"], reduction="none")

    step = train.make_train_step(per_example, optim.sgd(0.1))
    with pytest.raises(
        TypeError,
        match=r"make_train_step: loss_fn must return a floating-point scalar loss, got float32\[8\]",
    ):
        step(
            toy.params(), optim.sgd(0.1).init(toy.params()), jax.tree.map(jnp.asarray, toy.data(8))
        )


def test_a_metric_named_loss_is_refused_where_it_would_hide_the_loss(toy):
    def regularized(params, batch):  # optimizes data + reg, but reports data as "loss"
        data_loss = toy.loss_fn(params, batch)
        reg = 0.1 * sum(jnp.sum(layer["W"] ** 2) for layer in params.values())
        return data_loss + reg, {"loss": data_loss, "reg": reg}

    batch = jax.tree.map(jnp.asarray, toy.data(8))
    params, opt = toy.params(), optim.sgd(0.1)
    step = train.make_train_step(regularized, opt, has_aux=True, donate=False)
    scan = train.make_scan_steps(regularized, opt, has_aux=True, donate=False)
    evaluate = train.make_eval_step(regularized)
    for name, run in (
        ("make_train_step", lambda: step(params, opt.init(params), batch)),
        (
            "make_scan_steps",
            lambda: scan(params, opt.init(params), jax.tree.map(lambda x: x[None], batch)),
        ),
        ("make_eval_step", lambda: evaluate(params, batch)),
    ):
        with pytest.raises(
            ValueError,
            match=rf"{name}: the loss function's metrics hold a 'loss', the name the step "
            r"reports the loss under .*rename the metric",
        ):
            run()


def test_epoch_takes_an_int_seed_as_the_key_it_names(toy):
    opt = optim.sgd(0.05, 0.9)
    d = jax.device_put(toy.data(40))
    for jit in (True, False):
        by_key = train.make_epoch(toy.loss_fn, opt, 16, donate=False, jit=jit)(
            toy.params(), opt.init(toy.params()), d, jax.random.key(7), 3
        )
        epoch = train.make_epoch(toy.loss_fn, opt, 16, donate=False, jit=jit)
        by_seed = epoch(toy.params(), opt.init(toy.params()), d, 7, 3)
        chex.assert_trees_all_equal(by_seed, by_key)
    other = epoch(toy.params(), opt.init(toy.params()), d, 8, 3)  # another seed, another order
    assert not np.allclose(other[2]["loss"], by_seed[2]["loss"])
    with pytest.raises(ValueError, match=r"make_epoch: key must be a PRNG key .* got 1.5"):
        epoch(toy.params(), opt.init(toy.params()), d, 1.5, 3)


def test_init_ensemble_takes_an_int_seed(toy):
    chex.assert_trees_all_equal(
        train.init_ensemble(toy.model.init, 3, 2),
        train.init_ensemble(toy.model.init, jax.random.key(3), 2),
    )


@pytest.mark.parametrize("builder", list(_BUILDERS))
def test_a_loss_function_that_is_not_callable_is_refused_when_built(builder):
    # was "'NoneType' object is not callable" at the first call
    arg = "metrics_fn" if builder == "make_eval_step" else "loss_fn"
    with pytest.raises(TypeError, match=rf"^{builder}: {arg} must be a function .*, got None"):
        _BUILDERS[builder](None)


def test_init_ensemble_refuses_a_model_for_its_init_function():
    with pytest.raises(
        TypeError, match=r"^init_ensemble: init_fn must be a function .*model\.init"
    ):
        train.init_ensemble(MODEL, 0, 2)


@pytest.mark.parametrize(
    "batches, match",
    [
        ({"x": 1.0, "y": 2.0}, r"batches\['x'\] is 0-d"),  # was IndexError
        (
            {"x": np.ones((2, 4, 3), np.float32), "y": np.ones((3, 4), np.int32)},
            r"the leaves of batches disagree on the number of steps k: batches\['x'\] has 2, "
            r"batches\['y'\] has 3",
        ),
        (None, r"batches has no array leaves"),
    ],
)
def test_scan_steps_check_the_stacked_batches(toy, batches, match):
    steps = train.make_scan_steps(toy.loss_fn, optim.sgd(0.1), donate=False)
    params = toy.params()
    with pytest.raises(ValueError, match=rf"^make_scan_steps: {match}"):
        steps(params, optim.sgd(0.1).init(params), batches)
