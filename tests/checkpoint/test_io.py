"""fundl.checkpoint.io: save, restore and read_metadata as a user calls them.

Metadata, training bundles, an exact resume, and the checks on the arguments.
"""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import checkpoint

# --- metadata -----------------------------------------------------------------------


def test_metadata_round_trip(tmp_path):
    metadata = {
        "model": "mlp",
        "sizes": [2, 4, 3],
        "lr": 1e-3,
        "nested": {"ok": True, "none": None},
        "pair": (1, 2),
    }
    path = checkpoint.save(tmp_path / "meta", {"x": jnp.ones(1)}, metadata=metadata)
    assert checkpoint.read_metadata(path) == {**metadata, "pair": [1, 2]}  # tuples become lists
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


# --- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda d: checkpoint.save(d / "m", {"x": jnp.ones(1)}, metadata=[1]),
            TypeError,
            r"^save: metadata must be a dict, got list$",
        ),
        (
            lambda d: checkpoint.save(3, {"x": jnp.ones(1)}),
            TypeError,
            r"^save: path must be a str or os\.PathLike, got 3$",
        ),
        (
            lambda d: checkpoint.save("", {"x": jnp.ones(1)}),
            ValueError,
            r"^save: path must name a file, got ''$",
        ),
        (
            lambda d: checkpoint.restore(b"ckpt"),
            TypeError,
            r"^restore: path must be a str or os\.PathLike, got b'ckpt'$",
        ),
        (
            lambda d: checkpoint.restore(d / "m", {"x": jnp.ones(1)}, partial=1),
            ValueError,
            r"^restore: partial must be True or False, got 1$",
        ),
        (
            lambda d: checkpoint.restore(d / "m", partial=True),
            ValueError,
            r"^restore: partial=True needs a template \(the leaves to read\)$",
        ),
        (
            lambda d: checkpoint.read_metadata(None),
            TypeError,
            r"^read_metadata: path must be a str or os\.PathLike, got None$",
        ),
    ],
)
def test_bad_arguments_name_the_function_and_the_argument(tmp_path, call, error, message):
    checkpoint.save(tmp_path / "m", {"x": jnp.ones(1)})
    with pytest.raises(error, match=message):
        call(tmp_path)


def test_a_donated_or_traced_leaf_is_named(tmp_path):
    # A donated array raised JAX's "Array has been deleted" RuntimeError, naming no leaf.
    w = jnp.ones(3)
    _ = jax.jit(lambda a: a + 1.0, donate_argnums=0)(w)
    assert w.is_deleted()
    with pytest.raises(
        ValueError, match=r"^save: \['p'\]\['w'\] is a deleted array \(donated to a jitted step"
    ):
        checkpoint.save(tmp_path / "d", {"p": {"w": w}})
    with pytest.raises(TypeError, match=r"^save: \['w'\] is a traced value \(save called inside"):
        jax.eval_shape(lambda a: checkpoint.save(tmp_path / "t", {"w": a}), jnp.ones(2))
    assert list(tmp_path.iterdir()) == []


def test_paths_may_be_str_or_pathlike(tmp_path):
    path = checkpoint.save(str(tmp_path / "s"), {"x": jnp.ones(1)})
    assert isinstance(path, pathlib.Path) and path.name == "s.safetensors"
    chex.assert_trees_all_equal(checkpoint.restore(str(path)), {"x": jnp.ones(1)})


# --- training state -----------------------------------------------------------------


def _bundle(params, opt_state, key):
    return {
        "params": params,
        "opt_state": opt_state,
        "step": 7,
        "key": key,
        "epoch": 2,
        "position": 5,
    }


def test_training_bundle_round_trips_with_a_template(adam_state, tmp_path, params):
    opt = fundl.optim.adam(1e-3)
    saved = _bundle(params, adam_state, jax.random.key(3))
    path = checkpoint.save(tmp_path / "run", saved)
    template = _bundle(jax.tree.map(jnp.zeros_like, params), opt.init(params), jax.random.key(0))
    template.update(step=0, epoch=0, position=0)
    restored = checkpoint.restore(path, template)
    chex.assert_trees_all_equal(restored, saved)
    assert jax.tree.structure(restored) == jax.tree.structure(saved)
    assert type(restored["step"]) is int
    assert (restored["step"], restored["epoch"], restored["position"]) == (7, 2, 5)
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
    # jax.eval_shape sees the Python ints as weakly-typed int32: those fix the kind, not the width
    from_shapes = checkpoint.restore(path, jax.eval_shape(lambda: template))
    chex.assert_trees_all_equal(from_shapes["params"], params)
    assert isinstance(from_shapes["opt_state"], fundl.optim.AdamState)
    assert from_shapes["step"].dtype == jnp.int32 and from_shapes["step"].weak_type
    assert int(from_shapes["step"]) == 7


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
