"""fundl.checkpoint.template: stored leaves as arrays, and what a template checks.

Shapes, dtypes and key paths named in every mismatch; Python scalars and weakly-typed
leaves; partial templates that read only their leaves; shardings.
"""

import collections
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import checkpoint
from fundl.checkpoint import CheckpointError


def test_64_bit_integers_that_int32_cannot_hold_refuse_to_wrap(tmp_path):
    path = checkpoint.save(
        tmp_path / "big", {"n": np.array([2**40], np.int64), "ok": np.array([5], np.int64)}
    )
    with pytest.raises(
        ValueError,
        match=r"restore: .*: \['n'\] is int64 with values beyond int32, which JAX would wrap",
    ):
        checkpoint.restore(path)
    small = checkpoint.save(tmp_path / "small", {"ok": np.array([5], np.int64)})
    assert checkpoint.restore(small)["ok"].dtype == jnp.int32  # JAX's rule with x64 off


# --- templates ----------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, params):
    return checkpoint.save(tmp_path / "checkpoint", {"params": params, "step": 3})


def test_template_shape_mismatch_names_the_key_path(saved, params):
    bigger = {"params": fundl.nn.mlp([2, 5, 3]).init(jax.random.key(0)), "step": 0}
    with pytest.raises(
        ValueError,
        match=r"restore: .*checkpoint\.safetensors: \['params'\]\['dense1'\]\['W'\] has shape "
        r"\(4, 2\), the template expects \(5, 2\)",
    ):
        checkpoint.restore(saved, bigger)


def test_template_dtype_mismatch(saved, params):
    template = {"params": jax.tree.map(lambda p: p.astype(jnp.bfloat16), params), "step": 0}
    with pytest.raises(
        ValueError,
        match=r"\['params'\]\['dense1'\]\['W'\] has dtype float32, the template expects bfloat16",
    ):
        checkpoint.restore(saved, template)


def test_template_with_a_key_path_the_checkpoint_lacks(saved, params):
    template = {"params": {**params, "dense3": {"W": jnp.ones((1, 3))}}, "step": 0}
    message = (
        r"restore: .*: the template has \['params'\]\['dense3'\]\['W'\] but the checkpoint does not"
    )
    with pytest.raises(ValueError, match=message):
        checkpoint.restore(saved, template)
    with pytest.raises(ValueError, match=message):  # partial or not: every template leaf is needed
        checkpoint.restore(saved, template, partial=True)


def test_checkpoint_with_a_key_path_the_template_lacks(saved, params):
    with pytest.raises(
        ValueError,
        match=r"restore: .*: the checkpoint has \['step'\] but the template does not \(pass "
        r"partial=True to read only the template's leaves\)",
    ):
        checkpoint.restore(saved, {"params": params})


def test_a_partial_template_reads_only_its_leaves(tmp_path, params):
    bundle = {
        "params": params,
        "opt_state": fundl.optim.adam(1e-3).init(params),
        "key": jax.random.key(3),
        "step": 7,
    }
    path = checkpoint.save(tmp_path / "run", bundle)
    restored = checkpoint.restore(path, {"params": params}, partial=True)
    assert list(restored) == ["params"]
    chex.assert_trees_all_equal(restored["params"], params)
    shapes = jax.eval_shape(lambda: {"params": params, "step": 0})
    assert checkpoint.restore(path, shapes, partial=True)["step"] == 7
    with pytest.raises(
        ValueError,
        match=r"restore: .*: \['params'\]\['dense2'\]\['b'\] has shape \(3,\), the template "
        r"expects \(4,\)",
    ):
        checkpoint.restore(
            path,
            {"params": {**params, "dense2": {**params["dense2"], "b": jnp.zeros(4)}}},
            partial=True,
        )
    # The other leaves are not read: corrupting the optimizer state does not matter.
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    offsets = json.loads(raw[8:start])["opt_state/mu/dense1/W"]["data_offsets"]
    raw[start + offsets[0]] ^= 0xFF
    path.write_bytes(bytes(raw))
    chex.assert_trees_all_equal(
        checkpoint.restore(path, {"params": params}, partial=True)["params"], params
    )
    with pytest.raises(
        CheckpointError, match=r"tensor 'opt_state/mu/dense1/W' .* fails its checksum"
    ):
        checkpoint.restore(path)


def test_container_kind_is_part_of_the_key_path(tmp_path):
    path = checkpoint.save(tmp_path / "c", {"a": jnp.ones(1)})
    Holder = collections.namedtuple("Holder", ["a"])
    with pytest.raises(ValueError, match=r"the template has \.a but the checkpoint does not"):
        checkpoint.restore(path, Holder(jnp.ones(1)))
    # a list and a tuple share key paths ([0]), so the template's container wins
    as_tuple = checkpoint.restore(checkpoint.save(tmp_path / "l", [jnp.ones(1)]), (jnp.zeros(1),))
    assert type(as_tuple) is tuple


@pytest.mark.parametrize(
    "template_step, message",
    [
        (0.0, r"\['step'\] has dtype int64, the template expects a Python float"),
        (False, r"\['step'\] has dtype int64, the template expects a Python bool"),
        (jnp.zeros(3, jnp.int32), r"\['step'\] has shape \(\), the template expects \(3,\)"),
        (jnp.int32(0), r"\['step'\] has dtype int64, the template expects int32"),
    ],
)
def test_template_python_scalars(saved, params, template_step, message):
    with pytest.raises(ValueError, match=message):
        checkpoint.restore(saved, {"params": params, "step": template_step})


def test_template_scalar_for_an_array(saved, params):
    template = {"params": {**params, "dense1": {"W": 0.0, "b": params["dense1"]["b"]}}, "step": 0}
    with pytest.raises(
        ValueError,
        match=r"\['params'\]\['dense1'\]\['W'\] has shape \(4, 2\), the template expects a "
        r"scalar \(a Python float\)",
    ):
        checkpoint.restore(saved, template)


def test_template_leaf_of_an_unknown_kind(saved, params):
    with pytest.raises(TypeError, match=r"restore: the template's leaf at \['step'\] is a str"):
        checkpoint.restore(saved, {"params": params, "step": "zero"})


def test_template_keys_must_match_key_impl(tmp_path):
    path = checkpoint.save(tmp_path / "k", {"key": jax.random.key(0)})
    with pytest.raises(
        ValueError, match=r"\['key'\] has dtype key<fry>, the template expects key<rbg>"
    ):
        checkpoint.restore(path, {"key": jax.random.key(0, impl="rbg")})


def test_weakly_typed_template_leaves(tmp_path):
    path = checkpoint.save(tmp_path / "w", {"big": 2**40, "n": 3, "x": 0.25})
    shapes = jax.eval_shape(lambda: {"big": 0, "n": 0, "x": 0.0})
    with pytest.raises(
        ValueError,
        match=r"restore: .*: \['big'\] holds values beyond int32, the dtype of the template's "
        r"weakly-typed leaf",
    ):
        checkpoint.restore(path, shapes)
    restored = checkpoint.restore(path, {"big": 0, "n": jnp.asarray(0), "x": jnp.asarray(0.0)})
    assert restored["big"] == 2**40 and restored["n"].weak_type and float(restored["x"]) == 0.25
    with pytest.raises(
        ValueError,
        match=r"\['n'\] has dtype int64, the template expects a weakly-typed float32 \(any float\)",
    ):
        checkpoint.restore(path, {"big": 0, "n": jnp.asarray(0.0), "x": 0.0})


def test_restored_arrays_take_the_template_sharding(tmp_path, params):
    path = checkpoint.save(tmp_path / "p", params)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = jax.tree.map(
        lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=sharding), params
    )
    restored = checkpoint.restore(path, template)
    assert restored["dense1"]["W"].sharding == sharding
    chex.assert_trees_all_equal(restored, params)
