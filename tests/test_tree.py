"""fundl.tree: norms, weight masks and structure errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from fundl import tree


def test_global_norm():
    np.testing.assert_allclose(
        tree.global_norm({"a": jnp.array([3.0]), "b": [jnp.array([[4.0]])]}), 5.0
    )
    assert tree.global_norm([]).dtype == jnp.float32


def test_is_weight_and_mask_tree():
    params = {"W": jnp.ones((2, 3)), "b": jnp.ones(3), "k": jnp.ones((3, 3, 1, 4))}
    by_key = dict(zip(sorted(params), tree.mask_tree("t", params, tree.is_weight)))
    assert by_key == {"W": True, "b": False, "k": True}
    assert tree.mask_tree("t", params, None) == [True, True, True]
    assert tree.mask_tree("t", params, {"W": False, "b": True, "k": False}) == [False, True, False]


@pytest.mark.parametrize(
    "other, where",
    [
        ({"a": {"W": 1, "c": 2}}, r"\['a'\]\['b'\] vs \['a'\]\['c'\]"),
        ({"a": {"W": 1}}, r"\['a'\]\['b'\] only in the first"),
        ({"a": {"W": 1, "b": 2, "z": 3}}, r"\['a'\]\['z'\] only in the second"),
        ({"a": [1, 2]}, r"\['a'\]\['W'\] vs \['a'\]\[0\]"),
    ],
)
def test_check_same_structure_names_the_first_difference(other, where):
    with pytest.raises(ValueError, match=rf"adam: grads and params differ in structure at {where}"):
        tree.check_same_structure("adam", {"a": {"W": 1, "b": 2}}, other, "grads", "params")


def test_same_structure_passes():
    tree.check_same_structure("x", {"a": 1}, {"a": jnp.ones(2)}, "a", "b")
