"""fundl.tree: norms, accumulation dtypes, weight masks, structure and shape errors."""

import jax
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


def test_check_same_shapes_names_the_leaf_and_both_shapes():
    params = {"dense": {"W": jnp.ones((2, 8)), "b": jnp.ones(8)}}
    W, b = r"\['dense'\]\['W'\]", r"\['dense'\]\['b'\]"
    for bad, where, shapes in [
        (
            {"W": jnp.ones((2, 8)), "b": jnp.ones((2, 8))},
            b,
            r"\(8,\) vs \(2, 8\)",
        ),  # would broadcast
        ({"W": jnp.ones((2, 8)), "b": jnp.ones(1)}, b, r"\(8,\) vs \(1,\)"),  # would broadcast
        ({"W": jnp.ones((8, 2)), "b": jnp.ones(8)}, W, r"\(2, 8\) vs \(8, 2\)"),  # transposed
    ]:
        with pytest.raises(
            ValueError,
            match=rf"^step: params and updates differ in shape at {where}: {shapes}; hint$",
        ):
            tree.check_same_shapes(
                "step", params, {"dense": bad}, "params", "updates", hint="; hint"
            )
    tree.check_same_shapes("step", params, jax.tree.map(jnp.zeros_like, params), "a", "b")
    tree.check_same_shapes("step", jnp.ones(()), 1.0, "a", "b")  # a scalar leaf at the root


def test_check_same_shapes_checks_the_structure_first():
    with pytest.raises(
        ValueError, match=r"x: a and b differ in structure at \['c'\] only in the first"
    ):
        tree.check_same_shapes("x", {"c": jnp.ones(2)}, {}, "a", "b")
    with pytest.raises(
        ValueError, match=r"x: a and b differ in shape at \(root\): \(2,\) vs \(3,\)"
    ):
        tree.check_same_shapes("x", jnp.ones(2), jnp.ones(3), "a", "b")


def test_accumulation_dtype_reads_dtypes_without_promotion(x64):
    assert tree.accumulation_dtype({"a": jnp.ones(1, jnp.bfloat16)}) == jnp.float32
    assert tree.accumulation_dtype((jnp.ones(1, jnp.bfloat16), jnp.ones(1, jnp.float16))) == (
        jnp.float32
    )
    assert tree.accumulation_dtype({}) == jnp.float32
    assert tree.accumulation_dtype([jnp.ones(1, jnp.int32)]) == jnp.float32
    with x64():
        mixed = [jnp.ones(1, jnp.float32), jnp.ones(1, jnp.float64), jnp.ones(1, jnp.bfloat16)]
        assert tree.accumulation_dtype(mixed) == jnp.float64
        norm = tree.global_norm(mixed)  # float32 meets float64 under strict promotion
        assert norm.dtype == jnp.float64
        np.testing.assert_allclose(norm, np.sqrt(3.0))


def test_global_norm_of_mixed_float32_and_bfloat16():
    norm = tree.global_norm({"a": jnp.full((4,), 1.5, jnp.bfloat16), "b": jnp.ones(5)})
    assert norm.dtype == jnp.float32
    np.testing.assert_allclose(norm, np.sqrt(4 * 1.5**2 + 5), rtol=1e-6)


def test_check_mask():
    predicate = tree.is_weight
    assert tree.check_mask("adamw", "mask", None) is None
    assert tree.check_mask("adamw", "mask", predicate) is predicate
    mask = {"W": True, "b": np.bool_(False)}
    assert tree.check_mask("adamw", "mask", mask) is mask
    with pytest.raises(
        ValueError,
        match=r"adamw: mask must be None, a predicate \(key_path, leaf\) -> bool or a pytree of "
        r"bools; got 1 at \['b'\]",
    ):
        tree.check_mask("adamw", "mask", {"W": True, "b": 1})
    with pytest.raises(ValueError, match=r"add_l2: mask must be .*; got 'weights' at \(root\)"):
        tree.check_mask("add_l2", "mask", "weights")
