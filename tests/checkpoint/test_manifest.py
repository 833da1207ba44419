"""fundl.checkpoint.manifest: pytrees to manifest nodes and back, and the limits.

Names and containers, typed keys and Python scalars, the stand-in NamedTuples, what
save refuses, and crafted manifests that must raise CheckpointError.
"""

import collections
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from hypothesis import strategies as st

import fundl
from fundl import checkpoint
from fundl.checkpoint import CheckpointError, manifest


# --- names --------------------------------------------------------------------------


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


# --- containers and leaves ----------------------------------------------------------


def test_params_round_trip(tmp_path, params):
    path = checkpoint.save(tmp_path / "p", params)
    chex.assert_trees_all_equal(checkpoint.restore(path), params)
    chex.assert_trees_all_equal(checkpoint.restore(path, params), params)


def test_optimizer_state_round_trips_with_its_named_tuples(adam_state, tmp_path, params):
    state = adam_state
    assert int(state.count) == 3
    path = checkpoint.save(tmp_path / "opt", state)
    fresh = fundl.optim.adam(1e-3).init(params)
    restored = checkpoint.restore(path, fresh)
    chex.assert_trees_all_equal(restored, state)
    assert isinstance(restored, fundl.optim.AdamState)  # the template's type
    assert int(restored.count) == 3
    assert "mu/dense1/W" in safetensors.numpy.load_file(path)


def test_named_tuples_without_template_come_back_as_stand_ins(adam_state, tmp_path, params):
    state = adam_state
    restored = checkpoint.restore(checkpoint.save(tmp_path / "opt", state))
    assert type(restored).__name__ == "AdamState" and restored._fields == ("count", "mu", "nu")
    assert not isinstance(restored, fundl.optim.AdamState)  # a stand-in: no class is imported
    chex.assert_trees_all_equal(restored.mu, state.mu)
    chex.assert_trees_all_equal(restored.count, state.count)
    empty = checkpoint.restore(checkpoint.save(tmp_path / "empty", {"s": fundl.optim.EmptyState()}))
    assert empty["s"] == () and type(empty["s"]).__name__ == "EmptyState"
    again = checkpoint.restore(checkpoint.save(tmp_path / "opt2", state))
    assert jax.tree.structure(again) == jax.tree.structure(restored)


def test_the_stand_in_class_cache_is_bounded(tmp_path):
    limit = manifest.standin_namedtuple.cache_info().maxsize
    assert limit is not None and limit >= manifest.MAX_CLASSES
    n = manifest.MAX_CLASSES  # the most one file may hold
    for batch in range(limit // n + 1):  # files of n distinct classes each: more than it holds
        tree = [collections.namedtuple(f"State{batch}_{i}", ["x"])(jnp.ones(1)) for i in range(n)]
        restored = checkpoint.restore(checkpoint.save(tmp_path / f"many{batch}", tree))
        assert [type(s).__name__ for s in restored] == [f"State{batch}_{i}" for i in range(n)]
    assert manifest.standin_namedtuple.cache_info().currsize <= limit


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
    assert restored["nothing"] is None and restored["layers"][0]["b"] is None
    assert restored["layers"][1][1] is None
    assert restored["empty"] == {} and restored["layers"][1][2] == []
    assert type(restored["layers"]) is list and type(restored["pair"]) is tuple
    assert type(restored["layers"][1]) is tuple
    # Python scalars come back as 0-d arrays without a template (64-bit ones under JAX's rule).
    assert isinstance(restored["n"], jax.Array) and restored["n"].dtype == jnp.int32
    assert int(restored["n"]) == 3
    assert restored["flag"].dtype == jnp.bool_ and float(restored["lr"]) == 0.5
    expected = {**tree, "flag": jnp.asarray(True), "lr": jnp.asarray(0.5), "n": jnp.asarray(3)}
    chex.assert_trees_all_equal(restored, expected)
    assert jax.tree.structure(restored) == jax.tree.structure(expected)


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


# --- what save refuses --------------------------------------------------------------


class _Clash:
    """A container whose two children have key paths that print differently but name alike."""

    def __init__(self, a, b):
        self.a, self.b = a, b


jax.tree_util.register_pytree_with_keys(
    _Clash,
    lambda c: (((jax.tree_util.GetAttrKey("x"), c.a), (jax.tree_util.DictKey("x"), c.b)), None),
    lambda _, children: _Clash(*children),
)


def _nested(depth):
    tree = jnp.ones(1)
    for _ in range(depth):
        tree = [tree]
    return tree


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
        (
            _Clash(jnp.ones(1), jnp.ones(1)),
            ValueError,
            r"save: \['x'\] and \.x both get the tensor name 'x'",
        ),
        (
            _nested(101),
            ValueError,
            r"save: (\[0\]){100} holds containers nested 101 deep; a checkpoint holds at most 100",
        ),
        (
            collections.namedtuple("Wide", [f"f{i}" for i in range(1001)])(*[None] * 1001),
            ValueError,
            (
                r"save: \(root\) is a .*Wide of 1001 fields; a checkpoint holds NamedTuples of at "
                r"most 1000"
            ),
        ),
        (
            [None] * 10_001,
            ValueError,
            r"save: the tree has 10002 nodes for 0 arrays; a checkpoint holds at most 10000",
        ),
        (
            [collections.namedtuple(f"S{i}", [])() for i in range(257)],
            ValueError,
            r"save: the tree holds 257 distinct NamedTuple classes; a checkpoint holds at most 256",
        ),
        ({"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}}, None, None),
        (_nested(100), None, None),
    ],
)
def test_save_rejects_what_it_cannot_store(tmp_path, tree, error, message):
    if error is None:  # distinct key paths get distinct names; 100 levels are fine
        restored = checkpoint.restore(checkpoint.save(tmp_path / "ok", tree))
        chex.assert_trees_all_equal(restored, tree)
        return
    with pytest.raises(error, match=message):
        checkpoint.save(tmp_path / "bad", tree)
    assert list(tmp_path.iterdir()) == []


# --- crafted manifests --------------------------------------------------------------


@pytest.fixture
def base(tmp_path):
    """A small checkpoint whose manifest the crafted rows edit: {"key": key, "w": f32 (2, 3)}."""
    return checkpoint.save(tmp_path / "h", {"w": jnp.ones((2, 3)), "key": jax.random.key(0)})


def _tree(edit):
    """Edit the manifest's tree (the root dict node, keys ["key", "w"])."""
    return lambda m: edit(m["tree"])


def _leaf(name, edit):
    return lambda m: edit(m["leaves"][name])


def _set(**fields):
    return lambda node: node.update(fields)


def _text(text):
    """Replace the whole manifest by ``text``."""

    def edit(m):
        m.clear()
        m["__text__"] = text

    return edit


def _wrap(depth):
    def edit(m):
        for _ in range(depth):
            m["tree"] = {"type": "list", "children": [m["tree"]]}

    return edit


_W = {"type": "leaf", "name": "w"}
_KEY = {"type": "leaf", "name": "key"}

_MANIFESTS = [
    (lambda m: m.update(version=3), r"format version 3 is newer than this fundl reads \(2\)"),
    (lambda m: m.update(version="2"), r"format version '2' is not an integer >= 1"),
    (lambda m: m.update(version=0), r"format version 0 is not an integer >= 1"),
    (lambda m: m.update(version=True), r"format version True is not an integer >= 1"),
    (lambda m: m.update(format="other"), r"the fundl manifest is not a JSON object of format"),
    (lambda m: m.pop("tree"), r"the fundl manifest has no 'tree' object"),
    (lambda m: m.pop("leaves"), r"the fundl manifest has no 'leaves' object"),
    (lambda m: m.update(metadata=[]), r"the fundl manifest has no 'metadata' object"),
    (_text("[" * 100_000 + "]" * 100_000), r"not a JSON object .*\(nested deeper than the JSON"),
    (_text('{"format": 1, "format": 2}'), r"not a JSON object .*\(duplicate key 'format'\)"),
    (_text('{"version": NaN}'), r"not a JSON object .*\(NaN is not JSON\)"),
    (
        _leaf("w", lambda i: i.pop("path")),
        r"the manifest entry of tensor 'w' is malformed: \{'dtype'",
    ),
    (_leaf("w", lambda i: i.pop("crc32")), r"tensor 'w' is malformed: .*; expected \{'path': str"),
    (_leaf("w", _set(crc32=-1)), r"the manifest entry of tensor 'w' is malformed"),
    (_leaf("w", _set(crc32="0")), r"the manifest entry of tensor 'w' is malformed"),
    (_leaf("w", _set(crc32=2**32)), r"the manifest entry of tensor 'w' is malformed"),
    (_leaf("w", _set(shape=[2, -3])), r"the manifest entry of tensor 'w' is malformed"),
    (_leaf("w", _set(shape="2x3")), r"the manifest entry of tensor 'w' is malformed"),
    (_leaf("key", _set(key_impl=5)), r"the manifest entry of tensor 'key' is malformed"),
    (_leaf("w", _set(dtype="int32")), r"tensor 'w' is F32 \[2, 3\] but the manifest says int32"),
    (_leaf("w", _set(shape=[3, 2])), r"tensor 'w' is F32 \[2, 3\] but the manifest says float32"),
    (_leaf("key", _set(shape=[2])), r"tensor 'key' is U32 \[2\] but the manifest says key<fry>"),
    (_leaf("w", _set(path="['key']")), r"tensors 'key' and 'w' have the same key path \['key'\]"),
    (
        lambda m: m["leaves"].pop("w"),
        r"the file holds tensor 'w', which the manifest does not list",
    ),
    (lambda m: m.update(tree=[]), r"the fundl manifest has no 'tree' object"),
    (
        _tree(lambda t: t.pop("type")),
        r"tree node at \(root\) is malformed: expected an object with a 'type'",
    ),
    (
        _tree(_set(type=None)),
        r"tree node at \(root\) is malformed: expected an object with a 'type'",
    ),
    (_tree(_set(type="set")), r"tree node at \(root\) is malformed: unknown node type 'set'"),
    (_tree(_set(keys="kw")), r"node at \(root\) is malformed: 'keys' is 'kw', not a list"),
    (_tree(_set(children={})), r"node at \(root\) is malformed: 'children' is \{\}, not a list"),
    (_tree(_set(keys=["key"])), r"'keys' has 1 entries but 'children' has 2"),
    (_tree(_set(keys=["key", "w", "x"])), r"'keys' has 3 entries but 'children' has 2"),
    (_tree(_set(keys=["key", 1.5])), r"'keys' must hold strings or integers, got \['key', 1\.5\]"),
    (_tree(_set(keys=["key", ["w"]])), r"'keys' must hold strings or integers"),
    (_tree(_set(keys=["w", "w"])), r"'keys' repeats an entry: \['w', 'w'\]"),
    (_tree(_set(keys=[True, 1])), r"'keys' repeats an entry"),
    (_tree(_set(type="node")), r"node at \(root\) is malformed: 'class' is None, not a string"),
    (
        _tree(_set(type="namedtuple", **{"class": "m.S", "fields": "ab"})),
        r"'fields' is 'ab', not a list",
    ),
    (
        _tree(_set(type="namedtuple", **{"class": "m.S", "fields": ["key", 2]})),
        r"'fields' must hold strings, got \['key', 2\]",
    ),
    (
        _tree(_set(type="namedtuple", **{"class": "m.S", "fields": ["key", "1w"]})),
        r"the NamedTuple field '1w' is not a Python identifier",
    ),
    (
        _tree(_set(type="namedtuple", **{"class": "m.S", "fields": ["key", "class"]})),
        r"the NamedTuple field 'class' is not a Python identifier",
    ),
    (
        _tree(_set(type="namedtuple", **{"class": "m.S", "fields": ["key", "_w"]})),
        r"the NamedTuple field '_w' starts with an underscore",
    ),
    (
        _tree(_set(type="namedtuple", **{"class": "m.S-1", "fields": ["key", "w"]})),
        r"the NamedTuple class name 'S-1' is not a Python identifier",
    ),
    (
        _tree(_set(type="namedtuple", **{"class": 3, "fields": ["key", "w"]})),
        r"'class' is 3, not a string",
    ),
    (
        _tree(
            _set(
                type="namedtuple",
                **{"class": "m.Wide", "fields": [f"f{i}" for i in range(1001)]},
                children=[_KEY, _W] + [{"type": "none"}] * 999,
            )
        ),
        r"a NamedTuple of 1001 fields; a checkpoint holds at most 1000",
    ),
    (_tree(_set(children=[_KEY, {"type": "leaf", "name": "v"}])), r"leaf names tensor 'v', which"),
    (_tree(_set(children=[_KEY, {"type": "leaf", "name": 5}])), r"leaf names tensor 5, which"),
    (_tree(_set(children=[_KEY, _KEY])), r"at \['w'\] is malformed: tensor 'key' is placed twice"),
    (
        _tree(_set(children=[_KEY, {"type": "none"}])),
        r"the manifest lists tensor 'w' but its tree does not place it",
    ),
    (_tree(_set(children=[_KEY, [_W]])), r"tree node at \['w'\] is malformed: expected an object"),
    (_wrap(100), r"the manifest's tree nests containers more than 100 deep \(at (\[0\]){20}"),
    (
        _tree(
            _set(
                keys=["key", "w", "n"],
                children=[_KEY, _W, {"type": "list", "children": [{"type": "none"}] * 10_100}],
            )
        ),
        r"the manifest's tree has more than 10032 nodes for 2 tensors",
    ),
    (
        _tree(
            _set(
                keys=["key", "w", "s"],
                children=[
                    _KEY,
                    _W,
                    {
                        "type": "list",
                        "children": [
                            {"type": "namedtuple", "class": f"m.S{i}", "fields": [], "children": []}
                            for i in range(257)
                        ],
                    },
                ],
            )
        ),
        r"malformed: more than 256 distinct NamedTuple classes in one file",
    ),
]


@pytest.mark.parametrize("edit, message", _MANIFESTS, ids=range(len(_MANIFESTS)))
def test_crafted_manifests_raise_checkpoint_error(base, rewrite_manifest, edit, message):
    rewrite_manifest(base, edit)
    for read in (checkpoint.restore, checkpoint.read_metadata):
        with pytest.raises(
            CheckpointError, match=rf"^{read.__name__}: .*h\.safetensors: .*{message}"
        ):
            read(base)
    template = {"w": jnp.zeros((2, 3)), "key": jax.random.key(0)}
    with pytest.raises(CheckpointError, match=message):  # a template does not skip the checks
        checkpoint.restore(base, template)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_leaf("key", _set(key_impl="nope")), r"\['key'\] is not a valid 'nope' key: unrecognized"),
        (_leaf("key", _set(key_impl="rbg")), r"\['key'\] is not a valid 'rbg' key"),
        (
            _leaf("key", _set(dtype="key<rbg>")),
            r"\['key'\] is a key<fry> key but the manifest says key<rbg>",
        ),
    ],
)
def test_crafted_keys_raise_checkpoint_error_when_read(base, rewrite_manifest, edit, message):
    rewrite_manifest(base, edit)
    with pytest.raises(CheckpointError, match=rf"^restore: .*h\.safetensors: {message}"):
        checkpoint.restore(base)


def test_the_manifest_has_a_checksum(base, rewrite_header):
    def rename(header):  # valid JSON, a different tree: the dict key "w" becomes "x"
        header["__metadata__"]["fundl"] = header["__metadata__"]["fundl"].replace(
            '"keys":["key","w"]', '"keys":["key","x"]'
        )
        return header

    rewrite_header(base, rename)
    for read in (checkpoint.restore, checkpoint.read_metadata):
        with pytest.raises(
            CheckpointError,
            match=rf"^{read.__name__}: .*h\.safetensors: the fundl manifest fails its checksum "
            r"\(crc32 [0-9a-f]{8}, the header says [0-9a-f]{8}\): the header is corrupt$",
        ):
            read(base)
    rewrite_header(base, lambda h: {**h, "__metadata__": {"fundl": h["__metadata__"]["fundl"]}})
    with pytest.raises(
        CheckpointError,
        match=r"h\.safetensors: no 'fundl\.crc32' entry in the header's __metadata__ \(the "
        r"manifest's CRC-32\)",
    ):
        checkpoint.restore(base)


def test_a_renamed_tensor_is_missing_from_the_file(base, rewrite_header):
    rewrite_header(base, lambda h: {("v" if k == "w" else k): v for k, v in h.items()})
    with pytest.raises(
        CheckpointError,
        match=r"restore: .*h\.safetensors: the manifest lists tensor 'w' but the file does not "
        r"hold it",
    ):
        checkpoint.restore(base)
