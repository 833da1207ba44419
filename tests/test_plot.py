"""fundl.plot: curves drawn from a fit history."""

import sys

import pytest

from fundl import plot

HISTORY = {
    "epoch": [1, 2, 3],
    "loss": [1.0, 0.5, 0.3],
    "accuracy": [0.5, 0.8, 0.9],
    "val_loss": [1.1, 0.7, 0.6],
    "time": [0.1] * 3,
}


def test_history_draws_loss_and_accuracy(tmp_path):
    fig = plot.history(HISTORY, path=tmp_path / "sub" / "curves.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "accuracy"]
    loss_lines = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].lines}
    assert loss_lines == {"train loss": [1.0, 0.5, 0.3], "validation loss": [1.1, 0.7, 0.6]}
    assert (tmp_path / "sub" / "curves.png").stat().st_size > 5_000


def test_errors(monkeypatch):
    with pytest.raises(
        ValueError, match=r"plot.history: expected a fit history with an 'epoch' list"
    ):
        plot.history({"loss": [1.0]})
    # both reached matplotlib, which failed with "Number of columns must be a positive
    # integer, not 0" and "x and y must have same first dimension", naming no key
    with pytest.raises(
        ValueError, match=r"plot.history: the history has no metric to draw \(such as 'loss'\)"
    ):
        plot.history({"epoch": [1, 2], "time": [0.1, 0.1]})
    with pytest.raises(ValueError, match=r"plot.history: 'val_loss' has 2 values for 3 epochs"):
        plot.history({**HISTORY, "val_loss": [1.0, 0.5]})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(
        ImportError, match=r"fundl.plot needs matplotlib: pip install 'fundl\[plots\]'"
    ):
        plot.history(HISTORY)


HEALTH = {
    "epoch": [1, 2, 3],
    "loss": [1.0, 0.5, 0.3],
    "grad_norm/dense10": [1e-1, 2e-1, 3e-1],
    "grad_norm/dense1": [1e-6, 2e-6, 3e-6],
    "grad_norm/dense2": [1e-3, 2e-3, 3e-3],
    "update_ratio/dense10": [1e-3] * 3,
    "update_ratio/dense1": [1e-9] * 3,
    "update_ratio/dense2": [1e-6] * 3,
    "time": [0.1] * 3,
}


def test_grad_norms_draws_each_layer_by_epoch_and_by_depth(tmp_path):
    fig = plot.grad_norms(HEALTH, ratios=True, path=tmp_path / "norms.png")
    by_epoch, by_layer, ratios = fig.axes[:3]
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "gradient norm per layer",
        "gradient norm by layer",
        "update / weight ratio per layer",
    ]
    assert all(ax.get_yscale() == "log" for ax in (by_epoch, by_layer, ratios))
    lines = {line.get_label(): list(line.get_ydata()) for line in by_epoch.lines}
    assert list(lines) == ["dense1", "dense2", "dense10"]  # natural order: depth here
    assert lines["dense2"] == [1e-3, 2e-3, 3e-3]
    profiles = {line.get_label(): list(line.get_ydata()) for line in by_layer.lines}
    assert profiles == {
        "epoch 1": [1e-6, 1e-3, 1e-1],
        "epoch 2": [2e-6, 2e-3, 2e-1],
        "epoch 3": [3e-6, 3e-3, 3e-1],
    }
    assert list(ratios.lines[0].get_ydata()) == [1e-9] * 3
    assert (tmp_path / "norms.png").stat().st_size > 10_000
    chosen = plot.grad_norms(HEALTH, layers=["dense10", "dense1"])
    assert len(chosen.axes) == 2
    assert [line.get_label() for line in chosen.axes[0].lines] == ["dense10", "dense1"]
    # plot.history leaves the per-layer entries to grad_norms
    assert [ax.get_title() for ax in plot.history(HEALTH).axes] == ["loss"]


def test_grad_norms_errors():
    with pytest.raises(
        ValueError,
        match=r"plot.grad_norms: expected a fit history with 'grad_norm/<layer>' entries \(train "
        r"with fit\(..., grad_health=True\)\)",
    ):
        plot.grad_norms(HISTORY)
    with pytest.raises(
        ValueError,
        match=r"plot.grad_norms: layers must name layers of the history, got \['dense3'\]",
    ):
        plot.grad_norms(HEALTH, layers=["dense3"])
    no_ratios = {k: v for k, v in HEALTH.items() if not k.startswith("update_ratio/")}
    with pytest.raises(ValueError, match=r"'update_ratio/<layer>' entries"):
        plot.grad_norms(no_ratios, ratios=True)
    short = {**HEALTH, "grad_norm/dense2": [1.0, 2.0]}
    with pytest.raises(
        ValueError, match=r"plot.grad_norms: 'grad_norm/dense2' has 2 values for 3 epochs"
    ):
        plot.grad_norms(short)
    with pytest.raises(
        ValueError, match=r"plot.grad_norms: expected a fit history with an 'epoch'"
    ):
        plot.grad_norms({"grad_norm/dense1": [1.0]})
