"""The notes' 3-layer network, its gradients three ways, and fundl's gradient check.

Network (notes, "Forward Propagation"): input (2) → hidden (3, ReLU) → hidden (3, ReLU)
→ output (1, sigmoid), He init for the ReLU layers and Xavier for the sigmoid one.
On a generated batch (nothing is downloaded) it

1. prints every layer's shapes in the notes' notation,
2. runs the notes' manual backprop (dZ^[L] = A^[L] − Y, then dW, db, dA, dZ layer by
   layer) and jax.grad (which runs fundl's hand-written rules) and compares them,
3. prints the gradcheck table: hand-written rules against JAX autodiff of the
   references and central finite differences in float64, grad-of-grad, vmap and jit.

Exit code 0 when everything agrees. Run: python examples/gradcheck_mlp.py
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

import fundl
from fundl import gradcheck, losses


def make_batch(key: jax.Array, m: int = 16) -> tuple[jax.Array, jax.Array]:
    """m points in the plane, labelled 1 in the first and third quadrants (XOR-like)."""
    x = jax.random.normal(key, (m, 2))
    y = (x[:, :1] * x[:, 1:] > 0).astype(jnp.float32)
    return x, y


def print_shapes(model: fundl.Sequential, params: dict, m: int) -> None:
    """Each layer's W, b, Z and A shapes, with the notes' names for the dims."""
    dense_names = [
        n for n, layer in zip(model.names, model.layers) if isinstance(layer, fundl.Dense)
    ]
    activations = [layer.name for layer in model.layers if isinstance(layer, fundl.Activation)]
    print("layer  W^[l]                    b^[l]  Z^[l], A^[l]            g^[l]")
    for l, (name, g) in enumerate(zip(dense_names, activations), start=1):
        n_out, n_in = params[name]["W"].shape
        w = f"{(n_out, n_in)} = (n^[{l}], n^[{l - 1}])"
        b = str(tuple(params[name]["b"].shape))
        z = f"({m}, {n_out}) = (m, n^[{l}])"
        print(f"{l:<6} {w:<24} {b:<6} {z:<23} {g}")
    print("(fundl is batch-first: Z and A are the transposes of the notes' (n^[l], m).)\n")


def main() -> int:
    model = fundl.mlp([2, 3, 3, 1], "relu", "sigmoid")
    params = model.init(jax.random.key(0))
    x, y = make_batch(jax.random.key(1))
    m = x.shape[0]
    loss = losses.binary_cross_entropy

    print("The notes' network: 2 → 3 (ReLU) → 3 (ReLU) → 1 (sigmoid)\n")
    print_shapes(model, params, m)

    with jax.default_matmul_precision("highest"):  # float32 products on a GPU or TPU too
        manual, traces = fundl.backprop(model, params, x, y, loss, return_intermediates=True)
        automatic = jax.grad(lambda p: loss(model.apply(p, x), y))(params)
    print("manual backprop vs jax.grad (fundl's hand-written rules), max |difference|:")
    worst = 0.0
    for name in manual:
        for leaf in manual[name]:
            diff = float(jnp.max(jnp.abs(manual[name][leaf] - automatic[name][leaf])))
            worst = max(worst, diff)
            print(f"  d{leaf}^[{name[-1]}]  {diff:.1e}")
    print("\nper-layer gradient norms (gradient-health diagnostics):")
    for trace in traces:
        print(
            f"  {trace.name}: |dW| = {float(trace.dW_norm):.4f}, |db| = {float(trace.db_norm):.4f}"
        )
    print()

    report = gradcheck.check_model(model, params, x, y, loss)
    print(report)
    ok = report.passed and worst < 1e-5
    print("\nall gradients agree" if ok else "\nGRADIENTS DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
