"""fundl.tree: norms, accumulation dtypes, weight masks, structure and shape errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import optim, tree


def test_global_norm():
    np.testing.assert_allclose(
        tree.global_norm({"a": jnp.array([3.0]), "b": [jnp.array([[4.0]])]}), 5.0
    )
    assert tree.global_norm([]).dtype == jnp.float32


_BIG = [
    {"a": np.array([3e19, 4e19, 1.0], np.float32)},  # Σ x² = 2.5e39 > float32's max
    {
        "a": np.array([[3e30]], np.float32),
        "b": np.array([-4e30, 1e-20], np.float32),
        "c": np.zeros(0, np.float32),
    },
    {"a": np.array([2e38, 2e38, 1.0], np.float32)},  # the norm itself is beyond float32: inf
    {"a": np.array([1e19, 1e19], np.float32), "b": np.array([1e19], jnp.bfloat16)},
]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("case", range(len(_BIG)))
def test_global_norm_of_large_finite_values_is_the_exact_norm(case, jit):
    values = _BIG[case]
    exact = np.sqrt(sum(np.sum(np.square(np.asarray(v, np.float64))) for v in values.values()))
    norm = (jax.jit(tree.global_norm) if jit else tree.global_norm)(values)
    assert norm.dtype == jnp.float32
    np.testing.assert_allclose(norm, np.float32(exact), rtol=1e-6)  # inf for case 2
    if np.isfinite(exact):  # the gradient x/‖x‖ too: ∂/∂s of s·√Σ(x/s)² would overflow
        grad = jax.grad(tree.global_norm)(jax.tree.map(jnp.asarray, values))
        for k, v in values.items():
            expected = np.asarray(v, np.float64) / exact
            np.testing.assert_allclose(
                np.asarray(grad[k], np.float64), expected, rtol=1e-2, atol=1e-30
            )


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"a": [1.0, np.nan, 2.0]}, np.nan),
        ({"a": [1.0, np.nan, 3e19]}, np.nan),  # overflow and NaN: still NaN
        ({"a": [np.inf, 1.0], "b": [np.nan]}, np.nan),
        ({"a": [1.0, -np.inf]}, np.inf),
        ({"a": [3e19, np.inf]}, np.inf),
        ({"a": [np.inf], "b": [-np.inf, 0.0]}, np.inf),
    ],
)
def test_global_norm_propagates_nan_and_inf(values, expected):
    values = {k: jnp.array(v, jnp.float32) for k, v in values.items()}
    for norm in (tree.global_norm(values), jax.jit(tree.global_norm)(values)):
        np.testing.assert_array_equal(norm, expected)


def test_global_norm_of_complex_leaves_is_real(x64):
    # |x|² = x·conj(x): the norm of [3i] is 3, not the complex sqrt(Σ x²) = 3i.
    norm = tree.global_norm({"a": jnp.array([3j])})
    assert norm.dtype == jnp.float32
    assert float(norm) == 3.0
    np.testing.assert_allclose(
        tree.global_norm({"a": jnp.array([1 + 2j, -2j], jnp.complex64), "b": jnp.ones(2)}),
        np.sqrt(1 + 4 + 4 + 2),
        rtol=1e-6,
    )
    big = tree.global_norm({"a": jnp.array([3e19 + 4e19j], jnp.complex64)})
    np.testing.assert_allclose(big, 5e19, rtol=1e-6)
    with x64():
        norm = tree.global_norm(
            {"a": jnp.array([3j], jnp.complex128), "b": jnp.ones(1, jnp.float32)}
        )
        assert norm.dtype == jnp.float64
        np.testing.assert_allclose(norm, np.sqrt(10.0), rtol=1e-12)


def test_is_weight_and_mask_tree():
    params = {"W": jnp.ones((2, 3)), "b": jnp.ones(3), "k": jnp.ones((3, 3, 1, 4))}
    by_key = dict(zip(sorted(params), tree.mask_tree("t", params, tree.is_weight)))
    assert by_key == {"W": True, "b": False, "k": True}
    assert tree.mask_tree("t", params, None) == [True, True, True]
    assert tree.mask_tree("t", params, {"W": False, "b": True, "k": False}) == [False, True, False]

    # optax's form: a function of the whole tree, returning a tree of bools
    def optax_mask(p):
        return jax.tree.map(lambda x: x.ndim == 1, p)

    assert tree.mask_tree("t", params, optax_mask) == [False, True, False]
    assert tree.mask_tree(
        "t", params, lambda p, *, unused=0: {"W": True, "b": False, "k": True}
    ) == [True, False, True]
    assert tree.mask_tree("t", params, lambda path, leaf: path[0].key == "k") == [
        False,
        False,
        True,
    ]


def test_a_params_tree_mask_must_return_a_matching_tree_of_bools():
    params = {"W": jnp.ones((2, 3)), "b": jnp.ones(3)}
    with pytest.raises(
        ValueError,
        match=r"^t: mask must be None, a pytree of bools, .*; mask\(params\) gave 1 at \['b'\]$",
    ):
        tree.mask_tree("t", params, lambda p: {"W": True, "b": 1})
    with pytest.raises(
        ValueError,
        match=r"^t: params and mask\(params\) differ in structure at \['b'\] only in the first",
    ):
        tree.mask_tree("t", params, lambda p: {"W": True})


_PARAMS = {"W": jnp.ones((2, 3)), "b": jnp.ones(3)}
_L2 = optim.add_l2(0.1, mask=lambda path, leaf: leaf != 0)


# A predicate that returned an array ended in NumPy's "truth value of an array with more
# than one element is ambiguous"; one returning 1 or None chose the leaf by truthiness.
@pytest.mark.parametrize(
    "call, name, returned",
    [
        (
            lambda: tree.mask_tree("t", _PARAMS, lambda path, leaf: leaf > 0),
            "t",
            r"an array of dtype bool and shape \(2, 3\)",
        ),
        (lambda: tree.mask_tree("t", _PARAMS, lambda path, leaf: leaf.ndim), "t", "2 of type int"),
        (
            lambda: tree.mask_tree("t", _PARAMS, lambda path, leaf: None),
            "t",
            "None of type NoneType",
        ),
        (
            lambda: jax.jit(lambda p: tree.mask_tree("t", p, lambda path, leaf: jnp.all(leaf > 0)))(
                _PARAMS
            ),
            "t",
            r"a traced array of dtype bool and shape \(\) \(decide from the path, shape or dtype",
        ),
        (  # an optimizer's weight-decay mask: the message names the optimizer
            lambda: _L2.update(_PARAMS, _L2.init(_PARAMS), _PARAMS),
            "add_l2",
            r"an array of dtype bool and shape \(2, 3\)",
        ),
    ],
)
def test_a_mask_predicate_must_return_a_bool(call, name, returned):
    with pytest.raises(
        TypeError,
        match=rf"^{name}: a mask predicate \(key_path, leaf\) -> bool must return True or False "
        rf"for each leaf; for the leaf at \['W'\] it returned {returned}",
    ):
        call()


def test_a_mask_predicate_may_return_a_numpy_or_0d_array_bool():
    assert tree.mask_tree("t", _PARAMS, lambda path, leaf: np.bool_(leaf.ndim > 1)) == [True, False]
    assert tree.mask_tree("t", _PARAMS, lambda path, leaf: jnp.asarray(leaf.ndim == 1)) == [
        False,
        True,
    ]


@pytest.mark.parametrize(
    "mask, takes",
    [
        (lambda *args: True, "either"),
        (lambda params, leaf=None: True, "either"),
        (lambda: True, "neither"),
        (lambda a, b, c: True, "neither"),
    ],
)
def test_a_callable_mask_of_unclear_form_is_refused(mask, takes):
    message = (
        r"^adamw: mask must take one argument \(the params tree, returning a pytree of bools, "
        r"as optax's masks\) or two \(\(key_path, leaf\) -> bool\), so that its form is "
        rf"clear; .* with signature \(.*\) takes {takes}$"
    )
    with pytest.raises(ValueError, match=message):
        tree.check_mask("adamw", "mask", mask)
    with pytest.raises(ValueError, match=message.replace("adamw", "t")):
        tree.mask_tree("t", {"W": jnp.ones(1)}, mask)


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


def test_accumulation_dtype_of_complex64_beside_float64_keeps_both_in_either_order(x64):
    # complex64 first gave complex64 (so the float64 leaf's norm in float32), float64
    # first gave float64: the dtype hung on the order of the keys
    with x64():
        z, x = jnp.array([1j], jnp.complex64), jnp.array([1.0 + 2.0**-40], jnp.float64)
        expected = np.sqrt(1.0 + (1.0 + 2.0**-40) ** 2)  # float32 rounds x to 1: sqrt(2)
        for tree_ in ({"a": z, "b": x}, {"a": x, "b": z}):
            assert tree.accumulation_dtype(tree_) == jnp.complex128
            norm = tree.global_norm(tree_)
            assert norm.dtype == jnp.float64
            np.testing.assert_allclose(norm, expected, rtol=1e-15, atol=0)
        assert tree.accumulation_dtype([jnp.ones(1, jnp.bfloat16), z]) == jnp.complex64


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
        match=r"^adamw: mask must be None, a pytree of bools, a predicate \(key_path, leaf\) -> "
        r"bool, or a function of the params tree returning a pytree of bools \(optax's form\); "
        r"got 1 at \['b'\]$",
    ):
        tree.check_mask("adamw", "mask", {"W": True, "b": 1})
    optax_form = lambda params: params  # checked by its signature only
    assert tree.check_mask("adamw", "mask", optax_form) is optax_form
    with pytest.raises(ValueError, match=r"add_l2: mask must be .*; got 'weights' at \(root\)"):
        tree.check_mask("add_l2", "mask", "weights")
