"""``EarlyStopping``: stop when a monitored metric has not improved for a while."""

from __future__ import annotations

import dataclasses
from typing import Literal

from fundl._validate import check_bool, check_int
from fundl.metrics import Monitor

__all__ = ["EarlyStopping"]


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    What counts as an improvement is :class:`fundl.metrics.Monitor`'s rule, the one the
    checkpoint manager uses too: better by more than ``min_delta``; a tie is not an
    improvement, NaN never is.

    Args:
      monitor: a key of the epoch logs, e.g. "val_loss" or "val_accuracy".
      patience: epochs without improvement before stopping, ≥ 1.
      min_delta: the smallest change that counts as an improvement, ≥ 0.
      mode: "min" (lower is better) or "max".
      restore_best: return the parameters of the best epoch, not the last.

    Examples:
      >>> stop = fundl.train.EarlyStopping("val_loss", patience=3, min_delta=0.01)
      >>> stop.improved(0.5, best=0.6), stop.improved(0.595, best=0.6), stop.improved(0.5, None)
      (True, False, True)

      ``fit(..., val_data=val, early_stopping=stop)`` stops after 3 epochs without one.
    """

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    mode: Literal["min", "max"] = "min"
    restore_best: bool = True

    def __post_init__(self) -> None:
        check_int("EarlyStopping", "patience", self.patience)
        check_bool("EarlyStopping", "restore_best", self.restore_best)
        try:
            Monitor(self.monitor, self.mode, self.min_delta)
        except ValueError as error:
            raise ValueError(str(error).replace("Monitor:", "EarlyStopping:", 1)) from None

    @property
    def rule(self) -> Monitor:
        """The :class:`~fundl.metrics.Monitor` holding ``monitor``, ``mode`` and ``min_delta``."""
        return Monitor(self.monitor, self.mode, self.min_delta)

    def improved(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta`` (see ``Monitor``)."""
        return self.rule.improved(value, best)
