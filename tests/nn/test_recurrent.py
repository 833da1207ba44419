"""fundl.nn.rnn, lstm, gru and the RNN, LSTM, GRU layers: hand-written backpropagation
through time against autodiff through an unrolled Python loop, PyTorch's modules where
torch is installed, masking, the PyTorch renaming, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl.nn import (
    GRU,
    LSTM,
    RNN,
    Dense,
    Sequential,
    gru,
    lstm,
    params_from_torch,
    params_to_torch,
    rnn,
)

sigmoid = jax.nn.sigmoid


def _rnn_cell(x_t, states, W_ih, W_hh, b_ih, b_hh):
    (h,) = states
    return (jnp.tanh(x_t @ W_ih.T + b_ih[None] + h @ W_hh.T + b_hh[None]),)


def _lstm_cell(x_t, states, W_ih, W_hh, b_ih, b_hh):
    h, c = states
    a_i, a_f, a_g, a_o = jnp.split(x_t @ W_ih.T + b_ih[None] + h @ W_hh.T + b_hh[None], 4, -1)
    c = sigmoid(a_f) * c + sigmoid(a_i) * jnp.tanh(a_g)
    return sigmoid(a_o) * jnp.tanh(c), c


def _gru_cell(x_t, states, W_ih, W_hh, b_ih, b_hh):
    (h,) = states
    x_r, x_z, x_n = jnp.split(x_t @ W_ih.T + b_ih[None], 3, -1)
    u_r, u_z, u_n = jnp.split(h @ W_hh.T + b_hh[None], 3, -1)
    r, z = sigmoid(x_r + u_r), sigmoid(x_z + u_z)
    return ((1 - z) * jnp.tanh(x_n + r * u_n) + z * h,)


CELLS = {
    "rnn": (rnn, _rnn_cell, 1, 1),
    "lstm": (lstm, _lstm_cell, 4, 2),
    "gru": (gru, _gru_cell, 3, 1),
}


def _unrolled(cell, x, states, weights, mask, reverse):
    """The recurrence, one Python step per time step; padded steps keep the state."""
    steps = range(x.shape[1])
    outputs = {}
    for t in reversed(steps) if reverse else steps:
        new = cell(x[:, t], states, *weights)
        if mask is not None:
            m = mask[:, t][:, None]
            new = tuple(jnp.where(m, a, b) for a, b in zip(new, states))
        outputs[t] = new[0] if mask is None else jnp.where(m, new[0], 0.0)
        states = new
    return jnp.stack([outputs[t] for t in steps], axis=1), states


def _args(name, n=2, t=5, d=3, h=4, seed=0):
    _, _, k, n_states = CELLS[name]
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, t, d)))
    states = tuple(jnp.asarray(rng.normal(size=(n, h))) for _ in range(n_states))
    shapes = [(k * h, d), (k * h, h), (k * h,), (k * h,)]
    weights = tuple(jnp.asarray(rng.normal(size=s) * 0.6) for s in shapes)
    return x, states, weights


MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)  # lengths 3 and 5, right-padded


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("masked, reverse", [(False, False), (True, False), (True, True)])
def test_bptt_by_hand_equals_autodiff_through_the_unrolled_loop(x64, name, masked, reverse):
    """Outputs, final states and every gradient (dx, dh0, dc0, weights) to ~1e-12."""
    primitive, cell, _, _ = CELLS[name]
    with x64():
        x, states, weights = _args(name)
        mask = jnp.asarray(MASK) if masked else None

        def hand(x, states, weights):
            hs, final = primitive(x, *states, *weights, mask, reverse=reverse)
            return hs, final if isinstance(final, tuple) else (final,)

        out, vjp = jax.vjp(hand, x, states, weights)
        ref_out, ref_vjp = jax.vjp(
            lambda *a: _unrolled(cell, *a, mask, reverse), x, states, weights
        )
        chex.assert_trees_all_close(out, ref_out, rtol=1e-13, atol=1e-15)
        rng = np.random.default_rng(1)
        g = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), out)
        chex.assert_trees_all_close(vjp(g), ref_vjp(g), rtol=1e-12, atol=1e-14)
        if masked:  # padded outputs are 0; the final state is that of the last real step
            assert float(jnp.abs(out[0][0, 3:]).max()) == 0.0
            last = 0 if reverse else 2
            np.testing.assert_array_equal(out[1][0][0], out[0][0, last])


def test_a_loss_on_the_final_cell_state_alone_reaches_the_first_input(x64):
    """Only dc_n is nonzero: dx_1 comes from carrying dh and dc back through every step."""
    with x64():
        x, (h0, c0), weights = _args("lstm")

        def loss(fn):
            return lambda x, c0: fn(x, c0)[1][1].sum()

        def hand(x, c0):
            return lstm(x, h0, c0, *weights)

        def ref(x, c0):
            return None, _unrolled(_lstm_cell, x, (h0, c0), weights, None, False)[1]

        grads = jax.grad(loss(hand), argnums=(0, 1))(x, c0)
        chex.assert_trees_all_close(grads, jax.grad(loss(ref), argnums=(0, 1))(x, c0), rtol=1e-12)
        assert float(jnp.abs(grads[0][:, 0]).max()) > 0


LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_layers_match_pytorch_after_params_from_torch(x64, name, packed):
    torch = pytest.importorskip("torch")
    module = getattr(torch.nn, name.upper())
    reference = module(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    x = np.random.default_rng(2).normal(size=(3, 5, 3))
    lengths = np.array([5, 2, 4])
    inputs = torch.from_numpy(x)
    if packed:
        inputs = torch.nn.utils.rnn.pack_padded_sequence(
            inputs, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
        )
    expected, expected_final = reference(inputs)
    if packed:
        expected, _ = torch.nn.utils.rnn.pad_packed_sequence(
            expected, batch_first=True, total_length=5
        )
    with x64():
        layer = LAYERS[name](4, num_layers=2, bidirectional=True, param_dtype=jnp.float64)
        params = params_from_torch({k: v.numpy() for k, v in reference.state_dict().items()})
        out, final = layer.run(
            params, jnp.asarray(x), lengths=jnp.asarray(lengths) if packed else None
        )
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    expected_final = expected_final if name == "lstm" else (expected_final,)
    for mine, theirs in zip(jax.tree.leaves(final), expected_final):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    state_dict = params_to_torch(params)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})


def test_padded_positions_change_no_output_or_gradient_at_real_positions():
    layer = LSTM(3, num_layers=2, bidirectional=True)
    params = layer.init(0, (4, 2))
    lengths = jnp.array([2, 4])
    real = (jnp.arange(4)[None, :] < lengths[:, None])[..., None]
    x = jax.random.normal(jax.random.key(1), (2, 4, 2))
    other = jnp.where(real, x, 100.0 * jax.random.normal(jax.random.key(2), x.shape))
    other = other.at[0, 3, 1].set(jnp.nan)  # not even a NaN there reaches anything

    def loss(params, x):
        out, (h_n, c_n) = layer.run(params, x, lengths=lengths)
        return jnp.sum(out**2) + jnp.sum(h_n) + jnp.sum(c_n * c_n), out

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (value, out), grads = step(params, x)
    (value2, out2), grads2 = step(params, other)
    chex.assert_trees_all_close((value, out, grads[0]), (value2, out2, grads2[0]), rtol=1e-6)
    np.testing.assert_allclose(jnp.where(real, grads[1], 0), jnp.where(real, grads2[1], 0))
    assert float(jnp.abs(grads2[1][0, 2:]).max()) == 0.0  # nothing reaches the padding


def test_lengths_under_jit_above_t_read_everything_and_zero_gives_the_initial_state():
    layer = GRU(3)
    params = layer.init(0, (4, 2))
    x = jax.random.normal(jax.random.key(1), (2, 4, 2))
    h0 = jax.random.normal(jax.random.key(2), (1, 2, 3))
    run = jax.jit(lambda lengths: layer.run(params, x, lengths=lengths, initial_state=h0))
    full = layer.run(params, x, initial_state=h0)
    out, h_n = run(jnp.array([4, 9]))
    chex.assert_trees_all_close((out, h_n), full)
    out, h_n = run(jnp.array([0, 4]))
    assert float(jnp.abs(out[0]).max()) == 0.0
    np.testing.assert_array_equal(h_n[0, 0], h0[0, 0])


def test_init_pytorch_bounds_forget_bias_and_stacked_shapes():
    params = LSTM(16, num_layers=2, bidirectional=True, forget_bias=2.0).init(0, (5, 3))
    assert jax.tree.map(jnp.shape, params)["l1_reverse"] == {
        "W_ih": (64, 32),  # layer 1 reads both directions' 16 features
        "W_hh": (64, 16),
        "b_ih": (64,),
        "b_hh": (64,),
    }
    assert set(params) == {"l0", "l0_reverse", "l1", "l1_reverse"}
    for p in params.values():
        np.testing.assert_array_equal(p["b_ih"][16:32], 2.0)
        np.testing.assert_array_equal(p["b_hh"][16:32], 0.0)
        others = [p["W_ih"], p["W_hh"], p["b_ih"][:16], p["b_ih"][32:], p["b_hh"][32:]]
        assert max(float(jnp.abs(v).max()) for v in others) <= 0.25  # 1/√16
    pytorch_like = LSTM(16, forget_bias=None).init(0, (5, 3))["l0"]["b_ih"]
    assert float(jnp.abs(pytorch_like[16:32]).max()) <= 0.25


def test_torch_renaming_round_trips_and_refuses_unknown_keys():
    params = GRU(3, num_layers=2, bidirectional=True).init(0, (4, 2))
    state_dict = params_to_torch(params)
    assert "weight_ih_l1_reverse" in state_dict and len(state_dict) == 16
    chex.assert_trees_all_equal(params_from_torch(state_dict), params)
    with pytest.raises(ValueError, match=r"params_from_torch: unknown key 'weight_hr_l0'"):
        params_from_torch({"weight_hr_l0": np.ones((2, 2))})
    with pytest.raises(ValueError, match=r"params_to_torch: unexpected params\['dense'\]"):
        params_to_torch({"dense": {"W": np.ones(2)}})


def test_dropout_between_layers_only_in_training_and_needs_a_key():
    layer = RNN(8, num_layers=2, dropout=0.5)
    params = layer.init(0, (4, 3))
    x = jnp.ones((2, 4, 3))
    apply = jax.jit(layer.apply, static_argnames="train")
    evaluation = apply(params, x)
    chex.assert_trees_all_equal(evaluation, apply(params, x, key=jax.random.key(1)))
    trained = apply(params, x, key=jax.random.key(1), train=True)
    assert not np.allclose(trained, evaluation)
    chex.assert_trees_all_equal(trained, apply(params, x, key=jax.random.key(1), train=True))
    with pytest.raises(ValueError, match=r"RNN\(8, num_layers=2, dropout=0.5\): train=True .*key"):
        layer.apply(params, x, train=True)
    one_layer = RNN(8, dropout=0.5)  # nothing between layers: no key needed
    one_layer.apply(one_layer.init(0, (4, 3)), x, train=True)


def test_composes_in_sequential_with_initial_state_in_run():
    net = Sequential([LSTM(4, bidirectional=True), Dense(2)], input_shape=(5, 3))
    assert net.apply(net.init(0), jnp.ones((2, 5, 3))).shape == (2, 5, 2)
    layer = LSTM(4, bidirectional=True)
    params = layer.init(0, (5, 3))
    h0 = c0 = jnp.ones((2, 2, 4))
    _, (h_n, c_n) = layer.run(params, jnp.ones((2, 5, 3)), initial_state=(h0, c0))
    assert h_n.shape == c_n.shape == (2, 2, 4)


def _layer_call(change):
    layer = LSTM(4, num_layers=2)
    params = layer.init(0, (5, 3))
    kwargs = {"x": jnp.ones((2, 5, 3))} | change
    return lambda: layer.run(params, **kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"x": jnp.ones((2, 0, 3))}, r"LSTM\(4, num_layers=2\): sequence length 0"),
        ({"x": jnp.ones((5, 3))}, r"LSTM\(4, num_layers=2\): expected x of shape \(batch, T, d\)"),
        (
            {"lengths": jnp.array([1, 2, 3])},
            (
                r"LSTM\(4, num_layers=2\): expected integer lengths of shape \(2,\) .*int32 of "
                r"shape \(3,\)"
            ),
        ),
        ({"lengths": jnp.array([1.0, 2.0])}, r"expected integer lengths .*got float32"),
        ({"lengths": jnp.array([0, 5])}, r"lengths must be in \[1, 5\] .*got values in \[0, 5\]"),
        ({"lengths": jnp.array([6, 5])}, r"lengths must be in \[1, 5\] .*got values in \[5, 6\]"),
        (
            {"initial_state": (jnp.zeros((1, 2, 4)), jnp.zeros((1, 2, 4)))},
            (
                r"LSTM\(4, num_layers=2\): expected initial_state of shape \(\(2, 2, 4\), "
                r"\(2, 2, 4\)\).*got \[\(1, 2, 4\), \(1, 2, 4\)\]"
            ),
        ),
        ({"initial_state": jnp.zeros((2, 2, 4))}, r"expected initial_state of shape"),
    ],
)
def test_bad_layer_input_is_refused_naming_the_layer_and_shapes(change, message):
    with pytest.raises(ValueError, match=message):
        _layer_call(change)()


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("rnn", {0: jnp.ones((2, 3))}, r"rnn: expected x of shape \(batch, T, d\)"),
        ("rnn", {0: jnp.ones((2, 0, 3))}, r"rnn: sequence length 0"),
        (
            "rnn",
            {1: jnp.ones((3, 4))},
            r"rnn: expected h0 of shape \(2, 4\) for x of shape \(2, 5, 3\)",
        ),
        ("lstm", {2: jnp.ones((2, 3))}, r"lstm: expected c0 of shape \(2, 4\)"),
        ("lstm", {3: jnp.ones((16, 2))}, r"lstm: expected W_ih of shape \(16, 3\)"),
        ("gru", {3: jnp.ones((12, 3))}, r"gru: expected W_hh of shape \(3H, H\)"),
        ("gru", {6: jnp.ones((2, 4), bool)}, r"gru: expected a bool mask of shape \(2, 5\)"),
        ("gru", {6: jnp.ones((2, 5))}, r"gru: expected a bool mask .*got float32"),
    ],
)
def test_bad_primitive_input_is_refused_naming_the_shapes(name, change, message):
    primitive = CELLS[name][0]
    x, states, weights = _args(name)
    args = [a.astype(jnp.float32) for a in (x, *states, *weights)] + [None]
    for i, value in change.items():
        args[i] = value
    with pytest.raises(ValueError, match=message):
        primitive(*args)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match=r"RNN: hidden_size"):
        RNN(0)
    with pytest.raises(ValueError, match=r"GRU: num_layers"):
        GRU(3, num_layers=0)
    with pytest.raises(ValueError, match=r"LSTM: dropout"):
        LSTM(3, dropout=1.0)
    with pytest.raises(ValueError, match=r"LSTM: bidirectional must be True or False"):
        LSTM(3, bidirectional=1)
