"""Draw every activation in fundl.activations and its derivative into docs/concepts/activations.png.

Each panel plots g(z) and g'(z) on z in [−4, 4]: g is the fundl primitive, g' its
``<name>_derivative``. Softmax is not elementwise; its panel is the two-class case
softmax([z, 0])₀ = σ(z) with ∂s₀/∂z₀ = s₀(1 − s₀), the diagonal of its Jacobian, taken by
softmax's hand-written rule (``softmax.vjp``, no autodiff). Needs matplotlib (``pip install
matplotlib``).

Run: python docs/plot_activations.py [output.png]
"""

from __future__ import annotations

import pathlib
import sys

import jax.numpy as jnp

from fundl import activations

OUT = pathlib.Path(__file__).resolve().parent / "concepts" / "activations.png"


def _softmax_first(z):
    """softmax([z, 0])₀ for each z: the two-class softmax, one logit fixed at 0."""
    pairs = jnp.stack([z, jnp.zeros_like(z)], axis=-1)
    return activations.softmax(pairs)[..., 0]


def _softmax_first_derivative(z):
    """∂s₀/∂z₀ of softmax([z, 0]): its hand-written VJP with the cotangent (1, 0)."""
    pairs = jnp.stack([z, jnp.zeros_like(z)], axis=-1)
    _, pullback = activations.softmax.vjp(pairs)
    (d_pairs,) = pullback(jnp.stack([jnp.ones_like(z), jnp.zeros_like(z)], axis=-1))
    return d_pairs[..., 0]


# (panel title, g, g'), every g and g' from fundl.activations.
PANELS = [
    ("sigmoid", activations.sigmoid, activations.sigmoid_derivative),
    ("tanh", activations.tanh, activations.tanh_derivative),
    ("relu", activations.relu, activations.relu_derivative),
    (
        "leaky_relu (negative_slope=0.1)",
        lambda z: activations.leaky_relu(z, negative_slope=0.1),
        lambda z: activations.leaky_relu_derivative(z, negative_slope=0.1),
    ),
    ("elu (alpha=1)", activations.elu, activations.elu_derivative),
    ("gelu", activations.gelu, activations.gelu_derivative),
    ("silu / swish", activations.silu, activations.silu_derivative),
    ("softplus", activations.softplus, activations.softplus_derivative),
    ("softmax([z, 0])₀", _softmax_first, _softmax_first_derivative),
    ("identity (linear)", activations.identity, activations.identity_derivative),
]


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise SystemExit(
            "docs/plot_activations.py needs matplotlib to draw: pip install matplotlib"
        ) from error
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def main(out: pathlib.Path | str = OUT) -> pathlib.Path:
    """Draw the panels into ``out`` (a PNG) and return its path."""
    plt = _pyplot()
    out = pathlib.Path(out)
    z = jnp.linspace(-4.0, 4.0, 401)
    cols = 5
    rows = -(-len(PANELS) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.5 * rows), sharex=True)
    for ax, (title, g, g_prime) in zip(axes.flat, PANELS):
        ax.plot(z, g(z), label="g(z)", linewidth=1.5)
        ax.plot(z, g_prime(z), label="g′(z)", linewidth=1.5, linestyle="--")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-1.6, 4.1)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(PANELS) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("z")
    axes.flat[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2])
