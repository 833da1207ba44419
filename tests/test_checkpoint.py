"""fundl.checkpoint: round trips, template checks, atomic saves, bad files, the manager."""

import collections
import dataclasses
import json
import math
import os
import re
import struct

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

import fundl
from fundl import checkpoint
from fundl.checkpoint import CheckpointError, CheckpointManager


@pytest.fixture
def params():
    return fundl.nn.mlp([2, 4, 3]).init(jax.random.key(0))  # dense1 W (4, 2), dense2 W (3, 4)


def _trained_adam_state(params):
    opt = fundl.optim.adam(1e-3)
    state = opt.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    for _ in range(3):
        _, state = opt.update(grads, state, params)
    return state


def _header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def _rewrite_header(path, edit):
    """Replace the header of a saved checkpoint with ``edit(header)``, keeping the data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = edit(json.loads(raw[8 : 8 + n]))
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _edit_manifest(edit):
    def on_header(header):
        manifest = json.loads(header["__metadata__"]["fundl"])
        edit(manifest)
        header["__metadata__"]["fundl"] = json.dumps(manifest)
        return header

    return on_header


# --- the format ---------------------------------------------------------------------


def test_params_are_readable_by_safetensors_numpy_by_name(tmp_path, params):
    path = checkpoint.save(tmp_path / "model", params)
    assert path == tmp_path / "model.safetensors"
    loaded = safetensors.numpy.load_file(path)
    assert sorted(loaded) == ["dense1/W", "dense1/b", "dense2/W", "dense2/b"]
    assert loaded["dense1/W"].shape == (4, 2)  # (n_out, n_in), as torch.nn.Linear.weight
    np.testing.assert_array_equal(loaded["dense2/W"], params["dense2"]["W"])
    np.testing.assert_array_equal(loaded["dense1/b"], params["dense1"]["b"])


def test_manifest_sits_in_the_safetensors_metadata(tmp_path):
    tree = {"w": jnp.ones((2, 3), jnp.bfloat16), "key": jax.random.key(1), "n": None}
    path = checkpoint.save(tmp_path / "m.safetensors", tree, metadata={"lr": 0.1})
    with safe_open(path, framework="np") as f:  # safetensors' own reader accepts the header
        manifest = json.loads(f.metadata()["fundl"])
        assert sorted(f.keys()) == ["key", "w"]
    assert manifest["format"] == "fundl.checkpoint" and manifest["version"] == 1
    assert manifest["metadata"] == {"lr": 0.1}
    assert manifest["leaves"]["w"] == {"path": "['w']", "dtype": "bfloat16", "shape": [2, 3]}
    assert manifest["leaves"]["key"] == {
        "path": "['key']",
        "dtype": "key<fry>",
        "shape": [],
        "key_impl": "threefry2x32",
    }
    assert manifest["tree"]["keys"] == ["key", "n", "w"]
    assert manifest["tree"]["children"][1] == {"type": "none"}
    header = _header(path)
    assert header["w"]["dtype"] == "BF16" and header["key"] == {
        "dtype": "U32",
        "shape": [2],
        "data_offsets": [0, 8],
    }
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0  # data starts 8-byte aligned


def test_names_follow_key_paths_with_json_pointer_escapes(tmp_path):
    tree = {
        "a/b": jnp.ones(1),
        "c~d": [jnp.zeros(2), {"e": jnp.ones(3)}],
        "": jnp.ones(()),
        "f": {7: jnp.ones(2)},
    }
    path = checkpoint.save(tmp_path / "n", tree)
    assert sorted(safetensors.numpy.load_file(path)) == ["", "a~1b", "c~0d/0", "c~0d/1/e", "f/7"]
    restored = checkpoint.restore(path)
    chex.assert_trees_all_equal(restored, tree)
    assert list(restored["f"]) == [7]  # int dict keys stay ints


def _unescape(name):
    return [part.replace("~1", "/").replace("~0", "~") for part in name.split("/")]


@given(
    st.dictionaries(
        st.text(alphabet="a/~1", max_size=4),
        st.dictionaries(
            st.text(alphabet="b/~0", min_size=1, max_size=3), st.integers(0, 3), max_size=2
        ),
        min_size=1,
        max_size=4,
    )
)
def test_names_split_back_into_their_key_paths(tmp_path_factory, sizes):
    tree = {
        k: {k2: jnp.arange(n, dtype=jnp.float32) for k2, n in inner.items()}
        for k, inner in sizes.items()
    }
    path = checkpoint.save(tmp_path_factory.mktemp("names") / "t", tree)
    names = safetensors.numpy.load_file(path)
    assert sorted(tuple(_unescape(name)) for name in names) == sorted(
        (k, k2) for k in sizes for k2 in sizes[k]
    )
    chex.assert_trees_all_equal(checkpoint.restore(path), tree)


def test_a_single_array_is_stored_as_root(tmp_path):
    path = checkpoint.save(tmp_path / "one", jnp.arange(3.0))
    assert list(safetensors.numpy.load_file(path)) == ["(root)"]
    chex.assert_trees_all_equal(checkpoint.restore(path), jnp.arange(3.0))


def test_suffix_is_added_and_parents_are_created(tmp_path):
    path = checkpoint.save(tmp_path / "a" / "b" / "ckpt.v2", {"x": jnp.ones(2)})
    assert path == tmp_path / "a" / "b" / "ckpt.v2.safetensors" and path.is_file()
    chex.assert_trees_all_equal(
        checkpoint.restore(tmp_path / "a" / "b" / "ckpt.v2"), {"x": jnp.ones(2)}
    )
    assert checkpoint.save(str(path), {"x": jnp.ones(2)}) == path


# --- round trips --------------------------------------------------------------------


def test_params_round_trip(tmp_path, params):
    path = checkpoint.save(tmp_path / "p", params)
    chex.assert_trees_all_equal(checkpoint.restore(path), params)
    chex.assert_trees_all_equal(checkpoint.restore(path, params), params)


def test_optimizer_state_round_trips_with_its_named_tuples(tmp_path, params):
    state = _trained_adam_state(params)
    assert int(state.count) == 3
    path = checkpoint.save(tmp_path / "opt", state)
    fresh = fundl.optim.adam(1e-3).init(params)
    restored = checkpoint.restore(path, fresh)
    chex.assert_trees_all_equal(restored, state)
    assert isinstance(restored, fundl.optim.AdamState)  # the template's type
    assert int(restored.count) == 3
    assert "mu/dense1/W" in safetensors.numpy.load_file(path)


def test_named_tuples_without_template_come_back_as_stand_ins(tmp_path, params):
    state = _trained_adam_state(params)
    restored = checkpoint.restore(checkpoint.save(tmp_path / "opt", state))
    assert type(restored).__name__ == "AdamState" and restored._fields == ("count", "mu", "nu")
    assert not isinstance(restored, fundl.optim.AdamState)  # a stand-in: no class is imported
    chex.assert_trees_all_equal(restored.mu, state.mu)
    chex.assert_trees_all_equal(restored.count, state.count)
    empty = checkpoint.restore(checkpoint.save(tmp_path / "empty", {"s": fundl.optim.EmptyState()}))
    assert empty["s"] == () and type(empty["s"]).__name__ == "EmptyState"
    again = checkpoint.restore(checkpoint.save(tmp_path / "opt2", state))
    assert jax.tree.structure(again) == jax.tree.structure(restored)


_DTYPES = [
    np.float32,
    np.float16,
    ml_dtypes.bfloat16,
    np.int32,
    np.uint32,
    np.int16,
    np.uint16,
    np.int8,
    np.uint8,
    np.bool_,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
    np.complex64,
]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: np.dtype(d).name)
def test_dtypes_round_trip_exactly(tmp_path, dtype):
    values = np.array([[0.0, 1.0, -2.5], [3.25, 7.0, 1e-3]]).astype(dtype)
    tree = {"x": jnp.asarray(values), "y": values}
    path = checkpoint.save(tmp_path / "d", tree)
    restored = checkpoint.restore(path)
    assert restored["x"].dtype == np.dtype(dtype) and isinstance(restored["x"], jax.Array)
    np.testing.assert_array_equal(np.asarray(restored["x"]), values)
    with_template = checkpoint.restore(path, tree)
    assert isinstance(with_template["y"], np.ndarray) and with_template["y"].dtype == np.dtype(
        dtype
    )
    chex.assert_trees_all_equal(with_template, tree)


def test_bfloat16_bits_are_kept(tmp_path):
    x = jax.random.normal(jax.random.key(2), (5, 7), jnp.bfloat16)
    restored = checkpoint.restore(checkpoint.save(tmp_path / "bf", {"x": x}))["x"]
    np.testing.assert_array_equal(
        np.asarray(restored).view(np.uint16), np.asarray(x).view(np.uint16)
    )


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint64])
def test_64_bit_leaves_round_trip(tmp_path, dtype):
    values = np.array([0.1, 2.0**40, 3.0]).astype(dtype)
    path = checkpoint.save(tmp_path / "d", {"x": values})
    restored = checkpoint.restore(path, {"x": np.zeros(3, dtype)})["x"]
    assert restored.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(restored, values)
    with jax.enable_x64(True):
        as_jax = checkpoint.restore(path)["x"]
        assert as_jax.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(as_jax), values)


def test_64_bit_integers_that_int32_cannot_hold_refuse_to_wrap(tmp_path):
    path = checkpoint.save(
        tmp_path / "big", {"n": np.array([2**40], np.int64), "ok": np.array([5], np.int64)}
    )
    with pytest.raises(
        ValueError, match=r"\['n'\] is int64 with values beyond int32, which JAX would wrap"
    ):
        checkpoint.restore(path)
    small = checkpoint.save(tmp_path / "small", {"ok": np.array([5], np.int64)})
    assert checkpoint.restore(small)["ok"].dtype == jnp.int32  # JAX's rule with x64 off


def test_typed_keys_round_trip(tmp_path):
    key = jax.random.key(0)
    tree = {
        "one": key,
        "split": jax.random.split(key, 3),
        "grid": jax.random.split(key, (2, 2)),
        "rbg": jax.random.key(5, impl="rbg"),
    }
    path = checkpoint.save(tmp_path / "keys", tree)
    for restored in [
        checkpoint.restore(path),
        checkpoint.restore(path, tree),
        checkpoint.restore(path, jax.eval_shape(lambda: tree)),
    ]:
        chex.assert_trees_all_equal(restored, tree)
        assert restored["split"].shape == (3,) and restored["grid"].shape == (2, 2)
        assert jax.random.key_impl(restored["rbg"]) == "rbg"
        np.testing.assert_array_equal(
            jax.random.normal(restored["split"][1], (4,)), jax.random.normal(tree["split"][1], (4,))
        )
    assert safetensors.numpy.load_file(path)["split"].dtype == np.uint32


def test_legacy_uint32_keys_are_plain_arrays(tmp_path):
    key = jax.random.PRNGKey(4)
    restored = checkpoint.restore(checkpoint.save(tmp_path / "legacy", {"key": key}))["key"]
    assert restored.dtype == jnp.uint32 and restored.shape == (2,)
    np.testing.assert_array_equal(jax.random.uniform(restored, (3,)), jax.random.uniform(key, (3,)))


def test_nested_lists_tuples_and_none_without_template(tmp_path):
    tree = {
        "layers": [{"W": jnp.ones((2, 2)), "b": None}, ({"W": jnp.zeros((1, 2))}, None, [])],
        "pair": (jnp.arange(2), (jnp.int32(3),)),
        "nothing": None,
        "empty": {},
        "flag": True,
        "lr": 0.5,
        "n": 3,
    }
    restored = checkpoint.restore(checkpoint.save(tmp_path / "nested", tree))
    assert (
        restored["nothing"] is None
        and restored["layers"][0]["b"] is None
        and restored["layers"][1][1] is None
    )
    assert restored["empty"] == {} and restored["layers"][1][2] == []
    assert (
        type(restored["layers"]) is list
        and type(restored["pair"]) is tuple
        and type(restored["layers"][1]) is tuple
    )
    # Python scalars come back as 0-d arrays without a template (64-bit ones under JAX's rule).
    assert (
        isinstance(restored["n"], jax.Array)
        and restored["n"].dtype == jnp.int32
        and int(restored["n"]) == 3
    )
    assert restored["flag"].dtype == jnp.bool_ and float(restored["lr"]) == 0.5
    expected = {**tree, "flag": jnp.asarray(True), "lr": jnp.asarray(0.5), "n": jnp.asarray(3)}
    chex.assert_trees_all_equal(restored, expected)
    assert jax.tree.structure(restored) == jax.tree.structure(expected)


def test_metadata_round_trip(tmp_path):
    metadata = {
        "model": "mlp",
        "sizes": [2, 4, 3],
        "lr": 1e-3,
        "nested": {"ok": True, "none": None},
        "pair": (1, 2),
    }
    path = checkpoint.save(tmp_path / "meta", {"x": jnp.ones(1)}, metadata=metadata)
    assert checkpoint.read_metadata(path) == {
        **metadata,
        "pair": [1, 2],
    }  # tuples come back as lists
    assert checkpoint.read_metadata(checkpoint.save(tmp_path / "none", {"x": jnp.ones(1)})) == {}


@pytest.mark.parametrize(
    "metadata, message",
    [
        (
            {"tags": {"a", "b"}},
            r"save: metadata\['tags'\] is a set, which is not JSON-serializable",
        ),
        (
            {"run": {"lr": np.float32(0.1)}},
            r"save: metadata\['run'\]\['lr'\] is a float32, which is not JSON-serializable",
        ),
        ({"run": {1: "a"}}, r"save: metadata\['run'\] has the key 1; JSON object keys must be str"),
        (
            {"best": [1.0, float("nan")]},
            r"save: metadata\['best'\]\[1\] is nan, which JSON cannot hold",
        ),
    ],
)
def test_metadata_must_be_json(tmp_path, metadata, message):
    with pytest.raises(TypeError, match=message):
        checkpoint.save(tmp_path / "bad", {"x": jnp.ones(1)}, metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_metadata_must_be_a_dict(tmp_path):
    with pytest.raises(TypeError, match="save: metadata must be a dict, got list"):
        checkpoint.save(tmp_path / "bad", {"x": jnp.ones(1)}, metadata=[1])


def _bundle(params, opt_state, key):
    return {
        "params": params,
        "opt_state": opt_state,
        "step": 7,
        "key": key,
        "epoch": 2,
        "position": 5,
    }


def test_training_bundle_round_trips_with_a_template(tmp_path, params):
    opt = fundl.optim.adam(1e-3)
    saved = _bundle(params, _trained_adam_state(params), jax.random.key(3))
    path = checkpoint.save(tmp_path / "run", saved)
    template = _bundle(jax.tree.map(jnp.zeros_like, params), opt.init(params), jax.random.key(0))
    template.update(step=0, epoch=0, position=0)
    restored = checkpoint.restore(path, template)
    chex.assert_trees_all_equal(restored, saved)
    assert jax.tree.structure(restored) == jax.tree.structure(saved)
    assert type(restored["step"]) is int and (
        restored["step"],
        restored["epoch"],
        restored["position"],
    ) == (7, 2, 5)
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
    # jax.eval_shape sees the Python ints as weakly-typed int32: those fix the kind, not the width
    from_shapes = checkpoint.restore(path, jax.eval_shape(lambda: template))
    chex.assert_trees_all_equal(from_shapes["params"], params)
    assert isinstance(from_shapes["opt_state"], fundl.optim.AdamState)
    assert (
        from_shapes["step"].dtype == jnp.int32
        and from_shapes["step"].weak_type
        and int(from_shapes["step"]) == 7
    )


def test_weakly_typed_template_leaves(tmp_path):
    path = checkpoint.save(tmp_path / "w", {"big": 2**40, "n": 3, "x": 0.25})
    shapes = jax.eval_shape(lambda: {"big": 0, "n": 0, "x": 0.0})
    with pytest.raises(
        ValueError,
        match=r"restore: .*: \['big'\] holds values beyond int32, the dtype of the template's weakly-typed leaf",
    ):
        checkpoint.restore(path, shapes)
    restored = checkpoint.restore(path, {"big": 0, "n": jnp.asarray(0), "x": jnp.asarray(0.0)})
    assert restored["big"] == 2**40 and restored["n"].weak_type and float(restored["x"]) == 0.25
    with pytest.raises(
        ValueError,
        match=r"\['n'\] has dtype int64, the template expects a weakly-typed float32 \(any float\)",
    ):
        checkpoint.restore(path, {"big": 0, "n": jnp.asarray(0.0), "x": 0.0})


def test_resume_is_bit_identical(tmp_path):
    model = fundl.nn.mlp([2, 8, 1])
    opt = fundl.optim.adam(1e-2)

    @jax.jit
    def step(params, opt_state, key):
        key, sub = jax.random.split(key)
        x = jax.random.normal(sub, (16, 2))
        y = jnp.sin(x[:, :1])
        grads = jax.grad(lambda p: fundl.losses.mse(model.apply(p, x), y))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return fundl.optim.apply_updates(params, updates), opt_state, key

    def run(state, n):
        params, opt_state, key = state["params"], state["opt_state"], state["key"]
        for _ in range(n):
            params, opt_state, key = step(params, opt_state, key)
        return {
            **state,
            "params": params,
            "opt_state": opt_state,
            "key": key,
            "step": state["step"] + n,
        }

    params = model.init(jax.random.key(1))
    start = {"params": params, "opt_state": opt.init(params), "key": jax.random.key(2), "step": 0}
    straight = run(start, 4)
    checkpoint.save(tmp_path / "mid", run(start, 2))
    resumed = run(checkpoint.restore(tmp_path / "mid", start), 2)
    chex.assert_trees_all_equal(resumed, straight)
    assert resumed["step"] == 4


# --- template checks ----------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, params):
    return checkpoint.save(tmp_path / "checkpoint", {"params": params, "step": 3})


def test_template_shape_mismatch_names_the_key_path(saved, params):
    bigger = {"params": fundl.nn.mlp([2, 5, 3]).init(jax.random.key(0)), "step": 0}
    with pytest.raises(
        ValueError,
        match=r"restore: .*checkpoint\.safetensors: \['params'\]\['dense1'\]\['W'\] has shape \(4, 2\), the template expects \(5, 2\)",
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
    with pytest.raises(
        ValueError,
        match=r"restore: .*: the template has \['params'\]\['dense3'\]\['W'\] but the checkpoint does not",
    ):
        checkpoint.restore(saved, template)


def test_checkpoint_with_a_key_path_the_template_lacks(saved, params):
    with pytest.raises(
        ValueError, match=r"restore: .*: the checkpoint has \['step'\] but the template does not"
    ):
        checkpoint.restore(saved, {"params": params})


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
        match=r"\['params'\]\['dense1'\]\['W'\] has shape \(4, 2\), the template expects a scalar \(a Python float\)",
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


def test_restored_arrays_take_the_template_sharding(tmp_path, params):
    path = checkpoint.save(tmp_path / "p", params)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = jax.tree.map(
        lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=sharding), params
    )
    restored = checkpoint.restore(path, template)
    assert restored["dense1"]["W"].sharding == sharding
    chex.assert_trees_all_equal(restored, params)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Stats:
    mean: jax.Array
    var: jax.Array


def test_other_registered_containers(tmp_path):
    tree = {"bn": _Stats(jnp.zeros(3), jnp.ones(3))}
    path = checkpoint.save(tmp_path / "bn", tree)
    assert sorted(safetensors.numpy.load_file(path)) == ["bn/mean", "bn/var"]
    chex.assert_trees_all_equal(
        checkpoint.restore(path)["bn"], {"mean": jnp.zeros(3), "var": jnp.ones(3)}
    )
    restored = checkpoint.restore(path, {"bn": _Stats(jnp.ones(3), jnp.ones(3))})
    assert isinstance(restored["bn"], _Stats)
    chex.assert_trees_all_equal(restored, tree)


class _Clash:
    """A container whose two children have key paths that print differently but name alike."""

    def __init__(self, a, b):
        self.a, self.b = a, b


jax.tree_util.register_pytree_with_keys(
    _Clash,
    lambda c: (((jax.tree_util.GetAttrKey("x"), c.a), (jax.tree_util.DictKey("x"), c.b)), None),
    lambda _, children: _Clash(*children),
)


def test_two_key_paths_with_one_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"save: \['x'\] and \.x both get the tensor name 'x'"):
        checkpoint.save(tmp_path / "clash", _Clash(jnp.ones(1), jnp.ones(1)))
    assert list(tmp_path.iterdir()) == []


# --- save errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "tree, error, message",
    [
        ({"name": "mlp"}, TypeError, r"save: \['name'\] is a str; a checkpoint holds arrays"),
        (
            {"z": np.ones(2, np.complex128)},
            TypeError,
            r"save: \['z'\] has dtype complex128, which safetensors cannot store",
        ),
        (
            {(1, 2): jnp.ones(1)},
            TypeError,
            r"save: \(root\) has the dict key \(1, 2\); checkpoint dict keys must be str or int",
        ),
        (
            {"__metadata__": jnp.ones(1)},
            ValueError,
            r"save: \['__metadata__'\] would be stored as '__metadata__'",
        ),
        ({"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}}, None, None),
    ],
)
def test_save_rejects_what_it_cannot_store(tmp_path, tree, error, message):
    if error is None:  # distinct key paths always get distinct names
        restored = checkpoint.restore(checkpoint.save(tmp_path / "ok", tree))
        chex.assert_trees_all_equal(restored, tree)
        return
    with pytest.raises(error, match=message):
        checkpoint.save(tmp_path / "bad", tree)
    assert list(tmp_path.iterdir()) == []


# --- atomicity ----------------------------------------------------------------------


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, params):
    path = checkpoint.save(tmp_path / "ckpt", params, metadata={"version": "old"})
    before = path.read_bytes()
    calls = []

    def write_half_then_fail(f, data):
        calls.append(len(data))
        if len(calls) == 3:
            f.write(bytes(memoryview(data))[: len(data) // 2])
            raise OSError("No space left on device")
        f.write(data)

    monkeypatch.setattr(checkpoint, "_write_bytes", write_half_then_fail)
    bigger = jax.tree.map(lambda p: jnp.ones(p.shape, p.dtype), params)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoint.save(tmp_path / "ckpt", bigger, metadata={"version": "new"})
    assert len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temporary file left
    assert path.read_bytes() == before
    chex.assert_trees_all_equal(checkpoint.restore(path, params), params)
    assert checkpoint.read_metadata(path) == {"version": "old"}


def test_an_interrupted_save_cleans_up(tmp_path, monkeypatch):
    def interrupted(f, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path / "ckpt", {"x": jnp.ones(2)})
    assert list(tmp_path.iterdir()) == []


def test_saved_files_get_ordinary_permissions(tmp_path):
    path = checkpoint.save(tmp_path / "perm", {"x": jnp.ones(1)})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# --- corrupt files ------------------------------------------------------------------


def _with_length(header):
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"not a safetensors file: 0 bytes, fewer than the 8"),
        (b"\x80\x04K", r"not a safetensors file: 3 bytes"),
        (
            b"\x80\x04\x95\x00\x00\x00\x00\x00pickle!",
            r"header length 9766016 is larger than the file \(15 bytes\): truncated, or not a safetensors file",
        ),
        (_with_length(b"{nope}"), r"header is not JSON \(.*\): not a safetensors file"),
        (_with_length(b"\xff\xfe"), r"header is not JSON"),
        (_with_length(b"[]"), r"header is JSON but not an object \(a list\)"),
        (
            _with_length(b"{}"),
            r"no fundl manifest \(no 'fundl' entry in the header's __metadata__\)",
        ),
        (
            _with_length(b'{"__metadata__":{"fundl":"["}}'),
            r"the fundl manifest is not a JSON object of format",
        ),
    ],
)
def test_corrupt_files_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    for read in (checkpoint.restore, checkpoint.read_metadata):
        with pytest.raises(
            CheckpointError, match=rf"{read.__name__}: .*bad\.safetensors: {message}"
        ):
            read(path)


def test_an_absurd_header_length_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(
        CheckpointError,
        match=r"header length 1099511627776 is over safetensors' limit of 100000000",
    ):
        checkpoint.read_metadata(path)


def test_a_safetensors_file_from_another_tool_has_no_manifest(tmp_path):
    path = tmp_path / "torch.safetensors"
    safetensors.numpy.save_file(
        {"weight": np.ones((2, 2), np.float32)}, path, metadata={"format": "pt"}
    )
    with pytest.raises(
        CheckpointError, match=r"no fundl manifest .* read with safetensors\.numpy\.load_file"
    ):
        checkpoint.restore(path)
    assert issubclass(CheckpointError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"restore: no checkpoint at .*missing\.safetensors"
    ):
        checkpoint.restore(tmp_path / "missing")


def test_truncated_checkpoints(tmp_path, params):
    path = checkpoint.save(tmp_path / "full", params)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cuts = {
        5: r"not a safetensors file: 5 bytes",
        8 + n // 2: rf"header length {n} is larger than the file \({8 + n // 2} bytes\): truncated",
        8
        + n
        + 3: r"data shorter than the offsets say: tensor '.*' ends at byte \d+ of the data but only 3 bytes follow the header",
        len(raw)
        - 1: r"data shorter than the offsets say: tensor '.*' ends at byte \d+ of the data",
    }
    for cut, message in cuts.items():
        short = tmp_path / f"cut{cut}.safetensors"
        short.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match=rf"restore: .*cut{cut}\.safetensors: {message}"):
            checkpoint.restore(short)
        with pytest.raises(CheckpointError, match=message):
            checkpoint.read_metadata(short)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            _edit_manifest(lambda m: m.update(version=2)),
            r"format version 2 is newer than this fundl reads \(1\)",
        ),
        (
            lambda h: {k: v for k, v in h.items() if k != "w"},
            r"the manifest lists tensor 'w' but the file does not hold it",
        ),
        (
            lambda h: {**h, "w": {**h["w"], "dtype": "F4"}},
            r"tensor 'w' has dtype 'F4', which fundl cannot read",
        ),
        (
            lambda h: {**h, "w": {**h["w"], "dtype": "I32"}},
            r"tensor 'w' is I32 \[2, 3\] but the manifest says float32 \[2, 3\]",
        ),
        (
            lambda h: {**h, "w": {**h["w"], "shape": [3, 3]}},
            r"tensor 'w' spans bytes 0\.\.24, which does not fit its dtype F32 and shape \[3, 3\]",
        ),
        (lambda h: {**h, "w": {"dtype": "F32"}}, r"tensor 'w' has a malformed header entry"),
        (_edit_manifest(lambda m: m.pop("leaves")), r"the fundl manifest has no 'leaves' object"),
        (
            _edit_manifest(lambda m: m["leaves"]["w"].pop("path")),
            r"the manifest entry of tensor 'w' is malformed: \{'dtype'",
        ),
    ],
)
def test_inconsistent_headers(tmp_path, edit, message):
    path = checkpoint.save(tmp_path / "h", {"w": jnp.ones((2, 3))})
    _rewrite_header(path, edit)
    with pytest.raises(CheckpointError, match=rf"restore: .*h\.safetensors: {message}"):
        checkpoint.restore(path)


# --- the manager --------------------------------------------------------------------


def _tree(step):
    return {"w": jnp.full((2,), float(step)), "step": step}


def test_manager_keeps_the_last_k(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep_last=2)
    assert manager.steps() == [] and manager.latest_step() is None and manager.best_step() is None
    for step in [1, 2, 3, 4]:
        path = manager.save(step, _tree(step))
        assert path == tmp_path / "run" / f"step_{step:08d}.safetensors"
    assert manager.steps() == [3, 4] and manager.latest_step() == 4
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "step_00000003.safetensors",
        "step_00000004.safetensors",
    ]
    chex.assert_trees_all_equal(
        manager.restore(), {"w": jnp.full((2,), 4.0), "step": jnp.asarray(4)}
    )
    chex.assert_trees_all_equal(manager.restore(3, _tree(0)), _tree(3))
    assert type(manager.restore(step=3, template=_tree(0))["step"]) is int


def test_manager_keeps_the_best_although_old(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, monitor="loss")
    for step, loss in [(10, 0.5), (20, 0.1), (30, 0.4), (40, 0.3), (50, 0.2)]:
        manager.save(step, _tree(step), metrics={"loss": loss, "acc": 1 - loss})
    assert manager.steps() == [20, 40, 50]
    assert manager.best_step() == 20
    chex.assert_trees_all_equal(manager.restore_best(_tree(0)), _tree(20))
    assert manager.metrics(20) == {"loss": 0.1, "acc": 0.9}


def test_a_new_manager_reads_the_same_directory(tmp_path):
    first = CheckpointManager(tmp_path, keep_last=1, monitor="acc", mode="max")
    for step, acc in [(1, 0.7), (2, 0.9), (3, 0.8)]:
        first.save(step, _tree(step), metrics={"acc": acc}, metadata={"note": f"step {step}"})
    second = CheckpointManager(tmp_path, keep_last=1, monitor="acc", mode="max")
    assert second.steps() == [2, 3] and second.latest_step() == 3 and second.best_step() == 2
    assert second.read_metadata(2) == {"note": "step 2"}
    second.save(4, _tree(4), metrics={"acc": 0.95})
    assert second.steps() == [4] and second.best_step() == 4


@pytest.mark.parametrize("mode, best", [("min", 1), ("max", 3)])
def test_manager_modes(tmp_path, mode, best):
    manager = CheckpointManager(tmp_path, keep_last=5, monitor="m", mode=mode)
    for step, m in [(1, -1.0), (2, 0.0), (3, 2.0), (4, 2.0), (5, -1.0)]:
        manager.save(step, _tree(step), metrics={"m": m})
    assert manager.best_step() == best  # ties go to the earlier step


def test_nan_never_becomes_the_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1, monitor="loss")
    manager.save(1, _tree(1), metrics={"loss": float("nan")})
    assert manager.best_step() is None
    manager.save(2, _tree(2), metrics={"loss": jnp.float32(2.0)})
    manager.save(3, _tree(3), metrics={"loss": np.nan})
    manager.save(4, _tree(4), metrics={"loss": float("inf")})
    assert manager.best_step() == 2 and manager.steps() == [2, 4]
    assert math.isinf(manager.metrics(4)["loss"])
    manifest = json.loads(
        _header(manager.path(4))["__metadata__"]["fundl"]
    )  # strict JSON, no bare Infinity
    assert manifest["metrics"] == {"loss": "inf"} and manifest["step"] == 4


def test_manager_without_monitor_or_metrics(tmp_path):
    manager = CheckpointManager(tmp_path / "m", keep_last=1)
    manager.save(1, _tree(1), metrics={"loss": 0.1})
    assert manager.best_step() is None
    with pytest.raises(
        ValueError,
        match=r"CheckpointManager\.restore_best: no monitor; build the manager with monitor=",
    ):
        manager.restore_best()
    monitored = CheckpointManager(tmp_path / "m", monitor="val_loss")
    with pytest.raises(
        FileNotFoundError, match=r"restore_best: no checkpoint in .* has the metric 'val_loss'"
    ):
        monitored.restore_best()
    with pytest.raises(
        ValueError,
        match=r"CheckpointManager\.save: metrics has no 'val_loss' \(the monitor\); got \['loss'\]",
    ):
        monitored.save(2, _tree(2), metrics={"loss": 0.1})
    monitored.save(2, _tree(2))  # saving without metrics is fine
    assert monitored.steps() == [1, 2]


def test_manager_restore_errors(tmp_path):
    manager = CheckpointManager(tmp_path / "empty")
    with pytest.raises(
        FileNotFoundError, match=r"CheckpointManager\.restore: no checkpoints in .*empty"
    ):
        manager.restore()
    manager.save(5, _tree(5))
    with pytest.raises(
        FileNotFoundError,
        match=r"CheckpointManager\.restore: no checkpoint for step 6 in .*; steps: \[5\]",
    ):
        manager.restore(6)
    with pytest.raises(
        FileNotFoundError, match=r"CheckpointManager\.read_metadata: no checkpoint for step 1"
    ):
        manager.read_metadata(1)


def test_manager_ignores_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".step_00000009.safetensors.ab12.tmp").write_bytes(b"partial")
    manager = CheckpointManager(tmp_path)
    manager.save(3, _tree(3))
    assert manager.steps() == [3]
    assert manager.path(123456789).name == "step_123456789.safetensors"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"keep_last": 0}, ValueError, r"CheckpointManager: keep_last must be an int >= 1, got 0"),
        ({"keep_last": 2.5}, ValueError, r"keep_last must be an int >= 1, got 2\.5"),
        (
            {"mode": "best"},
            ValueError,
            r"CheckpointManager: mode must be one of 'min', 'max', got 'best'",
        ),
        (
            {"monitor": 3},
            TypeError,
            r"CheckpointManager: monitor must be a metric name \(str\) or None, got 3",
        ),
    ],
)
def test_manager_validates_its_options(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        CheckpointManager(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "step, metrics, error, message",
    [
        (-1, None, ValueError, r"CheckpointManager\.save: step must be an int >= 0, got -1"),
        (1.5, None, ValueError, r"step must be an int >= 0, got 1\.5"),
        (
            1,
            {"loss": "low"},
            TypeError,
            r"CheckpointManager\.save: metrics\['loss'\] must be a number, got 'low'",
        ),
        (1, {0: 1.0}, TypeError, r"CheckpointManager\.save: metric names must be str, got 0"),
    ],
)
def test_manager_save_validates(tmp_path, step, metrics, error, message):
    with pytest.raises(error, match=message):
        CheckpointManager(tmp_path).save(step, _tree(1), metrics=metrics)


def test_manager_accepts_integer_array_steps(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(jnp.int32(12), _tree(12))
    assert manager.steps() == [12]
    assert re.fullmatch(
        r"CheckpointManager\('.*', keep_last=3, monitor=None, mode='min'\)", repr(manager)
    )
