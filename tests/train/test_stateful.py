"""The stateful training path: a model with batch norm and dropout, its state carried and
a key per step — one step, k steps in a scan, an epoch — against the steps written out."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import data, losses, optim, train
from fundl.nn import BatchNorm, Dense, Dropout, Sequential

# These tests hold two computations of the same float32 values to each other (the stateful steps
# and the same updates computed another way): they run with full-float32 matmuls on every backend
# (a GPU's default TF32 rounds a batched and an unbatched product differently; see
# tests/conftest.py).
pytestmark = pytest.mark.usefixtures("highest_precision")

MODEL = Sequential([Dense(8), BatchNorm(), "relu", Dropout(0.3), Dense(2)], input_shape=(3,))


def loss_fn(params, batch, *, state, key, train):
    logits, state = MODEL.apply_with_state(params, state, batch["x"], key=key, train=train)
    return losses.softmax_cross_entropy(logits, batch["y"]), {}, state


def _start(opt, seed=0):
    params, state = MODEL.init_with_state(seed)
    return train.TrainState.create(params, opt, model_state=state, key=11)


def _by_hand(opt, ts, batch):
    """The update written out: the step's key is fold_in(key, step)."""
    key = jax.random.fold_in(ts.key, ts.step)

    def loss(params):
        value, _, state = loss_fn(params, batch, state=ts.model_state, key=key, train=True)
        return value, state

    (_, state), grads = jax.value_and_grad(loss, has_aux=True)(ts.params)
    updates, opt_state = opt.update(grads, ts.opt_state, ts.params)
    return train.TrainState(
        optim.apply_updates(ts.params, updates), opt_state, state, ts.key, ts.step + 1
    )


def _comparable(ts):
    """A TrainState chex can compare: the key as its raw data."""
    return ts._replace(key=jax.random.key_data(ts.key))


def _assert_same(a, b):
    chex.assert_trees_all_close(_comparable(a), _comparable(b), rtol=1e-5, atol=1e-6)


def _batches(toy, n, k=4):
    return [jax.tree.map(jnp.asarray, toy.data(n, seed=s)) for s in range(k)]


# Trajectories are compared with SGD: the bias of a layer feeding batch norm has a
# gradient that is 0 in exact arithmetic (the norm removes the mean), ~1e-9 in float32,
# and Adam would turn that rounding noise into full-size steps that jit and eager round
# differently.
SGD = optim.sgd(0.1, 0.9)


def test_a_stateful_step_equals_the_update_written_out(toy):
    opt = SGD
    step = train.make_train_step(loss_fn, opt, stateful=True)
    ts, expected = _start(opt), _start(opt)
    for batch in _batches(toy, 8, 3):
        ts, metrics = step(ts, batch)
        expected = _by_hand(opt, expected, batch)
    _assert_same(ts, expected)
    assert int(ts.step) == 3 and set(metrics) == {"loss"}
    assert not np.allclose(ts.model_state["batch_norm1"]["mean"], 0)  # the statistics moved


def test_scan_fused_steps_with_dropout_equal_the_steps_one_by_one(toy):
    opt = optim.sgd(0.1, 0.9)
    batches = _batches(toy, 8)
    step = train.make_train_step(loss_fn, opt, stateful=True, donate=False)
    one_by_one = _start(opt)
    losses_each = []
    for batch in batches:
        one_by_one, m = step(one_by_one, batch)
        losses_each.append(float(m["loss"]))
    scan = train.make_scan_steps(loss_fn, opt, stateful=True)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    fused, m = scan(_start(opt), stacked)
    _assert_same(fused, one_by_one)
    np.testing.assert_allclose(m["loss"], losses_each, rtol=1e-5)


def test_no_two_steps_share_a_key_inside_a_scan(toy):
    def fingerprinted(params, batch, *, state, key, train):
        value, _, state = loss_fn(params, batch, state=state, key=key, train=train)
        return value, {"draw": jax.random.uniform(key, ())}, state  # a draw from the step's key

    scan = train.make_scan_steps(fingerprinted, SGD, stateful=True)
    batches = jax.tree.map(lambda *xs: jnp.stack(xs), *_batches(toy, 8))
    _, m = scan(_start(SGD), batches)
    expected = [jax.random.uniform(jax.random.fold_in(jax.random.key(11), t), ()) for t in range(4)]
    np.testing.assert_array_equal(m["draw"], expected)  # step t's key is fold_in(key, t)
    assert len(set(np.asarray(m["draw"]).tolist())) == 4


def test_a_whole_epoch_on_device_equals_the_batcher_loop(toy):
    opt = SGD
    d, key = toy.data(40), jax.random.key(5)
    step = train.make_train_step(loss_fn, opt, stateful=True)
    ts = _start(opt)
    for batch in data.batches(d, 16, key=key, epoch=2, drop_last=True):
        ts, _ = step(ts, jax.tree.map(jnp.asarray, batch))
    epoch = train.make_epoch(loss_fn, opt, 16, stateful=True)
    fused, m = epoch(_start(opt), jax.device_put(d), key, 2)
    _assert_same(fused, ts)
    chex.assert_shape(m["loss"], (2,))


def test_eval_is_deterministic_and_leaves_the_state(toy):
    opt = optim.adam(0.01)
    ts, _ = train.make_train_step(loss_fn, opt, stateful=True)(_start(opt), _batches(toy, 8, 1)[0])
    evaluate = train.make_eval_step(loss_fn, stateful=True)
    batch = jax.tree.map(jnp.asarray, toy.data(20, seed=9))
    a = evaluate(ts.params, ts.model_state, batch)
    b = evaluate(ts.params, ts.model_state, batch)
    assert set(a) == {"loss"} and float(a["loss"]) == float(b["loss"])


def test_an_ensemble_of_stateful_models(toy):
    opt = SGD
    states = [_start(opt, seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    step = train.make_train_step(loss_fn, opt, stateful=True, ensemble=True)
    batch = _batches(toy, 8, 1)[0]
    together, m = step(stacked, batch)
    chex.assert_shape(m["loss"], (3,))
    alone = train.make_train_step(loss_fn, opt, stateful=True)(states[1], batch)[0]
    _assert_same(jax.tree.map(lambda x: x[1], together), alone)


def test_stateful_errors(toy):
    opt = optim.sgd(0.1)
    batch = _batches(toy, 8, 1)[0]

    def two(params, batch, *, state, key, train):
        return loss_fn(params, batch, state=state, key=key, train=train)[0], state

    with pytest.raises(
        TypeError,
        match=r"make_train_step: with stateful=True, loss_fn\(params, batch, \*, state, key, "
        r"train\) must return \(loss, dict of metrics, new state\), got tuple of 2",
    ):
        train.make_train_step(two, opt, stateful=True)(_start(opt), batch)

    def grows(params, batch, *, state, key, train):
        return loss_fn(params, batch, state=state, key=key, train=train)[0], {}, {**state, "x": 1.0}

    with pytest.raises(
        ValueError, match=r"make_train_step: state and the new state differ in structure"
    ):
        train.make_train_step(grows, opt, stateful=True)(_start(opt), batch)
    with pytest.raises(
        ValueError, match=r"make_train_step: has_aux does not apply with stateful=True"
    ):
        train.make_train_step(loss_fn, opt, stateful=True, has_aux=True)
    params, _ = MODEL.init_with_state(0)
    with pytest.raises(TypeError, match=r"TrainState.create: optimizer must be a fundl.optim"):
        train.TrainState.create(params, "adam")
    with pytest.raises(
        TypeError, match=r"make_train_step: with stateful=True the step takes a TrainState"
    ):
        train.make_train_step(loss_fn, opt, stateful=True)(params, batch)


def test_stateful_builders_refuse_what_is_not_theirs(toy):
    opt = optim.sgd(0.1)
    batches = _batches(toy, 8, 2)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    params, _ = MODEL.init_with_state(0)
    d = jax.tree.map(jnp.asarray, toy.data(16))
    # Params where the TrainState goes, named by each builder before any scan or shuffle.
    for name, run in (
        (
            "make_scan_steps",
            lambda: train.make_scan_steps(loss_fn, opt, stateful=True)(params, stacked),
        ),
        ("make_epoch", lambda: train.make_epoch(loss_fn, opt, 8, stateful=True)(params, d, 0, 0)),
    ):
        with pytest.raises(
            TypeError,
            match=rf"{name}: with stateful=True the step takes a "
            r"TrainState \(TrainState.create\(.*got dict",
        ):
            run()

    def shadowing(params, batch, *, state, key, train):
        value, _, state = loss_fn(params, batch, state=state, key=key, train=train)
        return value + 1.0, {"loss": value}, state  # reports value, optimizes value + 1

    step = train.make_train_step(shadowing, opt, stateful=True, donate=False)
    with pytest.raises(
        ValueError,
        match=r"make_train_step: the loss function's metrics hold "
        r"a 'loss'.*rename the metric",
    ):
        step(_start(opt), batches[0])
    evaluate = train.make_eval_step(shadowing, stateful=True)
    with pytest.raises(ValueError, match=r"make_eval_step: the loss function's metrics hold"):
        evaluate(_start(opt).params, _start(opt).model_state, batches[0])
    with pytest.raises(
        TypeError,
        match=r"make_eval_step: got a TrainState where params are "
        r"expected; pass train_state.params, train_state.model_state",
    ):
        train.make_eval_step(loss_fn, stateful=True)(_start(opt), batches[0])
    # A TrainState of another optimizer (momentum for Adam).
    with pytest.raises(
        TypeError,
        match=r"make_train_step: the optimizer state does not have "
        r"the structure of optimizer.init\(params\)",
    ):
        train.make_train_step(loss_fn, optim.adam(0.1), stateful=True)(_start(SGD), batches[0])
