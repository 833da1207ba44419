"""fundl.train.grad_health: per-layer norms and ratios by hand, the steps' metrics against
jax.grad, scan against single steps, fit's history and warnings, and the option off."""

import functools
import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import optim, train
from fundl.train.progress import Progress

# --- the building blocks ----------------------------------------------------------------------


def _f(values):
    return {k: float(v) for k, v in values.items()}


def test_layer_norms_of_nested_flat_and_sequence_trees_by_hand():
    nested = {
        "dense1": {"W": jnp.array([[3.0, 4.0]]), "b": jnp.array([12.0])},  # sqrt(9+16+144)
        "residual1": {"block": {"dense1": {"W": jnp.ones((2, 2))}}},
        "dense10": {"W": jnp.full((1, 1), 2.0)},
        "dense2": {"W": jnp.zeros((1, 1))},
    }
    norms = train.layer_norms(nested)
    assert list(norms) == ["dense1", "dense2", "dense10", "residual1/block/dense1"]  # natural
    assert _f(norms) == {
        "dense1": 13.0,
        "dense2": 0.0,
        "dense10": 2.0,
        "residual1/block/dense1": 2.0,
    }

    notes = {  # the notes' flat dict: grouped by the layer number
        "W1": jnp.full((2, 2), 0.5),
        "b1": jnp.zeros(2),
        "W2": jnp.array([[3.0, 4.0]]),
        "b2": jnp.array([12.0]),
        "W10": jnp.ones(4),
    }
    assert _f(train.layer_norms(notes)) == {"layer1": 1.0, "layer2": 13.0, "layer10": 2.0}
    assert _f(train.layer_norms({"enc": {"W1": jnp.ones(4), "gamma_2": jnp.ones(9)}})) == {
        "enc/layer1": 2.0,
        "enc/layer2": 3.0,
    }
    # Arrays beside containers form the layer of their container ("params" at the top);
    # names that are not all numbered keep the container whole; lists index by position.
    mixed = {"scale": jnp.full(4, 0.5), "W1": jnp.ones(3), "head": {"W": jnp.ones(4)}}
    assert _f(train.layer_norms(mixed)) == {"head": 2.0, "params": math.sqrt(4.0)}
    stax = [{"W": jnp.array([3.0, 4.0])}, (), ({"W": jnp.ones(1)}, jnp.ones(4))]
    assert _f(train.layer_norms(stax)) == {"0": 5.0, "2": 2.0, "2/0": 1.0}
    assert _f(train.layer_norms(jnp.ones(9))) == {"params": 3.0}


def test_layer_norms_keep_nan_and_float64(x64):
    norms = train.layer_norms({"a": {"W": jnp.array([1.0, jnp.nan])}, "b": {"W": jnp.ones(1)}})
    assert math.isnan(norms["a"]) and float(norms["b"]) == 1.0
    with x64():
        wide = train.layer_norms({"a": {"W": jnp.ones(2, jnp.float64)}})
        assert wide["a"].dtype == jnp.float64


def test_layer_norms_refuse_two_layers_of_one_name():
    with pytest.raises(
        ValueError, match=r"layer_norms: two parts of the tree are both named layer 'a/b'"
    ):
        train.layer_norms({"a/b": {"W": jnp.ones(1)}, "a": {"b": {"W": jnp.ones(1)}}})


def test_update_ratios_by_hand():
    params = {
        "d1": {"W": jnp.array([[3.0, 4.0]])},
        "d2": {"W": jnp.zeros(2)},
        "d3": {"W": jnp.zeros(1)},
    }
    updates = {
        "d1": {"W": jnp.array([[0.3, 0.4]])},
        "d2": {"W": jnp.zeros(2)},
        "d3": {"W": jnp.ones(1)},
    }
    ratios = _f(train.update_ratios(updates, params))
    np.testing.assert_allclose(ratios["d1"], 0.1, rtol=1e-6)
    assert ratios["d2"] == 0.0  # no update to a zero layer: 0, not 0/0
    assert ratios["d3"] == math.inf
    with pytest.raises(
        ValueError, match=r"update_ratios: updates and params differ in shape at \['d1'\]\['W'\]"
    ):
        train.update_ratios({**updates, "d1": {"W": jnp.ones(2)}}, params)


def test_blocks_run_under_jit_and_vmap_without_a_host_sync():
    trees = {"dense1": {"W": jnp.arange(6.0).reshape(3, 2)}, "dense2": {"b": jnp.arange(3.0)}}
    ones = jax.tree.map(jnp.ones_like, trees)
    eager = train.grad_health_metrics(trees, ones, trees)
    assert list(eager) == [
        "grad_norm/dense1",
        "grad_norm/dense2",
        "update_ratio/dense1",
        "update_ratio/dense2",
    ]
    chex.assert_trees_all_close(jax.jit(train.grad_health_metrics)(trees, ones, trees), eager)
    per_model = jax.vmap(train.layer_norms)(trees)  # leading axis: 3 "models" of dense1
    np.testing.assert_allclose(
        per_model["dense1"], np.linalg.norm(np.arange(6.0).reshape(3, 2), axis=1)
    )


# --- the compiled steps -----------------------------------------------------------------------


@functools.cache
def _grad(loss_fn):
    """jax.grad of a loss, compiled once per test module (eager JAX compiles op by op)."""
    return jax.jit(jax.grad(loss_fn))


def _by_hand(grads, updates, new_params):
    """Norms in float64 NumPy from the gradient tree jax.grad gives."""
    out = {}
    for layer in grads:
        g = np.sqrt(sum(np.sum(np.square(np.float64(x))) for x in jax.tree.leaves(grads[layer])))
        u = np.sqrt(sum(np.sum(np.square(np.float64(x))) for x in jax.tree.leaves(updates[layer])))
        p = np.sqrt(
            sum(np.sum(np.square(np.float64(x))) for x in jax.tree.leaves(new_params[layer]))
        )
        out[f"grad_norm/{layer}"] = g
        out[f"update_ratio/{layer}"] = u / p
    return out


def test_step_metrics_equal_norms_from_jax_grad(toy):
    opt = optim.sgd(0.1)
    batch = jax.tree.map(jnp.asarray, toy.data(16))
    step = train.make_train_step(toy.loss_fn, opt, grad_health=True, donate=False)
    params = toy.params()
    new_params, _, metrics = step(params, opt.init(params), batch)
    grads = _grad(toy.loss_fn)(params, batch)
    updates = jax.tree.map(lambda g: -0.1 * g, grads)
    expected = _by_hand(grads, updates, new_params)
    assert set(metrics) == {"loss", *expected}
    for k, v in expected.items():
        np.testing.assert_allclose(metrics[k], v, rtol=1e-5, err_msg=k)


def test_stateful_step_and_scan_report_the_norms_of_each_step(toy):
    def stateful_loss(params, batch, *, state, key, train):  # fit's form of a plain loss
        return toy.loss_fn(params, batch), {}, state

    opt = optim.sgd(0.1, 0.9)
    start = train.TrainState.create(toy.params(), opt, key=4)
    batches = [jax.tree.map(jnp.asarray, toy.data(16, seed=s)) for s in range(3)]
    step = train.make_train_step(stateful_loss, opt, stateful=True, grad_health=True, donate=False)
    ts, each = start, []
    for batch in batches:
        grads = _grad(toy.loss_fn)(ts.params, batch)
        ts_next, metrics = step(ts, batch)
        updates = jax.tree.map(jnp.subtract, ts_next.params, ts.params)
        for k, v in _by_hand(grads, updates, ts_next.params).items():
            np.testing.assert_allclose(metrics[k], v, rtol=1e-4, err_msg=k)
        each.append(metrics)
        ts = ts_next

    scan = train.make_scan_steps(stateful_loss, opt, stateful=True, grad_health=True)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    _, fused = scan(start, stacked)
    chex.assert_trees_all_close(fused, jax.tree.map(lambda *xs: jnp.stack(xs), *each), rtol=1e-5)


def test_with_the_option_off_the_step_is_the_plain_update(toy):
    opt = optim.adam(0.01)
    params = toy.params()
    batch = jax.tree.map(jnp.asarray, toy.data(8))

    def written_out(params, opt_state, batch):
        loss, grads = jax.value_and_grad(toy.loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, {"loss": loss}

    args = (params, opt.init(params), batch)
    off = train.make_train_step(toy.loss_fn, opt, grad_health=False, jit=False)
    assert str(jax.make_jaxpr(off)(*args)) == str(jax.make_jaxpr(written_out)(*args))
    assert set(jax.eval_shape(off, *args)[2]) == {"loss"}
    on = train.make_train_step(toy.loss_fn, opt, grad_health=True, jit=False)
    assert set(jax.eval_shape(on, *args)[2]) == {
        "loss",
        "grad_norm/dense1",
        "grad_norm/dense2",
        "update_ratio/dense1",
        "update_ratio/dense2",
    }


def test_step_errors(toy):
    def clashing(params, batch):
        return toy.loss_fn(params, batch), {"grad_norm/mine": jnp.zeros(())}

    step = train.make_train_step(clashing, optim.sgd(0.1), has_aux=True, grad_health=True)
    with pytest.raises(
        ValueError,
        match=r"make_train_step: the loss function's metrics \['grad_norm/mine'\] use the names "
        r"grad_health=True adds",
    ):
        step(
            toy.params(), optim.sgd(0.1).init(toy.params()), jax.tree.map(jnp.asarray, toy.data(8))
        )
    with pytest.raises(ValueError, match=r"make_epoch: grad_health must be True or False"):
        train.make_epoch(toy.loss_fn, optim.sgd(0.1), 8, grad_health="yes")


# --- the rules --------------------------------------------------------------------------------


def _check(rules, norms, previous=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = rules.check(
            {f"grad_norm/{k}": v for k, v in norms.items()} | {"loss": 1.0},
            None if previous is None else {f"grad_norm/{k}": v for k, v in previous.items()},
            epoch=3,
        )
    assert [w.message for w in caught] == found
    return found


def test_rules_vanish_explode_growth_nonfinite():
    rules = train.GradHealth()
    assert _check(rules, {"a": 0.5, "b": 0.05, "c": 1e-3}) == []  # healthy: within 1e3
    (w,) = _check(rules, {"a": 0.5, "b": 4e-4, "c": 1e-7})
    assert (w.rule, w.epoch, w.layers) == ("vanish", 3, {"b": 4e-4, "c": 1e-7})
    assert str(w) == (
        "GradHealth.check: epoch 3: the gradient norm vanished (below 0.001 × the largest, 0.5 "
        "in 'a', or below 1e-12) in 2 of 3 layers: 'b' 0.0004, 'c' 1e-07; these layers barely "
        "learn: use ReLU with He init, residual connections or batch norm (docs/training.md, "
        "Gradient health)"
    )
    (dead,) = _check(rules, {"a": 0.0, "b": 0.0})  # every layer dead: the floor catches it
    assert dead.layers == {"a": 0.0, "b": 0.0}
    assert _check(train.GradHealth(vanish=None, floor=None), {"a": 0.5, "b": 0.0}) == []

    nonfinite, vanish, explode, growth = _check(
        rules, {"a": math.nan, "b": 2e3, "c": 1e-9, "d": 50.0}, previous={"b": 1e3, "d": 0.4}
    )
    assert nonfinite.rule == "nonfinite" and list(nonfinite.layers) == ["a"]
    assert math.isnan(nonfinite.layers["a"])
    assert (vanish.rule, list(vanish.layers)) == ("vanish", ["c"])  # 1e-9 < 1e-3 × 2e3
    assert (explode.rule, explode.layers) == ("explode", {"b": 2e3})
    assert (growth.rule, growth.layers) == ("growth", {"d": 50.0})  # 125×; b only doubled
    assert "'d' 50 (from 0.4)" in str(growth)
    assert _check(rules, {"d": 50.0}, previous={"d": 0.0}) == []  # from 0: no growth factor


def test_rules_list_at_most_six_layers_in_the_message():
    (w,) = _check(train.GradHealth(), {f"dense{i}": 1e-9 * i for i in range(1, 10)} | {"top": 1.0})
    assert len(w.layers) == 9
    assert str(w).count("'dense") == 6 and " and 3 more;" in str(w)
    assert list(w.layers)[:3] == [
        "dense1",
        "dense2",
        "dense3",
    ]  # natural order, not dense1, dense10


def test_rules_are_checked_when_built():
    with pytest.raises(ValueError, match=r"GradHealth: vanish must be a finite number in \(0, 1\)"):
        train.GradHealth(vanish=1.5)
    with pytest.raises(
        ValueError, match=r"GradHealth: growth must be a finite number in \(1, inf\)"
    ):
        train.GradHealth(growth=1)
    with pytest.raises(
        ValueError, match=r"GradHealth: floor must be a finite number in \[0, inf\)"
    ):
        train.GradHealth(floor=-1.0)
    assert train.GradHealth(explode=None, growth=None).explode is None


# --- fit --------------------------------------------------------------------------------------


def _fit(toy, params=None, loss=None, optimizer=None, **options):
    defaults = {"epochs": 2, "batch_size": 16, "key": jax.random.key(0), "progress": False}
    return train.fit(
        loss or toy.loss_fn,
        toy.params() if params is None else params,
        optimizer or optim.sgd(0.1),
        toy.data(16),
        **(defaults | options),
    )


def test_fit_history_equals_the_norms_recomputed(toy):
    # One step per epoch (16 examples, batches of 16): epoch e's means are step e's values.
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.GradHealthWarning)  # a healthy model: silent
        result = _fit(toy, grad_health=True)
    h = result.history
    params = toy.params()
    batch = jax.tree.map(jnp.asarray, toy.data(16))
    for epoch in range(2):
        grads = _grad(toy.loss_fn)(params, batch)
        new_params = optim.apply_updates(params, jax.tree.map(lambda g: -0.1 * g, grads))
        updates = jax.tree.map(jnp.subtract, new_params, params)
        for k, v in _by_hand(grads, updates, new_params).items():
            np.testing.assert_allclose(h[k][epoch], v, rtol=1e-4, err_msg=f"{k}, epoch {epoch}")
        params = new_params
    assert len(h["grad_norm/dense1"]) == len(h["epoch"]) == 2
    assert "grad_norm/dense1" not in _fit(toy, epochs=1).history  # off by default


def test_fit_warns_naming_the_layer_that_vanishes_or_explodes(toy):
    params = toy.params()
    params["dense2"]["W"] = params["dense2"]["W"] * 1e-5  # dense1's gradient goes through it
    with pytest.warns(
        train.GradHealthWarning,
        match=r"fit: epoch 1: the gradient norm vanished \(below 0.001 × the largest, [0-9.]+ in "
        r"'dense2', or below 1e-12\) in 1 of 2 layers: 'dense1' [0-9.e-]+; ",
    ) as caught:
        result = _fit(toy, params, optimizer=optim.sgd(0.0), epochs=1, grad_health=True)
    (w,) = [w.message for w in caught]
    assert w.layers == {"dense1": result.history["grad_norm/dense1"][0]}

    def scaled(params, batch):
        return 1e5 * toy.loss_fn(params, batch)

    with pytest.warns(
        train.GradHealthWarning,
        match=r"fit: epoch 1: the gradient norm exploded \(above 10\) in 2 of 2 layers: "
        r"'dense1' [0-9.e+]+, 'dense2' [0-9.e+]+; lower the learning rate or clip gradients",
    ):
        _fit(toy, loss=scaled, optimizer=optim.sgd(0.0), epochs=1, scan=True,
             grad_health=train.GradHealth(explode=10.0))  # fmt: skip


def test_a_nan_gradient_is_named_before_fit_stops(toy):
    def nan_gradient(params, batch):  # finite loss; d/db sqrt(Σb²) at b = 0 is NaN
        b = params["dense1"]["b"]
        return toy.loss_fn(params, batch) + 0.0 * jnp.sqrt(jnp.sum(b * b))

    nan_first = r"fit: epoch 1: the gradient norm is not finite in 1 of 2 layers: 'dense1' nan"
    with (
        pytest.raises(
            FloatingPointError, match=r"parameters hold NaN or inf in params\['dense1'\]"
        ),
        pytest.warns(train.GradHealthWarning, match=nan_first),
    ):
        _fit(toy, loss=nan_gradient, epochs=1, grad_health=True)
    kept_out = optim.chain(optim.zero_nans(), optim.sgd(0.1))  # the parameters stay finite
    with (
        pytest.raises(
            FloatingPointError,
            match=r"fit: grad_norm/dense1 is nan after epoch 1 although the training loss and the "
            r"parameters are finite",
        ),
        pytest.warns(train.GradHealthWarning, match=nan_first),
    ):
        _fit(toy, loss=nan_gradient, optimizer=kept_out, epochs=1, grad_health=True)


def test_fit_checks_the_option(toy):
    with pytest.raises(TypeError, match=r"fit: grad_health must be True, False or a GradHealth"):
        _fit(toy, grad_health="on")


def test_progress_leaves_the_per_layer_values_to_the_history(capsys):
    report = Progress(True, 2, 1, interactive=False)
    report.end_epoch(
        {"epoch": 1, "loss": 0.5, "grad_norm/dense1": 0.1, "update_ratio/dense1": 1e-3, "time": 0.1}
    )
    err = capsys.readouterr().err
    assert "loss 0.5" in err and "grad_norm" not in err and "update_ratio" not in err


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((None,), {}, TypeError, r"metrics must be a dict of an epoch's metrics"),  # AttributeError
        (({"grad_norm/a": 1.0}, 3), {}, TypeError, r"previous must be a dict .* or None, got 3"),
        (({"grad_norm/a": "x"},), {}, ValueError, r"'grad_norm/a' must be a number .*'x'"),
        (({"grad_norm/a": jnp.ones(2)},), {}, ValueError, r"'grad_norm/a' must be a number"),
        (({"grad_norm/a": 1.0},), {"epoch": "a"}, ValueError, r"epoch must be a non-negative"),
    ],
)
def test_check_refuses_what_is_not_an_epochs_metrics(args, kwargs, error, match):
    with pytest.raises(error, match=rf"^GradHealth\.check: {match}"):
        train.GradHealth().check(*args, **kwargs)
