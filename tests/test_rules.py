"""fundl.rules: the primitive decorator, the hand/reference switch, direct vjp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import activations as A
from fundl.rules import primitive


def _make_cube():
    """x³ with a rule that counts its calls and is deliberately off by a factor 2."""
    calls = []

    @primitive
    def cube(x, *, scale=1.0):
        return scale * x**3

    def cube_fwd(x, *, scale):
        return scale * x**3, x

    def cube_bwd(x, g, *, scale):
        calls.append(scale)
        return (2 * 3 * scale * x**2 * g,)  # twice the truth: tells the sides apart

    cube.defvjp(cube_fwd, cube_bwd)
    return cube, calls


def test_grad_uses_the_hand_written_rule():
    cube, calls = _make_cube()
    assert float(jax.grad(cube)(2.0)) == 24.0  # the (wrong) hand rule: 2·3·4
    assert calls == [1.0]


def test_reference_mode_uses_autodiff_of_the_reference():
    cube, calls = _make_cube()
    with fundl.reference_mode():
        assert fundl.using_reference()
        assert float(jax.grad(cube)(2.0)) == 12.0
        with fundl.reference_mode(False):
            assert float(jax.grad(cube)(2.0)) == 24.0
        assert fundl.using_reference()
    assert not fundl.using_reference()
    assert calls == [1.0]


def test_options_reach_forward_and_backward():
    cube, calls = _make_cube()
    assert float(cube(2.0, scale=0.5)) == 4.0
    assert float(jax.grad(lambda x: cube(x, scale=0.5))(2.0)) == 12.0
    assert calls == [0.5]


def test_forward_mode_needs_reference_mode():
    with pytest.raises(
        TypeError,
        match=r"tanh: forward-mode autodiff \(jax.jvp, jax.jacfwd, jax.linearize\) cannot run "
        r"through fundl's hand-written reverse rules .*jax.jacrev.*fundl.reference_mode\(\)",
    ):
        jax.jvp(A.tanh, (jnp.ones(2),), (jnp.ones(2),))
    with fundl.reference_mode():
        _, tangent = jax.jvp(A.tanh, (jnp.ones(2),), (jnp.ones(2),))
        hessian = jax.hessian(lambda z: jnp.sum(A.sigmoid(z)))(jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(tangent, 1 - np.tanh(1.0) ** 2, rtol=1e-6)
    s = 1 / (1 + np.exp(-np.array([0.0, 1.0])))
    np.testing.assert_allclose(hessian, np.diag(s * (1 - s) * (1 - 2 * s)), atol=1e-7)


def test_grad_of_grad_runs_through_hand_rules():
    # d²/dz² tanh = −2 tanh (1 − tanh²), reverse over reverse through tanh_bwd.
    second = jax.grad(jax.grad(A.tanh))(0.7)
    t = np.tanh(0.7)
    np.testing.assert_allclose(second, -2 * t * (1 - t * t), rtol=1e-6)


def test_vjp_runs_the_rule_without_autodiff():
    out, pullback = A.softmax.vjp(jnp.array([1.0, 2.0, 3.0]))
    (grad,) = pullback(jnp.array([1.0, 0.0, 0.0]))
    s = np.asarray(out)
    np.testing.assert_allclose(grad, s[0] * (np.eye(3)[0] - s), rtol=1e-6)


def test_a_jitted_function_is_traced_again_in_the_other_mode():
    # The mode is part of jit's cache key: the trace of one mode never runs in the other.
    cube, calls = _make_cube()
    grad = jax.jit(jax.grad(cube))
    assert float(grad(2.0)) == 24.0
    with fundl.reference_mode():
        assert float(grad(2.0)) == 12.0  # traced again: autodiff of the reference
        with fundl.reference_mode(False):
            assert float(grad(2.0)) == 24.0
    assert float(grad(2.0)) == 24.0
    # the hand-mode trace is cached (JAX < 0.7 keys the nested False block apart: twice)
    assert calls in ([1.0], [1.0, 1.0])


def test_bad_calls():
    cube, _ = _make_cube()
    with pytest.raises(
        TypeError, match=r"cube: unknown option\(s\) \['scael'\]; allowed options: scale"
    ):
        cube(1.0, scael=2.0)
    with pytest.raises(
        TypeError, match=r"cube: expected inputs \(x\), got 2 positional input\(s\)"
    ):
        cube(1.0, 2.0)

    @primitive
    def no_rule(x):
        return x

    with pytest.raises(NotImplementedError, match=r"no_rule: no backward rule registered"):
        no_rule(1.0)
    with pytest.raises(
        TypeError,
        match=r"primitive lambda_with_required_option: keyword-only options need defaults, \['axis'\] have none",
    ):
        primitive(lambda_with_required_option)
    with pytest.raises(
        TypeError, match=r"primitive: expected the reference forward function, got 3"
    ):
        primitive(3)
    with pytest.raises(TypeError, match=r"primitive 'no_check': check must be a function"):
        primitive(check="shapes")(no_check)
    with pytest.raises(TypeError, match=r"no_rule.defvjp: bwd must be a function, got None"):
        no_rule.defvjp(lambda x: (x, x), None)
    # .hand runs the same input check as a call (it skipped it)
    with pytest.raises(TypeError, match=r"relu: expected a floating-point input, got dtype int32"):
        fundl.activations.relu.hand(jnp.arange(3))


def no_check(x):
    return x


def lambda_with_required_option(x, *, axis):
    return x


def test_options_fill_in_defaults():
    cube, _ = _make_cube()
    assert cube.options() == {"scale": 1.0}
    assert cube.options(scale=3.0) == {"scale": 3.0}
    assert A.softmax.options() == {"axis": -1}


def test_primitive_reads_like_its_reference():
    assert A.relu.name == "relu"
    assert A.relu.__doc__.startswith("Rectified linear unit")
    assert A.relu.fwd is A.relu_fwd and A.relu.bwd is A.relu_bwd
    assert repr(A.relu) == "<fundl primitive relu>"


def test_count_calls_counts_each_mode_and_nests():
    cube, _ = _make_cube()
    with fundl.rules.count_calls() as outer:
        cube(1.0)
        with fundl.rules.count_calls() as inner, fundl.reference_mode():
            cube(1.0)
            jax.jit(lambda x: cube(x))(2.0)
        fn = jax.jit(lambda x: cube(x))
        fn(1.0)
        fn(3.0)  # cached: not traced again, not counted
    assert dict(inner) == {"hand": 0, "reference": 2}
    assert dict(outer) == {"hand": 2, "reference": 2}


def test_options_may_be_pytrees_of_hashable_leaves_but_not_arrays():
    @primitive
    def masked_sum(x, *, mask=None):
        return x["a"] * (1.0 if mask is None or mask["a"] else 0.0)

    masked_sum.defvjp(
        lambda x, *, mask: (masked_sum.reference(x, mask=mask), None),
        lambda _, g, *, mask: ({"a": g * (1.0 if mask["a"] else 0.0)},),
    )
    x = {"a": jnp.float32(2.0)}
    assert float(jax.grad(lambda x: masked_sum(x, mask={"a": True}))(x)["a"]) == 1.0
    assert float(jax.grad(lambda x: masked_sum(x, mask={"a": False}))(x)["a"]) == 0.0
    with pytest.raises(TypeError, match=r"masked_sum: option mask=.* must be hashable"):
        masked_sum(x, mask={"a": np.ones(3)})
