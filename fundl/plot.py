"""Training curves from a ``fit`` history (matplotlib, the ``plots`` extra)."""

from __future__ import annotations

import pathlib
from typing import Any

__all__ = ["history"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "fundl.plot needs matplotlib: pip install 'fundl[plots]' (or pip install matplotlib)"
        ) from error
    return plt


def history(
    history: dict[str, list[float]], *, path: str | pathlib.Path | None = None, show: bool = False
) -> Any:
    """Plot loss (and accuracy, when logged) per epoch, training against validation.

    One panel per metric that has a training curve ("loss", "accuracy", ...), with its
    ``val_`` counterpart on the same axes.

    Args:
      history: ``FitResult.history``: lists per key, with "epoch".
      path: save the figure there (PNG by the suffix), creating parent directories.
      show: call ``plt.show()`` (in a notebook the figure displays anyway).
    Returns: the matplotlib Figure.
    """
    if "epoch" not in history or not history["epoch"]:
        raise ValueError(
            f"plot.history: expected a fit history with an 'epoch' list, got keys {sorted(history)}"
        )
    plt = _pyplot()
    metrics = [k for k in history if k not in ("epoch", "time") and not k.startswith("val_")]
    metrics += [k[4:] for k in history if k.startswith("val_") and k[4:] not in metrics]
    metrics.sort(key=lambda k: (k != "loss", k))  # loss first
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    epochs = history["epoch"]
    for ax, name in zip(axes[0], metrics):
        if name in history:
            ax.plot(epochs, history[name], label=f"train {name}")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label=f"validation {name}")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    if show:
        plt.show()
    return fig
