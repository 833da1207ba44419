"""Which hand-written rule makes fundl's LeNet step faster than autodiff: swap one at a time.

The LeNet-5 gradient (batch 64 of 28×28×1) is built from fundl's primitives called
directly, each either with its hand-written rule or as its reference differentiated by
JAX; the script times all-hand, all-autodiff, and all-hand but one family (max pooling,
conv, relu, dense, the loss) on autodiff. Prints a Markdown table of ms per gradient.

Run: python benchmarks/cnn_rules.py
"""

from __future__ import annotations

import importlib
import time

import jax

from fundl import activations, losses, models, nn

pool = importlib.import_module("fundl.nn.pool")
conv = importlib.import_module("fundl.nn.conv")
FAMILIES = ("max pooling", "conv", "relu", "dense", "loss")
NO_PAD, SAME_5x5 = ((0, 0), (0, 0)), ((2, 2), (2, 2))


def lenet_grad(hand: dict[str, bool], x, y):
    """jit(grad) of LeNet-5's loss, each family by hand or by autodiff of its reference."""

    def pick(family, primitive):
        return primitive if hand[family] else primitive.reference

    max_pool = pick("max pooling", pool._max_pool)
    conv_, relu = pick("conv", conv.conv), pick("relu", activations.relu)
    dense, loss = pick("dense", nn.dense), pick("loss", losses.softmax_cross_entropy)

    def pool2(h):
        return max_pool(h, window=(2, 2), stride=(2, 2), padding=NO_PAD)

    def convolve(h, p, padding):
        return conv_(h, p["W"], p["b"], stride=(1, 1), padding=padding, dilation=(1, 1), groups=1)

    def f(p):
        h = pool2(relu(convolve(x, p["conv1"], SAME_5x5)))
        h = pool2(relu(convolve(h, p["conv2"], NO_PAD))).reshape(x.shape[0], -1)
        h = relu(dense(h, p["dense1"]["W"], p["dense1"]["b"]))
        h = relu(dense(h, p["dense2"]["W"], p["dense2"]["b"]))
        return loss(dense(h, p["dense3"]["W"], p["dense3"]["b"]), y)

    return jax.jit(jax.grad(f))


def median_ms(f, params, n: int = 50, rounds: int = 7) -> float:
    jax.block_until_ready(f(params))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            out = f(params)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / n * 1e3)
    return sorted(times)[rounds // 2]


def main() -> None:
    params = models.lenet5().init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (64, 28, 28, 1))
    y = jax.random.randint(jax.random.key(2), (64,), 0, 10)
    variants = {"all hand-written": dict.fromkeys(FAMILIES, True)}
    variants["all autodiff"] = dict.fromkeys(FAMILIES, False)
    for family in FAMILIES:
        variants[f"hand-written but {family} by autodiff"] = {f: f != family for f in FAMILIES}
    compiled = {name: lenet_grad(hand, x, y) for name, hand in variants.items()}
    base = median_ms(compiled["all hand-written"], params)
    print("| LeNet-5 gradient, batch 64 | ms | ÷ all hand-written |")
    print("|---|---:|---:|")
    for name, f in compiled.items():
        ms = base if name == "all hand-written" else median_ms(f, params)
        print(f"| {name} | {ms:.2f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
