"""fundl.parallel on this process's devices (one CPU device in CI): the API, the
placement rules and every error. The multi-device behaviour is tested on 8 forced host
devices in test_eight_devices.py and across processes in test_multiprocess.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import fundl
from fundl import losses, optim, parallel, train
from fundl.parallel.placement import leaf_spec

MESH = parallel.data_mesh()
N = jax.device_count()
MODEL = fundl.mlp([3, 4, 2], "tanh")


def _loss(params, batch):
    return losses.softmax_cross_entropy(MODEL.apply(params, batch["x"]), batch["y"])


def _batch(n=2 * N):
    x = np.linspace(-1.0, 1.0, 3 * n, dtype=np.float32).reshape(n, 3)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}


def test_data_mesh_spans_the_devices_along_one_named_axis():
    assert MESH.axis_names == ("data",) and MESH.devices.size == N
    mesh = parallel.data_mesh(jax.devices()[:1], axis="batch")
    assert mesh.axis_names == ("batch",) and dict(mesh.shape) == {"batch": 1}


@pytest.mark.parametrize(
    "devices, axis, error, match",
    [
        ([], "data", ValueError, "devices is empty"),
        (None, "", ValueError, "axis must be a non-empty string"),
        ("cpu", "data", TypeError, "sequence of jax.Device"),
        ([0], "data", TypeError, "jax.Device objects, got 0"),
        (jax.devices()[:1] * 2, "data", ValueError, "more than once"),
    ],
)
def test_data_mesh_refuses_bad_devices_and_axes(devices, axis, error, match):
    with pytest.raises(error, match=match):
        parallel.data_mesh(devices, axis=axis)


def test_a_mesh_axis_that_does_not_exist_is_named_with_the_ones_that_do():
    for call in (
        lambda: parallel.shard_batch(_batch(), MESH, axis="model"),
        lambda: parallel.param_specs({"W": jnp.ones(2)}, MESH, axis="model"),
        lambda: parallel.DataParallel(MESH, "model"),
    ):
        with pytest.raises(ValueError, match=r"no axis 'model'; its axes are \('data',\)"):
            call()
    with pytest.raises(ValueError, match="make_train_step: the mesh has no axis 'model'"):
        train.make_train_step(_loss, optim.sgd(0.1), mesh=MESH, axis="model")
    with pytest.raises(ValueError, match="fit: the mesh has no axis 'model'"):
        train.fit(_loss, {}, optim.sgd(0.1), _batch(), epochs=1, batch_size=2, key=0,
                  mesh=MESH, axis="model")  # fmt: skip
    with pytest.raises(TypeError, match="replicate: mesh must be a jax.sharding.Mesh"):
        parallel.replicate({}, "mesh")


def test_shard_batch_splits_the_leading_axis_and_keeps_the_values():
    batch = _batch()
    placed = parallel.shard_batch(batch, MESH)
    for leaf, original in zip(jax.tree.leaves(placed), jax.tree.leaves(batch)):
        assert leaf.sharding.spec == P("data")
        np.testing.assert_array_equal(np.asarray(leaf), original)


def test_shard_batch_refuses_a_batch_that_does_not_divide_and_a_scalar_leaf():
    mesh = parallel.data_mesh(jax.devices()[:1])
    with pytest.raises(ValueError, match=r"batch\['x'\] has shape \(\)"):
        parallel.shard_batch({"x": np.float32(1.0)}, mesh)
    with pytest.raises(ValueError, match="the batch has no arrays"):
        parallel.shard_batch({}, mesh)


def test_check_batch_names_the_batch_size_and_the_device_count():
    # no 8-device mesh in this process: the rule itself, on a count of 8
    from fundl.parallel.placement import check_batch

    with pytest.raises(
        ValueError, match=r"batch size 12 \(batch\['x'\]\) does not divide by the 8"
    ):
        check_batch("shard_batch", {"x": np.zeros((12, 3))}, 8, "data")
    check_batch("shard_batch", {"x": np.zeros((16, 3))}, 8, "data")


@pytest.mark.parametrize(
    "shape, spec",
    [
        ((3, 16), P(None, "data")),  # the largest dim that divides by 8
        ((16, 16), P("data")),  # a tie: the first
        ((8, 3), P("data")),
        ((24, 10, 16), P("data")),  # 10 does not divide
        ((10,), P()),  # none divides: replicated
        ((4,), P()),  # smaller than the device count
        ((), P()),
    ],
)
def test_param_specs_split_the_largest_divisible_axis(shape, spec):
    assert leaf_spec(shape, 8, "data") == spec


def test_replicate_shard_params_and_host_copy_keep_the_values():
    params = MODEL.init(jax.random.key(0))
    for placed in (parallel.replicate(params, MESH), parallel.shard_params(params, MESH)):
        copy = parallel.host_copy(placed)
        assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(copy))
        jax.tree.map(np.testing.assert_array_equal, copy, params)
    specs = parallel.param_specs({"W": params["dense1"]["W"], "key": jax.random.key(0)}, MESH)
    assert specs["key"] == P()
    key = parallel.host_copy(parallel.replicate(jax.random.key(3), MESH))
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(3)))


def test_a_step_on_a_mesh_equals_the_step_without():
    opt = optim.adam(0.1)
    params = MODEL.init(jax.random.key(0))
    plain = train.make_train_step(_loss, opt, donate=False)
    p1, s1, m1 = plain(params, opt.init(params), _batch())
    # (replicated, and on 8 devices, in test_eight_devices.py)
    step = train.make_train_step(_loss, opt, mesh=MESH, shard_params=True, donate=False)
    dp = parallel.DataParallel(MESH, shard_params=True)
    p, s, m = step(dp.place(params), dp.place(opt.init(params)), dp.place_batch(_batch()))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
        parallel.host_copy((p, s, m)),
        parallel.host_copy((p1, s1, m1)),
    )


def test_eval_step_on_a_mesh_gives_the_loss():
    # a batch that does not divide by 8 devices: fit_8_equals_1 in test_eight_devices.py
    params = MODEL.init(jax.random.key(0))
    evaluate = train.make_eval_step(_loss, mesh=MESH)
    batch = _batch(2 * N + (N > 1))
    loss = evaluate(parallel.replicate(params, MESH), batch)["loss"]
    np.testing.assert_allclose(loss, _loss(params, batch), rtol=1e-6)


def test_shard_params_needs_a_mesh_and_a_bool():
    with pytest.raises(ValueError, match="make_train_step: shard_params=True .* pass mesh="):
        train.make_train_step(_loss, optim.sgd(0.1), shard_params=True)
    with pytest.raises(ValueError, match="fit: shard_params must be True or False"):
        train.fit(_loss, {}, optim.sgd(0.1), _batch(), epochs=1, batch_size=2, key=0,
                  mesh=MESH, shard_params=1)  # fmt: skip
    with pytest.raises(ValueError, match="DataParallel: shard_params"):
        parallel.DataParallel(MESH, shard_params="yes")


def test_process_helpers_in_one_process():
    assert parallel.process_index() == 0 and parallel.process_count() == 1
    assert parallel.is_main_process()
    batch = _batch()
    local = parallel.shard_local_batch(batch, MESH)
    np.testing.assert_array_equal(np.asarray(local["x"]), batch["x"])
    assert local["x"].sharding.spec == P("data")


def test_host_shard_takes_this_process_share():
    data = {"x": np.arange(12).reshape(6, 2), "y": np.arange(6)}
    parts = [parallel.host_shard(data, index=i, count=3) for i in range(3)]
    np.testing.assert_array_equal(np.concatenate([p["y"] for p in parts]), data["y"])
    np.testing.assert_array_equal(parts[1]["x"], data["x"][2:4])
    assert parallel.host_shard(data)["y"].shape == (6,)  # one process: all of it
    with pytest.raises(ValueError, match="the 6 examples do not divide by the 4 processes"):
        parallel.host_shard(data, index=0, count=4)
    with pytest.raises(ValueError, match=r"index must be an integer in \[0, 2\]"):
        parallel.host_shard(data, index=3, count=3)
    with pytest.raises(ValueError, match="the same leading dim"):
        parallel.host_shard({"x": np.zeros(4), "y": np.zeros(3)}, index=0, count=1)


def test_initialize_checks_its_arguments_before_starting_anything():
    with pytest.raises(ValueError, match="initialize: num_processes must be a positive integer"):
        parallel.initialize("localhost:1", num_processes=0, process_id=0)
    with pytest.raises(ValueError, match=r"initialize: process_id must be an integer in \[0, 1\]"):
        parallel.initialize("localhost:1", num_processes=2, process_id=2)
