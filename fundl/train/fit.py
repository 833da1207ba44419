"""``fit``: epochs of shuffled mini-batches, validation, history, early stopping, checkpoints.

The loop, in the order it runs each epoch: the compiled updates over the epoch's
batches (or the whole epoch in one ``lax.scan``), the gradient-health warnings (with
``grad_health``), a check that the loss, the parameters and the model state are
finite, validation (also checked), the epoch's logs, the best-so-far bookkeeping,
callbacks, early stopping, a checkpoint. Nothing syncs with the host inside an epoch.

Internally every run carries a :class:`~fundl.train.TrainState`: a model with state
or randomness (``model_state=...``) gets its state threaded and a key per step,
``fold_in(k, step)`` with k = ``split(key)[1]`` (``key`` itself orders the data, by
``fold_in(key, epoch)``); a plain loss function simply ignores them.

A checkpoint written by ``fit`` holds the tree ``{"params", "opt_state", "key", "step",
"epoch", "position"}`` — plus ``"model_state"`` for a run with one — (position: the
batch within the epoch, 0 at an epoch's end), the epoch's logs as its metrics, and the
metadata ``{"history", "best", "best_epoch", "wait", "callback_stop"}`` (every value
finite: a NaN or inf metric stops the run before it is recorded):
everything ``resume=True`` needs to continue bit-identically — including not training
on when the run it resumes had stopped early.
``fundl.checkpoint.restore_params(directory)`` reads the parameters back in another
process.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import math
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fundl import data as fdata
from fundl import precision
from fundl._validate import as_key, check_int
from fundl.checkpoint import CheckpointError, CheckpointManager
from fundl.metrics import Monitor
from fundl.optim.base import GradientTransformation
from fundl.parallel import DataParallel, host_copy
from fundl.train.early_stopping import EarlyStopping
from fundl.train.grad_health import GRAD_NORM, METRIC_PREFIXES, GradHealth
from fundl.train.progress import Progress
from fundl.train.state import TrainState
from fundl.train.steps import (
    build_epoch,
    build_train_step,
    check_flags,
    check_function,
    check_optimizer,
    data_parallel,
    loss_and_aux,
    make_eval_step,
    place_train_state,
)

__all__ = ["FitResult", "fit"]

Callback = Callable[[int, dict[str, float], Any], Any]


class FitResult(NamedTuple):
    """What :func:`fit` returns (see the example there).

    Examples:
      >>> fundl.train.FitResult._fields
      ('params', 'opt_state', 'history', 'best_epoch', 'stopped_early', 'model_state')
    """

    params: Any  # the final parameters (the best epoch's with restore_best)
    opt_state: Any  # the optimizer state after the last epoch run
    history: dict[str, list[float]]  # per epoch: "epoch", "loss", ..., "val_loss", ..., "time"
    best_epoch: int | None  # 1-based epoch of the best monitored value
    stopped_early: bool  # whether early stopping or a callback ended the run
    model_state: Any = None  # the model's state (with model_state=...; the best epoch's
    # with restore_best), else None


@dataclasses.dataclass
class _State:
    """Everything that changes from epoch to epoch, and is saved in a checkpoint."""

    train: TrainState  # params, optimizer state, model state, the model's key, the step
    key: jax.Array  # orders the data: epoch e uses fold_in(key, e)
    epoch: int = 0  # epochs done
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0  # epochs since the best
    callback_stop: bool = False  # a callback returned True: the run is over
    best_variables: tuple[Any, Any] | None = None  # with restore_best, a copy of the best
    # epoch's (params, model_state); the optimizer state is not kept twice


def _copy(tree: Any) -> Any:
    """A device copy: donated buffers of the next step must not be kept anywhere.

    ``device_put(may_alias=False)`` copies without compiling anything (an eager
    ``jnp.array(x, copy=True)`` compiles a copy per leaf shape, a kernel each on a GPU).
    """
    return jax.device_put(tree, may_alias=False)


# --- checks -----------------------------------------------------------------------------


@jax.jit
def _finite_leaves(tree: Any) -> list[jax.Array]:
    return [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]


def _check_finite_losses(epoch: int, first_step: int, losses: np.ndarray, cause: str) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        i = int(bad[0])
        raise FloatingPointError(
            f"fit: the loss became {losses[i]} at step {first_step + i + 1} (epoch {epoch}, "
            f"batch {i + 1}); "
            + (
                cause
                or "lower the learning rate, clip gradients (fundl.optim.clip_by_global_norm) or "
                "check the loss function"
            )
        )


def _check_finite_variables(epoch: int, params: Any, model_state: Any, cause: str) -> None:
    """``FloatingPointError`` naming the first params or model-state leaf holding NaN or inf
    (floating leaves only: keys and counters are not checked)."""
    flat = [
        (f"{name}{jax.tree_util.keystr(path)}", leaf)
        for name, tree in (("params", params), ("model_state", model_state))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if jnp.issubdtype(getattr(leaf, "dtype", np.float32), jnp.inexact)
    ]
    finite = jax.device_get(_finite_leaves([leaf for _, leaf in flat]))
    bad = [where for (where, _), ok in zip(flat, finite) if not ok]
    if bad:
        what = "parameters" if bad[0].startswith("params") else "model state"
        raise FloatingPointError(
            f"fit: after epoch {epoch} the {what} hold NaN or inf in {bad[0]}"
            + (f" and {len(bad) - 1} more leaves" if len(bad) > 1 else "")
            + " although every loss was finite; "
            + (
                cause
                or (
                    "lower the learning rate or clip gradients"
                    if what == "parameters"
                    else "a running statistic overflowed or became NaN: check the data for "
                    "outliers and the layer that keeps that state"
                )
            )
        )


def _float16_cause(policy: Any, loss_scale: Any) -> str:
    """What a non-finite loss most likely means under a float16 policy ('' for any other)."""
    if policy is None or not policy.uses_float16:
        return ""
    if loss_scale is None:
        return (
            f"the policy {policy} computes in float16 without loss scaling, and float16 "
            "overflows above 65504: pass loss_scale=fundl.precision.DynamicLossScale() or use "
            "bfloat16 (fundl.precision.bf16_policy())"
        )
    return (
        f"the policy {policy} computes in float16 and the forward pass overflowed its range "
        "(above 65504), which loss scaling cannot fix: use bfloat16 "
        "(fundl.precision.bf16_policy()) or keep the overflowing layer's output in float32"
    )


def _check_not_all_skipped(epoch: int, skipped: np.ndarray, opt_state: Any, loss_scale: Any):
    """Every step of the epoch skipped for inf/NaN gradients, with S at its floor: nothing learns."""
    if skipped.size == 0 or not np.all(skipped > 0):
        return
    scale = float(jax.device_get(opt_state.loss_scale.scale))
    floor = getattr(loss_scale, "min_scale", scale)
    if scale <= floor:
        raise FloatingPointError(
            f"fit: every step of epoch {epoch} was skipped: the gradients held NaN or inf at "
            f"every loss scale down to {scale:g}, so the parameters never changed; the "
            "gradient itself is not finite (check the loss function and the data), or the "
            "float16 forward pass overflows (use bfloat16)"
        )


def _check_finite_metrics(epoch: int, logs: dict[str, float]) -> None:
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    if bad:
        name, value = next(iter(bad.items()))
        if name.startswith(METRIC_PREFIXES):
            raise FloatingPointError(
                f"fit: {name} is {value} after epoch {epoch} although the training loss and "
                "the parameters are finite (the optimizer kept the non-finite gradients out of "
                "the parameters, e.g. optim.zero_nans); the GradHealthWarning before this names "
                "the layers: find the op that gives them a NaN or inf gradient"
            )
        raise FloatingPointError(
            f"fit: {name} is {value} after epoch {epoch} (the training loss and the parameters "
            f"are finite); check the validation data and the metrics function"
        )


# --- resuming ---------------------------------------------------------------------------


def _saved_tree(state: _State, steps_per_epoch: int, stateful: bool) -> dict[str, Any]:
    tree = {
        "params": state.train.params,
        "opt_state": state.train.opt_state,
        "key": state.key,
        "step": state.epoch * steps_per_epoch,
        "epoch": state.epoch,
        "position": 0,  # epochs end on a batch boundary: the next epoch starts at batch 0
    }
    if stateful:
        tree["model_state"] = state.train.model_state
    return tree


def _initial_state(init: Callable[[Any], Any], params: Any, key: jax.Array) -> tuple:
    return init(params), jax.random.split(key)[1], jnp.zeros((), jnp.int32)


_initial_compiled = jax.jit(_initial_state, static_argnums=0)


def _initial(init: Callable[[Any], Any], params: Any, key: jax.Array) -> tuple[Any, jax.Array, Any]:
    """``(optimizer.init(params), split(key)[1], step 0)`` as one compiled program, not an
    eager op (and compile) per leaf shape; kept across fit calls for the same optimizer."""
    try:
        hash(init)
    except TypeError:  # e.g. the bound method of an unhashable object: compiled per call
        return jax.jit(functools.partial(_initial_state, init))(params, key)
    return _initial_compiled(init, params, key)


def _start(params: Any, optimizer: Any, model_state: Any, key: jax.Array) -> _State:
    """The state before the first epoch (``TrainState.create``'s): the model's keys from
    ``split(key)[1]``."""
    params = _copy(params)
    model_state = {} if model_state is None else _copy(model_state)
    opt_state, model_key, step = _initial(optimizer.init, params, key)
    return _State(TrainState(params, opt_state, model_state, model_key, step), key)


def _resume(
    manager: CheckpointManager,
    state: _State,
    steps_per_epoch: int,
    stateful: bool,
    early_stopping: EarlyStopping | None,
) -> _State:
    """The state of the newest readable checkpoint fit wrote in ``manager``'s directory."""
    latest = manager.latest_step()
    if latest is None:
        return state
    try:
        meta = manager.read_metadata(latest)
    except CheckpointError:
        meta = None  # unreadable: restore_latest warns and falls back to an older step
    if meta is not None and "history" not in meta:
        raise ValueError(
            f"fit: cannot resume from {manager.path(latest)}: it was not written by fit (its "
            "metadata has no 'history'); restore it with CheckpointManager.restore and continue "
            "your own loop, or point fit at a directory of its own"
        )
    template = _saved_tree(state, steps_per_epoch, stateful)
    step, restored = manager.restore_latest(template=template)
    meta = manager.read_metadata(step)
    epoch, saved_steps = int(restored["epoch"]), int(restored["step"])
    if saved_steps != epoch * steps_per_epoch:
        raise ValueError(
            f"fit: cannot resume from {manager.path(step)}: its run made "
            f"{saved_steps // max(epoch, 1)} steps an epoch and this call makes "
            f"{steps_per_epoch}; resume with the run's batch_size, drop_last, scan and "
            "training data, or start a new run in an empty directory"
        )
    if not np.array_equal(_key_data(restored["key"]), _key_data(state.key)):
        warnings.warn(
            f"fit: the key passed differs from the key the run in {manager.directory} started "
            "with; the resumed run continues with the checkpoint's key (data order and model "
            "keys), as the uninterrupted run would",
            stacklevel=3,
        )
    train = state.train._replace(
        params=restored["params"],
        opt_state=restored["opt_state"],
        model_state=restored.get("model_state", {}),
        key=jax.random.split(restored["key"])[1],  # the model's keys, as _start derives them
        step=jnp.asarray(restored["step"], jnp.int32),
    )
    resumed = _State(
        train=train,
        key=restored["key"],
        epoch=epoch,
        history={k: [float(v) for v in vs] for k, vs in meta["history"].items()},
        best=meta["best"],
        best_epoch=meta["best_epoch"],
        wait=meta["wait"],
        callback_stop=bool(meta.get("callback_stop", False)),
    )
    if early_stopping is not None and early_stopping.restore_best and resumed.best_epoch:
        best_step = resumed.best_epoch * steps_per_epoch
        if best_step in manager.steps():
            part = {"params": train.params}
            if stateful:
                part["model_state"] = train.model_state
            best = manager.restore(best_step, template=part, partial=True)
            resumed.best_variables = (best["params"], best.get("model_state", {}))
        else:
            warnings.warn(
                f"fit: the checkpoint of the best epoch ({resumed.best_epoch}) was pruned, so "
                "restore_best cannot return its parameters after this resume; give the "
                f"CheckpointManager monitor={early_stopping.monitor!r} to keep it",
                stacklevel=3,
            )
    return resumed


def _key_data(key: jax.Array) -> np.ndarray:
    """The key's bits, for a typed key or a raw ``uint32[2]`` one."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key)


def _stopped(state: _State, early_stopping: EarlyStopping | None) -> bool:
    """Whether the run is over before its epochs are: a callback or early stopping ended it."""
    waited = early_stopping is not None and state.wait >= early_stopping.patience
    return state.callback_stop or waited


def _with_state(fn: Callable[..., Any], has_aux: bool | None) -> Callable[..., Any]:
    """A plain loss (or metrics) function in the stateful form: the state passes through.

    ``has_aux=None``: a metrics function, whose result is kept as it is.
    """

    def stateful(params, batch, *, state, key, train):
        del key, train
        out = fn(params, batch)
        if has_aux is None:
            return out
        loss, aux = loss_and_aux("fit", out, has_aux)
        return loss, aux, state

    return stateful


# --- one epoch --------------------------------------------------------------------------


def _train_epoch(
    step: Callable[..., Any],
    state: _State,
    train_data: Any,
    batch_size: int,
    drop_last: bool,
    scan: bool,
    progress: Progress,
    plan: DataParallel | None,
) -> list[dict]:
    """Run one epoch of updates on ``state``; return its per-step metrics (host values)."""
    traces = step.traces
    if scan:
        state.train, stacked = step(state.train, train_data, state.key, state.epoch)
        per_step = jax.device_get(stacked)
        count = len(per_step["loss"])
        progress.advance(count, compiled=step.traces > traces)
        return [{k: v[i] for k, v in per_step.items()} for i in range(count)]
    step_metrics = []
    batches = fdata.batches(
        train_data, batch_size, key=state.key, epoch=state.epoch, drop_last=drop_last
    )
    for batch in _to_devices(batches, plan, plan.place_batch if plan else None):
        state.train, metrics = step(state.train, batch)
        step_metrics.append(metrics)
        progress.advance(1, compiled=step.traces > traces)
        traces = step.traces
    return jax.device_get(step_metrics)


def _batch_sizes(n: int, batch_size: int, drop_last: bool) -> list[int]:
    """The sizes of an epoch's batches, as ``fundl.data.batches`` cuts them (no host work
    per step: the epoch means weight each batch by these)."""
    full, rest = divmod(n, batch_size)
    return [batch_size] * full + ([rest] if rest and not drop_last else [])


def _to_devices(batches: Iterable[Any], plan: DataParallel | None, place: Any) -> Iterable[Any]:
    """The batches on the device, two ahead of the step (copies are asynchronous); with a
    mesh each goes straight to its devices' slices by ``place``."""
    if plan is None:
        return fdata.prefetch_to_device(batches)
    return _ahead(map(place, batches), 2)


def _ahead(it: Iterable[Any], size: int) -> Iterable[Any]:
    """Yield from ``it``, keeping ``size`` items already made (their transfers under way)."""
    queue: collections.deque = collections.deque()
    it = iter(it)
    for item in it:
        queue.append(item)
        if len(queue) > size:
            yield queue.popleft()
    yield from queue


def _placed_eval_batch(plan: DataParallel, batch: Any) -> Any:
    """An eval batch split over the devices, or whole on each when its size does not divide."""
    if len(jax.tree.leaves(batch)[0]) % plan.devices:
        return plan.place_replicated(batch)
    return plan.place_batch(batch)


def _evaluate(
    eval_step: Callable[..., Any],
    train: TrainState,
    data: Any,
    batch_size: int,
    sizes: list[int],
    plan: DataParallel | None,
) -> dict[str, float]:
    place = None if plan is None else lambda batch: _placed_eval_batch(plan, batch)
    results = [
        eval_step(train.params, train.model_state, batch)
        for batch in _to_devices(fdata.batches(data, batch_size), plan, place)
    ]
    return fdata.weighted_mean(jax.device_get(results), sizes)


def _record(state: _State, logs: dict[str, float], monitor: Monitor) -> None:
    """Append the logs to the history and update the best-so-far bookkeeping."""
    for k, v in logs.items():
        state.history.setdefault(k, []).append(float(v))
    if monitor.name not in logs:
        available = sorted(k for k in logs if k not in ("epoch", "time"))
        raise ValueError(f"fit: cannot monitor {monitor.name!r}: the epoch logs hold {available}")
    if monitor.improved(logs[monitor.name], state.best):
        state.best, state.best_epoch, state.wait = float(logs[monitor.name]), state.epoch, 0
    else:
        state.wait += 1


@dataclasses.dataclass(frozen=True)
class _Loop:
    """What a fit run does each epoch, and what does not change from epoch to epoch."""

    step: Callable[..., Any]  # the compiled update (one batch, or a whole epoch with scan)
    eval_step: Callable[..., Any] | None
    train_data: Any
    val_data: Any
    batch_size: int
    eval_batch_size: int
    drop_last: bool
    scan: bool
    steps_per_epoch: int
    train_sizes: list[int]  # the batch sizes of an epoch, to weight the epoch means
    val_sizes: list[int]
    report: Progress
    grad_health: GradHealth | None  # the rules checked at each epoch's end, or None
    plan: DataParallel | None  # data parallelism over a mesh, or None for one device
    nonfinite_cause: str  # what fit's non-finite checks name as the cause ('' for the default)
    loss_scale: Any  # the loss scale, or None

    def run_epoch(self, state: _State) -> dict[str, float]:
        """One epoch of updates on ``state``, checked for non-finite values, then validated.

        Returns the epoch's logs: the batch-size-weighted mean of every metric, the
        validation metrics with a ``val_`` prefix, the epoch and its time.
        """
        self.report.start_epoch(state.epoch)
        started = time.perf_counter()
        step_metrics = _train_epoch(
            self.step,
            state,
            self.train_data,
            self.batch_size,
            self.drop_last,
            self.scan,
            self.report,
            self.plan,
        )
        state.epoch += 1
        logs = {"epoch": state.epoch, **fdata.weighted_mean(step_metrics, self.train_sizes)}
        if self.grad_health is not None:  # first: a NaN gradient is named before fit stops
            previous = {k: v[-1] for k, v in state.history.items() if k.startswith(GRAD_NORM)}
            self.grad_health.check(logs, previous, epoch=state.epoch, name="fit")
        losses = np.array([m["loss"] for m in step_metrics])
        first_step = (state.epoch - 1) * self.steps_per_epoch
        _check_finite_losses(state.epoch, first_step, losses, self.nonfinite_cause)
        _check_finite_variables(
            state.epoch, state.train.params, state.train.model_state, self.nonfinite_cause
        )
        if self.loss_scale is not None:
            skipped = np.array([m["skipped"] for m in step_metrics])
            _check_not_all_skipped(state.epoch, skipped, state.train.opt_state, self.loss_scale)
        if self.eval_step is not None:
            traces = self.eval_step.traces
            val = _evaluate(
                self.eval_step,
                state.train,
                self.val_data,
                self.eval_batch_size,
                self.val_sizes,
                self.plan,
            )
            logs.update({f"val_{k}": v for k, v in val.items()})
            if self.eval_step.traces > traces:
                self.report.compiled()
        _check_finite_metrics(state.epoch, logs)
        logs["time"] = time.perf_counter() - started
        return logs


def _save(
    checkpoints: CheckpointManager,
    state: _State,
    logs: dict[str, float],
    steps_per_epoch: int,
    stateful: bool,
) -> None:
    """The epoch's checkpoint: the tree, the logs as metrics, the bookkeeping as metadata.

    In a multi-process run every process gathers the tree (a collective) and process 0
    alone writes it.
    """
    tree = _saved_tree(state, steps_per_epoch, stateful)
    if jax.process_count() > 1:
        tree = host_copy(tree)
        if jax.process_index() != 0:
            return
    checkpoints.save(
        state.epoch * steps_per_epoch,
        tree,
        metrics={k: v for k, v in logs.items() if k != "epoch"},
        metadata={
            "history": state.history,
            "best": state.best,
            "best_epoch": state.best_epoch,
            "wait": state.wait,
            "callback_stop": state.callback_stop,
        },
    )


def _check_arguments(
    epochs: Any,
    batch_size: Any,
    eval_batch_size: Any,
    optimizer: Any,
    early_stopping: Any,
    checkpoints: Any,
    callbacks: Any,
    grad_health: Any,
    **flags: Any,
) -> tuple[int, int, int, tuple[Callback, ...]]:
    """fit's arguments, checked: (epochs, batch_size, eval_batch_size, callbacks)."""
    epochs = check_int("fit", "epochs", epochs)
    batch_size = check_int("fit", "batch_size", batch_size)
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    eval_batch_size = check_int("fit", "eval_batch_size", eval_batch_size)
    check_flags("fit", **flags)
    check_optimizer("fit", optimizer)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"fit: early_stopping must be an EarlyStopping, got {early_stopping!r}")
    if checkpoints is not None and not isinstance(checkpoints, CheckpointManager):
        raise TypeError(
            f"fit: checkpoints must be a fundl.checkpoint.CheckpointManager, got {checkpoints!r}"
        )
    if not isinstance(grad_health, (bool, GradHealth)):
        raise TypeError(
            f"fit: grad_health must be True, False or a GradHealth(...), got {grad_health!r}"
        )
    if flags["resume"] and checkpoints is None:
        raise ValueError(
            "fit: resume=True needs checkpoints=CheckpointManager(directory) to resume from"
        )
    return epochs, batch_size, eval_batch_size, _check_callbacks(callbacks)


def _check_callbacks(callbacks: Any) -> tuple[Callback, ...]:
    """A list of functions ``callback(epoch, logs, params)``, each checked before training."""
    if callbacks is None:
        return ()
    if callable(callbacks):
        raise TypeError(
            f"fit: callbacks must be a list of functions, got the function {callbacks!r:.80}; "
            "pass callbacks=[fn]"
        )
    if isinstance(callbacks, (str, bytes, dict)) or not isinstance(callbacks, Iterable):
        raise TypeError(
            f"fit: callbacks must be a list of functions callback(epoch, logs, params), got "
            f"{callbacks!r:.80}"
        )
    callbacks = tuple(callbacks)
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(
                f"fit: callbacks must be functions callback(epoch, logs, params), got {cb!r:.80} "
                f"at position {i}"
            )
        try:
            inspect.signature(cb).bind(0, {}, None)
        except TypeError as error:
            raise TypeError(
                f"fit: callbacks[{i}] {getattr(cb, '__name__', cb)!s:.60} cannot be called as "
                f"callback(epoch, logs, params) ({error})"
            ) from None
        except ValueError:  # no inspectable signature (a builtin): called as it is
            pass
    return callbacks


def _check_val_like_train(train_data: Any, val_data: Any) -> None:
    """Without ``eval_fn``, ``loss_fn`` sees the validation batches: they must have the
    training data's structure. (Not its per-example shapes: a sequence model may validate
    on another length, a fully convolutional one on another image size.)"""
    train_tree = jax.tree.structure(train_data)
    val_tree = jax.tree.structure(val_data)
    if train_tree != val_tree:
        raise ValueError(
            "fit: val_data must have the structure of train_data (loss_fn, which validates "
            f"without an eval_fn, reads its batches), got {_tree_text(val_tree)} for train_data's "
            f"{_tree_text(train_tree)}; pass eval_fn=... for validation data of another form"
        )


def _tree_text(treedef: Any, limit: int = 120) -> str:
    text = str(treedef).removeprefix("PyTreeDef(").removesuffix(")")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_divisible(plan: DataParallel, n: int, batch_size: int, drop_last: bool) -> None:
    """``ValueError`` unless every training batch of an epoch divides by the devices."""
    devices = f"the {plan.devices} devices of mesh axis {plan.axis!r}"
    if batch_size % plan.devices:
        raise ValueError(
            f"fit: batch_size {batch_size} does not divide by {devices}; use a multiple of "
            f"{plan.devices}"
        )
    rest = n % batch_size
    if not drop_last and rest % plan.devices:
        raise ValueError(
            f"fit: the epoch's final batch of {rest} examples ({n} = {n // batch_size} x "
            f"{batch_size} + {rest}) does not divide by {devices}; pass drop_last=True to drop "
            "it (each epoch reshuffles, so every example is still seen), or choose a batch "
            "size or a number of examples for which it divides"
        )


def _scan_data(train_data: Any, plan: DataParallel | None) -> Any:
    """The training data on the device(s) for ``scan=True``: a copy on each device of a mesh."""
    return jax.device_put(train_data) if plan is None else plan.place_replicated(train_data)


# --- fit --------------------------------------------------------------------------------


def fit(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizer: GradientTransformation,
    train_data: Any,
    *,
    epochs: int,
    batch_size: int,
    key: Any,
    val_data: Any = None,
    eval_fn: Callable[..., Any] | None = None,
    eval_batch_size: int | None = None,
    has_aux: bool = False,
    drop_last: bool = False,
    scan: bool = False,
    early_stopping: EarlyStopping | None = None,
    checkpoints: CheckpointManager | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[Callback] = (),
    model_state: Any = None,
    grad_health: GradHealth | bool = False,
    mesh: Any = None,
    axis: str = "data",
    shard_params: bool = False,
    policy: Any = None,
    loss_scale: Any = None,
) -> FitResult:
    """Train ``params`` on ``train_data`` for ``epochs`` epochs of shuffled mini-batches.

    Each epoch visits the examples in the order ``fold_in(key, epoch)`` gives (see
    :func:`fundl.data.batches`), one compiled update per batch — or, with ``scan=True``,
    the whole epoch in one compiled ``lax.scan`` — then validates, logs the mean of every
    metric weighted by batch size, runs the callbacks, checks early stopping and saves a
    checkpoint. The data are checked once before training (finite floats, integers
    that fit JAX's dtypes); a loss, parameter or validation metric that becomes NaN or
    inf raises ``FloatingPointError`` at the end of its epoch, naming the step or leaf.

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` or, with ``has_aux``, ``(loss, dict)``;
        with ``model_state``, ``loss_fn(params, batch, *, state, key, train) -> (loss,
        dict, new state)`` — called with this step's key and ``train=True`` to train,
        with ``key=None`` and ``train=False`` to validate.
      params: the initial parameters (copied, not donated).
      optimizer: a ``fundl.optim`` transformation.
      train_data, val_data: pytrees of arrays with a leading axis of examples.
      epochs, batch_size: positive integers.
      key: the PRNG key (or int seed) that orders the data.
      eval_fn: metrics on a validation batch, ``(params, batch) -> dict | scalar |
        (loss, dict)``; default ``loss_fn``. Logged with a ``val_`` prefix.
      eval_batch_size: batch size for validation (default ``batch_size``).
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      drop_last: drop an epoch's final partial training batch (one compiled shape; each
        epoch reshuffles, so every example is still seen); by default it is a smaller
        batch, compiled once more, as ``fundl.data.batches`` does. ``scan=True``
        always drops it.
      scan: run each epoch as one compiled ``lax.scan`` (fastest for small models).
      early_stopping: an :class:`EarlyStopping`, or None. Its monitor also decides
        ``best_epoch``; without it, "val_loss" (or "loss" without validation data).
      checkpoints: a :class:`fundl.checkpoint.CheckpointManager`: one checkpoint per
        epoch, its keep-last and keep-best rules applied (give it
        ``monitor="val_loss"`` to keep the best epoch).
      resume: continue from the newest readable checkpoint of ``checkpoints`` (a
        corrupt newest one is skipped with a warning), bit-identically: with the
        checkpoint's key (a different ``key`` warns), and with nothing left to train if
        that run had stopped early. The run's ``batch_size``, ``drop_last`` and ``scan``
        must not change (``ValueError``). Without ``resume``, a directory that already
        holds checkpoints is a ``ValueError``.
      progress: report progress (a bar in a terminal or notebook, one line per epoch
        in a log file).
      callbacks: ``callback(epoch, logs, params)`` after each epoch (``params``: a copy the
        callback may keep); returning ``True`` stops training.
      model_state: the model's initial state (``model.init_state(...)``; ``{}`` for a
        model with dropout but no state) — to train a model through
        ``apply_with_state``, with its state threaded from step to step and a fresh key
        each step.
      grad_health: record each layer's gradient norm and update-to-weight ratio
        (``"grad_norm/<layer>"``, ``"update_ratio/<layer>"``: epoch means, in the
        history) and check them at each epoch's end with a :class:`GradHealth` — its
        default rules for ``True`` — which warns (:class:`GradHealthWarning`, naming the
        layers, the epoch and the values) when a norm vanishes, explodes or is NaN/inf.
        The warning comes before fit's own checks, so a NaN gradient is named before fit
        stops on it. Off by default, and then the compiled step is unchanged.
      mesh: train data-parallel over a ``jax.sharding.Mesh``
        (:func:`fundl.parallel.data_mesh`): each batch goes straight to the devices,
        split along ``axis``; params, optimizer and model state are replicated (or split,
        with ``shard_params``); the same loss function, the same updates up to float
        reduction order. ``batch_size`` must divide by the devices along ``axis``, and so
        must an epoch's final partial batch unless ``drop_last=True`` (or ``scan=True``)
        drops it: fit raises a ``ValueError`` naming the numbers rather than pad it
        (padding would change the loss's mean). Validation batches of any size work. In
        a multi-process run (:func:`fundl.parallel.initialize`) every process calls fit
        with the same data and key, and process 0 writes the checkpoints.
      axis: the mesh axis the batch is split along.
      shard_params: split params and optimizer state ZeRO/FSDP-style over ``axis``
        (:func:`fundl.parallel.shard_params`) instead of replicating them.
      policy: a :class:`fundl.precision.Policy` (or its string) for training and
        validation: params and the batch's floating inputs in its compute dtype, the loss
        and metrics in its output dtype, the params kept in their own dtype (see
        :func:`fundl.train.make_train_step`). A non-finite loss under a float16 policy is
        reported with that cause.
      loss_scale: a :class:`fundl.precision.DynamicLossScale` (or ``StaticLossScale``,
        ``NoOpLossScale``) for float16: steps with inf/NaN gradients are skipped and S
        adjusted; the history gains ``"loss_scale"`` (the epoch's mean S) and
        ``"skipped"`` (the fraction of steps skipped). S lives in the optimizer state
        (``FitResult.opt_state`` is a :class:`fundl.precision.LossScaledState`), so
        checkpoints carry it and a resume continues with it. An epoch whose every step
        was skipped with S at its floor raises ``FloatingPointError``.

    Returns:
      A :class:`FitResult` ``(params, opt_state, history, best_epoch, stopped_early,
      model_state)``.

    Examples:
      Three epochs of two batches on a linear model (``progress=False`` in a doctest):

      >>> def loss_fn(params, batch):  # z = x Wᵀ + b, L = mean((z − y)²)
      ...     z = batch["x"] @ params["W"].T + params["b"][None]
      ...     return fundl.losses.mse(z, batch["y"])
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]] * 2)
      >>> batch = {"x": x, "y": x @ jnp.array([[2.0], [-1.0]])}  # 8 examples, y = x (2, −1)ᵀ
      >>> params, opt = {"W": jnp.zeros((1, 2)), "b": jnp.zeros(1)}, fundl.optim.sgd(0.5)
      >>> result = fundl.train.fit(
      ...     loss_fn, params, opt, batch, epochs=3, batch_size=4, key=0, progress=False
      ... )
      >>> [f"{v:.3f}" for v in result.history["loss"]], result.best_epoch
      (['1.883', '0.061', '0.004'], 3)
      >>> np.round(np.asarray(result.params["W"], np.float64), 1)  # near (2, −1)
      array([[ 2., -1.]])
    """
    epochs, batch_size, eval_batch_size, callbacks = _check_arguments(
        epochs,
        batch_size,
        eval_batch_size,
        optimizer,
        early_stopping,
        checkpoints,
        callbacks,
        grad_health,
        has_aux=has_aux,
        drop_last=drop_last,
        scan=scan,
        resume=resume,
        progress=progress,
    )
    check_function("fit", "loss_fn", loss_fn, "loss_fn(params, batch)")
    if eval_fn is not None:
        check_function("fit", "eval_fn", eval_fn, "eval_fn(params, batch)")
    stateful = model_state is not None
    if stateful and has_aux:
        raise ValueError(
            "fit: has_aux does not apply with model_state: the loss function returns "
            "(loss, dict of metrics, new state)"
        )
    plan = data_parallel("fit", mesh, axis, shard_params)
    n_train = fdata.validate(train_data, name="train_data")
    n_val = 0 if val_data is None else fdata.validate(val_data, name="val_data")
    if val_data is not None and eval_fn is None:
        _check_val_like_train(train_data, val_data)
    if (
        val_data is None
        and early_stopping is not None
        and early_stopping.monitor.startswith("val_")
    ):
        raise ValueError(
            f"fit: early_stopping monitors {early_stopping.monitor!r}, a validation metric, but "
            "no val_data is given; pass val_data=... or monitor a training metric (e.g. 'loss')"
        )
    steps_per_epoch = fdata.num_batches(n_train, batch_size, drop_last=drop_last or scan)
    if steps_per_epoch == 0:
        raise ValueError(
            f"fit: batch_size {batch_size} is larger than the {n_train} training examples "
            "with drop_last (or scan=True); lower it"
        )
    if plan is not None:
        _check_divisible(plan, n_train, batch_size, drop_last or scan)
    monitor = (
        early_stopping.rule
        if early_stopping is not None
        else Monitor("val_loss" if val_data is not None else "loss")
    )
    keep_best = early_stopping is not None and early_stopping.restore_best
    health = GradHealth() if grad_health is True else grad_health or None

    policy = precision.as_policy("fit", policy)
    loss_scale = precision.check_loss_scale("fit", loss_scale)
    state_optimizer = (
        optimizer if loss_scale is None else precision.loss_scaled(optimizer, loss_scale)
    )
    state = _start(params, state_optimizer, model_state, as_key("fit", key))
    if resume:
        state = _resume(checkpoints, state, steps_per_epoch, stateful, early_stopping)
    elif checkpoints is not None and checkpoints.steps():
        raise ValueError(
            f"fit: {checkpoints.directory} already holds checkpoints (steps "
            f"{checkpoints.steps()}) from another run; pass resume=True to continue it, or give "
            "this run an empty directory (a new run's checkpoints would mix with the old ones)"
        )
    if plan is not None:
        state.train = place_train_state(plan, state.train)
    train_fn = loss_fn if stateful else _with_state(loss_fn, has_aux)
    eval_fn = eval_fn or loss_fn
    loop = _Loop(
        step=(
            build_epoch(
                "fit",
                train_fn,
                optimizer,
                batch_size,
                has_aux=False,
                stateful=True,
                grad_health=health is not None,
                plan=plan,
                policy=policy,
                loss_scale=loss_scale,
            )
            if scan
            else build_train_step(
                "fit",
                train_fn,
                optimizer,
                has_aux=False,
                stateful=True,
                grad_health=health is not None,
                plan=plan,
                policy=policy,
                loss_scale=loss_scale,
            )
        ),
        eval_step=(
            None
            if val_data is None
            else make_eval_step(
                eval_fn if stateful else _with_state(eval_fn, None),
                stateful=True,
                mesh=mesh,
                axis=axis,
                policy=policy,
            )
        ),
        train_data=_scan_data(train_data, plan) if scan else train_data,
        val_data=val_data,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        drop_last=drop_last,
        scan=scan,
        steps_per_epoch=steps_per_epoch,
        train_sizes=_batch_sizes(n_train, batch_size, drop_last or scan),
        val_sizes=_batch_sizes(n_val, eval_batch_size, False),
        report=Progress(progress, epochs, steps_per_epoch, start_epoch=state.epoch),
        grad_health=health,
        plan=plan,
        nonfinite_cause=_float16_cause(policy, loss_scale),
        loss_scale=loss_scale,
    )
    stopped_early = _stopped(state, early_stopping)  # a resumed run may be over already
    try:
        while state.epoch < epochs and not stopped_early:
            logs = loop.run_epoch(state)
            _record(state, logs, monitor)
            if keep_best and state.wait == 0:
                state.best_variables = _copy((state.train.params, state.train.model_state))
            loop.report.end_epoch(logs)
            if callbacks:  # a copy: the next step donates the params' buffers
                params = _copy(state.train.params)
                # a list, not a generator: every callback runs
                stops = [cb(state.epoch, logs, params) is True for cb in callbacks]
                state.callback_stop = any(stops)
            stopped_early = _stopped(state, early_stopping)
            if checkpoints is not None:
                _save(checkpoints, state, logs, steps_per_epoch, stateful)
    finally:
        loop.report.close()

    params, model_state = state.best_variables or (state.train.params, state.train.model_state)
    return FitResult(
        params,
        state.train.opt_state,
        state.history,
        state.best_epoch,
        stopped_early,
        model_state if stateful else None,
    )
