"""Training curves and per-layer gradient norms from a ``fit`` history (matplotlib, the
``plots`` extra)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from fundl.train.grad_health import GRAD_NORM, METRIC_PREFIXES, UPDATE_RATIO, natural_key

__all__ = ["grad_norms", "history"]


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
    ``val_`` counterpart on the same axes. The per-layer gradient-health entries
    (``grad_norm/...``, ``update_ratio/...``) are left to :func:`grad_norms`.

    Args:
      history: ``FitResult.history``: lists per key, with "epoch".
      path: save the figure there (PNG by the suffix), creating parent directories.
      show: call ``plt.show()`` (in a notebook the figure displays anyway).

    Returns:
      the matplotlib Figure.

    Raises:
      ValueError: for a history without an "epoch" list or without a metric to draw,
        or with a metric of another length than "epoch".

    Examples:
      >>> import matplotlib
      >>> matplotlib.use("Agg")  # draw off screen: no window (and no path: no file)
      >>> import matplotlib.pyplot as plt
      >>> hist = {"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.6],
      ...         "accuracy": [0.5, 0.8, 0.9]}
      >>> fig = fundl.plot.history(hist)
      >>> [ax.get_title() for ax in fig.axes]  # one panel per metric, loss first
      ['loss', 'accuracy']
      >>> plt.close(fig)
    """
    if "epoch" not in history or not history["epoch"]:
        raise ValueError(
            f"plot.history: expected a fit history with an 'epoch' list, got keys {sorted(history)}"
        )
    metrics = [
        k
        for k in history
        if k not in ("epoch", "time") and not k.startswith(("val_", *METRIC_PREFIXES))
    ]
    metrics += [k[4:] for k in history if k.startswith("val_") and k[4:] not in metrics]
    metrics.sort(key=lambda k: (k != "loss", k))  # loss first
    if not metrics:
        raise ValueError(
            "plot.history: the history has no metric to draw (such as 'loss'), got keys "
            f"{sorted(history)}"
        )
    for key in (k for name in metrics for k in (name, f"val_{name}") if k in history):
        if len(history[key]) != len(history["epoch"]):
            raise ValueError(
                f"plot.history: '{key}' has {len(history[key])} values for "
                f"{len(history['epoch'])} epochs; plot a history whose entries cover the "
                "same epochs"
            )
    plt = _pyplot()
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
    return _finish(plt, fig, path, show)


def _finish(plt: Any, fig: Any, path: str | pathlib.Path | None, show: bool) -> Any:
    fig.tight_layout()
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    if show:
        plt.show()
    return fig


def _layer_series(
    history: dict[str, list[float]], prefix: str, layers: Sequence[str] | None
) -> dict[str, list[float]]:
    """``{layer: values per epoch}`` for the ``prefix<layer>`` entries, in ``layers``' order."""
    found = {k[len(prefix) :]: v for k, v in history.items() if k.startswith(prefix)}
    if not found:
        raise ValueError(
            f"plot.grad_norms: expected a fit history with '{prefix}<layer>' entries (train with "
            f"fit(..., grad_health=True)), got keys {sorted(history)[:8]}"
        )
    if layers is None:
        return {layer: found[layer] for layer in sorted(found, key=natural_key)}
    missing = [layer for layer in layers if layer not in found]
    if missing or not layers:
        raise ValueError(
            f"plot.grad_norms: layers must name layers of the history, got {list(layers)}; "
            f"it has {list(found)}"
        )
    return {layer: found[layer] for layer in layers}


def grad_norms(
    history: dict[str, list[float]],
    *,
    layers: Sequence[str] | None = None,
    ratios: bool = False,
    path: str | pathlib.Path | None = None,
    show: bool = False,
) -> Any:
    """Plot each layer's gradient norm per epoch (log scale), and its profile across layers.

    Left: ‖g_layer‖ over the epochs, one line per layer, coloured from the first layer
    (dark) to the last (light). Right: the same norms against the layer's position, one
    line for each of up to five epochs — a vanishing gradient is a line that falls
    towards the first layers. With ``ratios``, a third panel: each layer's
    update-to-weight ratio ‖Δθ‖/‖θ‖ per epoch.

    Args:
      history: ``FitResult.history`` of a ``fit(..., grad_health=True)`` run: an "epoch"
        list and ``"grad_norm/<layer>"`` (and ``"update_ratio/<layer>"``) lists.
      layers: the layers to draw, in depth order (default: every layer, in natural
        order of the names — "dense2" before "dense10" — which is depth order for a
        Sequential of one kind of layer, but not in general: "dense2", the output of a
        residual MLP, comes before its "residual1/...").
      ratios: add the update-ratio panel.
      path: save the figure there (PNG by the suffix), creating parent directories.
      show: call ``plt.show()``.

    Returns:
      the matplotlib Figure.

    Raises:
      ValueError: for a history without "epoch" or ``grad_norm/<layer>`` entries, or
        with entries of another length than "epoch".

    Examples:
      >>> import matplotlib
      >>> matplotlib.use("Agg")  # draw off screen: no window (and no path: no file)
      >>> import matplotlib.pyplot as plt
      >>> hist = {"epoch": [1, 2], "grad_norm/dense1": [0.1, 0.05], "grad_norm/dense2": [1.0, 0.8]}
      >>> fig = fundl.plot.grad_norms(hist)
      >>> [ax.get_title() for ax in fig.axes]  # over the epochs; across the layers
      ['gradient norm per layer', 'gradient norm by layer']
      >>> plt.close(fig)
    """

    if "epoch" not in history or not history["epoch"]:
        raise ValueError(
            "plot.grad_norms: expected a fit history with an 'epoch' list, got keys "
            f"{sorted(history)[:8]}"
        )
    norms = _layer_series(history, GRAD_NORM, layers)
    update = _layer_series(history, UPDATE_RATIO, list(norms)) if ratios else None
    for prefix, series in ((GRAD_NORM, norms), (UPDATE_RATIO, update or {})):
        for layer, values in series.items():
            if len(values) != len(history["epoch"]):
                raise ValueError(
                    f"plot.grad_norms: '{prefix}{layer}' has {len(values)} values for "
                    f"{len(history['epoch'])} epochs (a run resumed with grad_health switched "
                    "on?); plot a history whose entries cover the same epochs"
                )
    plt = _pyplot()
    panels = 3 if ratios else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.0), squeeze=False)
    axes = axes[0]
    epochs = history["epoch"]
    colors = plt.get_cmap("viridis")
    n = len(norms)

    def shade(i: int, count: int) -> Any:
        return colors(0.9 * i / max(count - 1, 1))

    for i, (layer, values) in enumerate(norms.items()):
        axes[0].plot(epochs, values, color=shade(i, n), label=layer)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("gradient norm per layer")
    axes[0].legend(fontsize=6, ncol=1 + n // 12, loc="best")

    shown = sorted({round(j * (len(epochs) - 1) / 4) for j in range(5)})
    positions = list(range(1, n + 1))
    for j, e in enumerate(shown):
        profile = [values[e] for values in norms.values()]
        axes[1].plot(
            positions, profile, marker="o", ms=3, color=shade(j, len(shown)),
            label=f"epoch {epochs[e]:g}",
        )  # fmt: skip
    axes[1].set_xlabel("layer (1 = first)")
    axes[1].set_title("gradient norm by layer")
    axes[1].legend(fontsize=7)

    if update is not None:
        for i, (layer, values) in enumerate(update.items()):
            axes[2].plot(epochs, values, color=shade(i, n), label=layer)
        axes[2].set_xlabel("epoch")
        axes[2].set_title("update / weight ratio per layer")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
    return _finish(plt, fig, path, show)
