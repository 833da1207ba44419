"""Train a LeNet-style CNN with batch norm, dropout and augmentation on the 8×8 digits.

The notes' CNN, "Input → Conv → ReLU → Pool → Conv → ReLU → Pool → FC → Softmax", as
``fundl.models.lenet5`` with batch norm after each conv and hidden dense layer and
dropout after the hidden dense layers, behind an ``Augment`` layer that shifts and
turns each training image a little (inside the compiled step, training only):

    Augment(random crop with 2-pixel padding, rotation ≤ 10°)
    → conv 5×5 6 → BN → ReLU → max-pool 2 → conv 5×5 16 → BN → ReLU → max-pool 2
    → flatten → dense 120 → BN → ReLU → dropout → dense 84 → BN → ReLU → dropout → dense 10

The digits (scikit-learn's, shipped with it: nothing is downloaded) are 8×8; they are
upsampled to 16×16 (bilinear) so the second 5×5 convolution has room. Adam with a
cosine-decayed rate, mini-batches of 64 (all full: each epoch's remainder is dropped,
so the train step compiles once), validation each epoch (in one batch), early stopping,
checkpoints of the best and latest epochs, a progress bar. Prints the test accuracy and
the wall time, saves the curves to runs/cnn_digits/curves.png, and exits with 1 below
98%.

With ``--idx DIR`` it trains on MNIST or Fashion-MNIST files you already have (the four
``*-idx?-ubyte`` files, gzipped or not, read by ``fundl.data.load_idx``) at 28×28,
holding out 10% of the training set for validation.

Run: pip install -e ".[examples]" && python examples/cnn_digits.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from fundl import augment, data, losses, metrics, models, optim, train
from fundl.nn import Sequential
from fundl.optim import schedules

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from mlp_digits import fresh_checkpoints, report  # the same checkpoints, printout, curves


def digits(key: jax.Array, size: int = 16) -> tuple[dict, dict, dict]:
    """The 8×8 digits as (N, size, size, 1) images in [0, 1], split 70/10/20."""
    x, y = data.load_digits()
    images = jax.image.resize(
        jnp.asarray(x).reshape(-1, 8, 8, 1), (len(x), size, size, 1), "bilinear"
    )
    k_test, k_val = jax.random.split(key)
    rest, test = data.split({"x": np.asarray(images), "y": y}, 0.2, key=k_test)
    train_set, val = data.split(rest, 0.125, key=k_val)
    return train_set, val, test


def idx_files(directory: str, key: jax.Array) -> tuple[dict, dict, dict]:
    """MNIST-format files in ``directory`` as (N, 28, 28, 1) images in [0, 1]."""
    folder = pathlib.Path(directory)

    def find(prefix: str) -> pathlib.Path:
        matches = sorted(folder.glob(f"{prefix}-*ubyte*"))
        if not matches:
            raise FileNotFoundError(f"cnn_digits: no {prefix}-*-ubyte[.gz] file in {folder}")
        return matches[0]

    def images_and_labels(prefix: str) -> dict:
        images, labels = data.load_idx(find(f"{prefix}-images"), find(f"{prefix}-labels"))
        return {"x": (images[..., None] / 255.0).astype(np.float32), "y": labels}

    rest, test = images_and_labels("train"), images_and_labels("t10k")
    train_set, val = data.split(rest, 0.1, key=key)
    return train_set, val, test


def model(image_shape: tuple[int, int, int]) -> Sequential:
    """Augmentation (training only), then LeNet-5 with batch norm and dropout."""
    return Sequential(
        [
            augment.Augment((augment.RandomCrop(padding=2), augment.RandomRotate(10.0))),
            models.lenet5(10, batch_norm=True, dropout=0.2, input_shape=image_shape),
        ],
        input_shape=image_shape,
    )


def main(
    epochs: int = 30,
    out: str = "runs/cnn_digits",
    progress: bool = True,
    idx: str | None = None,
    limit: int | None = None,
) -> float:
    """Train and return the test accuracy (``limit``: use only that many training examples)."""
    started = time.perf_counter()
    k_data, k_init, k_fit = jax.random.split(jax.random.key(0), 3)
    train_set, val, test = digits(k_data) if idx is None else idx_files(idx, k_data)
    if limit is not None:
        train_set = jax.tree.map(lambda leaf: leaf[:limit], train_set)
    net = model(tuple(train_set["x"].shape[1:]))
    # One compiled init (eagerly, each layer's draws would compile on their own).
    params, state = jax.jit(net.init_with_state)(k_init)

    def loss_fn(params, batch, *, state, key, train):
        logits, state = net.apply_with_state(params, state, batch["x"], key=key, train=train)
        loss = losses.softmax_cross_entropy(logits, batch["y"])
        return loss, {"accuracy": metrics.accuracy(logits, batch["y"])}, state

    # Every training batch full (drop_last: one compiled step, not a second one for
    # the epoch's final partial batch; each epoch reshuffles, so every example is
    # still seen), and the validation set in one batch (one eval step compiled for it,
    # not two for a full and a partial batch).
    batch_size, eval_batch_size = 64, len(val["y"])
    steps = epochs * (len(train_set["y"]) // batch_size)
    result = train.fit(
        loss_fn,
        params,
        optim.adam(schedules.cosine_decay(3e-3, steps)),
        train_set,
        model_state=state,
        epochs=epochs,
        batch_size=batch_size,
        drop_last=True,
        eval_batch_size=eval_batch_size,
        key=k_fit,
        val_data=val,
        early_stopping=train.EarlyStopping("val_loss", patience=8),
        checkpoints=fresh_checkpoints(out),
        progress=progress,
    )
    evaluate = train.make_eval_step(loss_fn, stateful=True)
    test_metrics = jax.device_get(evaluate(result.params, result.model_state, test))
    report(result, test_metrics, time.perf_counter() - started, out)
    return float(test_metrics["accuracy"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="runs/cnn_digits")
    parser.add_argument("--idx", help="a folder with MNIST-format IDX files (train-*, t10k-*)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    accuracy = main(args.epochs, args.out, progress=not args.no_progress, idx=args.idx)
    sys.exit(0 if accuracy >= 0.98 else 1)
