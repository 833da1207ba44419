"""fundl.nn.rnn and RNN: hand-written backpropagation through time against autodiff
through an unrolled Python loop, PyTorch's nn.RNN where torch is installed, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl.nn import RNN, rnn


def _unrolled(x, h0, W_ih, W_hh, b_ih, b_hh):
    """The notes' recurrence, one Python step per time step."""
    h, states = h0, []
    for t in range(x.shape[1]):
        h = jnp.tanh(x[:, t] @ W_ih.T + b_ih[None] + h @ W_hh.T + b_hh[None])
        states.append(h)
    return jnp.stack(states, axis=1)


def _args(n=2, t=7, d=3, h=4, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(n, t, d), (n, h), (h, d), (h, h), (h,), (h,)]
    return [jnp.asarray(rng.normal(size=s) * (1.0 if i < 2 else 0.6)) for i, s in enumerate(shapes)]


def test_bptt_by_hand_equals_autodiff_through_the_unrolled_loop(x64):
    with x64():
        args = _args()
        out, vjp = jax.vjp(rnn, *args)
        ref_out, ref_vjp = jax.vjp(_unrolled, *args)
        chex.assert_trees_all_close(out, ref_out, rtol=1e-13)
        g = jnp.asarray(np.random.default_rng(1).normal(size=out.shape))
        # dx, dh0, dW_ih, dW_hh, db_ih, db_hh: every one, through all 7 steps
        chex.assert_trees_all_close(vjp(g), ref_vjp(g), rtol=1e-12, atol=1e-14)


def test_a_loss_on_the_last_state_alone_reaches_the_first_input(x64):
    """Only g_T is nonzero: dx_1 comes from carrying dh back through every step."""
    with x64():
        args = _args(t=5)
        grad = jax.grad(lambda x: rnn(x, *args[1:])[:, -1].sum())(args[0])
        ref = jax.grad(lambda x: _unrolled(x, *args[1:])[:, -1].sum())(args[0])
        chex.assert_trees_all_close(grad, ref, rtol=1e-12)
        assert float(jnp.abs(grad[:, 0]).max()) > 0


def test_layer_matches_pytorch_nn_rnn_after_renaming(x64):
    torch = pytest.importorskip("torch")
    reference = torch.nn.RNN(3, 4, batch_first=True).double()
    rename = {
        "weight_ih_l0": "W_ih",
        "weight_hh_l0": "W_hh",
        "bias_ih_l0": "b_ih",
        "bias_hh_l0": "b_hh",
    }
    params = {rename[n]: jnp.asarray(p.detach().numpy()) for n, p in reference.named_parameters()}
    x = np.random.default_rng(2).normal(size=(2, 5, 3))
    expected, _ = reference(torch.from_numpy(x))
    with x64():
        out = RNN(4, param_dtype=jnp.float64).apply(params, jnp.asarray(x))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12)


def test_init_draws_pytorchs_uniform_bound():
    params = RNN(16).init(jax.random.key(0), (5, 3))
    assert {k: v.shape for k, v in params.items()} == {
        "W_ih": (16, 3),
        "W_hh": (16, 16),
        "b_ih": (16,),
        "b_hh": (16,),
    }
    assert max(float(jnp.abs(v).max()) for v in params.values()) <= 0.25  # 1/√16


@pytest.mark.parametrize(
    "change, message",
    [
        ({0: jnp.ones((2, 3))}, r"rnn: expected x of shape \(batch, T, d\)"),
        ({0: jnp.ones((2, 0, 3))}, r"rnn: sequence length 0"),
        ({1: jnp.ones((3, 4))}, r"rnn: expected h0 of shape \(2, 4\) for x of shape \(2, 7, 3\)"),
        ({2: jnp.ones((4, 2))}, r"rnn: expected W_ih of shape \(4, 3\)"),
        ({3: jnp.ones((4, 3))}, r"rnn: expected W_hh of shape \(H, H\)"),
    ],
)
def test_bad_input_is_refused_naming_the_shapes(change, message):
    args = [a.astype(jnp.float32) for a in _args()]
    for i, value in change.items():
        args[i] = value
    with pytest.raises(ValueError, match=message):
        rnn(*args)
    with pytest.raises(ValueError, match=r"RNN: hidden_size"):
        RNN(0)
