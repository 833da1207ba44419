"""The digits MLP again, with a hand-written loop from fundl's building blocks.

The loop that fit runs, spelled out: the batcher (shuffled by (key, epoch)), the
device prefetch, the compiled and donated train step, the eval step and the
checkpoint manager. Exits with 1 if the test accuracy is below 97%.

Run: pip install -e ".[examples]" && python examples/custom_loop.py
"""

from __future__ import annotations

import sys
import tempfile

import jax

import fundl
from fundl import checkpoint, data, losses, metrics, optim, train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from mlp_digits import prepare  # noqa: E402  (the same data preparation)


def main(epochs: int = 40) -> float:
    k_data, k_init, k_order = jax.random.split(jax.random.key(0), 3)
    train_set, val, test = prepare(k_data)
    model = fundl.mlp([64, 128, 64, 10], "relu")
    params = model.init(k_init)
    opt = optim.adam(1e-3)
    opt_state = opt.init(params)

    def loss_fn(params, batch):
        logits = model.apply(params, batch["x"])
        return losses.softmax_cross_entropy(logits, batch["y"]), {
            "accuracy": metrics.accuracy(logits, batch["y"])
        }

    step = train.make_train_step(loss_fn, opt, has_aux=True)
    evaluate = train.make_eval_step(loss_fn)  # one eval step serves the val and test sets
    with tempfile.TemporaryDirectory() as run_dir:  # removed at the end, with its files
        manager = checkpoint.CheckpointManager(run_dir, keep_last=1, monitor="val_loss")
        for epoch in range(epochs):
            batches = data.batches(train_set, 32, key=k_order, epoch=epoch, drop_last=True)
            for batch in data.prefetch_to_device(batches):
                params, opt_state, logs = step(params, opt_state, batch)
            val_logs = jax.device_get(evaluate(params, val))
            state = {"params": params, "opt_state": opt_state}
            manager.save(epoch, state, metrics={"val_loss": float(val_logs["loss"])})
            if epoch % 10 == 9:
                print(
                    f"epoch {epoch + 1}: train loss {float(logs['loss']):.4f}, "
                    f"val accuracy {val_logs['accuracy']:.4f}"
                )
        best_epoch = manager.best_step() + 1
        best = manager.restore_best(template={"params": params}, partial=True)["params"]

    accuracy = float(evaluate(best, test)["accuracy"])
    print(f"best epoch {best_epoch}: test accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    sys.exit(0 if main() >= 0.97 else 1)
