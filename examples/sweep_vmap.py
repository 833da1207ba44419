"""Eight learning rates trained at once: one compiled step for eight models (vmap).

The same digits MLP, the same initial weights, Adam with learning rates from 1e-4 to
3e-1 held in the optimizer state (``inject_hyperparams``), so one vmapped step updates
all eight models together. Prints the final validation accuracy per rate.

Run: pip install -e ".[examples]" && python examples/sweep_vmap.py
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp

import fundl
from fundl import data, losses, metrics, optim, train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from mlp_digits import prepare  # noqa: E402


def main(epochs: int = 20) -> dict[float, float]:
    learning_rates = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    k_data, k_init, k_order = jax.random.split(jax.random.key(0), 3)
    train_set, val, _ = prepare(k_data)
    model = fundl.mlp([64, 128, 64, 10], "relu")
    n = len(learning_rates)
    one = model.init(k_init)
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (n, *p.shape)), one)  # same start for all
    opt = optim.inject_hyperparams(optim.adam)(learning_rate=1e-3)
    opt_state = jax.vmap(lambda lr: optim.with_hyperparams(opt.init(one), learning_rate=lr))(
        jnp.asarray(learning_rates)
    )

    def loss_fn(params, batch):
        logits = model.apply(params, batch["x"])
        return losses.softmax_cross_entropy(logits, batch["y"]), {
            "accuracy": metrics.accuracy(logits, batch["y"])
        }

    step = train.make_train_step(loss_fn, opt, has_aux=True, ensemble=True)
    evaluate = train.make_eval_step(loss_fn, ensemble=True)
    started = time.perf_counter()
    for epoch in range(epochs):
        for batch in data.prefetch_to_device(
            data.batches(train_set, 32, key=k_order, epoch=epoch, drop_last=True)
        ):
            params, opt_state, _ = step(params, opt_state, batch)
    accuracy = jax.device_get(evaluate(params, val)["accuracy"])
    print(f"{n} models, {epochs} epochs, one compiled step: {time.perf_counter() - started:.1f} s")
    for lr, acc in zip(learning_rates, accuracy):
        print(f"  learning rate {lr:g}: validation accuracy {acc:.4f}")
    return dict(zip(learning_rates, map(float, accuracy)))


if __name__ == "__main__":
    main()
