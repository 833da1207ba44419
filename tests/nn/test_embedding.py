"""fundl.nn.embedding and Embedding: the lookup as a one-hot product, its scatter-add rule,
out-of-vocabulary ids, and the tied output projection."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import losses
from fundl.nn import Embedding, embedding

IDS = jnp.array([[3, 1, 3, 0], [4, 4, 4, 2]])  # repeats; row 5 never used


def test_lookup_and_gradient_are_the_one_hot_product(x64):
    with x64():
        E = jax.random.normal(jax.random.key(0), (6, 3), jnp.float64)
        g = jax.random.normal(jax.random.key(1), (2, 4, 3), jnp.float64)
        one_hot = jax.nn.one_hot(IDS, 6, dtype=jnp.float64)  # (2, 4, 6)
        y, vjp = jax.vjp(lambda E: embedding(E, IDS), E)
        chex.assert_trees_all_close(y, one_hot @ E, rtol=1e-15)
        (d_E,) = vjp(g)
        # dE = onehotᵀ g, summed over every position: repeated ids accumulate, unused rows 0
        chex.assert_trees_all_close(d_E, jnp.einsum("bsv,bsd->vd", one_hot, g), rtol=1e-14)
        assert float(jnp.abs(d_E[5]).max()) == 0.0
        chex.assert_trees_all_close(d_E[4], g[1, :3].sum(0), rtol=1e-14)


def test_out_of_vocabulary_ids_are_refused_eagerly_and_nan_under_jit():
    E = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"embedding: token ids must be in \[0, 4\)"):
        embedding(E, jnp.array([1, 4]))
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\]"):
        embedding(E, jnp.array([1, -1]))
    ids = jnp.array([1, 4, 2, -1])  # -1: NaN too, not NumPy's wrap to the last row
    y = jax.jit(embedding)(E, ids)
    assert bool(jnp.all(jnp.isnan(y[jnp.array([1, 3])])))
    assert not bool(jnp.any(jnp.isnan(y[jnp.array([0, 2])])))
    grad = jax.jit(jax.grad(lambda E, ids: jnp.nansum(embedding(E, ids))))(E, ids)
    with fundl.reference_mode():
        reference = jax.jit(jax.grad(lambda E, ids: jnp.nansum(embedding(E, ids))))(E, ids)
    chex.assert_trees_all_equal(grad, reference)  # the out-of-range ids' gradients dropped
    chex.assert_trees_all_equal(grad, jnp.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))


@pytest.mark.parametrize(
    "E, ids, error, message",
    [
        (
            jnp.ones((4, 2)),
            jnp.array([0.0, 1.0]),
            TypeError,
            r"embedding: expected integer token ids",
        ),
        (
            jnp.ones((4, 2, 1)),
            jnp.array([0]),
            ValueError,
            r"embedding: expected a table E of shape",
        ),
        (jnp.ones((4, 2), jnp.int32), jnp.array([0]), TypeError, r"embedding: expected a floating"),
    ],
)
def test_bad_inputs_are_refused(E, ids, error, message):
    with pytest.raises(error, match=message):
        embedding(E, ids)


def test_layer_init_is_lecun_normal_and_configs_are_checked():
    E = Embedding(4000, 16).init(jax.random.key(0))["E"]
    assert E.shape == (4000, 16) and E.dtype == jnp.float32
    np.testing.assert_allclose(float(jnp.std(E)), 1 / np.sqrt(16), rtol=0.02)  # 64,000 draws
    with pytest.raises(ValueError, match="Embedding: vocab_size"):
        Embedding(0, 4)
    with pytest.raises(ValueError, match="Embedding: param_dtype"):
        Embedding(4, 4, param_dtype=jnp.int32)
    with pytest.raises(TypeError, match=r"Embedding\(4, 3\): expected integer token ids"):
        Embedding(4, 3).apply({"E": jnp.ones((4, 3))}, jnp.ones((2,)))


def test_tied_output_projection_and_its_gradient(x64):
    """logits = E[ids] Eᵀ: the table's gradient has the lookup's part and attend's part."""
    with x64():
        layer = Embedding(6, 3)
        params = jax.tree.map(lambda e: e.astype(jnp.float64), layer.init(jax.random.key(2)))
        tokens = IDS.reshape(-1)

        def loss(p):
            return losses.softmax_cross_entropy(layer.attend(p, layer.apply(p, tokens)), tokens)

        chex.assert_trees_all_close(
            layer.attend(params, jnp.eye(3, dtype=jnp.float64)), params["E"].T, rtol=1e-15
        )
        grad = jax.grad(loss)(params)
        with fundl.reference_mode():
            reference = jax.grad(loss)(params)
        chex.assert_trees_all_close(grad, reference, rtol=1e-10)
        assert float(jnp.abs(grad["E"][5]).max()) > 0  # unused as input, still a logit row
