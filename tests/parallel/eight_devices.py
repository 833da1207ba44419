"""The 8-device checks of tests/parallel/test_eight_devices.py, run in one subprocess.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before JAX starts, so
the checks run here and report to ``<out>/results.json``: ``{check: [ok, detail]}``.
Each compares a run on 8 devices with the same run on one device, on the same global
batch; float32 sums over the batch run in a different order on 8 devices, so values
agree to ``RTOL`` = 1e-5 relative (``ATOL`` = 1e-6), not bit for bit.
"""

import functools
import json
import os
import sys
import traceback

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

import fundl
from fundl import losses, optim, parallel, train
from fundl.checkpoint import CheckpointManager
from fundl.nn import BatchNorm, Dense, Sequential

RTOL, ATOL = 1e-5, 1e-6
OUT = sys.argv[1]
RESULTS = {}
MESH = parallel.data_mesh()
MLP = fundl.mlp([3, 8, 2], "tanh")
BN = Sequential([Dense(8), BatchNorm(), "relu", Dense(2)], input_shape=(3,))


def check(fn):
    try:
        detail = fn()
        RESULTS[fn.__name__] = [True, detail or ""]
    except Exception:  # noqa: BLE001 - reported to the test, which fails with it
        RESULTS[fn.__name__] = [False, traceback.format_exc()[-3000:]]
    return fn


def close(a, b):
    np.testing.assert_allclose(
        np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=RTOL, atol=ATOL
    )


def trees_close(a, b):
    a, b = parallel.host_copy(a), parallel.host_copy(b)
    a = jax.tree.map(
        lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, a
    )
    b = jax.tree.map(
        lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, b
    )
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(close, a, b)


def data(n, seed=0):
    x = np.asarray(jax.random.normal(jax.random.key(seed), (n, 3)))
    return {"x": x, "y": (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)}


def mlp_loss(params, batch):
    return losses.softmax_cross_entropy(MLP.apply(params, batch["x"]), batch["y"])


def bn_loss(params, batch, *, state, key, train):
    logits, state = BN.apply_with_state(params, state, batch["x"], key=key, train=train)
    return losses.softmax_cross_entropy(logits, batch["y"]), {}, state


BATCHES = [data(16, seed=s) for s in range(3)]


@functools.cache
def run_plain(mesh=None, shard=False):
    opt = optim.adam(0.05)
    step = train.make_train_step(mlp_loss, opt, mesh=mesh, shard_params=shard)
    params = MLP.init(jax.random.key(1))
    opt_state = opt.init(params)
    if mesh is not None:
        place = parallel.shard_params if shard else parallel.replicate
        params, opt_state = place(params, mesh), place(opt_state, mesh)
    for batch in BATCHES:
        if mesh is not None:
            batch = parallel.shard_batch(batch, mesh)
        first = params
        params, opt_state, metrics = step(params, opt_state, batch)
    return params, opt_state, metrics, step, first


@check
def mlp_step_8_equals_1():
    p1, s1, m1, _, _ = run_plain()
    p8, s8, m8, step, donated = run_plain(MESH)
    trees_close((p8, s8, m8), (p1, s1, m1))
    leaf = p8["dense1"]["W"]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8, leaf.sharding
    assert donated["dense1"]["W"].is_deleted(), "the params passed in were not donated"
    assert step.traces == 1, f"traced {step.traces} times"
    return "3 Adam steps, batch 16 over 8 devices"


@check
def fsdp_step_8_equals_1():
    p1, s1, _, _, _ = run_plain()
    p8, s8, _, step, _ = run_plain(MESH, shard=True)
    trees_close((p8, s8), (p1, s1))
    specs = {
        "W1": p8["dense1"]["W"].sharding.spec,  # (8, 3): split along its 8 rows
        "b1": p8["dense1"]["b"].sharding.spec,  # (8,)
        "W2": p8["dense2"]["W"].sharding.spec,  # (2, 8): split along its 8 columns
        "b2": p8["dense2"]["b"].sharding.spec,  # (2,): replicated
        "mu_W1": s8.mu["dense1"]["W"].sharding.spec if hasattr(s8, "mu") else None,
    }
    P = jax.sharding.PartitionSpec
    assert specs["W1"] == P("data"), specs
    assert specs["b1"] == P("data"), specs
    assert specs["W2"] == P(None, "data"), specs
    assert specs["b2"] == P(), specs
    opt_leaves = [x for x in jax.tree.leaves(s8) if x.shape == (8, 3)]
    assert opt_leaves and all(x.sharding.spec == P("data") for x in opt_leaves), "opt state"
    assert step.traces == 1, f"traced {step.traces} times"
    return str(specs)


def run_bn(mesh=None):
    opt = optim.sgd(0.1, 0.9)
    step = train.make_train_step(bn_loss, opt, stateful=True, mesh=mesh)
    params, state = BN.init_with_state(0)
    ts = train.TrainState.create(params, opt, model_state=state, key=3)
    if mesh is not None:
        ts = train.TrainState(*(parallel.replicate(x, mesh) for x in ts))
    for batch in BATCHES:
        if mesh is not None:
            batch = parallel.shard_batch(batch, mesh)
        ts, metrics = step(ts, batch)
    return ts, metrics


@check
def batchnorm_step_8_equals_1():
    ts1, m1 = run_bn()
    ts8, m8 = run_bn(MESH)
    trees_close((ts8, m8), (ts1, m1))
    return "3 SGD steps of Dense-BatchNorm-relu-Dense, running statistics included"


@check
def batchnorm_statistics_are_global():
    params, state = BN.init_with_state(0)
    x = BATCHES[0]["x"] * 3.0 + 1.0

    @jax.jit
    def stats(params, state, x):
        return BN.apply_with_state(params, state, x, train=True)

    out1, new1 = stats(params, state, x)
    rep = parallel.replicate((params, state), MESH)
    out8, new8 = stats(*rep, parallel.shard_batch(x, MESH))
    trees_close((out8, new8), (out1, new1))
    assert len(out8.sharding.device_set) == 8
    return "the batch mean and variance over 16 examples split 2 per device = one device's"


@check
def scan_steps_8_equals_1():
    opt = optim.sgd(0.1)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *BATCHES)
    outs = []
    for mesh in (None, MESH):
        run = train.make_scan_steps(mlp_loss, opt, mesh=mesh)
        params = MLP.init(jax.random.key(1))
        state = opt.init(params)
        if mesh is not None:
            params, state = parallel.replicate((params, state), mesh)
        outs.append(run(params, state, stacked))
    trees_close(outs[1], outs[0])


@functools.cache
def fit_one(scan=False):
    """The one-device fit the 8-device runs are compared with, run once."""
    return fit_run(scan=scan)


def fit_run(mesh=None, shard=False, directory=None, scan=False):
    return train.fit(
        mlp_loss,
        MLP.init(jax.random.key(1)),
        optim.adam(0.05),
        data(48),
        val_data=data(10, seed=5),
        eval_batch_size=8,
        epochs=2,
        batch_size=16,
        key=0,
        progress=False,
        scan=scan,
        mesh=mesh,
        shard_params=shard,
        checkpoints=None if directory is None else CheckpointManager(directory),
    )


def fit_same(a, b):
    trees_close((a.params, a.opt_state), (b.params, b.opt_state))
    assert a.history.keys() == b.history.keys()
    for k in a.history:
        if k != "time":
            close(a.history[k], b.history[k])


@check
def fit_8_equals_1():
    one = fit_one()
    eight = fit_run(MESH)
    fit_same(eight, one)
    assert len(eight.params["dense1"]["W"].sharding.device_set) == 8
    return f"val_loss {one.history['val_loss']} (validation batches 8 and 2)"


@check
def fit_fsdp_checkpoint_equals_1():
    one = fit_one()
    directory = os.path.join(OUT, "run")
    sharded = fit_run(MESH, shard=True, directory=directory)
    fit_same(sharded, one)
    np.savez(
        os.path.join(OUT, "params.npz"),
        **{
            f"{layer}/{name}": np.asarray(v)
            for layer, leaves in parallel.host_copy(sharded.params).items()
            for name, v in leaves.items()
        },
    )
    return directory


@check
def fit_scan_8_equals_1():
    fit_same(fit_run(MESH, scan=True), fit_one(scan=True))


def raises(fn, match):
    try:
        fn()
    except ValueError as e:
        assert match in str(e), f"{match!r} not in {str(e)!r}"
        return str(e)
    raise AssertionError("no ValueError")


def fit_on_mesh(n, batch_size):
    return train.fit(
        mlp_loss, MLP.init(0), optim.sgd(0.1), data(n), epochs=1, batch_size=batch_size, key=0,
        progress=False, mesh=MESH,
    )  # fmt: skip


@check
def replicate_copies_the_callers_array():
    # placed leaves must not share the caller's buffer: a donating step deletes them
    params = MLP.init(0)
    step = train.make_train_step(mlp_loss, optim.sgd(0.1), mesh=MESH)
    placed = parallel.replicate(params, MESH)
    step(placed, parallel.replicate(optim.sgd(0.1).init(placed), MESH), data(16))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(placed)), "the step did not donate"
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(params))
    close(params["dense1"]["W"], MLP.init(0)["dense1"]["W"])
    placed = parallel.replicate(params, MESH)
    again = parallel.replicate(placed, MESH)  # already in place: returned as it is
    assert all(a is b for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(placed)))


@check
def bad_inputs():
    step = train.make_train_step(mlp_loss, optim.sgd(0.1), mesh=MESH)
    params = parallel.replicate(MLP.init(0), MESH)
    state = parallel.replicate(optim.sgd(0.1).init(params), MESH)
    return [
        raises(lambda: parallel.shard_batch(np.zeros((12, 3)), MESH), "batch size 12"),
        raises(
            lambda: step(params, state, data(12)),
            "batch size 12 (batch['x']) does not divide by the 8 devices",
        ),
        raises(
            lambda: train.make_train_step(mlp_loss, optim.sgd(0.1), mesh=MESH, axis="model"),
            "no axis 'model'",
        ),
        raises(lambda: fit_on_mesh(48, 12), "batch_size 12 does not divide by the 8 devices"),
        raises(lambda: fit_on_mesh(44, 16), "final batch of 12 examples"),
        raises(
            lambda: train.make_epoch(mlp_loss, optim.sgd(0.1), 12, mesh=MESH),
            "batch size 12",
        ),
    ]


assert jax.device_count() == 8, jax.devices()
with open(os.path.join(OUT, "results.json"), "w") as f:
    json.dump(RESULTS, f)
