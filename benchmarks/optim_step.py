"""Time one jitted Adam update: fundl.optim vs a raw hand-written JAX Adam vs optax.

Parameters of an MLP 784-512-256-10 (~535k floats). Each candidate is compiled first,
then timed interleaved (A B C A B C ...) so machine noise hits all alike; the median
per-update time and the ratio to raw JAX are printed as a Markdown table. optax is
optional (the `bench` extra); without it its row is skipped.

Run: python benchmarks/optim_step.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import fundl
from fundl import optim


def raw_adam(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return jnp.zeros([], jnp.int32), zeros, zeros

    def update(grads, state, params):
        count, mu, nu = state
        count = count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
        t = count.astype(jnp.float32)
        c1, c2 = 1 - b1**t, 1 - b2**t
        new = jax.tree.map(
            lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, mu, nu
        )
        return new, (count, mu, nu)

    return init, update


def candidates(params):
    out = {}
    init, update = raw_adam()
    out["raw JAX"] = (jax.jit(update), init(params))
    opt = optim.adam(1e-3)

    def fundl_step(grads, state, params):
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    out["fundl.optim.adam"] = (jax.jit(fundl_step), opt.init(params))
    try:
        import optax
    except ImportError:
        return out
    tx = optax.adam(1e-3)

    def optax_step(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    out["optax.adam"] = (jax.jit(optax_step), tx.init(params))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    params = fundl.mlp([784, 512, 256, 10], "relu").init(jax.random.key(0))
    grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
    runs = candidates(params)
    for step, state in runs.values():  # compile
        jax.block_until_ready(step(grads, state, params))
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (step, state) in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(step(grads, state, params))
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["raw JAX"])
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {args.repeats} interleaved repeats")
    print("| update | median µs | ratio to raw JAX |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"| {name} | {median * 1e6:.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
