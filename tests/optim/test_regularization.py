"""fundl.optim.regularization: coupled L2 against the loss-side penalty, decoupled decay."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import losses, optim


def _params():
    return {"dense": {"W": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([4.0, 5.0])}}


def test_add_l2_is_the_gradient_of_l2_penalty():
    params = _params()
    grads = jax.tree.map(jnp.ones_like, params)
    opt = optim.add_l2(0.1)
    updates, _ = opt.update(grads, opt.init(params), params)
    penalty_grad = jax.grad(losses.l2_penalty)(params, 0.1)
    chex.assert_trees_all_close(
        updates, jax.tree.map(lambda g, d: g + d, grads, penalty_grad), rtol=1e-6
    )
    np.testing.assert_array_equal(updates["dense"]["b"], [1.0, 1.0])  # biases are not weights


def test_masks():
    params = _params()
    grads = jax.tree.map(jnp.zeros_like, params)
    everything = optim.add_decayed_weights(0.5, mask=None)
    updates, _ = everything.update(grads, everything.init(params), params)
    np.testing.assert_allclose(updates["dense"]["b"], [2.0, 2.5])
    by_tree = optim.add_decayed_weights(0.5, mask={"dense": {"W": False, "b": True}})
    updates, _ = by_tree.update(grads, by_tree.init(params), params)
    np.testing.assert_allclose(updates["dense"]["W"], np.zeros((2, 2)))
    np.testing.assert_allclose(updates["dense"]["b"], [2.0, 2.5])
    by_name = optim.add_l2(1.0, mask=lambda path, leaf: path[-1].key == "b")
    updates, _ = by_name.update(grads, by_name.init(params), params)
    np.testing.assert_allclose(updates["dense"]["b"], [4.0, 5.0])


@pytest.mark.parametrize(
    "build",
    [
        lambda mask: optim.add_l2(0.5, mask=mask),
        lambda mask: optim.add_decayed_weights(0.5, mask=mask),
        lambda mask: optim.adamw(0.1, weight_decay=0.5, mask=mask),
        lambda mask: optim.lion(0.1, weight_decay=0.5, mask=mask),
        lambda mask: optim.lamb(0.1, weight_decay=0.5, mask=mask),
        lambda mask: optim.inject_hyperparams(optim.adamw)(learning_rate=0.1, mask=mask),
    ],
)
def test_an_optax_style_mask_of_the_params_tree_is_accepted(build):
    # optax's mask(params) -> tree of bools failed at the first update with a TypeError
    # (called as mask(key_path, leaf)); a one-argument callable now gets the whole tree.
    params = _params()
    grads = jax.tree.map(lambda p: 0.1 * p, params)

    def decays(params):
        return {"dense": {"W": False, "b": True}}  # the opposite of the default (is_weight)

    results = {}
    for key, mask in [("optax", decays), ("tree", decays(params)), ("none", None)]:
        opt = build(mask)
        updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
        results[key] = updates
    chex.assert_trees_all_equal(results["optax"], results["tree"])
    # the mask was used: W is not decayed, so its update differs from decaying every leaf
    assert not np.allclose(results["optax"]["dense"]["W"], results["none"]["dense"]["W"])
    np.testing.assert_allclose(results["optax"]["dense"]["b"], results["none"]["dense"]["b"])


def test_coupled_and_decoupled_agree_for_sgd_and_differ_for_adam():
    params = _params()
    grads = jax.tree.map(lambda p: 0.1 * p + 1.0, params)

    def step(opt):
        updates, _ = opt.update(grads, opt.init(params), params)
        return updates

    sgd_l2 = step(optim.chain(optim.add_l2(0.01), optim.sgd(0.1)))
    sgd_wd = step(optim.chain(optim.add_decayed_weights(0.01), optim.sgd(0.1)))
    chex.assert_trees_all_close(sgd_l2, sgd_wd)
    adam_l2 = step(optim.chain(optim.add_l2(0.01), optim.adam(0.1)))
    adamw = step(optim.adamw(0.1, weight_decay=0.01))
    # AdamW: −α(sign(g) + λp) at the first step; coupled: the decay is inside the sign.
    np.testing.assert_allclose(
        adamw["dense"]["W"], -0.1 * (1 + 0.01 * params["dense"]["W"]), rtol=1e-5
    )
    np.testing.assert_allclose(adam_l2["dense"]["W"], -0.1 * np.ones((2, 2)), rtol=1e-5)


def test_needs_params_and_matching_mask():
    opt = optim.add_l2(0.1)
    with pytest.raises(
        ValueError, match=r"add_l2: needs params; call update\(grads, state, params\)"
    ):
        opt.update(_params(), opt.init(_params()))
    bad = optim.add_decayed_weights(0.1, mask={"dense": {"W": True}})
    with pytest.raises(
        ValueError,
        match=r"add_decayed_weights: params and mask differ in structure at \['dense'\]\['b'\]",
    ):
        bad.update(_params(), bad.init(_params()), _params())
    with pytest.raises(
        ValueError,
        match=r"add_l2: lam must be a finite number in \[0, inf\), or a scalar array with values "
        r"there; got -0\.5$",
    ):
        optim.add_l2(-0.5)
    with pytest.raises(
        ValueError,
        match=r"add_decayed_weights: mask must be None, a pytree of bools, .*; got 'W' at",
    ):
        optim.add_decayed_weights(0.1, mask="W")  # checked when built, before any params


def test_grads_must_have_the_params_shapes():
    opt = optim.add_decayed_weights(0.1)
    grads = {"dense": {"W": jnp.ones((2, 2)), "b": jnp.ones((1,))}}
    with pytest.raises(
        ValueError,
        match=r"add_decayed_weights: grads and params differ in shape at \['dense'\]\['b'\]: "
        r"\(1,\) vs \(2,\)$",
    ):
        opt.update(grads, opt.init(_params()), _params())


def test_an_array_rate_meets_bfloat16_params():
    params = {"W": jnp.ones((2, 2), jnp.bfloat16)}
    opt = optim.add_l2(jnp.float32(0.5))  # a swept λ, float32
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    assert updates["W"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(updates["W"].astype(jnp.float32), np.full((2, 2), 0.5))
