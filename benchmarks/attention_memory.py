"""Peak memory and time of a compiled attention gradient: fundl's rule vs JAX autodiff.

The step: loss = Σ o² for o = attention(q, k, v), and its gradient with respect to q, k
and v, under ``jax.jit``; batch 1, 4 heads, head dim 64, float32, at sequence lengths
512 and 2048, causal and not. Three implementations:

- fundl: ``fundl.nn.dot_product_attention`` (hand-written backward that keeps the row
  log-sum-exp and recomputes p, never storing the L × L probabilities);
- plain: softmax attention in ``jax.numpy`` (``jax.nn.softmax``), JAX autodiff — it
  saves p (and the exponentials) for the backward pass;
- jax.nn: ``jax.nn.dot_product_attention(implementation="xla")``, JAX autodiff (its
  (batch, L, heads, d) layout: given transposed copies of the same q, k, v).

Memory: ``jax.jit(f).lower(q, k, v).compile().memory_analysis()``: the temporaries
(``temp_size_in_bytes``, what XLA allocates beyond arguments and outputs) and the total
(temporaries + arguments + outputs). Checked first: the three gradients agree (float32,
rtol 1e-4 / atol 1e-5 relative to the largest entry). Time: steps/s at length 512,
the three interleaved round after round (train_step.py's ``measure``), medians.

With one layer, the step's peak is the backward pass's own L × L temporaries (every
implementation forms s, p and ds there), so fundl's saving shows once several layers'
residuals are alive at once: the "layers 4" rows chain o ← attention(o, k, v) four times.

Run:   python benchmarks/attention_memory.py --out benchmarks/results_attention.md
Smoke: python benchmarks/attention_memory.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from train_step import measure, spread

import fundl

BATCH, HEADS, HEAD_DIM = 1, 4, 64
LENGTHS = (512, 2048)
TIMED_LENGTH = 512
DEPTH = 4  # the chained case: o ← attention(o, k, v), 4 times
MiB = 2**20


def plain_attention(q, k, v, causal):
    """(B, H, L, d) softmax attention in jax.numpy."""
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(jnp.float32(q.shape[-1]))
    if causal:
        L = q.shape[-2]
        s = jnp.where(jnp.tril(jnp.ones((L, L), bool)), s, -jnp.inf)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)


def fundl_attention(q, k, v, causal):
    return fundl.nn.dot_product_attention(q, k, v, causal=causal)


def jax_nn_attention(q, k, v, causal):
    """q, k, v in (B, L, H, d), jax.nn's layout."""
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")


IMPLS = {
    "fundl": fundl_attention,
    "plain jnp autodiff": plain_attention,
    "jax.nn (xla)": jax_nn_attention,
}


def grad_fn(attention, causal, depth=1):
    """The jitted gradient of Σ o²; depth > 1 chains layers: o ← attention(o, k, v)."""

    def loss(q, k, v):
        o = q
        for _ in range(depth):
            o = attention(o, k, v, causal)
        return jnp.sum(o**2)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def inputs(length: int, name: str) -> tuple[jax.Array, ...]:
    rng = np.random.default_rng(length)
    qkv = [
        rng.standard_normal((BATCH, HEADS, length, HEAD_DIM), dtype=np.float32) for _ in range(3)
    ]
    if name == "jax.nn (xla)":
        qkv = [a.transpose(0, 2, 1, 3) for a in qkv]
    return tuple(jnp.asarray(np.ascontiguousarray(a)) for a in qkv)


def to_bhld(grads, name):
    grads = [np.asarray(g) for g in grads]
    return [g.transpose(0, 2, 1, 3) for g in grads] if name == "jax.nn (xla)" else grads


class Candidate(NamedTuple):
    name: str
    run: Any
    steps_per_call: int = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 timing rounds")
    parser.add_argument("--out")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    lines = [
        "## Attention gradient: memory and time",
        "",
        (
            f"{time.strftime('%Y-%m-%d')}; jax {jax.__version__}, {jax.devices()[0].platform}; "
            f"batch {BATCH}, {HEADS} heads, head dim {HEAD_DIM}, float32; loss Σ o², gradient "
            "w.r.t. q, k, v. Memory from `compile().memory_analysis()`: temp = "
            "`temp_size_in_bytes`, total = temp + arguments + outputs. Ratio: the row's ÷ "
            "plain jnp autodiff's."
        ),
        "",
        (
            "| length | layers | causal | implementation | temp MiB | total MiB | temp ratio "
            "| total ratio |"
        ),
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    failures = []
    timed = []
    for length, depth in [(n, 1) for n in LENGTHS] + [(n, DEPTH) for n in LENGTHS]:
        for causal in (False, True):
            mem, grads = {}, {}
            for name, attention in IMPLS.items():
                f = grad_fn(attention, causal, depth)
                args_ = inputs(length, name)
                m = f.lower(*args_).compile().memory_analysis()
                temp = m.temp_size_in_bytes
                total = temp + m.argument_size_in_bytes + m.output_size_in_bytes
                mem[name] = (temp, total)
                grads[name] = to_bhld(f(*args_), name)
                if length == TIMED_LENGTH and not causal and depth == 1:

                    def run(calls, f=f, args_=args_):
                        for _ in range(calls):
                            out = f(*args_)
                        jax.block_until_ready(out)

                    timed.append(Candidate(name, run))
            for name in IMPLS:
                for which, g, ref in zip("qkv", grads[name], grads["plain jnp autodiff"]):
                    scale = float(np.max(np.abs(ref)))
                    if not np.allclose(g, ref, rtol=1e-4, atol=1e-5 * scale):
                        err = float(np.max(np.abs(g - ref))) / scale
                        failures.append(
                            f"L={length} causal={causal} {name}: d{which} off by {err:.2e} (rel. to max)"
                        )
            base = mem["plain jnp autodiff"]
            for name, (temp, total) in mem.items():
                cells = [
                    str(length),
                    str(depth),
                    "yes" if causal else "no",
                    name,
                    f"{temp / MiB:.2f}",
                    f"{total / MiB:.2f}",
                    f"{temp / base[0]:.3f}" if base[0] else "—",
                    f"{total / base[1]:.3f}",
                ]
                lines.append("| " + " | ".join(cells) + " |")
    rates = measure(timed, rounds)
    base = rates["plain jnp autodiff"]
    lines += [
        "",
        (
            f"Time at length {TIMED_LENGTH}, not causal: median of {rounds} interleaved rounds; "
            "ratio = steps/s ÷ plain jnp autodiff's in the same round (> 1 is faster)."
        ),
        "",
        "| implementation | steps/s | µs/step | ratio to plain | spread |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in timed:
        r = rates[c.name]
        median = statistics.median(r)
        ratio = statistics.median(a / b for a, b in zip(r, base))
        lines.append(
            f"| {c.name} | {median:,.0f} | {1e6 / median:,.0f} | {ratio:.3f} | {spread(r):.1%} |"
        )
    lines += [
        "",
        "Gradients agree with plain jnp autodiff's (rtol 1e-4, atol 1e-5 × max |g|): "
        + ("no" if failures else "yes, every case"),
    ]
    if failures:
        lines += ["", "### Failed checks", "", *[f"- {f}" for f in failures]]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
