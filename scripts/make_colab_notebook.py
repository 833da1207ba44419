"""Write examples/colab_quickstart.ipynb from the cells below (the notebook's source).

Edit the cells here and run ``python scripts/make_colab_notebook.py``; a test checks that
the committed notebook is what this script writes, and runs its code cells.
"""

from __future__ import annotations

import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "colab_quickstart.ipynb"

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# fundl on Colab: devices, training, gradient checks, data parallelism

fundl is a functional deep-learning library on JAX: models are pure functions over
parameter pytrees, and every layer has a hand-written backward rule you can verify.
This notebook runs on whatever Colab gives you — a GPU, a TPU or the CPU — and says
plainly which one it got. For a GPU: *Runtime → Change runtime type → T4 GPU* before
running it (a TPU: *v2-8 TPU*).

It trains a multilayer perceptron and a LeNet-style CNN on the 8×8 digits (shipped with
scikit-learn: nothing to download), shows the progress bar and the training curves,
checks the hand-written gradients against autodiff and finite differences, and runs
the same training step data-parallel over all the devices.""",
    ),
    (
        "code",
        """# Install fundl with the example extras (scikit-learn, matplotlib) from its repository.
%pip install -q "fundl[examples] @ git+https://github.com/fundl/fundl\"""",
    ),
    (
        "code",
        """import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import fundl
from fundl import data, gradcheck, losses, metrics, models, optim, parallel, plot, train

QUICK = os.environ.get("FUNDL_NOTEBOOK_QUICK") == "1"   # the test suite's small run

backend = jax.default_backend()
devices = jax.devices()
print(f"JAX {jax.__version__}, backend {backend!r}: {len(devices)} device(s)")
for device in devices:
    print("   ", device.device_kind, "-", device)
if backend == "cpu":
    print("!" * 78)
    print("!! NO GPU OR TPU: this runtime fell back to the CPU. Everything below still runs,")
    print("!! slowly. In Colab: Runtime > Change runtime type > T4 GPU, then run all again.")
    print("!" * 78)""",
    ),
    (
        "markdown",
        """## Matrix-product precision on GPUs and TPUs

On a GPU, JAX's default precision for float32 matrix products is TF32 (inputs rounded
to 10 mantissa bits) and on a TPU one bfloat16 pass: several times faster than full
float32, and about 1e-3 relative error. `jax.default_matmul_precision("highest")`
gives full float32 where you need it (an H100 ran a 4096-wide float32 MLP at ≈210
TFLOP/s by default and 54 TFLOP/s at "highest"). On a CPU both are float32. See
docs/precision.md.""",
    ),
    (
        "code",
        """a = jax.random.normal(jax.random.key(0), (512, 512))
b = jax.random.normal(jax.random.key(1), (512, 512))
fast = a @ b
with jax.default_matmul_precision("highest"):
    exact = a @ b
error = float(jnp.max(jnp.abs(fast - exact)) / jnp.max(jnp.abs(exact)))
print(f"default vs highest precision on {backend}: max relative difference {error:.1e}")""",
    ),
    (
        "markdown",
        """## A multilayer perceptron on the digits

`fit` shuffles, batches, compiles one update step, validates each epoch and draws a
progress bar; the history holds every epoch's metrics.""",
    ),
    (
        "code",
        """x, y = data.load_digits()                      # 1,797 images of 8×8 = 64 pixels
rest, test = data.split({"x": x, "y": y}, 0.2, key=jax.random.key(0))
train_set, val = data.split(rest, 0.125, key=jax.random.key(1))
mean, std = data.standardize_stats(train_set["x"])
for part in (train_set, val, test):
    part["x"] = data.standardize(part["x"], mean, std)

mlp = fundl.mlp([64, 128, 64, 10], "relu")      # He-initialised dense layers


def mlp_loss(params, batch):
    logits = mlp.apply(params, batch["x"])
    loss = losses.softmax_cross_entropy(logits, batch["y"])
    return loss, {"accuracy": metrics.accuracy(logits, batch["y"])}


started = time.perf_counter()
result = train.fit(
    mlp_loss, mlp.init(jax.random.key(2)), optim.adam(1e-3), train_set,
    epochs=2 if QUICK else 30, batch_size=32, key=3, val_data=val, has_aux=True,
)
test_metrics = train.make_eval_step(mlp_loss)(result.params, test)
print(f"MLP: test accuracy {float(test_metrics['accuracy']):.4f} "
      f"in {time.perf_counter() - started:.1f} s on {backend}")
plot.history(result.history);""",
    ),
    (
        "markdown",
        """## A LeNet-style CNN with batch norm and dropout

The images are upsampled to 16×16 so the second 5×5 convolution has room. A model with
state (batch norm) and randomness (dropout) trains through `apply_with_state`:
`model_state=` makes `fit` thread the state and give each step its own key.""",
    ),
    (
        "code",
        """def images(part):
    resized = jax.image.resize(part["x"].reshape(-1, 8, 8, 1), (len(part["x"]), 16, 16, 1),
                               "bilinear")
    return {"x": np.asarray(resized), "y": part["y"]}


train_img, val_img, test_img = images(train_set), images(val), images(test)
cnn = models.lenet5(10, batch_norm=True, dropout=0.2, input_shape=(16, 16, 1))
cnn_params, cnn_state = jax.jit(cnn.init_with_state)(jax.random.key(4))


def cnn_loss(params, batch, *, state, key, train):
    logits, state = cnn.apply_with_state(params, state, batch["x"], key=key, train=train)
    loss = losses.softmax_cross_entropy(logits, batch["y"])
    return loss, {"accuracy": metrics.accuracy(logits, batch["y"])}, state


started = time.perf_counter()
cnn_result = train.fit(
    cnn_loss, cnn_params, optim.adam(3e-3), train_img, model_state=cnn_state,
    epochs=1 if QUICK else 20, batch_size=64, key=5, val_data=val_img, drop_last=True,
)
evaluate = train.make_eval_step(cnn_loss, stateful=True)
cnn_test = evaluate(cnn_result.params, cnn_result.model_state, test_img)
print(f"CNN: test accuracy {float(cnn_test['accuracy']):.4f} "
      f"in {time.perf_counter() - started:.1f} s on {backend}")
plot.history(cnn_result.history);""",
    ),
    (
        "markdown",
        """## Verify the gradients

Every layer's backward rule is written by hand. `gradcheck.check_model` compares it
with JAX's autodiff and with finite differences, in float64, and prints a report.""",
    ),
    (
        "code",
        """small = fundl.mlp([6, 5, 4, 3], "tanh")
xs = jax.random.normal(jax.random.key(6), (8, 6))
ys = jax.random.randint(jax.random.key(7), (8,), 0, 3)
report = gradcheck.check_model(small, small.init(jax.random.key(8)), xs, ys,
                               losses.softmax_cross_entropy)
print(report)
report.assert_passed()""",
    ),
    (
        "markdown",
        """## The same step on every device

`parallel.data_mesh()` is a mesh of all the devices; `make_train_step(..., mesh=mesh)`
splits each batch across them and XLA adds the all-reduce of the gradients. The loss
function is the one above, unchanged. On one device this is the ordinary step.""",
    ),
    (
        "code",
        """mesh = parallel.data_mesh()
n = mesh.shape["data"]
opt = optim.adam(1e-3)
step = train.make_train_step(mlp_loss, opt, has_aux=True, mesh=mesh)
params = parallel.replicate(mlp.init(jax.random.key(2)), mesh)
opt_state = parallel.replicate(opt.init(params), mesh)
batch_size = 32 * n                                # 32 examples per device
for i in range(5 if QUICK else 100):
    start = (i * batch_size) % (len(train_set["y"]) - batch_size)
    batch = parallel.shard_batch(
        {k: v[start:start + batch_size] for k, v in train_set.items()}, mesh
    )
    params, opt_state, step_metrics = step(params, opt_state, batch)
print(f"{n} device(s), batch {batch_size} split as {batch['x'].sharding.spec}: "
      f"loss {float(step_metrics['loss']):.4f}")""",
    ),
]


def notebook() -> dict:
    """The notebook as nbformat 4 JSON."""
    cells = []
    for kind, source in CELLS:
        cell = {"cell_type": kind, "metadata": {}, "source": source.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "accelerator": "GPU",
            "colab": {"provenance": []},
            "kernelspec": {"display_name": "Python 3", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 4,
    }


def text() -> str:
    return json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(text())
    print(f"wrote {OUT}")
