"""Vanishing gradients, measured: 20 sigmoid layers against ReLU + He and residual + batch norm.

The notes ("Vanishing and Exploding Gradients"): in a deep sigmoid network the gradient
shrinks on its way back — every layer multiplies it by σ'(z) ≤ 1/4 — so the first
layers barely learn; ReLU with He initialization keeps its scale; skip connections and
batch normalization keep it too, and make the deep network train.

Three networks of 20 dense layers (width 64) on the 8×8 digits:

  (a) sigmoid MLP, Xavier init (``fundl.mlp``'s default before a sigmoid);
  (b) ReLU MLP, He init;
  (c) residual MLP: Dense(64), then 18 blocks x + ReLU(BatchNorm(Dense(64)(x))), then
      BatchNorm and Dense(10) — the final batch norm rescales the residual stream,
      whose variance grows with the number of blocks, before the classifier.

For each: the gradient norm ‖dW^[l]‖ of every dense layer at initialization, from the
notes' manual backprop (``fundl.nn.backprop``, its per-layer traces) for (a) and (b);
(c) has a skip connection and batch norm, which the manual backprop does not cover, so
its norms come from ``jax.grad`` through fundl's rules. Then a
short ``fit`` with ``grad_health=True`` (SGD with momentum, a few epochs), whose history
holds every layer's gradient norm per epoch and whose :class:`GradHealthWarning` s
name the layers that vanish. A table of the norms (layers 1..20, the first/last ratio
and the max/min spread), the test accuracy of each network, and the plots
(runs/vanishing_gradients/*.png).

What the numbers show (seed 0; the test checks the inequalities): the sigmoid
network's first layer gets about 1e-12 of its last layer's gradient, at initialization
and after training, the monitor warns about 15 of its 20 layers every epoch, and it
does not learn (test accuracy at chance); the ReLU + He network's norms stay within a
factor of about 6 of each other (1.6 after 5 epochs) and it learns slowly (about 60%);
the residual network's stay within about 9 (6 after training) — flat over its 18
blocks, larger in its first layer, to which every block adds a path back, and in its
classifier — and it trains best by far (about 95%). So ReLU + He removes the vanishing;
in these runs its profile is as flat as the residual network's or flatter, and what
the skip connections and batch norm add is a network that trains.

Run: pip install -e ".[examples]" && python examples/vanishing_gradients.py
"""

from __future__ import annotations

import argparse
import pathlib
import time
import warnings

import jax
import jax.numpy as jnp

import fundl
from fundl import data, initializers, losses, metrics, nn, optim, train
from fundl.nn import BatchNorm, Dense, Residual, Sequential

DEPTH, WIDTH = 20, 64  # dense layers, units per hidden layer


def prepare(key: jax.Array) -> tuple[dict, dict]:
    """Digits split 80/20 into train/test, standardized by the training statistics."""
    x, y = data.load_digits()
    train_set, test = data.split({"x": x, "y": y}, 0.2, key=key)
    mean, std = data.standardize_stats(train_set["x"])
    for part in (train_set, test):
        part["x"] = data.standardize(part["x"], mean, std)
    return train_set, test


def networks() -> dict[str, tuple[Sequential, list[str]]]:
    """The three models, each with its dense layers' names in depth order."""
    sizes = [64] + [WIDTH] * (DEPTH - 1) + [10]
    plain = [f"dense{l}" for l in range(1, DEPTH + 1)]
    blocks = DEPTH - 2
    residual = Sequential(
        [Dense(WIDTH)]
        + [Residual(Sequential([Dense(WIDTH), BatchNorm(), "relu"])) for _ in range(blocks)]
        + [BatchNorm(), Dense(10, w_init=initializers.xavier_normal)],
        input_shape=(64,),
    )
    return {
        "sigmoid + Xavier": (fundl.mlp(sizes, "sigmoid"), plain),
        "ReLU + He": (fundl.mlp(sizes, "relu"), plain),
        "residual + BN": (
            residual,
            ["dense1"] + [f"residual{b}/block/dense1" for b in range(1, blocks + 1)] + ["dense2"],
        ),
    }


def _get(tree: dict, layer: str) -> dict:
    for key in layer.split("/"):
        tree = tree[key]
    return tree


def init_norms(model: Sequential, layers: list[str], params: dict, state: dict, batch: dict):
    """‖dW^[l]‖ at initialization, l = 1..20: manual backprop where it applies."""
    if not state:  # a plain Sequential of Dense + activation: the notes' algorithm

        def norms(params, x, y):
            _, traces = nn.backprop(
                model, params, x, y, losses.softmax_cross_entropy, return_intermediates=True
            )
            return [t.dW_norm for t in traces]  # traces[l - 1] is layer l's

    else:  # a skip connection and batch norm: jax.grad through fundl's rules

        def norms(params, x, y):
            def loss(params):
                logits, _ = model.apply_with_state(params, state, x, train=True)
                return losses.softmax_cross_entropy(logits, y)

            grads = jax.grad(loss)(params)
            return [jnp.linalg.norm(_get(grads, layer)["W"]) for layer in layers]

    # compiled once: eagerly, JAX would compile each of the 20 layers' ops one by one
    return [float(v) for v in jax.jit(norms)(params, batch["x"], batch["y"])]


def run(name, model, layers, train_set, test, epochs, key, out, progress):
    """Norms at init, then a short fit with the monitor; what the table and plots need."""
    k_init, k_fit = jax.random.split(key)
    params, state = model.init_with_state(k_init)
    at_init = init_norms(model, layers, params, state, jax.tree.map(jnp.asarray, train_set))

    def loss_fn(params, batch, *, state, key, train):
        logits, state = model.apply_with_state(params, state, batch["x"], key=key, train=train)
        loss = losses.softmax_cross_entropy(logits, batch["y"])
        return loss, {"accuracy": metrics.accuracy(logits, batch["y"])}, state

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", train.GradHealthWarning)
        result = train.fit(
            loss_fn, params, optim.sgd(0.01, 0.9), train_set, epochs=epochs, batch_size=64,
            key=k_fit, model_state=state, scan=True, grad_health=True, progress=progress,
        )  # fmt: skip
    health = [w.message for w in caught if issubclass(w.category, train.GradHealthWarning)]
    for w in caught:  # anything else still shows
        if not issubclass(w.category, train.GradHealthWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    evaluate = train.make_eval_step(loss_fn, stateful=True)
    accuracy = float(evaluate(result.params, result.model_state, test)["accuracy"])
    trained = [result.history[f"grad_norm/{layer}"][-1] for layer in layers]
    try:
        from fundl import plot

        slug = name.split()[0].lower()
        plot.grad_norms(result.history, layers=layers, ratios=True, path=out / f"{slug}.png")
    except ImportError as error:
        print(f"(no plot: {error})")
    return {
        "init": at_init,
        "trained": trained,
        "accuracy": accuracy,
        "warnings": health,
        "history": result.history,
    }


def _plot_profiles(results: dict, out: pathlib.Path) -> None:
    """The three networks' norms at initialization against depth, one figure."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        print(f"(no plot: {error})")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot(range(1, DEPTH + 1), r["init"], marker="o", ms=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("layer l")
    ax.set_ylabel("‖dW^[l]‖ at initialization")
    ax.set_title(f"{DEPTH} dense layers on the digits")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "init_profile.png", dpi=120)
    plt.close("all")


def report(results: dict, epochs: int) -> None:
    """The table: norms per layer at init and in the last epoch, ratios, accuracy."""
    names = list(results)
    head = "".join(f"{name:>22}" for name in names)
    sub = "".join(f"{'init':>11}{f'epoch {epochs}':>11}" for _ in names)
    print(f"gradient norm ‖dW^[l]‖ per layer (init: manual backprop; epoch {epochs}: monitor)")
    print(f"{'layer':<12}{head}\n{'':<12}{sub}")
    for l in range(DEPTH):
        row = "".join(f"{r['init'][l]:>11.2e}{r['trained'][l]:>11.2e}" for r in results.values())
        print(f"{l + 1:<12}{row}")

    def line(label, fn):
        cells = "".join(
            f"{fn(r['init']):>11.2e}{fn(r['trained']):>11.2e}" for r in results.values()
        )
        print(f"{label:<12}{cells}")

    line("first/last", lambda v: v[0] / v[-1])
    line("max/min", lambda v: max(v) / min(v))
    print(f"{'test acc.':<12}" + "".join(f"{r['accuracy']:>22.3f}" for r in results.values()))
    for name, r in results.items():
        print(f"{name}: {len(r['warnings'])} GradHealthWarning(s)")
        if r["warnings"]:
            print(f"  first: {str(r['warnings'][0])[:160]}...")


def main(epochs: int = 5, out: str = "runs/vanishing_gradients", progress: bool = False) -> dict:
    """Measure, train, print and plot; return ``{network: results}``."""
    started = time.perf_counter()
    k_data, k_models = jax.random.split(jax.random.key(0))
    train_set, test = prepare(k_data)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        name: run(name, model, layers, train_set, test, epochs, key, out_dir, progress)
        for (name, (model, layers)), key in zip(networks().items(), jax.random.split(k_models, 3))
    }
    _plot_profiles(results, out_dir)
    report(results, epochs)
    print(f"plots: {out_dir}/*.png; wall time {time.perf_counter() - started:.1f} s")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="runs/vanishing_gradients")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    main(args.epochs, args.out, args.progress)
