"""Progress of ``fit``: a bar in a terminal or notebook, one plain line per epoch elsewhere.

In a terminal (standard error is a TTY) or a Jupyter kernel, a ``tqdm.auto`` bar
advances per step (per epoch with ``scan=True``) with the epoch's metrics in its
postfix. Its clock restarts after each compilation (the first step, the first
validation), so the ETA is not inflated by compile time. Anywhere else — output sent to
a log file — there is no carriage-return animation: one line per epoch is printed to
standard error, with the metrics, the epoch's time and an ETA.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from fundl.train.grad_health import METRIC_PREFIXES

__all__ = ["Progress"]


def _interactive() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def _format(logs: dict[str, float]) -> dict[str, str]:
    """The metrics to show; the per-layer gradient-health values stay in the history."""
    return {
        k: f"{v:.4g}"
        for k, v in logs.items()
        if k not in ("epoch", "time") and not k.startswith(METRIC_PREFIXES)
    }


class Progress:
    """Reports ``fit``'s progress; ``enabled=False`` reports nothing.

    Args:
      enabled: report at all.
      epochs: the run's total number of epochs.
      steps_per_epoch: updates per epoch.
      start_epoch: the epoch the run starts from (after a resume).
      interactive: a bar (``True``) or plain lines (``False``); default: a bar when
        standard error is a terminal or the code runs in a Jupyter kernel.
    """

    def __init__(
        self,
        enabled: bool,
        epochs: int,
        steps_per_epoch: int,
        start_epoch: int = 0,
        interactive: bool | None = None,
    ) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.interactive = _interactive() if interactive is None else interactive
        self._epoch_times: list[float] = []
        self._bar: Any = None
        if enabled and self.interactive:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=epochs * steps_per_epoch,
                initial=start_epoch * steps_per_epoch,
                unit="step",
                dynamic_ncols=True,
            )

    def start_epoch(self, epoch: int) -> None:
        """Epoch ``epoch`` (0-based) begins."""
        if self._bar is not None:
            self._bar.set_description(f"epoch {epoch + 1}/{self.epochs}")

    def advance(self, steps: int, *, compiled: bool = False) -> None:
        """``steps`` updates are done; ``compiled``: the call that made them compiled first."""
        if self._bar is None:
            return
        if compiled:
            self._bar.unpause()  # restart the clock: compile time is not step time
        self._bar.update(steps)

    def compiled(self) -> None:
        """A compilation outside the steps (the first validation) just ended."""
        if self._bar is not None:
            self._bar.unpause()

    def end_epoch(self, logs: dict[str, float]) -> None:
        """Show the epoch's logs (the postfix of the bar, or a line)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(_format(logs), refresh=True)
            return
        self._epoch_times.append(logs["time"])
        epoch = int(logs["epoch"])
        metrics = "  ".join(f"{k} {v}" for k, v in _format(logs).items())
        line = f"epoch {epoch}/{self.epochs}  {metrics}  ({logs['time']:.2f} s"
        later = self._epoch_times[1:] or self._epoch_times  # the first one compiles
        remaining = self.epochs - epoch
        if remaining:
            line += f", eta {remaining * statistics.median(later):.0f} s"
        print(line + ")", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
