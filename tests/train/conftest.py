"""A toy problem every training test shares: a 3-8-2 tanh MLP on a linearly separable set."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import losses, metrics, optim

MODEL = fundl.mlp([3, 8, 2], "tanh")


def _data(n=40, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    return {"x": np.array(x), "y": np.array(y)}


def _loss_fn(params, batch):
    return losses.softmax_cross_entropy(MODEL.apply(params, batch["x"]), batch["y"])


def _loss_with_accuracy(params, batch):
    logits = MODEL.apply(params, batch["x"])
    return losses.softmax_cross_entropy(logits, batch["y"]), {
        "accuracy": metrics.accuracy(logits, batch["y"])
    }


def _params(seed=1):
    return MODEL.init(jax.random.key(seed))


def _manual_step(opt, params, opt_state, batch):
    grads = jax.grad(_loss_fn)(params, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optim.apply_updates(params, updates), opt_state


@pytest.fixture
def toy():
    """The shared model, data, losses and a step written out by hand."""
    return types.SimpleNamespace(
        model=MODEL,
        data=_data,
        loss_fn=_loss_fn,
        loss_with_accuracy=_loss_with_accuracy,
        params=_params,
        manual_step=_manual_step,
    )
