"""Step checkpoints of a run: :class:`CheckpointManager`, and :func:`restore_params`.

A run directory holds ``step_00000042.safetensors`` files and nothing else of fundl's.
The files are the only state: each records its step, its metrics and the monitor that
ranks it, so any process can open the directory and find the latest and the best step.
Several processes may save into one directory: every scan tolerates files that another
process deletes under it.
"""

from __future__ import annotations

import errno
import math
import os
import pathlib
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple

from fundl._validate import check_bool, check_choice, check_int
from fundl.checkpoint.errors import CheckpointError, named
from fundl.checkpoint.format import SUFFIX, remove_stale_temps
from fundl.checkpoint.io import read_checkpoint, read_manifest, write_checkpoint
from fundl.metrics import Monitor

__all__ = ["CheckpointManager", "restore_params"]

_STEP_FILE = re.compile(r"step_(\d+)\.safetensors")
_STEP_NAMES = r"step_\d+\.safetensors"  # for remove_stale_temps
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class _Record(NamedTuple):
    """What a step's manifest says about it."""

    step: int
    metrics: dict[str, float]
    monitor: str | None  # the monitor of the manager that saved it
    mode: str


def _encode_metric(value: float) -> float | str:
    """A metric as strict JSON: NaN and infinities become "nan", "inf", "-inf" strings."""
    return value if math.isfinite(value) else str(value)


def _record(path: pathlib.Path, step: int) -> _Record:
    """Read and check the manager's fields of the manifest at ``path``."""
    fields = read_manifest(path).fields
    metrics = fields.get("metrics", {})
    monitor, mode = fields.get("monitor"), fields.get("mode", "min")
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path}: the manifest's metrics are {metrics!r}, not an object")
    decoded = {}
    for key, value in metrics.items():
        if type(value) in (int, float):
            decoded[key] = float(value)
        elif value in _NON_FINITE:
            decoded[key] = _NON_FINITE[value]
        else:
            raise CheckpointError(
                f"{path}: the manifest's metric {key!r} is {value!r}, not a number"
            )
    if not (monitor is None or (isinstance(monitor, str) and monitor)) or mode not in (
        "min",
        "max",
    ):
        raise CheckpointError(
            f"{path}: the manifest's monitor {monitor!r} and mode {mode!r} are not a metric "
            "name (or null) and 'min' or 'max'"
        )
    return _Record(step, decoded, monitor, mode)


class CheckpointManager:
    """Step checkpoints ``directory/step_00000042.safetensors``: the last few and the best.

    After each :meth:`save` the oldest checkpoints beyond ``keep_last`` are deleted,
    except the best one by ``metrics[monitor]`` and the one just written. Each file
    records its step, metrics, and this manager's ``monitor`` and ``mode``, so a new
    manager on the same directory — after a crash, in another process, built without
    ``monitor=`` — picks up where another left off. Opening the directory and saving
    remove temporary files that killed saves left behind.

    Args:
      directory: where the checkpoints live; created on the first save.
      keep_last: how many of the highest steps to keep, at least 1.
      monitor: the metric that ranks checkpoints for :meth:`best_step`; ``None`` uses
        the monitor recorded by the newest checkpoint that has one.
      mode: ``"min"`` (lower is better, e.g. a loss) or ``"max"`` (e.g. an accuracy).
        The rule is :class:`fundl.metrics.Monitor`'s: NaN never counts as the best, ties
        go to the earlier step.

    Examples:
      Four steps with ``keep_last=2``: steps 3 and 4 stay, and step 2, the best by
      ``val_loss``:

      >>> import os, tempfile
      >>> with tempfile.TemporaryDirectory() as d:
      ...     manager = fundl.checkpoint.CheckpointManager(
      ...         os.path.join(d, "run"), keep_last=2, monitor="val_loss"
      ...     )
      ...     for step, val_loss in [(1, 0.9), (2, 0.4), (3, 0.6), (4, 0.5)]:
      ...         tree = {"params": {"W": jnp.full(2, float(step))}}
      ...         _ = manager.save(step, tree, metrics={"val_loss": val_loss})
      ...     steps, best = manager.steps(), manager.best_step()
      ...     step, state = manager.restore_latest()  # falls back past a corrupt file
      ...     best_params = manager.restore_best({"params": {"W": jnp.zeros(2)}}, partial=True)
      >>> steps, best, step, state["params"]["W"].tolist(), best_params["params"]["W"].tolist()
      ([2, 3, 4], 2, 4, [4.0, 4.0], [2.0, 2.0])
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep_last: int = 3,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
    ):
        name = "CheckpointManager"
        directory = _run_directory(name, directory)
        self.keep_last = check_int(name, "keep_last", keep_last)
        self.mode = check_choice(name, "mode", mode, ("min", "max"))
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"{name}: monitor must be a metric name (str) or None, got {monitor!r}")
        if monitor == "":
            raise ValueError(f"{name}: monitor must be a metric name, got the empty string")
        self.monitor = monitor
        self.directory = directory
        remove_stale_temps(self.directory, _STEP_NAMES)

    def __repr__(self) -> str:
        return (
            f"CheckpointManager({str(self.directory)!r}, keep_last={self.keep_last}, "
            f"monitor={self.monitor!r}, mode={self.mode!r})"
        )

    def path(self, step: int) -> pathlib.Path:
        """The file of ``step``: ``directory/step_00000042.safetensors``."""
        step = check_int("CheckpointManager.path", "step", step, low=0)
        return self.directory / f"step_{step:08d}{SUFFIX}"

    # --- saving -----------------------------------------------------------------------

    def save(
        self, step: int, tree: Any, *, metrics: dict | None = None, metadata: dict | None = None
    ) -> pathlib.Path:
        """Save ``tree`` as ``step``, then delete checkpoints beyond ``keep_last`` (never the best).

        Steps are ranked by number, not by when they were saved: a step below the latest
        one in the directory (a new run started in an old run's directory) warns, since
        :meth:`latest_step` and :meth:`restore_latest` still give the old run's step and
        a later save deletes this one once ``keep_last`` higher steps exist.

        Args:
          step: the training step, an int >= 0 (an existing step is overwritten).
          tree: the pytree to save, as for :func:`fundl.checkpoint.save`.
          metrics: ``{name: number}``, stored in the manifest; ``metrics[monitor]``
            ranks the checkpoint for :meth:`best_step`.
          metadata: a JSON-serializable dict, as for :func:`fundl.checkpoint.save`.

        Returns:
          the path written.
        """
        name = "CheckpointManager.save"
        step = check_int(name, "step", step, low=0)
        stored = self._check_metrics(name, metrics)
        latest = self.latest_step()
        if latest is not None and step < latest:
            warnings.warn(
                f"{name}: step {step} is below the latest step {latest} in {self.directory}: "
                f"latest_step() and restore_latest() give step {latest}, and keep_last keeps "
                "the highest steps, so a later save deletes this one (unless it is the best); "
                "save a new run into an empty directory",
                UserWarning,
                stacklevel=2,
            )
        with named(name):
            ranking = self._ranking(name)  # a manager without monitor= passes on the recorded one
            monitor, mode = (ranking.name, ranking.mode) if ranking else (None, self.mode)
            extra = {"step": step, "metrics": stored, "monitor": monitor, "mode": mode}
            written = write_checkpoint(self.path(step), tree, metadata=metadata, extra=extra)
            remove_stale_temps(self.directory, _STEP_NAMES)
            self._prune(name, just_saved=step)
        return written

    def _check_metrics(self, name: str, metrics: Any) -> dict:
        if metrics is None:
            return {}
        if not isinstance(metrics, dict):
            raise TypeError(
                f"{name}: metrics must be a dict of {{name: number}}, got {type(metrics).__name__}"
            )
        stored = {}
        for key, value in metrics.items():
            if not isinstance(key, str):
                raise TypeError(f"{name}: metric names must be str, got {key!r}")
            try:
                if isinstance(value, (str, bytes)):  # float("0.5") would take a string
                    raise TypeError
                stored[key] = _encode_metric(float(value))
            except (TypeError, ValueError):
                raise TypeError(
                    f"{name}: metrics[{key!r}] must be a number, got {value!r}"
                ) from None
        if self.monitor is not None and self.monitor not in metrics:
            raise ValueError(
                f"{name}: metrics has no {self.monitor!r} (the monitor); got {sorted(metrics)}"
            )
        return stored

    def _prune(self, name: str, *, just_saved: int) -> None:
        steps = self._steps()
        doomed = [s for s in steps[: -self.keep_last] if s != just_saved]
        if not doomed:
            return
        ranking = self._ranking(name)
        best = None if ranking is None else self._best(name, ranking)
        for step in doomed:
            if step != best:
                self.path(step).unlink(missing_ok=True)  # another saver may have deleted it

    # --- scanning ---------------------------------------------------------------------

    def _steps(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = (_STEP_FILE.fullmatch(n) for n in names)
        return sorted(int(m.group(1)) for m in found if m)

    def _records(self, name: str, *, newest_first: bool = False) -> Iterator[_Record]:
        """The record of every readable step, ascending (or newest first). A file that
        vanished is skipped, an unreadable one skipped with a warning."""
        steps = self._steps()
        for step in reversed(steps) if newest_first else steps:
            try:
                yield _record(self.path(step), step)
            except FileNotFoundError:
                continue  # deleted by another process since the listing
            except CheckpointError as error:
                warnings.warn(f"{name}: skipped step {step}: {error}", UserWarning, stacklevel=4)

    def _ranking(self, name: str) -> Monitor | None:
        """This manager's monitor, or the one recorded by the newest step that has one."""
        if self.monitor is not None:
            return Monitor(self.monitor, self.mode)
        for record in self._records(name, newest_first=True):
            if record.monitor is not None:
                return Monitor(record.monitor, record.mode)
        return None

    def _best(self, name: str, ranking: Monitor) -> int | None:
        """The best step by ``ranking`` (:meth:`fundl.metrics.Monitor.best`), or ``None``."""
        values = (
            (r.step, r.metrics[ranking.name])
            for r in self._records(name)
            if ranking.name in r.metrics
        )
        found = ranking.best(values)
        return None if found is None else found[0]

    def _no_monitor(self) -> ValueError:
        return ValueError(
            "no monitor; build the manager with monitor='<metric name>' (and mode='min' or "
            f"'max'): it was built without one and no checkpoint in {self.directory} records one"
        )

    def _existing(self, step: int) -> pathlib.Path:
        path = self.path(step)
        if not path.is_file():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; steps: {self._steps()}"
            )
        return path

    def steps(self) -> list[int]:
        """The steps with a checkpoint in the directory, ascending."""
        return self._steps()

    def latest_step(self) -> int | None:
        """The highest step in the directory (not the last one saved), or ``None``."""
        steps = self._steps()
        return steps[-1] if steps else None

    def metrics(self, step: int) -> dict[str, float]:
        """The metrics saved with ``step`` (``{}`` if none were)."""
        name = "CheckpointManager.metrics"
        step = check_int(name, "step", step, low=0)
        with named(name):
            return _record(self._existing(step), step).metrics

    def best_step(self) -> int | None:
        """The step with the best ``metrics[monitor]``; ``None`` when no step has the metric.

        Ranked by :meth:`fundl.metrics.Monitor.best`: lowest for mode ``"min"``, highest
        for ``"max"``; NaN never counts; ties go to the earlier step. Without ``monitor=``,
        the monitor recorded by the newest checkpoint that has one ranks.

        Raises:
          ValueError: when there is no monitor at all.
        """
        name = "CheckpointManager.best_step"
        with named(name):
            ranking = self._ranking(name)
            if ranking is None:
                raise self._no_monitor()
            return self._best(name, ranking)

    def read_metadata(self, step: int) -> dict:
        """The user metadata saved with ``step``."""
        name = "CheckpointManager.read_metadata"
        step = check_int(name, "step", step, low=0)
        with named(name):
            return read_manifest(self._existing(step)).metadata

    # --- restoring --------------------------------------------------------------------

    def restore(
        self, step: int | None = None, template: Any = None, *, partial: bool = False
    ) -> Any:
        """Restore ``step`` (default: the latest) as :func:`fundl.checkpoint.restore` does."""
        name = "CheckpointManager.restore"
        if step is not None:
            step = check_int(name, "step", step, low=0)
        _check_partial(name, partial, template)
        with named(name):
            if step is None:
                steps = self._steps()
                if not steps:
                    raise FileNotFoundError(f"no checkpoints in {self.directory}")
                step = steps[-1]
            return read_checkpoint(self._existing(step), template, partial=partial)

    def restore_best(self, template: Any = None, *, partial: bool = False) -> Any:
        """Restore the checkpoint of :meth:`best_step`, with an optional (partial) template."""
        name = "CheckpointManager.restore_best"
        _check_partial(name, partial, template)
        with named(name):
            ranking = self._ranking(name)
            if ranking is None:
                raise self._no_monitor()
            step = self._best(name, ranking)
            if step is None:
                raise FileNotFoundError(
                    f"no checkpoint in {self.directory} has the metric {ranking.name!r}"
                )
            return read_checkpoint(self._existing(step), template, partial=partial)

    def restore_latest(self, template: Any = None, *, partial: bool = False) -> tuple[int, Any]:
        """Restore the newest step that reads cleanly: ``(step, tree)``.

        A newer checkpoint that is corrupt (a ``CheckpointError``: truncated, failed
        checksum, ...) is skipped with a ``UserWarning`` naming the file and the problem,
        and the previous kept step is tried. A template that does not fit still raises.

        Raises:
          FileNotFoundError: the directory holds no checkpoint.
          CheckpointError: none of them can be read.
        """
        name = "CheckpointManager.restore_latest"
        _check_partial(name, partial, template)
        with named(name):
            return self._read_newest(
                name, lambda path: read_checkpoint(path, template, partial=partial)
            )

    def _read_newest(self, name: str, read: Callable[[pathlib.Path], Any]) -> tuple[int, Any]:
        steps = self._steps()
        first_error = None
        for i in range(len(steps) - 1, -1, -1):
            try:
                return steps[i], read(self.path(steps[i]))
            except FileNotFoundError:
                continue  # deleted by another process since the listing
            except CheckpointError as error:
                first_error = first_error or error
                then = f"falling back to step {steps[i - 1]}" if i else "no older step is left"
                warnings.warn(f"{name}: {error}; {then}", UserWarning, stacklevel=3)
        if first_error is None:
            raise FileNotFoundError(f"no checkpoints in {self.directory}")
        raise CheckpointError(
            f"no checkpoint in {self.directory} can be read; the newest: {first_error}"
        )


def _run_directory(name: str, directory: Any) -> pathlib.Path:
    """``directory`` as an absolute path (an ``os.chdir`` later must not move the run).

    Raises ``NotADirectoryError`` when it is an existing file: it would otherwise read as
    an empty run, and a save would fail with "File exists".
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{name}: directory must be a str or os.PathLike, got {directory!r}")
    path = pathlib.Path(directory).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"{name}: {path} is a file, not a directory of checkpoints"
        )
    return path


def _check_partial(name: str, partial: Any, template: Any) -> None:
    check_bool(name, "partial", partial)
    if partial and template is None:
        raise ValueError(f"{name}: partial=True needs a template (the leaves to read)")


def restore_params(
    directory: str | os.PathLike,
    *,
    which: Literal["best", "latest"] = "best",
    template: Any = None,
) -> Any:
    """The ``"params"`` of a run directory's best or latest checkpoint, and nothing else.

    For directories written by :func:`fundl.train.fit` (its checkpoints hold
    ``{"params", "opt_state", "key", "step", "epoch", "position"}``) or by any loop that
    saves ``{"params": ...}`` trees with a :class:`CheckpointManager`. Only the params'
    tensors are read (and verified).

    Args:
      directory: the run directory.
      which: ``"best"``, ranked by the monitor the checkpoints record, or ``"latest"``,
        the newest checkpoint that reads cleanly (see :meth:`CheckpointManager.restore_latest`).
      template: ``None`` (arrays as saved) or a params tree (e.g. ``model.init(key)`` or
        its ``jax.eval_shape``) to fill and check leaf by leaf.

    Returns:
      the params tree: JAX arrays as saved, or the template's structure and types.

    Examples:
      >>> import os, tempfile
      >>> with tempfile.TemporaryDirectory() as d:
      ...     run = os.path.join(d, "run")
      ...     manager = fundl.checkpoint.CheckpointManager(run, monitor="val_loss")
      ...     for step, val_loss in [(1, 0.4), (2, 0.6)]:
      ...         tree = {"params": {"W": jnp.full(2, float(step))}, "opt_state": jnp.zeros(2)}
      ...         _ = manager.save(step, tree, metrics={"val_loss": val_loss})
      ...     best = fundl.checkpoint.restore_params(run)  # in any process: the best step's
      ...     latest = fundl.checkpoint.restore_params(run, which="latest")
      >>> best["W"].tolist(), latest["W"].tolist()
      ([1.0, 1.0], [2.0, 2.0])
    """
    name = "restore_params"
    check_choice(name, "which", which, ("best", "latest"))
    manager = CheckpointManager(_run_directory(name, directory))

    def read(path: pathlib.Path) -> Any:
        if template is None:
            return read_checkpoint(path, key="params")
        return read_checkpoint(path, {"params": template}, partial=True)["params"]

    with named(name):
        if not manager._steps():
            raise FileNotFoundError(f"no checkpoints in {manager.directory}")
        if which == "latest":
            return manager._read_newest(name, read)[1]
        ranking = manager._ranking(name)
        if ranking is None:
            raise ValueError(
                f"no checkpoint in {manager.directory} records a monitor to rank by; "
                "pass which='latest'"
            )
        step = manager._best(name, ranking)
        if step is None:
            raise FileNotFoundError(
                f"no checkpoint in {manager.directory} has the metric {ranking.name!r}; "
                "pass which='latest'"
            )
        return read(manager._existing(step))
