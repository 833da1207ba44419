"""fundl.train.fit: the loop end to end — history, weighting, early stopping, checkpoints,
resume, non-finite values, progress — against hand-computed expectations."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import data, optim, train
from fundl import losses as fundl_losses
from fundl.checkpoint import CheckpointManager

# These tests hold two computations of the same float32 values to each other (fit's epoch means
# and the loss of the whole data, scan and per-step fits, a resumed and a straight run): they run
# with full-float32 matmuls on every backend (a GPU's default TF32 rounds a batched and an
# unbatched product differently; see tests/conftest.py).
pytestmark = pytest.mark.usefixtures("highest_precision")

# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def run(toy):
    """fit on the toy problem, with its defaults overridable."""

    def fit(loss=None, optimizer=None, train_data=None, **kwargs):
        options = dict(epochs=3, batch_size=8, key=jax.random.key(0), progress=False)
        options.update(kwargs)
        loss = loss or toy.loss_fn
        return train.fit(
            loss,
            toy.params(),
            optimizer or optim.adam(0.05),
            toy.data(40) if train_data is None else train_data,
            **options,
        )

    return fit


# --- what fit computes ----------------------------------------------------------------------


def test_fit_trains_and_records_history(toy, run):
    result = run(toy.loss_with_accuracy, has_aux=True, val_data=toy.data(20, seed=3), epochs=5)
    h = result.history
    assert h["epoch"] == [1, 2, 3, 4, 5]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "time"} <= set(h)
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] >= 0.8


def test_every_training_example_is_used_by_default_and_drop_last_drops(toy, run):
    # lr 0: the epoch loss is the mean of the examples the epoch visited.
    # 40 examples, batches of 16: 16, 16, 8 by default; 16, 16 with drop_last.
    full = run(optimizer=optim.sgd(0.0), epochs=1, batch_size=16)
    everything = toy.loss_fn(toy.params(), toy.data(40))
    np.testing.assert_allclose(full.history["loss"][0], everything, rtol=1e-5)
    dropped = run(optimizer=optim.sgd(0.0), epochs=1, batch_size=16, drop_last=True)
    order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(0), 0), 40))
    kept = jax.tree.map(lambda a: a[order[:32]], toy.data(40))
    np.testing.assert_allclose(
        dropped.history["loss"][0], toy.loss_fn(toy.params(), kept), rtol=1e-5
    )
    assert abs(dropped.history["loss"][0] - full.history["loss"][0]) > 1e-4


def test_validation_weights_its_partial_last_batch_by_size(toy, run):
    # 20 validation examples in batches of 8, 8, 4: the mean over examples, not batches.
    val = toy.data(20, seed=3)
    result = run(optimizer=optim.sgd(0.0), epochs=1, val_data=val, eval_batch_size=8)
    np.testing.assert_allclose(
        result.history["val_loss"][0], toy.loss_fn(toy.params(), val), rtol=1e-5
    )


def test_fit_does_not_touch_the_callers_params(toy):
    params = toy.params()
    train.fit(
        toy.loss_fn,
        params,
        optim.sgd(0.1),
        toy.data(16),
        epochs=1,
        batch_size=8,
        key=0,
        progress=False,
    )
    assert not any(x.is_deleted() for x in jax.tree.leaves(params))


def test_an_optimizer_whose_init_is_not_hashable_works(toy, run):
    # fit compiles optimizer.init once per init function (a static jit argument); a bound
    # method of an unhashable object cannot be one, and is compiled per call instead
    class Unhashable:
        __hash__ = None

        def __init__(self):
            self.sgd = optim.sgd(0.1)

        def init(self, params):
            return self.sgd.init(params)

        def update(self, *args, **kwargs):
            return self.sgd.update(*args, **kwargs)

    holder, one_batch = Unhashable(), toy.data(8)
    unhashable = optim.GradientTransformation(holder.init, holder.update)
    a = run(optimizer=unhashable, train_data=one_batch, epochs=1)
    b = run(optimizer=optim.sgd(0.1), train_data=one_batch, epochs=1)
    chex.assert_trees_all_equal(a.params, b.params)


def test_scan_fit_equals_per_step_fit(run):
    a = run(epochs=2, key=jax.random.key(2), drop_last=True)
    b = run(epochs=2, key=jax.random.key(2), scan=True)
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


def test_an_int_seed_is_a_key(run):
    a, b = run(epochs=1, key=5), run(epochs=1, key=jax.random.key(5))
    chex.assert_trees_all_equal(a.params, b.params)


# --- early stopping and the best epoch ---------------------------------------------------


def test_early_stopping_stops_and_restores_the_best_epoch(toy, run):
    seen = []

    def record(epoch, logs, params):
        seen.append((epoch, logs["val_loss"], jax.tree.map(np.asarray, params)))

    def stop_run(restore_best, callbacks=()):
        # val_loss per epoch here: 0.42, 0.48, 0.012, ... — with min_delta 0.5 no later
        # epoch counts as an improvement on epoch 1, so patience 2 stops after epoch 3.
        stopper = train.EarlyStopping("val_loss", 2, 0.5, restore_best=restore_best)
        return run(
            optimizer=optim.sgd(3.0),
            epochs=30,
            val_data=toy.data(20, seed=3),
            early_stopping=stopper,
            callbacks=callbacks,
            drop_last=True,
        )

    result = stop_run(restore_best=True, callbacks=[record])
    assert result.stopped_early and [e for e, _, _ in seen] == [1, 2, 3]
    assert result.best_epoch == 1
    assert seen[2][1] < seen[0][1]  # epoch 3 was lower, but not by min_delta
    chex.assert_trees_all_close(jax.tree.map(np.asarray, result.params), seen[0][2])
    without_restore = stop_run(restore_best=False)
    chex.assert_trees_all_close(jax.tree.map(np.asarray, without_restore.params), seen[2][2])


def test_a_tie_is_not_an_improvement(toy, run):
    # lr 0: every epoch has exactly the same validation loss (same batches, same order).
    # Epoch 1 is the best; epochs 2 and 3 tie with it, so patience 2 stops after epoch 3
    # and the best stays epoch 1.
    stopper = train.EarlyStopping("val_loss", patience=2)
    result = run(
        optimizer=optim.sgd(0.0), epochs=10, early_stopping=stopper, val_data=toy.data(20, seed=3)
    )
    assert len(set(result.history["val_loss"])) == 1
    assert result.history["epoch"] == [1, 2, 3] and result.stopped_early
    assert result.best_epoch == 1


def test_callback_can_stop_and_keep_the_params_it_gets(toy, run):
    kept = []

    def keep_and_stop(epoch, logs, params):
        kept.append(params)  # fit's next step donates its own buffers, not these
        return epoch == 2

    result = run(epochs=10, callbacks=[keep_and_stop])
    assert result.history["epoch"] == [1, 2] and result.stopped_early
    first, last = jax.tree.map(np.asarray, kept)  # raises if a buffer was deleted
    chex.assert_trees_all_equal(last, jax.tree.map(np.asarray, result.params))
    assert not np.array_equal(first["dense1"]["W"], last["dense1"]["W"])


# --- non-finite values are never silent --------------------------------------------------


def test_nan_or_inf_in_the_data_is_refused_before_training(toy, run):
    bad = toy.data(40)
    bad["x"][13, 1] = np.nan
    with pytest.raises(ValueError, match=r"train_data.*\['x'\].*example 13"):
        run(train_data=bad)
    with pytest.raises(ValueError, match=r"val_data.*\['x'\]"):
        run(val_data={"x": np.full((4, 3), np.inf, np.float32), "y": np.zeros(4, np.int32)})


def test_a_nan_loss_stops_with_the_step(toy, run):
    def sqrt_loss(params, batch):  # finite inputs; NaN where x0 < -10 (example 13 only)
        return toy.loss_fn(params, batch) + jnp.sum(jnp.sqrt(batch["x"][:, 0] + 10.0))

    d = toy.data(40)
    d["x"][13, 0] = -100.0
    key = jax.random.key(0)
    position = next(
        i for i, b in enumerate(data.batches(d, 8, key=key, epoch=0)) if (b["x"][:, 0] < -10).any()
    )
    with pytest.raises(
        FloatingPointError,
        match=rf"fit: the loss became nan at step {position + 1} \(epoch 1, batch {position + 1}\)",
    ):
        run(sqrt_loss, optim.sgd(0.1), train_data=d, key=key)


def test_parameters_that_become_nan_with_a_finite_loss_are_caught(toy, run):
    def kinked(params, batch):  # value sqrt(0) = 0; gradient sqrt'(0)·(1 − 1) = inf·0 = NaN
        w = params["dense1"]["W"][0, 0]
        return toy.loss_fn(params, batch) + jnp.sqrt(jnp.abs(w - w))

    with pytest.raises(
        FloatingPointError,
        match=r"fit: after epoch 1 the parameters hold NaN or inf in params\['dense1'\]\['W'\]",
    ):
        run(kinked, optim.sgd(0.1), epochs=2, batch_size=40)


def test_a_model_state_that_becomes_nan_is_caught(toy, run):
    def overflowing(params, batch, *, state, key, train):  # a running statistic that overflows
        return toy.loss_fn(params, batch), {}, {"count": state["count"] + 1, "m": state["m"] * 1e30}

    state = {"count": jnp.zeros((), jnp.int32), "m": jnp.ones(3)}
    with pytest.raises(
        FloatingPointError,
        match=r"fit: after epoch 1 the model state hold NaN or inf in model_state\['m'\]",
    ):
        run(overflowing, optim.sgd(0.1), epochs=2, model_state=state)


def test_a_nan_validation_metric_is_caught_even_with_checkpoints(toy, run, tmp_path):
    def nan_accuracy(params, batch):
        return {"loss": toy.loss_fn(params, batch), "accuracy": jnp.float32(jnp.nan)}

    with pytest.raises(FloatingPointError, match=r"fit: val_accuracy is nan after epoch 1"):
        run(
            val_data=toy.data(20, seed=3),
            eval_fn=nan_accuracy,
            checkpoints=CheckpointManager(tmp_path, monitor="val_loss"),
        )


# --- checkpoints and resume ---------------------------------------------------------------


def test_resume_is_bit_identical(toy, run, tmp_path):
    common = dict(batch_size=8, key=jax.random.key(4), val_data=toy.data(20, seed=3))
    straight = run(epochs=4, checkpoints=CheckpointManager(tmp_path / "a"), **common)
    run(epochs=2, checkpoints=CheckpointManager(tmp_path / "b"), **common)
    resumed = run(epochs=4, checkpoints=CheckpointManager(tmp_path / "b"), resume=True, **common)
    chex.assert_trees_all_equal(straight.params, resumed.params)
    chex.assert_trees_all_equal(straight.opt_state, resumed.opt_state)
    assert straight.history["loss"] == resumed.history["loss"]


def test_resuming_a_run_that_stopped_trains_no_further(toy, run, tmp_path):
    # A job pre-empted after its last checkpoint and started again must not train on.
    stopper = train.EarlyStopping("val_loss", patience=2)
    common = dict(optimizer=optim.sgd(0.0), epochs=10, early_stopping=stopper)
    common.update(val_data=toy.data(20, seed=3))
    first = run(checkpoints=CheckpointManager(tmp_path / "a"), **common)
    again = run(checkpoints=CheckpointManager(tmp_path / "a"), resume=True, **common)
    assert first.history["epoch"] == again.history["epoch"] == [1, 2, 3]
    assert again.stopped_early and again.best_epoch == first.best_epoch == 1
    chex.assert_trees_all_equal(first.params, again.params)
    assert CheckpointManager(tmp_path / "a").latest_step() == 3 * 5
    # a callback's stop is recorded in the checkpoint too
    stop_at_2 = [lambda epoch, logs, params: epoch == 2]
    run(epochs=10, checkpoints=CheckpointManager(tmp_path / "b"), callbacks=stop_at_2)
    again = run(epochs=10, checkpoints=CheckpointManager(tmp_path / "b"), resume=True)
    assert again.history["epoch"] == [1, 2] and again.stopped_early


def test_resume_refuses_another_batch_size_and_a_fresh_run_an_occupied_directory(
    toy, run, tmp_path
):
    manager = CheckpointManager(tmp_path)
    run(epochs=2, batch_size=8, checkpoints=manager)  # 40 examples: 5 steps an epoch
    with pytest.raises(
        ValueError, match=r"fit: cannot resume .*made 5 steps an epoch and this call makes 10"
    ):
        run(epochs=3, batch_size=4, checkpoints=manager, resume=True)
    with pytest.raises(ValueError, match=r"fit: .* already holds checkpoints \(steps \[5, 10\]\)"):
        run(epochs=1, checkpoints=manager)


def test_checkpoints_keep_latest_and_best_and_give_back_the_params(toy, run, tmp_path):
    from fundl.checkpoint import restore_params

    manager = CheckpointManager(tmp_path, keep_last=1, monitor="val_loss")
    result = run(epochs=4, val_data=toy.data(20, seed=3), checkpoints=manager)
    assert manager.latest_step() == 4 * 5
    best = manager.best_step()
    assert (
        best in manager.steps()
        and best == result.history["val_loss"].index(min(result.history["val_loss"])) * 5 + 5
    )
    latest = restore_params(tmp_path, which="latest")
    chex.assert_trees_all_equal(latest, result.params)


def test_resume_falls_back_from_a_corrupt_newest_checkpoint(toy, run, tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    run(epochs=2, checkpoints=manager)
    newest = manager.path(manager.latest_step())
    raw = bytearray(newest.read_bytes())
    raw[-3] ^= 0xFF  # flip a data byte: the checksum no longer matches
    newest.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=str(newest.name)):
        resumed = run(epochs=3, checkpoints=manager, resume=True)
    assert resumed.history["epoch"] == [1, 2, 3]  # epoch 1 restored, epochs 2 and 3 run


def test_resume_from_a_checkpoint_fit_did_not_write_says_so(toy, run, tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(7, {"params": toy.params()})
    with pytest.raises(
        ValueError, match=r"fit: cannot resume from .*step_00000007.* not written by fit"
    ):
        run(checkpoints=manager, resume=True)


# --- progress ---------------------------------------------------------------------------------


def test_progress_bar_in_a_terminal(run, capsys, monkeypatch):
    monkeypatch.setattr("fundl.train.progress._interactive", lambda: True)
    run(epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss=" in err


def test_progress_in_a_log_file_is_one_plain_line_per_epoch(run, capsys, monkeypatch):
    monkeypatch.setattr("fundl.train.progress._interactive", lambda: False)
    run(epochs=3, progress=True)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "\r" not in err and len(lines) == 3
    assert lines[0].startswith("epoch 1/3  loss ") and "eta" in lines[0]
    assert lines[2].startswith("epoch 3/3") and "eta" not in lines[2]


# --- bad input ---------------------------------------------------------------------------


def test_fit_errors(toy, run):
    with pytest.raises(ValueError, match=r"fit: batch_size must be a positive integer, got 0"):
        run(batch_size=0)
    with pytest.raises(
        ValueError,
        match=r"fit: batch_size 64 is larger than the 40 training examples with drop_last",
    ):
        run(batch_size=64, drop_last=True)
    with pytest.raises(ValueError, match=r"leaves disagree on the number of examples"):
        run(train_data={"x": np.ones((4, 3)), "y": np.ones(3, np.int32)})
    with pytest.raises(ValueError, match=r"fit: cannot monitor 'val_accuracy'"):
        run(early_stopping=train.EarlyStopping("val_accuracy"), val_data=toy.data(8, seed=3))
    with pytest.raises(ValueError, match=r"fit: resume=True needs checkpoints=CheckpointManager"):
        run(resume=True)
    with pytest.raises(
        TypeError, match=r"fit: checkpoints must be a fundl.checkpoint.CheckpointManager"
    ):
        run(checkpoints="runs/x")
    with pytest.raises(ValueError, match=r"fit: drop_last must be True or False, got 1"):
        run(drop_last=1)
    bad_labels = toy.data(40)
    bad_labels["y"] = bad_labels["y"].astype(np.float32)  # float labels of the wrong shape
    with pytest.raises(
        ValueError,
        match=r"softmax_cross_entropy: one-hot or probability targets must have the scores' "
        r"shape \(8, 2\), got \(8,\)",
    ):
        run(train_data=bad_labels)
    with pytest.raises(
        ValueError, match=r"EarlyStopping: patience must be a positive integer, got 0"
    ):
        train.EarlyStopping(patience=0)
    with pytest.raises(
        ValueError, match=r"EarlyStopping: mode must be one of 'min', 'max'; got 'best'"
    ):
        train.EarlyStopping(mode="best")
    with pytest.raises(
        TypeError, match=r"fit: optimizer must be a fundl.optim GradientTransformation"
    ):
        run(optimizer="adam")
    with pytest.raises(
        TypeError, match=r"fit: loss_fn returned a tuple of 2; .* pass has_aux=True"
    ):
        run(toy.loss_with_accuracy)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        # each failed only after an epoch of training, with Python's or JAX's own message
        (
            {"callbacks": lambda e, logs, p: None},
            TypeError,
            r"callbacks must be a list of functions, got the function .*; pass callbacks=\[fn\]",
        ),
        (
            {"callbacks": [lambda epoch: None]},
            TypeError,
            r"callbacks\[0\] .* cannot be called as callback\(epoch, logs, params\)",
        ),
        (
            {"val_data": "tuple"},
            ValueError,
            r"val_data must have the structure of train_data .*pass eval_fn=",
        ),
        (
            {"early_stopping": train.EarlyStopping("val_loss")},
            ValueError,
            r"early_stopping monitors 'val_loss', a validation metric, but no val_data",
        ),
        ({"eval_fn": 3, "val_data": "same"}, TypeError, r"eval_fn must be a function"),
    ],
)
def test_fit_refuses_bad_arguments_before_training(toy, run, kwargs, error, match):
    data = toy.data(8, seed=3)
    val = {
        "tuple": (data["x"], data["y"]),
        "same": data,
    }
    if "val_data" in kwargs:
        kwargs = {**kwargs, "val_data": val[kwargs["val_data"]]}
    with pytest.raises(error, match=rf"^fit: {match}"):
        run(**kwargs)
    with pytest.raises(TypeError, match=r"^fit: loss_fn must be a function .*, got 3"):
        run(3)


def test_no_warning_when_fit_validates_every_epoch(toy, run):
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.RecompilationWarning)
        run(epochs=2, val_data=toy.data(20, seed=3), eval_batch_size=8)


# --- a model with state and randomness -------------------------------------------------------


def _stateful_model():
    from fundl.nn import BatchNorm, Dense, Dropout, Sequential

    return Sequential([Dense(8), BatchNorm(), "relu", Dropout(0.2), Dense(2)], input_shape=(3,))


def _stateful_loss(model):
    def loss_fn(params, batch, *, state, key, train):
        logits, state = model.apply_with_state(params, state, batch["x"], key=key, train=train)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32))
        return fundl_losses.softmax_cross_entropy(logits, batch["y"]), {"accuracy": accuracy}, state

    return loss_fn


def _fit_stateful(toy, **kwargs):
    model = _stateful_model()
    params, state = model.init_with_state(1)
    options = dict(
        epochs=4, batch_size=8, key=jax.random.key(3), progress=False, val_data=toy.data(20, seed=3)
    )
    options.update(kwargs)
    return train.fit(
        _stateful_loss(model), params, optim.adam(0.02), toy.data(40), model_state=state, **options
    )


def test_fit_threads_the_model_state_and_validates_in_evaluation_mode(toy):
    result = _fit_stateful(toy)
    assert result.history["val_accuracy"][-1] >= 0.8
    assert not np.allclose(result.model_state["batch_norm1"]["mean"], 0)  # statistics learned
    model = _stateful_model()
    evaluate = train.make_eval_step(_stateful_loss(model), stateful=True)
    val = jax.tree.map(jnp.asarray, toy.data(20, seed=3))
    again = evaluate(result.params, result.model_state, val)  # deterministic: no key
    np.testing.assert_allclose(again["accuracy"], result.history["val_accuracy"][-1], rtol=1e-6)


def test_resume_with_dropout_and_batch_norm_is_bit_identical(toy, tmp_path):
    straight = _fit_stateful(toy, checkpoints=CheckpointManager(tmp_path / "a"))
    _fit_stateful(toy, epochs=2, checkpoints=CheckpointManager(tmp_path / "b"))
    # another key: the checkpoint's key orders the data and draws the dropout masks
    with pytest.warns(UserWarning, match=r"fit: the key passed differs .* checkpoint's key"):
        resumed = _fit_stateful(
            toy, checkpoints=CheckpointManager(tmp_path / "b"), resume=True, key=jax.random.key(9)
        )
    chex.assert_trees_all_equal(straight.params, resumed.params)
    chex.assert_trees_all_equal(straight.model_state, resumed.model_state)
    assert straight.history["loss"] == resumed.history["loss"]
    saved = CheckpointManager(tmp_path / "b").restore()
    assert set(saved) == {"params", "opt_state", "model_state", "key", "step", "epoch", "position"}


def test_scan_fit_with_dropout_equals_per_step_fit(toy):
    a = _fit_stateful(toy, epochs=2, drop_last=True)
    b = _fit_stateful(toy, epochs=2, scan=True)
    chex.assert_trees_all_close(a.model_state, b.model_state, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


def test_restore_best_returns_the_best_epochs_state_too(toy):
    seen = []
    model = _stateful_model()
    params, state = model.init_with_state(1)

    def record(epoch, logs, params):
        seen.append(logs["val_loss"])

    result = train.fit(
        _stateful_loss(model),
        params,
        optim.sgd(5.0),
        toy.data(40),
        epochs=6,
        batch_size=8,
        key=0,
        progress=False,
        val_data=toy.data(20, seed=3),
        model_state=state,
        early_stopping=train.EarlyStopping("val_loss", patience=10),
        callbacks=[record],
    )
    assert result.best_epoch == int(np.argmin(seen)) + 1
    evaluate = train.make_eval_step(_stateful_loss(model), stateful=True)
    val = jax.tree.map(jnp.asarray, toy.data(20, seed=3))
    np.testing.assert_allclose(
        evaluate(result.params, result.model_state, val)["loss"], min(seen), rtol=1e-5
    )


def test_model_state_errors(toy):
    with pytest.raises(ValueError, match=r"fit: has_aux does not apply with model_state"):
        _fit_stateful(toy, has_aux=True)
