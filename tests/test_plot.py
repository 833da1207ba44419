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
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(
        ImportError, match=r"fundl.plot needs matplotlib: pip install 'fundl\[plots\]'"
    ):
        plot.history(HISTORY)
