"""Compiled update steps: one step, k steps in a scan, a whole epoch, an ensemble; eval.

Each builder returns the ``jax.jit`` function itself (see :mod:`fundl.train.recompile`),
or with ``jit=False`` the plain function, to compose under your own ``vmap``, ``scan``
or ``jit``. Params and optimizer state are donated: their buffers are reused for the
outputs, so do not use the arrays you passed in after the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fundl import data as fdata
from fundl._validate import as_key, check_bool, check_int
from fundl.optim.base import GradientTransformation, apply_updates
from fundl.train.recompile import watched_jit

__all__ = [
    "make_train_step",
    "make_eval_step",
    "make_scan_steps",
    "make_epoch",
    "init_ensemble",
]


def check_optimizer(name: str, optimizer: Any) -> None:
    """``TypeError`` unless ``optimizer`` is a fundl gradient transformation."""
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(
            f"{name}: optimizer must be a fundl.optim GradientTransformation, got {optimizer!r}"
        )


def loss_and_aux(name: str, out: Any, has_aux: bool) -> tuple[jax.Array, dict]:
    """Split what a loss function returned into (scalar loss, dict of metrics), checking it.

    The messages say what to do: a tuple without ``has_aux=True``, a non-scalar loss,
    metrics that are not a dict.
    """
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                f"{name}: with has_aux=True, loss_fn must return (loss, dict of metrics), "
                f"got {type(out).__name__}"
            )
        loss, aux = out
        if not isinstance(aux, dict):
            raise TypeError(
                f"{name}: with has_aux=True, loss_fn must return (loss, dict of metrics), "
                f"got aux of type {type(aux).__name__}"
            )
    else:
        if isinstance(out, tuple):
            raise TypeError(
                f"{name}: loss_fn returned a tuple of {len(out)}; if it returns (loss, dict of "
                "metrics), pass has_aux=True"
            )
        loss, aux = out, {}
    if jnp.shape(loss) != () or not jnp.issubdtype(jnp.result_type(loss), jnp.floating):
        raise TypeError(
            f"{name}: loss_fn must return a floating-point scalar loss, got "
            f"{jnp.result_type(loss)}{list(jnp.shape(loss))}; reduce it (e.g. "
            "reduction='mean')"
        )
    return loss, aux


def _train_step_fn(
    name: str, loss_fn: Callable[..., Any], optimizer: GradientTransformation, has_aux: bool
) -> Callable[..., Any]:
    def loss(params, batch, *args):
        return loss_and_aux(name, loss_fn(params, batch, *args), has_aux)

    value_and_grad = jax.value_and_grad(loss, has_aux=True)

    def step(params, opt_state, batch, *args):
        (value, aux), grads = value_and_grad(params, batch, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state, {"loss": value, **aux}

    return step


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
      loss_fn: ``loss_fn(params, batch, *args) -> loss`` (a scalar) or, with
        ``has_aux``, ``-> (loss, dict of metrics)``. ``args`` carry anything else the
        loss needs (a PRNG key for dropout, model state).
      optimizer: a ``fundl.optim`` transformation.
      has_aux: whether loss_fn returns ``(loss, aux)``.
      ensemble: vmap over a leading axis of ``params`` and ``opt_state`` (N models,
        from N seeds via :func:`init_ensemble`, or N learning rates held in an
        ``inject_hyperparams`` state); ``batch`` and ``args`` are shared.
      jit: compile — the ``jax.jit`` function itself, with ``.traces`` counting its
        traces; ``False`` returns the plain function.
      donate: donate params and opt_state.
    """
    return build_train_step(
        "make_train_step",
        loss_fn,
        optimizer,
        has_aux=has_aux,
        ensemble=ensemble,
        jit=jit,
        donate=donate,
    )


def build_train_step(
    name: str,
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool,
    ensemble: bool = False,
    jit: bool = True,
    donate: bool = True,
) -> Callable[..., Any]:
    """:func:`make_train_step` for a caller ``name`` (``fit``), which its errors then name."""
    check_optimizer(name, optimizer)
    for arg, value in (
        ("has_aux", has_aux),
        ("ensemble", ensemble),
        ("jit", jit),
        ("donate", donate),
    ):
        check_bool(name, arg, value)
    step = _train_step_fn(name, loss_fn, optimizer, has_aux)
    if ensemble:
        step = _vmap_models(step)
    if not jit:
        return step
    return watched_jit(
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


def init_ensemble(init_fn: Callable[[jax.Array], Any], key: Any, n: int) -> Any:
    """N independently initialised models, stacked on a leading axis: vmap(init_fn)(split(key, n)).

    Example:
      >>> model = fundl.mlp([2, 3, 1])
      >>> params = fundl.train.init_ensemble(model.init, jax.random.key(0), 8)
      >>> params["dense1"]["W"].shape
      (8, 3, 2)
    """
    n = check_int("init_ensemble", "n", n)
    return jax.vmap(init_fn)(jax.random.split(as_key("init_ensemble", key), n))


def make_eval_step(
    metrics_fn: Callable[..., Any], *, jit: bool = True, ensemble: bool = False
) -> Callable[..., Any]:
    """Build ``(params, batch, *args) -> metrics``: a dict of device scalars.

    One eval step serves every dataset: a new batch size (the validation set's last
    batch, then the test set) compiles once more without a :class:`RecompilationWarning`.

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
    return watched_jit(
        fn, name="eval step", arg_names=("params", "batch"), batch_arg="batch", any_batch_size=True
    )


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
    check_optimizer("make_scan_steps", optimizer)
    run = _scan(_train_step_fn("make_scan_steps", loss_fn, optimizer, has_aux))
    if not jit:
        return run
    return watched_jit(
        run,
        name="scan steps",
        arg_names=("params", "opt_state", "batches"),
        batch_arg=None,
        donate_argnums=(0, 1) if donate else (),
    )


def _scan(step: Callable[..., Any]) -> Callable[..., Any]:
    """k applications of ``step`` over the leading axis of ``batches``, in one ``lax.scan``."""

    def run(params, opt_state, batches, *args):
        def body(carry, batch):
            params, opt_state, metrics = step(*carry, batch, *args)
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, metrics

    return run


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
    return build_epoch(
        "make_epoch", loss_fn, optimizer, batch_size, has_aux=has_aux, jit=jit, donate=donate
    )


def build_epoch(
    name: str,
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    batch_size: int,
    *,
    has_aux: bool,
    jit: bool = True,
    donate: bool = True,
) -> Callable[..., Any]:
    """:func:`make_epoch` for a caller ``name`` (``fit``), which its errors then name."""
    check_optimizer(name, optimizer)
    batch_size = check_int(name, "batch_size", batch_size)
    step = _train_step_fn(name, loss_fn, optimizer, has_aux)
    scan = _scan(step)

    def run(params, opt_state, data, key, epoch, *args):
        batches = fdata.epoch_batches(data, batch_size, key, epoch)
        return scan(params, opt_state, batches, *args)

    if not jit:
        return run
    return watched_jit(
        run,
        name="epoch",
        arg_names=("params", "opt_state", "data", "key", "epoch"),
        batch_arg=None,
        donate_argnums=(0, 1) if donate else (),
    )
