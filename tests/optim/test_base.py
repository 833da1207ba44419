"""fundl.optim.base: chain, apply_updates, identity, and extra arguments."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import optim


def test_chain_applies_in_order():
    params = {"w": jnp.array([3.0, 4.0])}
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.scale(-2.0))
    state = opt.init(params)
    updates, _ = opt.update(params, state)
    np.testing.assert_allclose(updates["w"], [-1.2, -1.6], rtol=1e-6)  # clip to norm 1, then ×(−2)
    reverse = optim.chain(optim.scale(-2.0), optim.clip_by_global_norm(1.0))
    updates, _ = reverse.update(params, reverse.init(params))
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)


def test_chain_state_holds_the_states_of_its_stateful_members():
    params = {"w": jnp.zeros(2)}
    one = optim.chain(optim.identity(), optim.scale_by_adam(), optim.scale(-0.1))
    assert isinstance(one.init(params), optim.AdamState)  # the one state itself
    two = optim.chain(optim.clip(1.0), optim.scale_by_rms(), optim.scale_by_momentum(0.9))
    state = two.init(params)
    assert type(state) is tuple and [type(s).__name__ for s in state] == ["RmsState", "TraceState"]
    none = optim.chain(optim.clip(1.0), optim.scale(-0.1))
    assert none.init(params) == optim.EmptyState()
    nested = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.1))
    assert isinstance(nested.init(params), optim.AdamState)
    # the states still advance
    _, state = two.update({"w": jnp.ones(2)}, state)
    np.testing.assert_allclose(state[1].velocity["w"], 1 / (np.sqrt(0.1) + 1e-8), rtol=1e-6)


def test_a_member_whose_init_needs_real_params_keeps_its_state():
    def init(params):
        return {"first": params["w"] * 0}  # fails on an empty tree

    keeps = optim.GradientTransformation(init, lambda u, s, p=None, **k: (u, s))
    opt = optim.chain(keeps, optim.scale(2.0))
    assert set(opt.init({"w": jnp.ones(1)})) == {"first"}


def test_apply_updates_keeps_dtypes_and_adds():
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2)}
    updates = {"a": jnp.full((2,), 0.5, jnp.float32), "b": jnp.full((2,), -1.0, jnp.float32)}
    new = optim.apply_updates(params, updates)
    assert new["a"].dtype == jnp.bfloat16 and new["b"].dtype == jnp.float32
    np.testing.assert_array_equal(new["a"].astype(jnp.float32), [1.5, 1.5])
    np.testing.assert_array_equal(new["b"], [0.0, 0.0])


@pytest.mark.parametrize(
    "update, shapes",
    [
        (jnp.ones((2, 8)), r"\(8,\) vs \(2, 8\)"),  # would grow the bias to (2, 8)
        (jnp.ones(1), r"\(8,\) vs \(1,\)"),  # would broadcast one number over the bias
    ],
)
def test_apply_updates_never_broadcasts(update, shapes):
    params = {"dense": {"W": jnp.ones((8, 3)), "b": jnp.zeros(8)}}
    updates = {"dense": {"W": jnp.ones((8, 3)), "b": update}}
    with pytest.raises(
        ValueError,
        match=rf"^apply_updates: params and updates differ in shape at \['dense'\]\['b'\]: {shapes}$",
    ):
        optim.apply_updates(params, updates)
    with pytest.raises(ValueError, match=r"apply_updates: params and updates differ in shape"):
        jax.jit(optim.apply_updates)(params, updates)  # the same check, when traced


def test_apply_updates_adds_a_float32_update_to_bfloat16_params_in_float32():
    # Under strict dtype promotion bf16 + f32 has no implicit path: the sum is taken in
    # float32 and rounded once, 256 + 1.5 = 257.5 → 258 (bfloat16's spacing at 256 is 2).
    params = {"w": jnp.full((1,), 256.0, jnp.bfloat16)}
    new = optim.apply_updates(params, {"w": jnp.full((1,), 1.5, jnp.float32)})
    assert new["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(new["w"].astype(jnp.float32), [258.0])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_a_learning_rate_is_not_rounded_to_half_precision_before_it_scales(dtype):
    # sgd's update −α g rounded once: bfloat16(3e-4) = 2.995e-4 would make every step
    # 0.18% short (float16(3e-4) = 2.9993e-4: 0.02%).
    g = jax.random.uniform(jax.random.key(0), (10_000,), minval=0.5, maxval=2.0).astype(dtype)
    updates, _ = optim.sgd(3e-4).update({"w": g}, optim.sgd(3e-4).init({"w": g}))
    assert updates["w"].dtype == dtype
    ratio = np.asarray(updates["w"], np.float64) / (-3e-4 * np.asarray(g, np.float64))
    np.testing.assert_allclose(ratio.mean(), 1.0, rtol=1e-4)


def test_chain_checks_grads_against_params_shapes():
    opt = optim.chain(optim.clip(1.0), optim.scale(-0.1))
    params = {"W": jnp.ones((2, 3)), "b": jnp.zeros(2)}
    grads = {"W": jnp.ones((3, 2)), "b": jnp.zeros(2)}  # transposed
    with pytest.raises(
        ValueError,
        match=r"^chain: grads and params differ in shape at \['W'\]: \(3, 2\) vs \(2, 3\)$",
    ):
        opt.update(grads, opt.init(params), params)


def test_apply_updates_structure_error():
    with pytest.raises(
        ValueError,
        match=r"apply_updates: params and updates differ in structure at \['b'\] only in the first",
    ):
        optim.apply_updates({"a": jnp.ones(1), "b": jnp.ones(1)}, {"a": jnp.ones(1)})


def test_chain_rejects_non_transformations():
    with pytest.raises(
        TypeError, match=r"chain: argument 1 is not a GradientTransformation, got 0.1"
    ):
        optim.chain(optim.identity(), 0.1)


def test_extra_arguments_pass_through_chain():
    opt = optim.chain(optim.sgd(1.0), optim.reduce_on_plateau(0.5, 1))
    params = {"w": jnp.ones(1)}
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.ones(1)}, state, params, value=1.0)
    np.testing.assert_allclose(updates["w"], [-1.0])


class TestJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_update_variants_agree(self):
        opt = optim.chain(optim.clip(0.5), optim.adam(0.1))
        params = {"w": jnp.array([1.0, -2.0, 3.0])}
        state = opt.init(params)
        updates, _ = self.variant(opt.update)({"w": jnp.array([2.0, -0.1, 0.3])}, state, params)
        # First Adam step: m̂/(√v̂ + ε) = sign(g) for every g ≠ 0 (after clipping to ±0.5).
        chex.assert_trees_all_close(updates["w"], jnp.array([-0.1, 0.1, -0.1]), rtol=1e-5)


def test_stateless_builds_a_transformation_from_a_function():
    double = optim.stateless(
        lambda updates, params: jax.tree.map(lambda u, p: 2 * u + p, updates, params)
    )
    params = {"w": jnp.array([1.0])}
    state = double.init(params)
    assert state == optim.EmptyState()
    updates, _ = double.update({"w": jnp.array([3.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], [7.0])


_P = {"w": jnp.ones(2)}


@pytest.mark.parametrize(
    "call, error, match",
    [
        # Python's own bind error named neither the factory nor its form
        (lambda: optim.sgd(0.1, foo=1), TypeError, r"^sgd: got an unexpected keyword .*'foo'"),
        (lambda: optim.accumulate(2), TypeError, r"^accumulate: missing a required .*'inner'"),
        # a state of another transformation (or none) failed with AttributeError: no .mu
        (
            lambda: optim.adam(0.1).update(_P, None, _P),
            TypeError,
            r"^scale_by_adam: state must be the AdamState that scale_by_adam's init",
        ),
        (
            lambda: optim.adam(0.1).update(_P, optim.sgd(0.1, 0.9).init(_P), _P),
            TypeError,
            r"^scale_by_adam: state must be the AdamState .*, got TraceState",
        ),
        (
            lambda: optim.reduce_on_plateau().update(_P, None, value=1.0),
            TypeError,
            r"^reduce_on_plateau: state must be the PlateauState",
        ),
        # the monitored value broadcast into the state ((1,)) or failed in a multiply ((3,))
        (
            lambda: optim.reduce_on_plateau().update(
                _P, optim.reduce_on_plateau().init(_P), value=[1.0]
            ),
            ValueError,
            r"^reduce_on_plateau: value must be the monitored metric as a real scalar .*list",
        ),
        (
            lambda: optim.reduce_on_plateau().update(
                _P, optim.reduce_on_plateau().init(_P), value=jnp.ones(3)
            ),
            ValueError,
            r"^reduce_on_plateau: value must be .*shape \(3,\)",
        ),
        (
            lambda: optim.reduce_on_plateau().update(
                _P, optim.reduce_on_plateau().init(_P), value="a"
            ),
            ValueError,
            r"^reduce_on_plateau: value must be .*'a' \(a str\)",
        ),
        # non-array leaves: "data type 'abc' not understood", "'float' has no attribute astype"
        (
            lambda: optim.adam(0.1).init({"w": "abc"}),
            ValueError,
            r"^adam: parameter params\['w'\] is a str .*not an array",
        ),
        (
            lambda: optim.adam(0.1).update(1.0, optim.adam(0.1).init(1.0)),
            ValueError,
            r"^adam: gradient grads is a float .*not an array",
        ),
        # zero_nans alone took integer leaves, which every other transformation refuses
        (
            lambda: optim.zero_nans().init({"w": jnp.ones(2, jnp.int32)}),
            ValueError,
            r"^zero_nans: parameter params\['w'\] is int32",
        ),
        (lambda: optim.stateless(3), TypeError, r"^stateless: fn must be a function"),
        # a built optimizer, or no factory: "'GradientTransformation' object is not callable"
        (
            lambda: optim.inject_hyperparams(optim.adam(0.1)),
            TypeError,
            r"^inject_hyperparams: factory must be an optimizer factory .*already built",
        ),
        (lambda: optim.inject_hyperparams(None), TypeError, r"^inject_hyperparams: factory"),
        (
            lambda: optim.inject_hyperparams(optim.adam, static_args=3),
            ValueError,
            r"^inject_hyperparams: static_args must be a tuple of argument names, got 3",
        ),
        (
            lambda: optim.inject_hyperparams(optim.adam)(0.1),
            TypeError,
            r"^inject_hyperparams\(adam\): pass the hyperparameters by name",
        ),
        # complex params: g² made the second moment complex and the update meaningless
        *(
            (
                lambda opt=opt: opt.init({"w": jnp.ones(2, jnp.complex64)}),
                TypeError,
                rf"^{inner}: parameter params\['w'\] is complex \(complex64\)",
            )
            for opt, inner in [
                (optim.adam(0.1), "scale_by_adam"),
                (optim.rmsprop(0.1, centered=True), "scale_by_rms"),
                (optim.adagrad(0.1), "scale_by_adagrad"),
            ]
        ),
    ],
)
def test_bad_input_errors_name_the_function(call, error, match):
    with pytest.raises(error, match=match):
        call()
