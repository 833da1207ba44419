"""Draw every schedule in fundl.optim.schedules into docs/schedules.png.

Each panel evaluates one schedule over 1,000 steps with a single ``jax.vmap`` call, the
way an optimizer would see it. Needs matplotlib (``pip install matplotlib``).

Run: python docs/plot_schedules.py
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp

from fundl.optim import schedules

OUT = pathlib.Path(__file__).resolve().parent / "schedules.png"
STEPS = 1000

# (panel title, [(legend, schedule), ...]); every schedule over steps 0 … STEPS − 1.
PANELS = [
    ("constant", [("constant(0.1)", schedules.constant(0.1))]),
    (
        "piecewise_constant",
        [("{300: 0.5, 600: 0.2}", schedules.piecewise_constant(0.1, {300: 0.5, 600: 0.2}))],
    ),
    ("step_decay", [("rate 0.5 every 200", schedules.step_decay(0.1, 0.5, 200))]),
    (
        "exponential_decay",
        [
            ("continuous", schedules.exponential_decay(0.1, 0.5, 200)),
            ("staircase", schedules.exponential_decay(0.1, 0.5, 200, staircase=True)),
            (
                "begin 100, end 0.02",
                schedules.exponential_decay(0.1, 0.5, 200, transition_begin=100, end_value=0.02),
            ),
        ],
    ),
    (
        "inverse_time_decay",
        [
            ("continuous", schedules.inverse_time_decay(0.1, 1.0, 100)),
            ("staircase", schedules.inverse_time_decay(0.1, 1.0, 100, staircase=True)),
        ],
    ),
    (
        "polynomial_decay",
        [
            ("power 1", schedules.polynomial_decay(0.1, 0.001, 800)),
            ("power 2", schedules.polynomial_decay(0.1, 0.001, 800, power=2.0)),
            ("power 0.5", schedules.polynomial_decay(0.1, 0.001, 800, power=0.5)),
        ],
    ),
    ("cosine_decay", [("end 0.01", schedules.cosine_decay(0.1, 800, end_value=0.01))]),
    (
        "warmup_cosine_decay",
        [
            (
                "warm-up 100, end at 900",
                schedules.warmup_cosine_decay(0.1, 100, 900, end_value=0.001),
            )
        ],
    ),
    (
        "cyclical",
        [
            ("triangular", schedules.cyclical(0.01, 0.1, 100)),
            ("triangular2", schedules.cyclical(0.01, 0.1, 100, mode="triangular2")),
            (
                "exp_range γ=0.998",
                schedules.cyclical(0.01, 0.1, 100, mode="exp_range", gamma=0.998),
            ),
        ],
    ),
    ("one_cycle", [("pct_start 0.3", schedules.one_cycle(0.1, STEPS))]),
]


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise SystemExit(
            "docs/plot_schedules.py needs matplotlib to draw: pip install matplotlib"
        ) from error
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def main() -> None:
    plt = _pyplot()
    steps = jnp.arange(STEPS)
    cols = 2
    rows = -(-len(PANELS) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 2.4 * rows), sharex=True)
    for ax, (title, curves) in zip(axes.flat, PANELS):
        for legend, schedule in curves:
            ax.plot(steps, jax.vmap(schedule)(steps), label=legend, linewidth=1.5)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 0.112)  # every example peaks at 0.1; a shared scale compares them
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(PANELS) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
