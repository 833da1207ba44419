"""fundl.train: compiled steps, scan and ensembles equal plain loops; fit end to end."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import data, losses, metrics, optim, train

MODEL = fundl.mlp([3, 8, 2], "tanh")


def _data(n=40, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    return {"x": np.array(x), "y": np.array(y)}


def loss_fn(params, batch):
    return losses.softmax_cross_entropy(MODEL.apply(params, batch["x"]), batch["y"])


def loss_with_accuracy(params, batch):
    logits = MODEL.apply(params, batch["x"])
    return losses.softmax_cross_entropy(logits, batch["y"]), {
        "accuracy": metrics.accuracy(logits, batch["y"])
    }


def _params(seed=1):
    return MODEL.init(jax.random.key(seed))


def _manual_step(opt, params, opt_state, batch):
    grads = jax.grad(loss_fn)(params, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optim.apply_updates(params, updates), opt_state


# --- compiled steps -------------------------------------------------------------------------


def test_train_step_equals_the_update_written_out():
    opt = optim.adam(0.01)
    step = train.make_train_step(loss_fn, opt)
    batch = jax.tree.map(jnp.asarray, _data(8))
    params, state = _params(), opt.init(_params())
    expected_params, expected_state = _manual_step(opt, params, state, batch)
    new_params, new_state, metrics_ = step(_params(), opt.init(_params()), batch)
    chex.assert_trees_all_close(new_params, expected_params, rtol=1e-6)
    chex.assert_trees_all_close(new_state, expected_state, rtol=1e-6)
    np.testing.assert_allclose(metrics_["loss"], loss_fn(params, batch), rtol=1e-6)


def test_params_and_opt_state_are_donated():
    opt = optim.sgd(0.1, 0.9)
    step = train.make_train_step(loss_fn, opt)
    params = _params()
    state = opt.init(params)
    step(params, state, jax.tree.map(jnp.asarray, _data(8)))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(params))
    kept = _params()
    train.make_train_step(loss_fn, opt, donate=False)(
        kept, opt.init(kept), jax.tree.map(jnp.asarray, _data(8))
    )
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(kept))


def test_aux_metrics_are_reported():
    step = train.make_train_step(loss_with_accuracy, optim.sgd(0.1), has_aux=True)
    batch = jax.tree.map(jnp.asarray, _data(8))
    _, _, m = step(_params(), optim.sgd(0.1).init(_params()), batch)
    assert set(m) == {"loss", "accuracy"}
    np.testing.assert_allclose(m["accuracy"], loss_with_accuracy(_params(), batch)[1]["accuracy"])


def test_no_retrace_across_epochs_and_the_partial_batch_is_expected():
    opt = optim.adam(0.01)
    step = train.make_train_step(loss_fn, opt)
    params, state = _params(), opt.init(_params())
    key = jax.random.key(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.RecompilationWarning)
        for epoch in range(3):
            for batch in data.batches(_data(40), 16, key=key, epoch=epoch):  # 16, 16, 8
                params, state, _ = step(params, state, batch)
    assert step.traces == 2  # the full batches, and once the final partial batch


def test_recompilation_warns_once_and_names_the_argument():
    def scaled_loss(params, batch, scale):
        return scale * loss_fn(params, batch)

    opt = optim.sgd(0.1)
    step = train.make_train_step(scaled_loss, opt)
    params, state = _params(), opt.init(_params())
    batch = jax.tree.map(jnp.asarray, _data(8))
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


def test_retrace_for_a_changed_batch_shape_names_the_leaf():
    opt = optim.sgd(0.1)
    step = train.make_train_step(loss_fn, opt)
    params, state = _params(), opt.init(_params())
    batch = jax.tree.map(jnp.asarray, _data(8))
    params, state, _ = step(params, state, batch)
    bigger = jax.tree.map(jnp.asarray, _data(12))
    with pytest.warns(
        train.RecompilationWarning,
        match=r"batch\['x'\] changed from float32\[8,3\] to float32\[12,3\]",
    ):
        step(params, state, bigger)


def test_scan_steps_equal_single_steps():
    opt = optim.adam(0.01)
    batches = [jax.tree.map(jnp.asarray, _data(8, seed=s)) for s in range(4)]
    params, state = _params(), opt.init(_params())
    for b in batches:
        params, state = _manual_step(opt, params, state, b)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    scan = train.make_scan_steps(loss_fn, opt)
    p2, s2, m = scan(_params(), opt.init(_params()), stacked)
    chex.assert_trees_all_close(p2, params, rtol=1e-5, atol=1e-6)
    chex.assert_shape(m["loss"], (4,))


def test_epoch_on_device_equals_the_batcher_loop():
    opt = optim.sgd(0.05, 0.9)
    d = _data(40)
    key = jax.random.key(7)
    params, state = _params(), opt.init(_params())
    for batch in data.batches(d, 16, key=key, epoch=3, drop_last=True):
        params, state = _manual_step(opt, params, state, jax.tree.map(jnp.asarray, batch))
    run = train.make_epoch(loss_fn, opt, 16)
    p2, _, m = run(_params(), opt.init(_params()), jax.device_put(d), key, 3)
    chex.assert_trees_all_close(p2, params, rtol=1e-5, atol=1e-6)
    chex.assert_shape(m["loss"], (2,))


def test_ensemble_of_seeds_equals_separate_runs():
    opt = optim.adam(0.01)
    n = 3
    stacked = train.init_ensemble(MODEL.init, jax.random.key(5), n)
    chex.assert_shape(stacked["dense1"]["W"], (n, 8, 3))
    batch = jax.tree.map(jnp.asarray, _data(8))
    step = train.make_train_step(loss_fn, opt, ensemble=True)
    state = jax.vmap(opt.init)(stacked)
    together, _, m = step(jax.tree.map(jnp.copy, stacked), state, batch)
    chex.assert_shape(m["loss"], (n,))
    for i, k in enumerate(jax.random.split(jax.random.key(5), n)):
        single = MODEL.init(k)
        alone, _ = _manual_step(opt, single, opt.init(single), batch)
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[i], together), alone, rtol=1e-5, atol=1e-6
        )


def test_ensemble_of_learning_rates_equals_separate_runs():
    rates = [0.001, 0.01, 0.1]
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=0.01)
    start = _params()
    params = jax.tree.map(lambda p: jnp.stack([p] * len(rates)), start)
    state = jax.vmap(lambda lr: optim.with_hyperparams(opt.init(start), learning_rate=lr))(
        jnp.array(rates)
    )
    step = train.make_train_step(loss_fn, opt, ensemble=True)
    batches = [jax.tree.map(jnp.asarray, _data(8, seed=s)) for s in range(3)]
    for b in batches:
        params, state, _ = step(params, state, b)
    assert step.traces == 1
    for i, lr in enumerate(rates):
        alone, alone_state = _params(), optim.adam(lr).init(_params())
        for b in batches:
            alone, alone_state = _manual_step(optim.adam(lr), alone, alone_state, b)
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[i], params), alone, rtol=1e-5, atol=1e-6
        )


def test_eval_step_accepts_the_three_return_forms():
    batch = jax.tree.map(jnp.asarray, _data(8))
    p = _params()
    assert set(train.make_eval_step(loss_fn)(p, batch)) == {"loss"}
    assert set(train.make_eval_step(loss_with_accuracy)(p, batch)) == {"loss", "accuracy"}
    assert set(train.make_eval_step(lambda p, b: {"acc": jnp.ones(())})(p, batch)) == {"acc"}


# --- fit --------------------------------------------------------------------------------------


def _fit(**kwargs):
    options = dict(epochs=3, batch_size=8, key=jax.random.key(0), progress=False)
    options.update(kwargs)
    return train.fit(
        loss_with_accuracy, _params(), optim.adam(0.05), _data(40), has_aux=True, **options
    )


def test_fit_trains_and_records_history():
    result = _fit(val_data=_data(20, seed=3), epochs=5)
    h = result.history
    assert h["epoch"] == [1, 2, 3, 4, 5]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "time"} <= set(h)
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] >= 0.8


def test_fit_epoch_metrics_weight_the_partial_batch_by_size():
    # drop_last=False: 40 examples in batches of 16, 16, 8; the epoch loss is the mean
    # over examples, so with a constant-loss "optimizer" (lr 0) it equals the full-data loss.
    result = train.fit(
        loss_fn,
        _params(),
        optim.sgd(0.0),
        _data(40),
        epochs=1,
        batch_size=16,
        key=jax.random.key(0),
        drop_last=False,
        progress=False,
    )
    np.testing.assert_allclose(result.history["loss"][0], loss_fn(_params(), _data(40)), rtol=1e-5)


def test_fit_does_not_touch_the_callers_params():
    params = _params()
    train.fit(
        loss_fn,
        params,
        optim.sgd(0.1),
        _data(16),
        epochs=1,
        batch_size=8,
        key=jax.random.key(0),
        progress=False,
    )
    assert not any(x.is_deleted() for x in jax.tree.leaves(params))


def test_scan_fit_equals_per_step_fit():
    a = train.fit(
        loss_fn,
        _params(),
        optim.adam(0.05),
        _data(40),
        epochs=2,
        batch_size=8,
        key=jax.random.key(2),
        progress=False,
    )
    b = train.fit(
        loss_fn,
        _params(),
        optim.adam(0.05),
        _data(40),
        epochs=2,
        batch_size=8,
        key=jax.random.key(2),
        progress=False,
        scan=True,
    )
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


def test_early_stopping_stops_and_restores_the_best_epoch():
    seen = []

    def record(epoch, logs, params):
        seen.append((epoch, logs["val_loss"], jax.tree.map(np.asarray, params)))

    def run(restore_best, callbacks=()):
        # val_loss per epoch here: 0.42, 0.48, 0.012, ... — with min_delta 0.5 no later
        # epoch counts as an improvement on epoch 1, so patience 2 stops after epoch 3.
        stopper = train.EarlyStopping("val_loss", 2, 0.5, restore_best=restore_best)
        options = dict(epochs=30, batch_size=8, key=jax.random.key(0), progress=False)
        return train.fit(
            loss_fn,
            _params(),
            optim.sgd(3.0),
            _data(40),
            val_data=_data(20, seed=3),
            early_stopping=stopper,
            callbacks=callbacks,
            **options,
        )

    result = run(restore_best=True, callbacks=[record])
    assert result.stopped_early and [e for e, _, _ in seen] == [1, 2, 3]
    assert result.best_epoch == 1
    assert seen[2][1] < seen[0][1]  # epoch 3 was lower, but not by min_delta
    chex.assert_trees_all_close(jax.tree.map(np.asarray, result.params), seen[0][2])
    without_restore = run(restore_best=False)
    chex.assert_trees_all_close(jax.tree.map(np.asarray, without_restore.params), seen[2][2])


def test_callback_can_stop():
    result = _fit(epochs=10, callbacks=[lambda epoch, logs, params: epoch == 2])
    assert result.history["epoch"] == [1, 2] and result.stopped_early


def test_nan_loss_stops_with_the_step():
    d = _data(40)
    d["x"][13] = np.nan  # example 13 poisons its batch
    key = jax.random.key(0)
    position = next(
        i
        for i, b in enumerate(data.batches(d, 8, key=key, epoch=0, drop_last=True))
        if np.isnan(b["x"]).any()
    )
    with pytest.raises(
        FloatingPointError,
        match=rf"fit: the loss became nan at step {position + 1} \(epoch 1, batch {position + 1}\)",
    ):
        train.fit(
            loss_fn, _params(), optim.sgd(0.1), d, epochs=2, batch_size=8, key=key, progress=False
        )


def test_resume_is_bit_identical(tmp_path):
    common = dict(batch_size=8, key=jax.random.key(4), val_data=_data(20, seed=3), progress=False)
    straight = train.fit(
        loss_fn,
        _params(),
        optim.adam(0.05),
        _data(40),
        epochs=4,
        checkpoint_dir=tmp_path / "a",
        **common,
    )
    train.fit(
        loss_fn,
        _params(),
        optim.adam(0.05),
        _data(40),
        epochs=2,
        checkpoint_dir=tmp_path / "b",
        **common,
    )
    resumed = train.fit(
        loss_fn,
        _params(),
        optim.adam(0.05),
        _data(40),
        epochs=4,
        checkpoint_dir=tmp_path / "b",
        resume=True,
        **common,
    )
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(straight.opt_state), jax.tree.leaves(resumed.opt_state)):
        np.testing.assert_array_equal(a, b)
    assert straight.history["loss"] == resumed.history["loss"]


def test_checkpoints_keep_latest_and_best(tmp_path):
    from fundl.checkpoint import CheckpointManager

    _fit(epochs=4, val_data=_data(20, seed=3), checkpoint_dir=tmp_path, keep_last=1)
    manager = CheckpointManager(tmp_path, keep_last=1, monitor="val_loss")
    assert manager.latest_step() == 4 * 5
    assert manager.best_step() in manager.steps()


def test_progress_bar_shows_epochs(capsys):
    _fit(epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss=" in err


def test_fit_errors():
    with pytest.raises(ValueError, match=r"fit: batch_size must be a positive integer, got 0"):
        _fit(batch_size=0)
    with pytest.raises(
        ValueError,
        match=r"fit: batch_size 64 is larger than the 40 training examples with drop_last",
    ):
        _fit(batch_size=64)
    with pytest.raises(ValueError, match=r"leaves disagree on the number of examples"):
        train.fit(
            loss_fn,
            _params(),
            optim.sgd(0.1),
            {"x": np.ones((4, 3)), "y": np.ones(3, np.int32)},
            epochs=1,
            batch_size=2,
            key=jax.random.key(0),
            progress=False,
        )
    with pytest.raises(ValueError, match=r"fit: cannot monitor 'val_accuracy'"):
        _fit(early_stopping=train.EarlyStopping("val_accuracy"))
    with pytest.raises(ValueError, match=r"fit: resume=True needs a checkpoint_dir"):
        _fit(resume=True)
    bad_labels = _data(40)
    bad_labels["y"] = bad_labels["y"].astype(np.float32)  # float labels of the wrong shape
    with pytest.raises(
        ValueError,
        match=r"softmax_cross_entropy: one-hot or probability targets must have the scores' shape \(8, 2\), got \(8,\)",
    ):
        train.fit(
            loss_fn,
            _params(),
            optim.sgd(0.1),
            bad_labels,
            epochs=1,
            batch_size=8,
            key=jax.random.key(0),
            progress=False,
        )
    with pytest.raises(
        ValueError, match=r"EarlyStopping: patience must be a positive integer, got 0"
    ):
        train.EarlyStopping(patience=0)
    with pytest.raises(
        TypeError, match=r"fit: optimizer must be a fundl.optim GradientTransformation"
    ):
        train.fit(
            loss_fn, _params(), "adam", _data(8), epochs=1, batch_size=4, key=jax.random.key(0)
        )
