"""The named optimizers, one table, the same checks for each (as optax's test table).

Trajectories are compared in float64 with independent NumPy implementations of the
published update rules, written out below.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import losses, mlp, optim

# --- independent float64 NumPy references: (params, grads, state, t) -> new params ---------


def np_sgd(lr, momentum=0.0, nesterov=False):
    def step(p, g, s, t):
        if momentum == 0:
            return p - lr * g
        v = s["v"] = momentum * s.get("v", 0 * p) + g
        return p - lr * (g + momentum * v if nesterov else v)

    return step


def np_momentum(lr, beta):
    def step(p, g, s, t):
        v = s["v"] = beta * s.get("v", 0 * p) + (1 - beta) * g
        return p - lr * v

    return step


def np_rmsprop(lr, decay=0.9, eps=1e-8, centered=False, momentum=0.0):
    def step(p, g, s, t):
        v = s["v"] = decay * s.get("v", 0 * p) + (1 - decay) * g * g
        if centered:
            m = s["m"] = decay * s.get("m", 0 * p) + (1 - decay) * g
            denom = np.sqrt(v - m * m) + eps
        else:
            denom = np.sqrt(v) + eps
        if momentum:
            b = s["b"] = momentum * s.get("b", 0 * p) + g / denom
            return p - lr * b
        return p - lr * g / denom

    return step


def _adam_direction(s, g, t, b1, b2, eps):
    m = s["m"] = b1 * s.get("m", 0 * g) + (1 - b1) * g
    v = s["v"] = b2 * s.get("v", 0 * g) + (1 - b2) * g * g
    return (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)


def np_adam(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    def step(p, g, s, t):
        u = _adam_direction(s, g, t, b1, b2, eps)
        decay = weight_decay * p if p.ndim >= 2 else 0.0
        return p - lr * (u + decay)

    return step


def np_adagrad(lr, initial=0.0, eps=1e-10):
    def step(p, g, s, t):
        G = s["G"] = s.get("G", initial + 0 * p) + g * g
        return p - lr * g / (np.sqrt(G) + eps)

    return step


def np_lion(lr, b1=0.9, b2=0.99, weight_decay=0.0):
    def step(p, g, s, t):
        m = s.get("m", 0 * p)
        u = np.sign(b1 * m + (1 - b1) * g)
        s["m"] = b2 * m + (1 - b2) * g
        decay = weight_decay * p if p.ndim >= 2 else 0.0
        return p - lr * (u + decay)

    return step


def np_lamb(lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0):
    def step(p, g, s, t):
        u = _adam_direction(s, g, t, b1, b2, eps)
        if p.ndim >= 2:
            u = u + weight_decay * p
        pn, un = np.linalg.norm(p), np.linalg.norm(u)
        ratio = pn / un if pn > 0 and un > 0 else 1.0
        return p - lr * ratio * u

    return step


# name -> (fundl optimizer, NumPy reference, learning rate for least squares, steps)
OPTIMIZERS_UNDER_TEST = {
    "sgd": (optim.sgd(0.1), np_sgd(0.1), 0.1, 300),
    "sgd_momentum": (optim.sgd(0.05, 0.9), np_sgd(0.05, 0.9), 0.05, 300),
    "sgd_nesterov": (optim.sgd(0.05, 0.9, nesterov=True), np_sgd(0.05, 0.9, True), 0.05, 300),
    "momentum": (optim.momentum(0.1, 0.9), np_momentum(0.1, 0.9), 0.1, 300),
    "rmsprop": (optim.rmsprop(0.01), np_rmsprop(0.01), 0.01, 600),
    "rmsprop_centered_momentum": (
        optim.rmsprop(0.003, centered=True, momentum=0.5),
        np_rmsprop(0.003, centered=True, momentum=0.5),
        0.003,
        800,
    ),
    "adam": (optim.adam(0.05), np_adam(0.05), 0.05, 600),
    "adamw": (optim.adamw(0.05, weight_decay=0.1), np_adam(0.05, weight_decay=0.1), 0.05, 600),
    "adagrad": (optim.adagrad(0.5), np_adagrad(0.5), 0.5, 600),
    "lion": (optim.lion(0.01, weight_decay=0.1), np_lion(0.01, weight_decay=0.1), 0.01, 800),
    "lamb": (optim.lamb(0.05, weight_decay=0.01), np_lamb(0.05, weight_decay=0.01), 0.05, 600),
}
NAMES = sorted(OPTIMIZERS_UNDER_TEST)


def _factory(name):
    """The optimizer for ``name`` with another learning rate (a float or a schedule)."""
    return {
        "sgd": optim.sgd,
        "sgd_momentum": lambda lr: optim.sgd(lr, 0.9),
        "sgd_nesterov": lambda lr: optim.sgd(lr, 0.9, nesterov=True),
        "momentum": lambda lr: optim.momentum(lr, 0.9),
        "rmsprop": optim.rmsprop,
        "rmsprop_centered_momentum": lambda lr: optim.rmsprop(lr, centered=True, momentum=0.5),
        "adam": optim.adam,
        "adamw": lambda lr: optim.adamw(lr, weight_decay=0.1),
        "adagrad": optim.adagrad,
        "lion": lambda lr: optim.lion(lr, weight_decay=0.1),
        "lamb": lambda lr: optim.lamb(lr, weight_decay=0.01),
    }[name]


@pytest.fixture
def float64(x64):
    """64-bit types for the whole test (the NumPy references run in float64)."""
    with x64():
        yield


def _np_run(reference, params, grad_fn, steps):
    """Run the NumPy reference, leaf by leaf, with gradients from grad_fn(params)."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    states = {k: {} for k in params}
    history = []
    for t in range(1, steps + 1):
        grads = {k: np.asarray(v, np.float64) for k, v in grad_fn(params).items()}
        params = {k: reference(params[k], grads[k], states[k], t) for k in params}
        history.append(params)
    return history


def _fundl_run(opt, params, grad_fn, steps):
    state = opt.init(params)
    update = jax.jit(opt.update)
    history = []
    for _ in range(steps):
        updates, state = update(grad_fn(params), state, params)
        params = optim.apply_updates(params, updates)
        history.append(params)
    return history


# --- trajectories ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_trajectory_on_a_quadratic_matches_numpy(name, float64):
    opt, reference, _, _ = OPTIMIZERS_UNDER_TEST[name]
    rng = np.random.default_rng(0)
    scale_ = {"W": rng.uniform(0.5, 2.0, (2, 3)), "b": rng.uniform(0.5, 2.0, 3)}
    center = {"W": rng.normal(size=(2, 3)), "b": rng.normal(size=3)}
    params = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in center.items()}

    def grad_fn(p):  # ∇ of ½ Σ a (p − c)²
        return {k: scale_[k] * (np.asarray(p[k]) - center[k]) for k in p}

    ours = _fundl_run(opt, params, lambda p: jax.tree.map(jnp.asarray, grad_fn(p)), 6)
    theirs = _np_run(reference, params, grad_fn, 6)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for k in a:
            np.testing.assert_allclose(
                a[k], b[k], rtol=1e-10, atol=1e-12, err_msg=f"{name} step {step + 1} {k}"
            )


@pytest.mark.parametrize("name", NAMES)
def test_trajectory_on_a_tiny_mlp_matches_numpy(name, float64):
    opt, reference, _, _ = OPTIMIZERS_UNDER_TEST[name]
    model = mlp([3, 4, 2], "tanh")
    params = model.init(jax.random.key(0))
    flat = {f"{layer}/{leaf}": v for layer, d in params.items() for leaf, v in d.items()}
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jax.random.randint(jax.random.key(2), (8,), 0, 2)

    def unflat(f):
        return {layer: {leaf: f[f"{layer}/{leaf}"] for leaf in params[layer]} for layer in params}

    grad = jax.jit(jax.grad(lambda f: losses.softmax_cross_entropy(model.apply(unflat(f), x), y)))
    flat = jax.tree.map(lambda v: v.astype(jnp.float64), flat)
    ours = _fundl_run(opt, flat, grad, 5)
    theirs = _np_run(reference, flat, lambda p: grad(jax.tree.map(jnp.asarray, p)), 5)
    for a, b in zip(ours, theirs):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12, err_msg=f"{name} {k}")


# --- convergence ----------------------------------------------------------------------------


def _run_scan(opt, params, loss, steps):
    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return (optim.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
    return params


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_least_squares(name):
    _, _, lr, steps = OPTIMIZERS_UNDER_TEST[name]
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    w_star = jnp.array([[1.5, -2.0, 0.5]])
    y = X @ w_star.T

    def loss(p):
        return 0.5 * jnp.mean(jnp.square(X @ p["W"].T - y))

    # Lion's steps are ±lr and LAMB's lr·‖p‖ in size, whatever the gradient: with a
    # constant rate they circle the minimum at that distance, so decay it.
    schedule = optim.schedules.cosine_decay(lr, steps) if name in ("lion", "lamb") else lr
    opt = _factory(name)(schedule)
    if name in ("adamw", "lion", "lamb"):  # weight decay moves the minimum: check without it
        opt = {"adamw": optim.adam, "lion": optim.lion, "lamb": optim.lamb}[name](schedule)
    final = jax.jit(functools.partial(_run_scan, opt, loss=loss, steps=steps))(
        {"W": jnp.zeros((1, 3))}
    )
    np.testing.assert_allclose(final["W"], w_star, atol=2e-2, err_msg=name)


@pytest.mark.parametrize("name", ["adam", "sgd_momentum", "rmsprop", "lamb"])
def test_converges_on_rosenbrock(name):
    lr = {"adam": 0.01, "sgd_momentum": 1e-3, "rmsprop": 1e-3, "lamb": 0.01}[name]
    opt = _factory(name)(optim.schedules.cosine_decay(lr, 20000, end_value=lr / 100))

    def rosenbrock(p):
        x, y = p["xy"][0], p["xy"][1]
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    final = jax.jit(functools.partial(_run_scan, opt, loss=rosenbrock, steps=20000))(
        {"xy": jnp.array([-1.0, 1.5])}
    )
    np.testing.assert_allclose(final["xy"], [1.0, 1.0], atol=5e-2, err_msg=name)


# --- contract checks -------------------------------------------------------------------------


def _params():
    # dtypes given explicitly: jnp.full((2,), 0.5) would be weak-typed, and the first
    # apply_updates would make it strong — a new input type, so a second compilation.
    return {
        "dense": {"W": jnp.ones((3, 2)), "b": jnp.zeros(3)},
        "scale": jnp.full((2,), 0.5, jnp.float32),
    }


def _grads(params, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )


@pytest.mark.parametrize("name", NAMES)
def test_state_structure_and_dtypes_unchanged_by_update(name):
    opt = OPTIMIZERS_UNDER_TEST[name][0]
    params = _params()
    state = opt.init(params)
    _, new_state = opt.update(_grads(params), state, params)
    chex.assert_trees_all_equal_structs(state, new_state)
    chex.assert_trees_all_equal_dtypes(state, new_state)
    chex.assert_trees_all_equal_shapes(state, new_state)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_params_stay_bfloat16_with_float32_moments(name):
    opt = OPTIMIZERS_UNDER_TEST[name][0]
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(_grads(params), state, params)
    new = optim.apply_updates(params, updates)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(new))
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert all(x.dtype == jnp.float32 for x in floats), [x.dtype for x in floats]


def test_moments_in_the_param_dtype_on_request():
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    state = optim.adam(1e-3, moment_dtype="param").init(params)
    assert state.mu["dense"]["W"].dtype == jnp.bfloat16
    state = optim.adam(1e-3, moment_dtype=jnp.float16).init(params)
    assert state.nu["scale"].dtype == jnp.float16


def test_float32_moments_keep_small_gradients_that_bfloat16_moments_lose():
    # v ← 0.999 v + 0.001 g² with g = 1: in bfloat16 the increment is below v's resolution.
    params = {"w": jnp.ones((1,), jnp.bfloat16)}
    grads = {"w": jnp.ones((1,), jnp.bfloat16)}
    results = {}
    for dtype in (None, "param"):
        opt = optim.scale_by_adam(moment_dtype=dtype)
        state = opt.init(params)
        for _ in range(2000):
            _, state = opt.update(grads, state)
        results[dtype] = float(state.nu["w"][0])
    np.testing.assert_allclose(results[None], 1 - 0.999**2000, rtol=1e-4)  # 0.865
    # In bfloat16, v stalls at 0.5: 0.999·0.5 + 0.001 rounds back to 0.5 (spacing 2⁻⁸).
    assert results["param"] == 0.5


# (optimizer, its first step for g = [0.5, 0, −2] at α = 0.1): Adam's is −α·sign(g), RMSprop's
# −α·g/√(0.1·g²) = −α·√10·sign(g), Adagrad's −α·sign(g); 0 where g = 0.
_HALF_PRECISION_MOMENTS = {
    "adam": (functools.partial(optim.adam, 0.1), 0.1),
    "adamw": (functools.partial(optim.adamw, 0.1, mask=None, weight_decay=0.0), 0.1),
    "rmsprop": (functools.partial(optim.rmsprop, 0.1), 0.1 * np.sqrt(10)),
    "rmsprop_centered": (
        functools.partial(optim.rmsprop, 0.1, centered=True),  # √(0.1g² − 0.01g²) = 0.3|g|
        0.1 / 0.3,
    ),
    "adagrad": (functools.partial(optim.adagrad, 0.1), 0.1),
}


@pytest.mark.parametrize("name", sorted(_HALF_PRECISION_MOMENTS))
@pytest.mark.parametrize(
    "param_dtype, moment_dtype",
    [
        (jnp.float16, "param"),
        (jnp.float32, jnp.float16),
        (jnp.bfloat16, "param"),
        (jnp.float32, jnp.bfloat16),
    ],
)
def test_a_zero_gradient_with_half_precision_moments_gives_a_zero_update(
    name, param_dtype, moment_dtype
):
    # float16 rounds ε = 1e-8 to 0: divided in float16, a zero gradient gave 0/0 = NaN.
    make, size = _HALF_PRECISION_MOMENTS[name]
    opt = make(moment_dtype=moment_dtype)
    params = {"w": jnp.ones(3, param_dtype)}
    state = opt.init(params)
    assert jax.tree.leaves(state)[-1].dtype == jnp.dtype(
        param_dtype if moment_dtype == "param" else moment_dtype
    )
    for step in (opt.update, jax.jit(opt.update)):
        updates, _ = step({"w": jnp.array([0.5, 0.0, -2.0], param_dtype)}, state, params)
        assert updates["w"].dtype == param_dtype
        np.testing.assert_allclose(
            np.asarray(updates["w"], np.float64), [-size, 0.0, size], rtol=2e-3
        )
        zero, _ = step({"w": jnp.zeros(3, param_dtype)}, state, params)
        np.testing.assert_array_equal(np.asarray(zero["w"], np.float64), np.zeros(3))


def test_centered_rmsprop_stays_finite_for_a_constant_gradient():
    # v − m² = (1 − ρᵗ)ρᵗg² > 0, but in float32 it rounds below 0 near t = 136 for this g
    # (the audit's repro): √ of it was NaN. Clamped at 0, the update is g/(√0 + ε) at worst.
    opt = optim.rmsprop(1e-3, decay=0.9, centered=True)
    params = {"w": jnp.ones(1)}
    grads = {"w": jnp.array([0.17511109], jnp.float32)}
    state = opt.init(params)
    went_negative = False
    for _ in range(200):
        updates, state = opt.update(grads, state, params)
        assert np.isfinite(updates["w"]).all()
        assert abs(float(updates["w"][0])) <= 1e-3 * 0.17511109 / 1e-8 * (1 + 1e-6)
        went_negative |= bool((state.nu["w"] - jnp.square(state.mu["w"]) < 0).any())
    assert went_negative  # the case the clamp is for did happen


_INTEGER_LEAF = (
    r"; optimizers update floating-point leaves: keep integer values in the model state or "
    r"outside the parameters"
)


@pytest.mark.parametrize("name", NAMES)
def test_integer_parameters_and_gradients_are_refused(name):
    # sgd(0.1) on an int32 leaf with gradient 5 gave 0 (−0.5 truncated), silently.
    opt = _factory(name)(0.1)
    factory = name.split("_")[0]  # sgd_momentum is built by sgd
    params = {"w": jnp.ones((2, 2)), "n": jnp.array(3, jnp.int32)}
    with pytest.raises(
        ValueError, match=rf"^{factory}: parameter params\['n'\] is int32{_INTEGER_LEAF}"
    ):
        opt.init(params)
    with pytest.raises(ValueError, match=rf"^{factory}: parameter params\[0\] is bool"):
        opt.init([jnp.array([True])])
    floats = {"w": jnp.ones((2, 2)), "n": jnp.array(3.0)}
    state = opt.init(floats)
    int_grads = {"w": jnp.ones((2, 2)), "n": jnp.array(5, jnp.int32)}
    with pytest.raises(ValueError, match=rf"^{factory}: gradient grads\['n'\] is int32"):
        opt.update(int_grads, state, floats)
    # what jax.grad(..., allow_int=True) gives an integer leaf
    float0 = jax.grad(lambda p: jnp.sum(p["w"]) * p["n"].astype(jnp.float32), allow_int=True)(
        params
    )
    with pytest.raises(
        ValueError,
        match=rf"^{factory}: gradient grads\['n'\] is float0 \(jax.grad\(\.\.\., allow_int=True\) "
        rf"gives it for an integer parameter\){_INTEGER_LEAF}",
    ):
        jax.jit(opt.update)(float0, state, floats)


def test_a_chain_refuses_integer_leaves_even_without_state():
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1))  # no member keeps state
    with pytest.raises(ValueError, match=r"^chain: parameter params\['n'\] is int32"):
        opt.init({"w": jnp.ones(2), "n": jnp.array(3, jnp.int32)})
    with pytest.raises(ValueError, match=r"^chain: gradient grads\['n'\] is float0"):
        opt.update({"w": jnp.ones(2), "n": np.zeros((), jax.dtypes.float0)}, optim.EmptyState())


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager_and_a_second_update_does_not_recompile(name):
    opt = OPTIMIZERS_UNDER_TEST[name][0]
    params = _params()
    state = opt.init(params)
    traces = []

    def update(grads, state, params):
        traces.append(1)
        return opt.update(grads, state, params)

    jitted = jax.jit(update)
    u_jit, s_jit = jitted(_grads(params, 0), state, params)
    u_eager, s_eager = opt.update(_grads(params, 0), state, params)
    chex.assert_trees_all_close(u_jit, u_eager, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(s_jit, s_eager, rtol=1e-6, atol=1e-7)
    jitted(_grads(params, 1), s_jit, optim.apply_updates(params, u_jit))
    assert len(traces) == 1


@pytest.mark.parametrize("name", NAMES)
def test_any_pytree_of_params(name):
    class Pair(tuple):
        pass

    from typing import NamedTuple

    class Point(NamedTuple):
        x: jax.Array
        y: jax.Array

    params = [
        jnp.ones((2, 2)),
        (jnp.ones(3), Point(jnp.ones((2, 1)), jnp.zeros(1))),
        {"k": jnp.ones(())},
    ]
    opt = _factory(name)(0.01)
    state = opt.init(params)
    updates, state = opt.update(_grads(params), state, params)
    new = optim.apply_updates(params, updates)
    chex.assert_trees_all_equal_structs(new, params)
    assert isinstance(new[1][1], Point)


def test_vmap_over_four_learning_rates_equals_four_runs(highest_precision):
    # Full float32 matmuls (highest_precision): the point is that the vmapped (batched) and
    # the separate runs agree to float32 rounding; at a GPU's default TF32 precision the
    # batched and unbatched products round differently (2e-5 to 8e-5 apart on an H100).
    rng = np.random.default_rng(2)
    X = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    y = X @ jnp.array([[1.0, -1.0, 2.0]]).T

    def loss(p):
        return 0.5 * jnp.mean(jnp.square(X @ p["W"].T - y))

    def train(lr):
        return _run_scan(optim.adam(lr), {"W": jnp.zeros((1, 3))}, loss, 20)

    lrs = jnp.array([0.001, 0.01, 0.05, 0.1])
    together = jax.jit(jax.vmap(train))(lrs)
    for i, lr in enumerate([0.001, 0.01, 0.05, 0.1]):
        alone = jax.jit(lambda: train(lr))()
        np.testing.assert_allclose(together["W"][i], alone["W"], rtol=1e-5, atol=1e-7)
    assert len({float(w) for w in together["W"][:, 0, 0]}) == 4


def test_notes_momentum_is_heavy_ball_with_a_smaller_rate(float64):
    params = {"w": jnp.array([1.0, -2.0])}
    runs = []
    for opt in (optim.momentum(0.1, 0.9), optim.sgd(0.1 * (1 - 0.9), 0.9)):
        runs.append(_fundl_run(opt, params, lambda p: {"w": 2 * p["w"]}, 5)[-1]["w"])
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-12)


def test_learning_rate_schedule_is_followed(float64):
    schedule = optim.schedules.exponential_decay(0.1, 0.5, 1)
    opt = optim.sgd(schedule)
    params = {"w": jnp.zeros(1)}
    state = opt.init(params)
    steps = []
    for _ in range(4):
        updates, state = opt.update({"w": jnp.ones(1)}, state)
        steps.append(-float(updates["w"][0]))
    np.testing.assert_allclose(
        steps, [0.1, 0.05, 0.025, 0.0125], rtol=1e-7
    )  # schedules are float32


# --- bad input ---------------------------------------------------------------------------------

_LR = r"learning_rate must be a finite number in \[0, inf\), or a scalar array or a schedule with values there; got "
_UNIT = r"must be a finite number in \[0, 1\), or a scalar array with values there; got "
_NON_NEGATIVE = r"must be a finite number in \[0, inf\), or a scalar array with values there; got "
_EPS = (
    r"must be a finite number in \[1\.17549e-38, inf\), or a scalar array with values there; got "
)
_EPS_WHY = (
    r"ε must be at least float32's smallest normal number, 1\.2e-38: a smaller one rounds to 0 "
    r"in float32, and a zero gradient then gives 0/0 = NaN"
)
_SCHEDULES = optim.schedules


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: optim.sgd(-0.1), rf"sgd: {_LR}-0\.1$"),
        (lambda: optim.adam(float("nan")), rf"adam: {_LR}nan$"),
        (lambda: optim.sgd(float("inf")), rf"sgd: {_LR}inf$"),
        (lambda: optim.sgd(True), rf"sgd: {_LR}True \(a bool, not a number\)$"),
        (
            lambda: optim.sgd("0.001"),
            rf"sgd: {_LR}'0\.001' \(a str\); pass the number 0\.001, not the string$",
        ),
        (lambda: optim.sgd(jnp.array(-0.1)), rf"sgd: {_LR}an array holding -0\.1$"),
        (
            lambda: optim.sgd(jnp.array([0.1, 0.2])),
            rf"sgd: {_LR}an array of dtype float32 and shape \(2,\); pass a scalar$",
        ),
        (
            lambda: optim.sgd(_SCHEDULES.constant(-0.1)),
            rf"sgd: {_LR}the schedule constant\(value=-0\.1\), whose lowest value is -0\.1$",
        ),
        (
            lambda: optim.sgd(_SCHEDULES.polynomial_decay(0.1, -0.1, 10)),
            rf"sgd: {_LR}the schedule polynomial_decay\(init_value=0\.1, end_value=-0\.1, .*\), "
            r"whose lowest value is -0\.1$",
        ),
        (
            lambda: optim.adam(_SCHEDULES.cosine_decay(0.1, 10, end_value=-1e-3)),
            rf"adam: {_LR}the schedule cosine_decay\(.*\), whose lowest value is -0\.001$",
        ),
        (
            lambda: optim.sgd(
                lambda step: -0.1 + 0 * step
            ),  # not a fundl schedule: step 0 is checked
            rf"sgd: {_LR}a schedule whose value at step 0 is -0\.1$",
        ),
        (lambda: optim.adam(1e-3, b1=1.0), rf"adam: b1 {_UNIT}1\.0$"),
        (
            lambda: optim.adam(1e-3, b1="0.9"),
            rf"adam: b1 {_UNIT}'0\.9' \(a str\); pass the number 0\.9, not the string$",
        ),
        (lambda: optim.adam(1e-3, b2=-0.1), rf"adam: b2 {_UNIT}-0\.1$"),
        (lambda: optim.adam(1e-3, eps=0.0), rf"adam: eps {_EPS}0\.0 \({_EPS_WHY}\)$"),
        # below float32's smallest normal number ε rounds to 0: a zero gradient gives 0/0
        (lambda: optim.adam(1e-3, eps=1e-50), rf"adam: eps {_EPS}1e-50 \({_EPS_WHY}\)$"),
        (lambda: optim.adagrad(0.1, eps=1e-39), rf"adagrad: eps {_EPS}1e-39 \({_EPS_WHY}\)$"),
        (
            lambda: optim.scale_by_rms(eps=jnp.float32(1e-45)),
            rf"scale_by_rms: eps {_EPS}an array holding 1\.401298e-45 \({_EPS_WHY}\)$",
        ),
        (lambda: optim.sgd(0.1, momentum=1.0), rf"sgd: momentum {_UNIT}1\.0$"),
        (lambda: optim.rmsprop(0.1, momentum=-0.5), rf"rmsprop: momentum {_UNIT}-0\.5$"),
        (lambda: optim.rmsprop(0.1, decay=1.5), rf"rmsprop: decay {_UNIT}1\.5$"),
        (lambda: optim.momentum(0.1, beta=1.0), rf"momentum: beta {_UNIT}1\.0$"),
        (lambda: optim.lion(0.1, b2=1.0), rf"lion: b2 {_UNIT}1\.0$"),
        (
            lambda: optim.adamw(0.1, weight_decay=-1.0),
            rf"adamw: weight_decay {_NON_NEGATIVE}-1\.0$",
        ),
        (
            lambda: optim.adamw(0.1, weight_decay=float("inf")),
            rf"adamw: weight_decay {_NON_NEGATIVE}inf$",
        ),
        (
            lambda: optim.lamb(0.1, weight_decay=-1e-3),
            rf"lamb: weight_decay {_NON_NEGATIVE}-0\.001$",
        ),
        (
            lambda: optim.adagrad(0.1, initial_accumulator_value=-1),
            rf"adagrad: initial_accumulator_value {_NON_NEGATIVE}-1$",
        ),
        (
            lambda: optim.sgd(0.1, nesterov=True),
            r"sgd: nesterov=True needs a momentum > 0, got momentum=0\.0$",
        ),
        (
            lambda: optim.sgd(0.1, momentum=jnp.array(0.0), nesterov=True),
            r"sgd: nesterov=True needs a momentum > 0, got momentum=an array holding 0$",
        ),
        (
            lambda: optim.sgd(0.1, momentum=np.float32(0.0), nesterov=True),
            r"sgd: nesterov=True needs a momentum > 0, got momentum=0\.0$",
        ),
        (
            lambda: optim.sgd(0.1, 0.9, nesterov="yes"),
            r"sgd: nesterov must be True or False, got 'yes' \(a str\)$",
        ),
        (
            lambda: optim.rmsprop(0.1, centered=1),
            r"rmsprop: centered must be True or False, got 1$",
        ),
        (
            lambda: optim.adam(0.1, moment_dtype=jnp.int32),
            r"adam: moment_dtype must be None, 'param' or a floating dtype, got ",
        ),
        (
            lambda: optim.adam(0.1, moment_dtype="bf16"),
            r"adam: moment_dtype must be None, 'param' or a floating dtype, got 'bf16'$",
        ),
        (
            lambda: optim.adamw(0.1, mask={"W": 1}),
            r"adamw: mask must be None, a pytree of bools, a predicate \(key_path, leaf\) -> bool, "
            r"or a function of the params tree returning a pytree of bools \(optax's form\); got 1 "
            r"at \['W'\]$",
        ),
        (
            lambda: optim.lion(0.1, mask=lambda *args: True),  # one argument or two?
            r"lion: mask must take one argument \(the params tree, returning a pytree of bools, as "
            r"optax's masks\) or two \(\(key_path, leaf\) -> bool\), so that its form is clear; "
            r".* takes either$",
        ),
        (lambda: optim.scale_by_adam(b1=1.0), rf"scale_by_adam: b1 {_UNIT}1\.0$"),
        (
            lambda: optim.scale_by_trust_ratio(-1.0),
            rf"scale_by_trust_ratio: eps {_NON_NEGATIVE}-1\.0$",
        ),
        (lambda: optim.clip(float("nan")), rf"clip: max_abs {_NON_NEGATIVE}nan$"),
        (lambda: optim.scale("2"), r"scale: step_size must be a finite number in \(-inf, inf\)"),
    ],
)
def test_bad_hyperparameters_raise_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# Every factory of fundl.optim whose arguments are hyperparameters.
FACTORIES = [
    optim.sgd,
    optim.momentum,
    optim.rmsprop,
    optim.adam,
    optim.adamw,
    optim.adagrad,
    optim.lion,
    optim.lamb,
    optim.scale,
    optim.scale_by_learning_rate,
    optim.scale_by_momentum,
    optim.scale_by_ema,
    optim.scale_by_rms,
    optim.scale_by_adam,
    optim.scale_by_adagrad,
    optim.scale_by_lion,
    optim.scale_by_trust_ratio,
    optim.add_l2,
    optim.add_decayed_weights,
    optim.clip,
    optim.clip_by_global_norm,
    optim.accumulate,
    optim.reduce_on_plateau,
]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_every_factory_checks_its_hyperparameters(factory):
    # @validated refuses, when it decorates, a factory with an argument that has no rule.
    assert hasattr(factory, "__wrapped__"), f"{factory.__name__} is not @validated"


def test_validated_gives_every_argument_a_rule():
    def block(learning_rate, gamma=0.5):
        return learning_rate, gamma

    with pytest.raises(
        TypeError, match=r"validated: block has arguments without a rule: \['gamma'\]"
    ):
        optim.validated(block)
    checked = optim.validated(gamma=optim.Range(0.0, 1.0))(block)
    assert checked(np.float32(0.5), gamma=1) == (0.5, 1.0)  # checked numbers arrive as floats
    assert type(checked(1)[0]) is float
    with pytest.raises(ValueError, match=r"block: gamma must be a finite number in \[0, 1\]"):
        checked(0.1, gamma=2.0)
    with pytest.raises(ValueError, match=r"block: learning_rate must be"):
        checked(-0.1)


def test_traced_hyperparameters_pass_the_checks():
    params = {"W": jnp.ones((2, 3)), "b": jnp.zeros(2)}

    @jax.jit
    def first_update(lr, b1, weight_decay):
        opt = optim.adamw(lr, b1=b1, weight_decay=weight_decay)
        return opt.update(_grads(params), opt.init(params), params)[0]

    updates = first_update(jnp.float32(0.1), jnp.float32(0.5), jnp.float32(0.0))
    # The first Adam step is −α·sign(g).
    np.testing.assert_allclose(updates["W"], -0.1 * np.sign(_grads(params)["W"]), rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_transposed_gradient_is_refused(name):
    opt = OPTIMIZERS_UNDER_TEST[name][0]
    params = _params()
    grads = {**_grads(params), "dense": {"W": jnp.ones((2, 3)), "b": jnp.zeros(3)}}
    factory = name.split("_")[0]  # the error names the optimizer called: sgd_momentum is sgd
    with pytest.raises(
        ValueError,
        match=rf"^{factory}: grads and params differ in shape at \['dense'\]\['W'\]: "
        r"\(2, 3\) vs \(3, 2\)$",
    ):
        opt.update(grads, opt.init(params), params)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "sgd"])  # plain SGD keeps no state
def test_the_state_of_another_model_is_refused(name):
    opt = OPTIMIZERS_UNDER_TEST[name][0]
    params = _params()
    other = {**params, "dense": {"W": jnp.ones((2, 3)), "b": jnp.zeros(2)}}
    state = opt.init(other)
    with pytest.raises(
        ValueError,
        match=r"^\w+: grads and optimizer state differ in shape at \['dense'\]\['W'\]: \(3, 2\) vs "
        r"\(2, 3\); the state may belong to another model: init the optimizer with these params$",
    ):
        opt.update(_grads(params), state, params)
