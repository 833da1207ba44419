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


def test_ensemble_flag_must_be_a_bool(toy):
    for build in (
        lambda: train.make_scan_steps(toy.loss_fn, optim.sgd(0.1), ensemble="yes"),
        lambda: train.make_epoch(toy.loss_fn, optim.sgd(0.1), 8, ensemble=1),
    ):
        with pytest.raises(ValueError, match=r"ensemble must be True or False"):
            build()


def test_eval_step_accepts_the_three_return_forms(toy):
    batch = jax.tree.map(jnp.asarray, toy.data(8))
    p = toy.params()
    assert set(train.make_eval_step(toy.loss_fn)(p, batch)) == {"loss"}
    assert set(train.make_eval_step(toy.loss_with_accuracy)(p, batch)) == {"loss", "accuracy"}
    assert set(train.make_eval_step(lambda p, b: {"acc": jnp.ones(())})(p, batch)) == {"acc"}


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


def test_init_ensemble_takes_an_int_seed(toy):
    chex.assert_trees_all_equal(
        train.init_ensemble(toy.model.init, 3, 2),
        train.init_ensemble(toy.model.init, jax.random.key(3), 2),
    )
