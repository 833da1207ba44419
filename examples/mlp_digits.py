"""Train the notes' MLP on the 8×8 digits with fit: the main example.

Input (64) → Dense 128 → ReLU → Dense 64 → ReLU → Dense 10 (logits), He init,
softmax + cross-entropy, Adam, mini-batches of 32, validation every epoch, early
stopping on the validation loss (restoring the best epoch), and checkpoints of the best
and latest epochs. The data are scikit-learn's digits, which ship with scikit-learn:
nothing is downloaded.

Prints the test accuracy and the wall time, saves the training curves to
runs/mlp_digits/curves.png, and exits with 1 if the test accuracy is below 97%.

Run: pip install -e ".[examples]" && python examples/mlp_digits.py
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import time

import jax

import fundl
from fundl import checkpoint, data, losses, metrics, optim, train


def prepare(key: jax.Array) -> tuple[dict, dict, dict]:
    """Digits split 70/10/20 into train/validation/test, standardized by the train stats."""
    x, y = data.load_digits()
    k_test, k_val = jax.random.split(key)
    rest, test = data.split({"x": x, "y": y}, 0.2, key=k_test)
    train_set, val = data.split(rest, 0.125, key=k_val)
    mean, std = data.standardize_stats(train_set["x"])
    for part in (train_set, val, test):
        part["x"] = data.standardize(part["x"], mean, std)
    return train_set, val, test


def report(result: train.FitResult, test_metrics: dict, seconds: float, out: str) -> None:
    """Print the best epoch, the test metrics and the wall time; plot the curves to out/."""
    print(
        f"best epoch {result.best_epoch} of {len(result.history['epoch'])}: "
        f"test accuracy {test_metrics['accuracy']:.4f}, test loss {test_metrics['loss']:.4f}, "
        f"wall time {seconds:.1f} s"
    )
    try:
        from fundl import plot

        path = pathlib.Path(out) / "curves.png"
        plot.history(result.history, path=path)
        print(f"training curves: {path}")
    except ImportError as error:
        print(f"(no curves: {error})")


def fresh_checkpoints(out: str) -> checkpoint.CheckpointManager:
    """The run's checkpoints in an emptied ``out/checkpoints``, best and latest kept: each
    run of the example is a new run (fit refuses a directory holding another run's)."""
    directory = pathlib.Path(out) / "checkpoints"
    shutil.rmtree(directory, ignore_errors=True)
    return checkpoint.CheckpointManager(directory, keep_last=2, monitor="val_loss")


def main(epochs: int = 60, out: str = "runs/mlp_digits", progress: bool = True) -> float:
    """Train and return the test accuracy."""
    started = time.perf_counter()
    k_data, k_init, k_fit = jax.random.split(jax.random.key(0), 3)
    train_set, val, test = prepare(k_data)
    model = fundl.mlp([64, 128, 64, 10], "relu")
    params = model.init(k_init)

    def loss_fn(params, batch):
        logits = model.apply(params, batch["x"])
        loss = losses.softmax_cross_entropy(logits, batch["y"])
        return loss, {"accuracy": metrics.accuracy(logits, batch["y"])}

    result = train.fit(
        loss_fn,
        params,
        optim.adam(1e-3),
        train_set,
        epochs=epochs,
        batch_size=32,
        key=k_fit,
        val_data=val,
        has_aux=True,
        early_stopping=train.EarlyStopping("val_loss", patience=8),
        checkpoints=fresh_checkpoints(out),
        progress=progress,
    )
    evaluate = train.make_eval_step(loss_fn)
    test_metrics = jax.device_get(evaluate(result.params, test))
    report(result, test_metrics, time.perf_counter() - started, out)
    return float(test_metrics["accuracy"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default="runs/mlp_digits")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    accuracy = main(args.epochs, args.out, progress=not args.no_progress)
    sys.exit(0 if accuracy >= 0.97 else 1)
