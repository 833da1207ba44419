"""fundl.nn.combinators: composition, parameter naming, mlp, jit/vmap and errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import activations, initializers
from fundl.nn import Activation, BatchNorm, Dense, Dropout, Parallel, Residual, Sequential, mlp


def test_notes_network_shapes_and_names():
    model = mlp([2, 3, 3, 1], "relu", "sigmoid")
    params = model.init(jax.random.key(0))
    assert model.names == ("dense1", "relu1", "dense2", "relu2", "dense3", "sigmoid1")
    assert jax.tree.map(jnp.shape, params) == {
        "dense1": {"W": (3, 2), "b": (3,)},
        "dense2": {"W": (3, 3), "b": (3,)},
        "dense3": {"W": (1, 3), "b": (1,)},
    }
    assert model.output_shape() == (1,)
    y = model.apply(params, jnp.ones((5, 2)))
    chex.assert_shape(y, (5, 1))
    assert bool(jnp.all((y > 0) & (y < 1)))


def test_mlp_picks_he_and_xavier_per_the_notes():
    model = mlp([2, 3, 1], "tanh", None)
    dense_layers = [l for l in model.layers if isinstance(l, Dense)]
    assert dense_layers[0].w_init is initializers.xavier_normal  # before tanh
    assert dense_layers[1].w_init is initializers.xavier_normal  # linear output
    model = mlp([2, 3, 1], "relu", "sigmoid")
    dense_layers = [l for l in model.layers if isinstance(l, Dense)]
    assert dense_layers[0].w_init is initializers.he_normal
    assert dense_layers[1].w_init is initializers.xavier_normal


def test_apply_equals_hand_composition(f32_tol):
    model = Sequential([Dense(4), "tanh", Dense(2)], input_shape=(3,))
    params = model.init(jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (6, 3))
    p1, p2 = params["dense1"], params["dense2"]
    expected = jnp.tanh(x @ p1["W"].T + p1["b"][None, :]) @ p2["W"].T + p2["b"][None, :]
    chex.assert_trees_all_close(model.apply(params, x), expected, **f32_tol(1e-6, 1e-7))


def test_nested_sequential():
    inner = Sequential([Dense(3), "relu"])
    model = Sequential([inner, Dense(2)])
    params = model.init(jax.random.key(0), (4,))
    assert set(params) == {"sequential1", "dense1"}
    assert set(params["sequential1"]) == {"dense1"}
    chex.assert_shape(model.apply(params, jnp.ones((2, 4))), (2, 2))


class TestTransforms(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree(self):
        model = mlp([3, 5, 2], "relu")
        params = model.init(jax.random.key(0))
        x = jax.random.normal(jax.random.key(1), (4, 3))
        chex.assert_trees_all_close(
            self.variant(model.apply)(params, x), model.apply(params, x), rtol=1e-6
        )


def test_vmap_over_an_ensemble_of_params(highest_precision):
    # full float32 matmuls: a vmapped (batched) and a single product agree to rounding only then
    model = mlp([3, 4, 1], "relu")
    keys = jax.random.split(jax.random.key(0), 5)
    ensemble = jax.vmap(lambda k: model.init(k))(keys)
    x = jnp.ones((2, 3))
    out = jax.vmap(model.apply, in_axes=(0, None))(ensemble, x)
    chex.assert_shape(out, (5, 2, 1))
    second = jax.tree.map(lambda a: a[1], ensemble)
    chex.assert_trees_all_close(out[1], model.apply(second, x), rtol=1e-6)


def test_custom_primitive_activation():
    model = mlp([2, 3, 1], activations.softplus, None)
    params = model.init(jax.random.key(0))
    assert model.layers[1] == Activation("softplus")
    chex.assert_shape(model.apply(params, jnp.ones((1, 2))), (1, 1))


def test_errors():
    model = mlp([2, 3, 1])
    params = model.init(jax.random.key(0))
    with pytest.raises(
        ValueError,
        match=r"dense1: dense: expected input with last dim 2 \(W has shape \(3, 2\)\), got shape \(4, 5\)",
    ):
        model.apply(params, jnp.ones((4, 5)))
    with pytest.raises(
        ValueError, match=r"Sequential.init: no input shape; pass init\(key, input_shape\)"
    ):
        Sequential([Dense(2)]).init(jax.random.key(0))
    with pytest.raises(TypeError, match=r"Sequential: layer 1 \(42\) is not a layer"):
        Sequential([Dense(2), 42])
    with pytest.raises(TypeError, match=r"Sequential: expected a list of layers, got 'relu'"):
        Sequential("relu")
    with pytest.raises(
        ValueError,
        match=r"mlp: sizes must be at least two positive integers \(n\^\[0\], ..., n\^\[L\]\), got \(3,\)",
    ):
        mlp([3])
    with pytest.raises(
        ValueError, match=r"mlp: sizes must be at least two positive integers .* got \(3, 0\)"
    ):
        mlp([3, 0])
    with pytest.raises(ValueError, match=r"activation: unknown activation 'relux'"):
        mlp([3, 2], "relux")


def test_params_are_plain_dicts_of_arrays():
    params = mlp([2, 3, 1]).init(jax.random.key(0))
    assert type(params) is dict and type(params["dense1"]) is dict
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(params))
    np.testing.assert_array_equal(params["dense1"]["b"], np.zeros(3))


def test_another_models_params_are_refused_naming_the_layer():
    x = jnp.ones((100, 2))
    model = mlp([2, 16, 16, 3])
    deeper = mlp([2, 16, 16, 16, 3]).init(jax.random.key(0))
    with pytest.raises(
        ValueError,
        match=r"Sequential.apply: params has 'dense4', which is not a layer of this model \(its "
        r"layers: dense1, relu1, dense2, relu2, dense3\); are these another model's parameters",
    ):
        model.apply(deeper, x)
    narrower = mlp([2, 16, 16]).init(jax.random.key(0))
    with pytest.raises(
        ValueError,
        match=r"dense2: Dense\(3, w_init=xavier_normal\): params\['W'\] has shape \(16, 16\); "
        r"for inputs of shape \(100, 16\) it expects \(3, 16\)",
    ):
        mlp([2, 16, 3]).apply(narrower, x)
    with pytest.raises(ValueError, match=r"relu1: Activation\('relu'\): has no parameters"):
        model.apply({**model.init(0), "relu1": {"W": jnp.ones(1)}}, x)
    with pytest.raises(TypeError, match=r"Sequential.apply: params must be a dict"):
        model.apply([1, 2], x)
    # under jit the check runs once, when traced
    jax.jit(model.apply)(model.init(0), x)


def test_an_int_seed_is_a_key():
    model = mlp([2, 3, 1])
    chex.assert_trees_all_equal(model.init(3), model.init(jax.random.key(3)))


# --- Residual and Parallel ---------------------------------------------------------------


def test_residual_adds_the_shortcut_and_projects_it_when_asked(f32_tol):
    block = Sequential([Dense(4), "tanh", Dense(4)])
    res = Residual(block)
    params = res.init(0, (4,))
    x = jax.random.normal(jax.random.key(1), (3, 4))
    chex.assert_trees_all_close(
        res.apply(params, x), block.apply(params["block"], x) + x, rtol=1e-6
    )
    proj = Residual(Dense(2), projection=Dense(2, use_bias=False))
    p = proj.init(0, (4,))
    assert set(p) == {"block", "projection"}
    expected = x @ p["block"]["W"].T + p["block"]["b"][None] + x @ p["projection"]["W"].T
    chex.assert_trees_all_close(proj.apply(p, x), expected, **f32_tol(1e-6, 1e-7))
    # the shortcut's gradient: dL/dx = dL/dy (I + J_block)
    g = jax.grad(lambda x: jnp.sum(res.apply(params, x)))(x)
    g_block = jax.grad(lambda x: jnp.sum(block.apply(params["block"], x)))(x)
    chex.assert_trees_all_close(g, g_block + 1.0, rtol=1e-6)


def test_parallel_concatenates_or_sums_the_branches(f32_tol):
    a, b = Dense(3), Sequential([Dense(2), "relu"])
    cat = Parallel([a, b])
    p = cat.init(0, (4,))
    x = jax.random.normal(jax.random.key(2), (5, 4))
    expected = jnp.concatenate([a.apply(p["branch1"], x), b.apply(p["branch2"], x)], axis=-1)
    chex.assert_trees_all_close(cat.apply(p, x), expected)
    summed = Parallel([Dense(3), Dense(3, use_bias=False)], combine="sum")
    q = summed.init(1, (4,))
    chex.assert_trees_all_close(
        summed.apply(q, x),
        Dense(3).apply(q["branch1"], x) + x @ q["branch2"]["W"].T,
        **f32_tol(1e-6, 1e-7),
    )


def test_each_sublayer_gets_its_own_split_of_the_key():
    seen = []

    class Record(Dropout):  # a layer that records the key it is given
        def apply_with_state(self, params, state, x, *, key=None, train=False):
            seen.append(key)
            return x, state

    key = jax.random.key(3)
    Sequential([Record(), Dense(2), Record()]).apply(
        Sequential([Record(), Dense(2), Record()]).init(0, (2,)), jnp.ones((1, 2)), key=key
    )
    expected = jax.random.split(key, 3)
    chex.assert_trees_all_equal(jax.random.key_data(seen[0]), jax.random.key_data(expected[0]))
    chex.assert_trees_all_equal(jax.random.key_data(seen[1]), jax.random.key_data(expected[2]))
    seen.clear()
    Parallel([Record(), Record()]).apply({}, jnp.ones((1, 2)), key=key)
    assert not np.array_equal(jax.random.key_data(seen[0]), jax.random.key_data(seen[1]))


def test_container_errors():
    with pytest.raises(
        ValueError,
        match=r"Residual: the block maps inputs of shape \(4,\) to \(3,\), but the shortcut "
        r"gives \(4,\); they must match to be added \(pass a projection= layer mapping the input "
        r"to the block's output shape: Dense\(n\) for features, a 1×1 Conv2D",
    ):
        Residual(Dense(3)).init(0, (4,))
    with pytest.raises(
        ValueError,
        match=r"Parallel: to sum the branches' outputs they must agree in their whole shape; "
        r"for inputs of shape \(4,\) they are \[\(3,\), \(2,\)\]",
    ):
        Parallel([Dense(3), Dense(2)], combine="sum").init(0, (4,))
    with pytest.raises(ValueError, match=r"Parallel: expected two or more branches, got 1"):
        Parallel([Dense(3)])
    with pytest.raises(
        ValueError, match=r"Parallel: combine must be one of 'concat', 'sum'; got 'mean'"
    ):
        Parallel([Dense(3), Dense(3)], combine="mean")
    with pytest.raises(TypeError, match=r"Residual: layer block \(42\) is not a layer"):
        Residual(42)
    model = Sequential([Dense(2), BatchNorm()], input_shape=(3,))
    params, state = model.init_with_state(0)
    with pytest.raises(
        ValueError, match=r"Sequential.apply: state has 'batch_norm7', which is not a layer"
    ):
        model.apply_with_state(params, {**state, "batch_norm7": {}}, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"Sequential.apply: train must be True or False, got 1"):
        model.apply_with_state(params, state, jnp.ones((4, 3)), train=1)


def test_input_shape_dims_must_be_ints_and_layer_names_unique():
    """A float dim was truncated (2.7 -> 2); a kind ending in a digit could take another
    layer's name ("dense1" + 1 = "dense" + 11), and the two shared one params entry."""
    with pytest.raises(TypeError, match=r"Sequential: input_shape must be a tuple of ints"):
        Sequential([Dense(3)], input_shape=(2.7,))
    with pytest.raises(ValueError, match=r"Sequential: input_shape must have non-negative dims"):
        Sequential([Dense(3)], input_shape=(-2,))
    with pytest.raises(TypeError, match=r"Sequential.init: input_shape .* got \(4.9,\)"):
        Sequential([Dense(3)]).init(0, (4.9,))
    with pytest.raises(TypeError, match=r"Sequential: input_shape must be a tuple of ints"):
        Sequential([Dense(3)], input_shape=4)
    assert Sequential([Dense(3)], input_shape=np.array([2])).input_shape == (2,)

    class DenseOne(Dense):
        kind = "dense1"

    with pytest.raises(ValueError, match=r"layers 10 \(Dense\(2\)\) and 11 .* named 'dense11'"):
        Sequential([Dense(2)] * 11 + [DenseOne(2)])
