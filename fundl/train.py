"""Training: compiled update steps (jit, vmap, scan), and the ``fit`` loop built on them.

The building blocks:

- :func:`make_train_step` — one ``jax.jit``-compiled pure update
  ``(params, opt_state, batch, *args) -> (params, opt_state, metrics)`` with params and
  optimizer state donated; ``ensemble=True`` vmaps it over a leading axis of models.
- :func:`make_eval_step` — ``(params, batch, *args) -> metrics``.
- :func:`make_scan_steps` and :func:`make_epoch` — many updates inside one
  ``lax.scan``: over pre-batched arrays, or over a whole epoch shuffled on device, so a
  small model is not bound by Python dispatch.

Each compiled step is the ``jax.jit`` function itself (no Python wrapper on the hot
path); it counts its traces (``step.traces``) and, when traced again after its
first use — a changed shape or dtype, a Python number where an array was — warns once
with a :class:`RecompilationWarning` naming the argument that changed. The one expected
re-trace, a smaller final batch of an epoch, is not warned about.

``fit`` puts the blocks together: epochs of shuffled mini-batches, validation, a metrics
history, early stopping, checkpoints, a progress bar and callbacks, with no host sync
inside an epoch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fundl import data as fdata
from fundl._validate import check_int
from fundl.optim.base import GradientTransformation, apply_updates

__all__ = [
    "RecompilationWarning",
    "make_train_step",
    "make_eval_step",
    "make_scan_steps",
    "make_epoch",
    "init_ensemble",
    "EarlyStopping",
    "FitResult",
    "fit",
]


# --- compiled steps and the recompilation check ----------------------------------------


class RecompilationWarning(UserWarning):
    """A compiled step was traced (and compiled) again after its first use."""


def _aval(x: Any) -> Any:
    typeof = getattr(jax, "typeof", None)
    return typeof(x) if typeof is not None else jax.core.get_aval(x)


def _signature(names: Sequence[str], args: tuple) -> list[tuple[str, str, Any]]:
    """(argument path, abstract type as text, aval) for every leaf of the traced args."""
    out = []
    for i, arg in enumerate(args):
        name = names[i] if i < len(names) else f"args[{i - len(names)}]"
        flat, treedef = jax.tree_util.tree_flatten_with_path(arg)
        out.append((name, str(treedef), None))
        for path, leaf in flat:
            aval = _aval(leaf)
            out.append((name + jax.tree_util.keystr(path), str(aval), aval))
    return out


def _caller_stacklevel() -> int:
    """The stacklevel of the first frame outside JAX and this module: the user's call."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (
            filename == __file__
            or f"{os.sep}jax{os.sep}" in filename
            or f"{os.sep}jaxlib{os.sep}" in filename
        ):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def _is_partial_batch(batch_name: str | None, old: Any, new: Any, path: str) -> bool:
    """A leaf of the batch whose only change is a smaller leading dimension."""
    if batch_name is None or not path.startswith(batch_name) or old is None or new is None:
        return False
    shapes_ok = (
        len(old.shape) == len(new.shape) >= 1
        and old.shape[1:] == new.shape[1:]
        and new.shape[0] < old.shape[0]
    )
    return shapes_ok and old.dtype == new.dtype


class _TraceWatch:
    """Counts a compiled step's traces and warns, once, when it is traced again."""

    def __init__(self, name: str, arg_names: Sequence[str], batch_arg: str | None) -> None:
        self.name = name
        self.traces = 0
        self._arg_names = tuple(arg_names)
        self._batch_arg = batch_arg
        self._first: list | None = None
        self._warned = False

    def on_trace(self, args: tuple) -> None:
        self.traces += 1
        signature = _signature(self._arg_names, args)
        if self._first is None:
            self._first = signature
            return
        change = self._change(self._first, signature)
        if change is None or self._warned:
            return
        self._warned = True
        warnings.warn(
            f"{self.name} is being compiled again (trace {self.traces}) because {change}. "
            "Every new shape, dtype or structure compiles a new program; keep them fixed "
            "(pad batches, cast inputs, pass arrays rather than Python numbers).",
            RecompilationWarning,
            stacklevel=_caller_stacklevel(),
        )

    def _change(self, first: list, now: list) -> str | None:
        if len(first) != len(now):
            return "the number or structure of the arguments changed"
        for (path_a, text_a, aval_a), (path_b, text_b, aval_b) in zip(first, now):
            if path_a != path_b:
                return f"the structure of {path_a.split('[')[0]} changed ({path_a} became {path_b})"
            if text_a == text_b:
                continue
            if aval_a is None:
                return f"the structure of {path_a} changed"
            if _is_partial_batch(self._batch_arg, aval_a, aval_b, path_a):
                continue
            hint = ""
            if getattr(aval_a, "weak_type", False) != getattr(aval_b, "weak_type", False):
                hint = (
                    " ('~' marks a weak type: a Python number where an array was, or the reverse)"
                )
            return f"{path_a} changed from {text_a} to {text_b}{hint}"
        return None


def _compile(
    fn: Callable[..., Any],
    *,
    name: str,
    arg_names: Sequence[str],
    batch_arg: str | None,
    donate_argnums: tuple[int, ...] = (),
) -> Any:
    """``jax.jit(fn)`` that counts its traces in ``.traces`` and warns when traced again.

    The jitted function itself is returned — no Python wrapper between the caller and
    JAX's C++ dispatch, which a step of a few microseconds would feel.
    """
    watch = _TraceWatch(name, arg_names, batch_arg)

    def traced(*args: Any) -> Any:
        watch.on_trace(args)
        jitted.traces = watch.traces
        return fn(*args)

    traced.__name__ = traced.__qualname__ = name.replace(" ", "_")
    jitted = jax.jit(traced, donate_argnums=donate_argnums)
    jitted.traces = 0
    return jitted


def _value_and_grad(loss_fn: Callable[..., Any], has_aux: bool) -> Callable[..., Any]:
    def wrapped(params, batch, *args):
        out = loss_fn(params, batch, *args)
        if has_aux:
            loss, aux = out
            if not isinstance(aux, dict):
                raise TypeError(
                    f"make_train_step: with has_aux=True, loss_fn must return (loss, dict of metrics), got aux {type(aux).__name__}"
                )
            return loss, aux
        return out, {}

    return jax.value_and_grad(wrapped, has_aux=True)


def _train_step_fn(loss_fn: Callable[..., Any], optimizer: GradientTransformation, has_aux: bool):
    value_and_grad = _value_and_grad(loss_fn, has_aux)

    def step(params, opt_state, batch, *args):
        (loss, aux), grads = value_and_grad(params, batch, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state, {"loss": loss, **aux}

    return step


def _check_optimizer(name: str, optimizer: Any) -> None:
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(
            f"{name}: optimizer must be a fundl.optim GradientTransformation, got {optimizer!r}"
        )


def make_train_step(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool = False,
    ensemble: bool = False,
    jit: bool = True,
    donate: bool = True,
) -> Callable[..., Any]:
    """Build the update step ``(params, opt_state, batch, *args) -> (params, opt_state, metrics)``.

    g = ∇_params loss_fn(params, batch, *args) (fundl's hand-written rules); then
    ``updates, opt_state = optimizer.update(g, opt_state, params)`` and
    ``params = apply_updates(params, updates)``. ``metrics`` is ``{"loss": loss, **aux}``,
    device scalars (no host sync).

    Args:
      loss_fn: ``loss_fn(params, batch, *args) -> loss`` or, with ``has_aux``,
        ``-> (loss, dict of metrics)`` (accuracy, say). ``args`` carry anything else the
        loss needs (a PRNG key for dropout, model state).
      optimizer: a ``fundl.optim`` transformation.
      has_aux: whether loss_fn returns ``(loss, aux)``.
      ensemble: vmap over a leading axis of ``params`` and ``opt_state`` (N models,
        from N seeds via :func:`init_ensemble`, or N learning rates held in an
        ``inject_hyperparams`` state); ``batch`` and ``args`` are shared.
      jit: compile — the ``jax.jit`` function itself, with ``.traces`` counting its
        traces; ``False`` returns the plain function, to compose under your own
        ``vmap``, ``scan`` or ``jit``.
      donate: donate params and opt_state (their buffers are reused for the outputs:
        do not use the arrays you passed in after the call).
    """
    _check_optimizer("make_train_step", optimizer)
    step = _train_step_fn(loss_fn, optimizer, has_aux)
    if ensemble:
        step = _vmap_models(step)
    if not jit:
        return step
    return _compile(
        step,
        name="train step",
        arg_names=("params", "opt_state", "batch"),
        batch_arg="batch",
        donate_argnums=(0, 1) if donate else (),
    )


def _vmap_models(step: Callable[..., Any]) -> Callable[..., Any]:
    def ensemble_step(params, opt_state, batch, *args):
        in_axes = (0, 0, None) + (None,) * len(args)
        return jax.vmap(step, in_axes=in_axes)(params, opt_state, batch, *args)

    return ensemble_step


def init_ensemble(init_fn: Callable[[jax.Array], Any], key: jax.Array, n: int) -> Any:
    """N independently initialised models, stacked on a leading axis: vmap(init_fn)(split(key, n)).

    Example:
      >>> params = init_ensemble(model.init, jax.random.key(0), 8)   # leaves (8, ...)
    """
    n = check_int("init_ensemble", "n", n)
    return jax.vmap(init_fn)(jax.random.split(key, n))


def make_eval_step(
    metrics_fn: Callable[..., Any], *, jit: bool = True, ensemble: bool = False
) -> Callable[..., Any]:
    """Build ``(params, batch, *args) -> metrics``: a dict of device scalars.

    Args:
      metrics_fn: ``metrics_fn(params, batch, *args)`` returning a dict of scalars, a
        scalar (reported as ``{"loss": value}``), or ``(loss, dict)`` like a loss_fn
        with aux — so the training loss function can serve as is.
      jit: compile (a ``jax.jit`` function with ``.traces``).
      ensemble: vmap over a leading axis of ``params``.
    """

    def evaluate(params, batch, *args):
        out = metrics_fn(params, batch, *args)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
            return {"loss": out[0], **out[1]}
        if isinstance(out, dict):
            return dict(out)
        return {"loss": out}

    def evaluate_ensemble(params, batch, *args):
        return jax.vmap(evaluate, in_axes=(0, None) + (None,) * len(args))(params, batch, *args)

    fn = evaluate_ensemble if ensemble else evaluate
    if not jit:
        return fn
    return _compile(fn, name="eval step", arg_names=("params", "batch"), batch_arg="batch")


def make_scan_steps(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool = False,
    jit: bool = True,
    donate: bool = True,
) -> Callable[..., Any]:
    """Build ``(params, opt_state, batches, *args) -> (params, opt_state, metrics)``: k steps, one scan.

    ``batches`` is a pytree whose leaves have a leading axis of k steps, e.g. x of shape
    (k, batch_size, ...); the k updates run inside one ``lax.scan``, and ``metrics``
    holds each step's values stacked, shape (k,). The same updates as k calls of
    :func:`make_train_step`'s step, in one dispatch.
    """
    _check_optimizer("make_scan_steps", optimizer)
    step = _train_step_fn(loss_fn, optimizer, has_aux)

    def run(params, opt_state, batches, *args):
        def body(carry, batch):
            params, opt_state, metrics = step(*carry, batch, *args)
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, metrics

    if not jit:
        return run
    return _compile(
        run,
        name="scan steps",
        arg_names=("params", "opt_state", "batches"),
        batch_arg=None,
        donate_argnums=(0, 1) if donate else (),
    )


def make_epoch(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    batch_size: int,
    *,
    has_aux: bool = False,
    jit: bool = True,
    donate: bool = True,
) -> Callable[..., Any]:
    """Build ``(params, opt_state, data, key, epoch, *args) -> (params, opt_state, metrics)``.

    One whole epoch in one compiled call: the data (on device) are shuffled by
    ``fold_in(key, epoch)`` exactly as :func:`fundl.data.batches` would, cut into
    ⌊n / batch_size⌋ full batches (the remainder is dropped: a scan needs one shape),
    and run through ``lax.scan``. ``metrics`` are stacked per step.
    """
    _check_optimizer("make_epoch", optimizer)
    batch_size = check_int("make_epoch", "batch_size", batch_size)
    scan = make_scan_steps(loss_fn, optimizer, has_aux=has_aux, jit=False)

    def run(params, opt_state, data, key, epoch, *args):
        batches = fdata.epoch_batches(data, batch_size, key, epoch)
        return scan(params, opt_state, batches, *args)

    if not jit:
        return run
    return _compile(
        run,
        name="epoch",
        arg_names=("params", "opt_state", "data", "key", "epoch"),
        batch_arg=None,
        donate_argnums=(0, 1) if donate else (),
    )


# --- the fit loop ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
      monitor: a key of the epoch logs, e.g. "val_loss" or "val_accuracy".
      patience: epochs without improvement before stopping, ≥ 1.
      min_delta: the smallest change that counts as an improvement, ≥ 0.
      mode: "min" (lower is better) or "max".
      restore_best: return the parameters of the best epoch, not the last.
    """

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    mode: Literal["min", "max"] = "min"
    restore_best: bool = True

    def __post_init__(self) -> None:
        check_int("EarlyStopping", "patience", self.patience)
        if not (isinstance(self.min_delta, (int, float)) and self.min_delta >= 0):
            raise ValueError(
                f"EarlyStopping: min_delta must be a number ≥ 0, got {self.min_delta!r}"
            )
        if self.mode not in ("min", "max"):
            raise ValueError(
                f"EarlyStopping: mode must be one of ('min', 'max'), got {self.mode!r}"
            )

    def improved(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta``."""
        if math.isnan(value):
            return False
        if best is None:
            return True
        return (
            value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta
        )


class FitResult(NamedTuple):
    """What :func:`fit` returns."""

    params: Any  # the final parameters (the best epoch's with restore_best)
    opt_state: Any  # the optimizer state after the last epoch run
    history: dict[str, list[float]]  # per epoch: "epoch", "loss", ..., "val_loss", ..., "time"
    best_epoch: int | None  # 1-based epoch of the best monitored value (None without monitor)
    stopped_early: bool  # whether early stopping ended the run


def _copy(tree: Any) -> Any:
    """A device copy: donated buffers of the next step must not be kept anywhere."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _check_finite(epoch: int, first_step: int, losses: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        i = int(bad[0])
        raise FloatingPointError(
            f"fit: the loss became {losses[i]} at step {first_step + i + 1} (epoch {epoch}, "
            f"batch {i + 1}); lower the learning rate, clip gradients "
            "(fundl.optim.clip_by_global_norm) or check the data"
        )


def _evaluate(
    eval_step: Callable[..., Any], params: Any, data: Any, batch_size: int
) -> dict[str, float]:
    n = fdata.num_examples(data)
    results = [
        eval_step(params, b) for b in fdata.prefetch_to_device(fdata.batches(data, batch_size))
    ]
    return fdata.weighted_mean(jax.device_get(results), _batch_sizes(n, batch_size, False))


def _batch_sizes(n: int, batch_size: int, drop_last: bool) -> list[int]:
    """The sizes of one epoch's batches, as ``fundl.data.batches`` cuts them."""
    full, rest = divmod(n, batch_size)
    return [batch_size] * full + ([rest] if rest and not drop_last else [])


def _format(logs: dict[str, float]) -> dict[str, str]:
    return {k: f"{v:.4g}" for k, v in logs.items() if k not in ("epoch", "time")}


def fit(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizer: GradientTransformation,
    train_data: Any,
    *,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    val_data: Any = None,
    eval_fn: Callable[..., Any] | None = None,
    eval_batch_size: int | None = None,
    has_aux: bool = False,
    drop_last: bool = True,
    scan: bool = False,
    early_stopping: EarlyStopping | None = None,
    checkpoint_dir: Any = None,
    keep_last: int = 2,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[Callable[[int, dict[str, float], Any], Any]] = (),
) -> FitResult:
    """Train ``params`` on ``train_data`` for ``epochs`` epochs of shuffled mini-batches.

    Each epoch: the examples in the order ``fold_in(key, epoch)`` gives (see
    :func:`fundl.data.batches`), one compiled update per batch — or, with ``scan=True``,
    the whole epoch in one compiled ``lax.scan`` (:func:`make_epoch`) — then validation,
    the epoch's logs (the mean of every metric, weighted by batch size), callbacks, early
    stopping and checkpoints. Nothing syncs with the host inside an epoch; at its end a
    loss that became NaN or inf raises ``FloatingPointError`` naming the step.

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` or, with ``has_aux``, ``(loss, dict)``.
      params: the initial parameters (copied, not donated).
      optimizer: a ``fundl.optim`` transformation.
      train_data, val_data: pytrees of arrays with a leading axis of examples.
      epochs, batch_size: positive integers.
      key: the PRNG key that orders the data.
      eval_fn: metrics on a validation batch, ``(params, batch) -> dict | scalar |
        (loss, dict)``; default ``loss_fn``. Logged with a ``val_`` prefix.
      eval_batch_size: batch size for validation (default ``batch_size``).
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      drop_last: drop an epoch's final partial training batch (one compiled shape; each
        epoch reshuffles, so every example is still seen). With ``False`` it is a smaller
        batch, compiled once more. ``scan=True`` always drops it.
      scan: run each epoch as one compiled ``lax.scan`` (fastest for small models).
      early_stopping: an :class:`EarlyStopping`, or None.
      checkpoint_dir: save the latest ``keep_last`` epochs and the best one there (see
        :mod:`fundl.checkpoint`); ``resume=True`` continues from the latest one with
        bit-identical results.
      progress: show a ``tqdm.auto`` progress bar (terminal and notebooks).
      callbacks: ``callback(epoch, logs, params)`` after each epoch; returning ``True``
        stops training.

    Returns:
      A :class:`FitResult` ``(params, opt_state, history, best_epoch, stopped_early)``.
    """
    from tqdm.auto import tqdm

    from fundl.checkpoint import CheckpointManager

    epochs = check_int("fit", "epochs", epochs)
    batch_size = check_int("fit", "batch_size", batch_size)
    keep_last = check_int("fit", "keep_last", keep_last)
    _check_optimizer("fit", optimizer)
    if resume and checkpoint_dir is None:
        raise ValueError("fit: resume=True needs a checkpoint_dir to resume from")
    n_train = fdata.num_examples(train_data)
    steps_per_epoch = fdata.num_batches(n_train, batch_size, drop_last=drop_last or scan)
    if steps_per_epoch == 0:
        raise ValueError(
            f"fit: batch_size {batch_size} is larger than the {n_train} training examples "
            "with drop_last; lower it or pass drop_last=False"
        )
    if val_data is not None:
        fdata.num_examples(val_data)
    monitor = (
        early_stopping.monitor
        if early_stopping
        else ("val_loss" if val_data is not None else "loss")
    )
    mode = early_stopping.mode if early_stopping else "min"
    stopper = early_stopping or EarlyStopping(monitor=monitor, patience=10**9, restore_best=False)

    params = _copy(params)
    opt_state = optimizer.init(params)
    history: dict[str, list[float]] = {}
    best, best_epoch, best_params, wait, start_epoch = None, None, None, 0, 0

    manager = None
    if checkpoint_dir is not None:
        manager = CheckpointManager(checkpoint_dir, keep_last=keep_last, monitor=monitor, mode=mode)
    if resume and manager.latest_step() is not None:
        template = {
            "params": params,
            "opt_state": opt_state,
            "key": key,
            "step": 0,
            "epoch": 0,
            "position": 0,
        }
        restored = manager.restore(template=template)
        meta = manager.read_metadata(manager.latest_step())
        params, opt_state, key = restored["params"], restored["opt_state"], restored["key"]
        start_epoch = int(restored["epoch"])
        history = {k: list(v) for k, v in meta["history"].items()}
        best, best_epoch, wait = meta["best"], meta["best_epoch"], meta["wait"]
        if (
            early_stopping is not None
            and early_stopping.restore_best
            and manager.best_step() is not None
        ):
            best_params = manager.restore_best(template=template)["params"]

    train_step = (
        make_epoch(loss_fn, optimizer, batch_size, has_aux=has_aux)
        if scan
        else make_train_step(loss_fn, optimizer, has_aux=has_aux)
    )
    eval_step = make_eval_step(eval_fn or loss_fn) if val_data is not None else None
    device_train = jax.device_put(train_data) if scan else None
    callbacks = tuple(callbacks)
    stopped_early = False

    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(start_epoch, epochs):
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            started = time.perf_counter()
            if scan:
                params, opt_state, stacked = train_step(params, opt_state, device_train, key, epoch)
                per_step = jax.device_get(stacked)
                step_metrics = [
                    {k: v[i] for k, v in per_step.items()} for i in range(steps_per_epoch)
                ]
                sizes = [batch_size] * steps_per_epoch
                bar.update(steps_per_epoch)
            else:
                step_metrics, sizes = [], _batch_sizes(n_train, batch_size, drop_last)
                batches = fdata.batches(
                    train_data, batch_size, key=key, epoch=epoch, drop_last=drop_last
                )
                for batch in fdata.prefetch_to_device(batches):
                    params, opt_state, metrics = train_step(params, opt_state, batch)
                    step_metrics.append(metrics)
                    bar.update(1)
                step_metrics = jax.device_get(step_metrics)
            _check_finite(
                epoch + 1, epoch * steps_per_epoch, np.array([m["loss"] for m in step_metrics])
            )
            logs = {"epoch": epoch + 1, **fdata.weighted_mean(step_metrics, sizes)}
            if eval_step is not None:
                val = _evaluate(eval_step, params, val_data, eval_batch_size or batch_size)
                logs.update({f"val_{k}": v for k, v in val.items()})
            logs["time"] = time.perf_counter() - started
            for k, v in logs.items():
                history.setdefault(k, []).append(float(v))
            bar.set_postfix(_format(logs), refresh=True)

            if monitor not in logs:
                raise ValueError(
                    f"fit: cannot monitor {monitor!r}: the epoch logs hold {sorted(k for k in logs if k != 'epoch')}"
                )
            if stopper.improved(logs[monitor], best):
                best, best_epoch, wait = logs[monitor], epoch + 1, 0
                if early_stopping is not None and early_stopping.restore_best:
                    best_params = _copy(params)
            else:
                wait += 1
            if manager is not None:
                # Everything that decides the rest of the run: the data cursor is (epoch, 0).
                bundle = {
                    "params": params,
                    "opt_state": opt_state,
                    "key": key,
                    "step": (epoch + 1) * steps_per_epoch,
                    "epoch": epoch + 1,
                    "position": 0,
                }
                meta = {"history": history, "best": best, "best_epoch": best_epoch, "wait": wait}
                manager.save(
                    (epoch + 1) * steps_per_epoch,
                    bundle,
                    metrics={monitor: logs[monitor]},
                    metadata=meta,
                )
            stop = any([cb(epoch + 1, logs, params) is True for cb in callbacks])
            if early_stopping is not None and wait >= early_stopping.patience:
                stopped_early = True
            if stop or stopped_early:
                stopped_early = True
                break
    finally:
        bar.close()

    if best_params is not None:
        params = best_params
    return FitResult(params, opt_state, history, best_epoch, stopped_early)
