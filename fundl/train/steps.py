"""Compiled update steps: one step, k steps in a scan, a whole epoch, an ensemble; eval.

Each builder returns the ``jax.jit`` function itself (see :mod:`fundl.train.recompile`),
or with ``jit=False`` the plain function, to compose under your own ``vmap``, ``scan``
or ``jit``. Params and optimizer state are donated: their buffers are reused for the
outputs, so do not use the arrays you passed in after the call.

Each builder has two forms. The plain one threads ``(params, opt_state)`` for a loss
``loss_fn(params, batch, *args)``. ``stateful=True`` threads a
:class:`~fundl.train.TrainState` — params, optimizer state, model state, and a key from
which step t derives ``fold_in(key, t)`` — for models with batch norm or dropout, whose
loss is ``loss_fn(params, batch, *args, state, key, train) -> (loss, metrics, new
state)`` — called with this step's key and ``train=True`` by the train steps, with
``key=None`` and ``train=False`` by the eval step, so one function serves both.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fundl import data as fdata
from fundl import precision
from fundl._validate import as_key, check_bool, check_int
from fundl.optim.base import GradientTransformation, apply_updates, safe_increment
from fundl.parallel.mesh import axis_size
from fundl.parallel.plan import DataParallel
from fundl.train.grad_health import METRIC_PREFIXES, grad_health_metrics
from fundl.train.recompile import watched_jit
from fundl.train.state import TrainState
from fundl.tree import check_same_shapes

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


def check_function(name: str, arg: str, fn: Any, form: str) -> None:
    """``TypeError`` unless ``fn`` is callable (a model object, not its function, is refused)."""
    if not callable(fn):
        hint = (
            f"; pass its function, e.g. {arg}=model.init"
            if hasattr(fn, "init") and hasattr(fn, "apply")
            else ""
        )
        raise TypeError(f"{name}: {arg} must be a function {form}, got {fn!r:.80}{hint}")


def check_flags(name: str, **flags: Any) -> None:
    """``ValueError`` unless every flag is True or False (``"no"`` and 1 are not bools)."""
    for arg, value in flags.items():
        check_bool(name, arg, value)


def call_user_fn(
    name: str, role: str, fn: Callable[..., Any], args: tuple, kwargs: dict | None = None
) -> Any:
    """``fn(*args, **kwargs)``, after checking (when traced) that ``fn``'s signature takes them.

    ``kwargs`` are the stateful form's ``state``, ``key`` and ``train`` (``None``: the plain
    form).

    A plain loss function given to a ``stateful=True`` step (or a stateful one to a plain
    step) would otherwise fail with Python's bare "unexpected keyword argument 'state'",
    naming neither the step nor the option to change.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable without an inspectable signature: just call
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **(kwargs or {}))
        except TypeError as err:
            called = "params, batch" + ", *args" * (len(args) > 2)
            stateful = kwargs is not None
            if stateful:
                called += ", state=..., key=..., train=..."
            raise TypeError(
                f"{name}: with stateful={stateful} the step calls {role}({called}), which "
                f"{getattr(fn, '__name__', role)}{signature} cannot take ({err}). A function "
                "of (params, batch, *args) needs stateful=False; one taking the model state "
                "as state=, key= and train= keywords needs stateful=True"
            ) from None
    return fn(*args, **(kwargs or {}))


def _check_not_loss(name: str, metrics: dict) -> None:
    """A metric named "loss" would replace the loss the step reports: refused."""
    if "loss" in metrics:
        raise ValueError(
            f"{name}: the loss function's metrics hold a 'loss', the name the step reports "
            "the loss under ({'loss': loss, **metrics} would put the metric in its place); "
            "rename the metric (e.g. 'data_loss')"
        )


def loss_and_aux(name: str, out: Any, has_aux: bool) -> tuple[jax.Array, dict]:
    """Split what a loss function returned into (scalar loss, dict of metrics), checking it.

    The messages say what to do: a tuple without ``has_aux=True``, a non-scalar loss,
    metrics that are not a dict, a metric named "loss".
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
        _check_not_loss(name, aux)
    else:
        if isinstance(out, tuple):
            raise TypeError(
                f"{name}: loss_fn returned a tuple of {len(out)}; if it returns (loss, dict of "
                "metrics), pass has_aux=True"
            )
        loss, aux = out, {}
    _check_scalar_loss(name, loss, "loss_fn")
    return loss, aux


def _check_scalar_loss(name: str, loss: Any, fn: str) -> None:
    if not _is_number(loss):
        raise TypeError(
            f"{name}: {fn} must return a floating-point scalar loss, got {loss!r:.60} (a "
            f"{type(loss).__name__})"
        )
    if jnp.shape(loss) != () or not jnp.issubdtype(jnp.result_type(loss), jnp.floating):
        raise TypeError(
            f"{name}: {fn} must return a floating-point scalar loss, got "
            f"{jnp.result_type(loss)}{list(jnp.shape(loss))}; reduce it (e.g. "
            "reduction='mean')"
        )


def _is_number(value: Any) -> bool:
    """A real or complex number or a numeric array (not None, a str, a list, a key)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return isinstance(value, numbers.Number)
    return jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)


def _eval_metrics(name: str, out: Any, stateful: bool) -> dict[str, Any]:
    """What a metrics function returned as a dict of scalar metrics, checked when traced.

    A dict is kept (its own "loss" included); ``(loss, dict)`` — or a stateful loss
    function's ``(loss, dict, new state)`` — gives ``{"loss": loss, **dict}``, refusing a
    "loss" in the dict; anything else is the scalar loss, ``{"loss": out}``.
    """
    forms = "a dict of scalar metrics, a scalar loss or (loss, dict of metrics)" + (
        " or (loss, dict of metrics, new state)" if stateful else ""
    )
    if isinstance(out, dict):
        metrics = dict(out)
    elif isinstance(out, tuple):
        if len(out) not in ((2, 3) if stateful else (2,)):
            raise TypeError(f"{name}: metrics_fn must return {forms}, got a tuple of {len(out)}")
        if not isinstance(out[1], dict):
            raise TypeError(
                f"{name}: metrics_fn must return {forms}, got a tuple whose second item is a "
                f"{type(out[1]).__name__}, not a dict"
            )
        _check_scalar_loss(name, out[0], "metrics_fn")
        _check_not_loss(name, out[1])
        metrics = {"loss": out[0], **out[1]}
    else:
        _check_scalar_loss(name, out, "metrics_fn")
        metrics = {"loss": out}
    for key, value in metrics.items():
        if not _is_number(value):
            raise TypeError(
                f"{name}: metrics_fn must return {forms}, got {key!r} = {value!r:.60} "
                f"(a {type(value).__name__}, not a number)"
            )
        if jnp.shape(value) != ():
            raise TypeError(
                f"{name}: metrics_fn must return scalar metrics, got {key!r} of "
                f"{jnp.result_type(value)}{list(jnp.shape(value))}; reduce it (e.g. jnp.mean)"
            )
    return metrics


def loss_metrics_state(name: str, out: Any, state: Any) -> tuple[jax.Array, dict, Any]:
    """Split what a stateful loss function returned into (scalar loss, metrics, new state).

    The new state must have the old one's structure and shapes (a scan carries it).
    """
    if not (isinstance(out, tuple) and len(out) == 3 and isinstance(out[1], dict)):
        raise TypeError(
            f"{name}: with stateful=True, loss_fn(params, batch, *, state, key, train) must return "
            f"(loss, dict of metrics, new state), got {type(out).__name__}"
            + (f" of {len(out)}" if isinstance(out, tuple) else "")
        )
    loss, metrics, new_state = out
    loss, _ = loss_and_aux(name, loss, has_aux=False)
    _check_not_loss(name, metrics)
    check_same_shapes(name, state, new_state, "state", "the new state")
    return loss, metrics, new_state


def _with_grad_health(
    name: str, metrics: dict, grads: Any, updates: Any, params: Any
) -> dict[str, Any]:
    """``metrics`` and the gradient-health metrics (``grad_health=True``), which must not clash."""
    clash = sorted(k for k in metrics if k.startswith(METRIC_PREFIXES))
    if clash:
        raise ValueError(
            f"{name}: the loss function's metrics {clash} use the names grad_health=True adds "
            f"(prefixes {', '.join(METRIC_PREFIXES)}); rename them"
        )
    return {**metrics, **grad_health_metrics(grads, updates, params)}


def _mixed_precision_metrics(name: str, metrics: dict, old: Any, new: Any) -> dict[str, Any]:
    """``metrics`` with the loss scale S this step used and whether it skipped the update."""
    clash = sorted(k for k in metrics if k in ("loss_scale", "skipped"))
    if clash:
        raise ValueError(
            f"{name}: the loss function's metrics {clash} use the names loss_scale= adds "
            "(loss_scale, skipped); rename them"
        )
    skipped = (new.skipped != old.skipped).astype(jnp.float32)
    return {**metrics, "loss_scale": old.loss_scale.scale, "skipped": skipped}


def _skipped_as_zero(grads: Any, old: Any, new: Any) -> Any:
    """Zero gradients for a step the loss scale skipped (its updates are zero too), so the
    gradient-health metrics report what was applied, not the inf the scale backed off from."""
    skipped = new.skipped != old.skipped
    return jax.tree.map(lambda g: jnp.where(skipped, jnp.zeros_like(g), g), grads)


def _check_opt_state(name: str, opt_state: Any, loss_scale: Any) -> None:
    """With a loss scale the optimizer state must hold it, and without one must not (traced once)."""
    scaled = isinstance(opt_state, precision.LossScaledState)
    if loss_scale is not None and not scaled:
        raise TypeError(
            f"{name}: with loss_scale=..., the optimizer state holds the loss scale: initialise "
            "it with fundl.precision.loss_scaled(optimizer, loss_scale).init(params) (or "
            "TrainState.create(params, loss_scaled(optimizer, loss_scale), ...)), got "
            f"{type(opt_state).__name__}"
        )
    if loss_scale is not None and isinstance(opt_state.inner, precision.LossScaledState):
        raise TypeError(
            f"{name}: the optimizer state holds two loss scales: pass the plain optimizer "
            "with loss_scale=..., not one already wrapped by fundl.precision.loss_scaled"
        )
    if loss_scale is None and scaled:
        raise TypeError(
            f"{name}: the optimizer state holds a loss scale (fundl.precision.loss_scaled) but "
            "the step was built without one: pass the same loss_scale= to the step builder"
        )


def _structure_text(tree: Any, params: Any, limit: int = 200) -> str:
    """``tree``'s structure as text, the params' own structure in it written ``<params>``."""
    text = str(jax.tree.structure(tree)).removeprefix("PyTreeDef(").removesuffix(")")
    own = str(jax.tree.structure(params)).removeprefix("PyTreeDef(").removesuffix(")")
    text = text.replace(own, "<params>") if own != "*" else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_opt_structure(
    name: str, optimizer: GradientTransformation, opt_state: Any, params: Any
) -> None:
    """The optimizer state must have the tree structure of ``optimizer.init(params)`` (a state
    of another optimizer fails later on a missing field). Traced once: ``eval_shape`` runs
    ``init`` on shapes only and nothing enters the compiled step."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), params)
    expected = jax.eval_shape(optimizer.init, shapes)
    if jax.tree.structure(opt_state) != jax.tree.structure(expected):
        raise TypeError(
            f"{name}: the optimizer state does not have the structure of optimizer.init(params) "
            f"for the optimizer given to {name}: expected {_structure_text(expected, params)}, "
            f"got {_structure_text(opt_state, params)}; initialise it with that optimizer "
            "(opt_state = optimizer.init(params), or TrainState.create(params, optimizer))"
        )


def _check_param_dtype(name: str, policy: Any, params: Any) -> None:
    """Under a policy, every floating leaf of ``params`` must be in ``policy.param_dtype``.

    The optimizer updates the params in their own dtype, so bfloat16 params under a policy
    of float32 master weights would round most small updates away, silently. Traced once.
    """
    if policy is None:
        return
    dtypes = [
        (path, jnp.result_type(leaf))
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    bad = [
        (path, dtype)
        for path, dtype in dtypes
        if jnp.issubdtype(dtype, jnp.floating) and dtype != policy.param_dtype
    ]
    if bad:
        path, dtype = bad[0]
        more = f" (and {len(bad) - 1} more leaves)" if len(bad) > 1 else ""
        lossy = jnp.finfo(dtype).nmant < jnp.finfo(policy.param_dtype).nmant
        raise TypeError(
            f"{name}: params{jax.tree_util.keystr(path)} is {dtype}{more} but the policy "
            f"{policy} keeps parameters in {policy.param_dtype.name}, and the optimizer "
            "updates params in their own dtype"
            + (f" (in {dtype} small updates round away)" if lossy else "")
            + "; cast them before training, params = policy.cast_to_param(params), and "
            f"initialise the optimizer state from those, or pass a policy with params={dtype}"
        )


def _value_and_grad(name: str, loss: Callable[..., Any], loss_scale: Any) -> Callable[..., Any]:
    """``(params, opt_state, *inputs) -> ((value, aux), grads)`` for ``loss(params, *inputs)
    -> (value, aux)``; with a loss scale, the gradient of S·value divided by S (S from the
    optimizer state). Without one, exactly ``jax.value_and_grad``."""
    if loss_scale is None:
        value_and_grad = jax.value_and_grad(loss, has_aux=True)
        return lambda params, opt_state, *inputs: value_and_grad(params, *inputs)

    def scaled(params, scale_state, *inputs):
        value, aux = loss(params, *inputs)
        return loss_scale.scale(value, scale_state), (value, aux)

    scaled_value_and_grad = jax.grad(scaled, has_aux=True)

    def run(params, opt_state, *inputs):
        grads, out = scaled_value_and_grad(params, opt_state.loss_scale, *inputs)
        return out, loss_scale.unscale(grads, opt_state.loss_scale)

    return run


def _train_step_fn(
    name: str,
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    has_aux: bool,
    grad_health: bool,
    policy: Any = None,
    loss_scale: Any = None,
) -> Callable[..., Any]:
    """(params, opt_state, batch, *args) -> (params, opt_state, metrics)."""

    def loss(params, batch, *args):
        if policy is not None:  # decided when traced: without a policy no cast is traced
            params, batch = policy.cast_to_compute((params, batch))
        out = call_user_fn(name, "loss_fn", loss_fn, (params, batch, *args))
        value, aux = loss_and_aux(name, out, has_aux)
        return (value, aux) if policy is None else policy.cast_to_output((value, aux))

    value_and_grad = _value_and_grad(name, loss, loss_scale)

    def step(params, opt_state, batch, *args):
        _check_param_dtype(name, policy, params)
        _check_opt_state(name, opt_state, loss_scale)
        _check_opt_structure(name, optimizer, opt_state, params)
        (loss, aux), grads = value_and_grad(params, opt_state, batch, *args)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = apply_updates(params, updates)
        metrics = {"loss": loss, **aux}
        if loss_scale is not None:
            metrics = _mixed_precision_metrics(name, metrics, opt_state, new_opt_state)
        if grad_health:  # decided when traced: without it the program is unchanged
            if loss_scale is not None:  # a skipped step's inf gradients changed nothing
                grads = _skipped_as_zero(grads, opt_state, new_opt_state)
            metrics = _with_grad_health(name, metrics, grads, updates, new_params)
        return new_params, new_opt_state, metrics

    return step


def _stateful_step_fn(
    name: str,
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    grad_health: bool,
    policy: Any = None,
    loss_scale: Any = None,
) -> Callable[..., Any]:
    """(train_state, batch, *args) -> (train_state, metrics), the key fold_in(key, step)."""

    def loss(params, model_state, batch, key, *args):
        if policy is not None:  # the model state (running statistics) keeps its dtype
            params, batch = policy.cast_to_compute((params, batch))
        stateful_kwargs = dict(state=model_state, key=key, train=True)
        out = call_user_fn(name, "loss_fn", loss_fn, (params, batch, *args), stateful_kwargs)
        value, metrics, new_state = loss_metrics_state(name, out, model_state)
        if policy is not None:
            value, metrics = policy.cast_to_output((value, metrics))
        return value, (metrics, new_state)

    value_and_grad = _value_and_grad(name, loss, loss_scale)

    def step(train_state, batch, *args):
        params = train_state.params
        _check_param_dtype(name, policy, params)
        _check_opt_state(name, train_state.opt_state, loss_scale)
        _check_opt_structure(name, optimizer, train_state.opt_state, params)
        (value, (metrics, model_state)), grads = value_and_grad(
            params,
            train_state.opt_state,
            train_state.model_state,
            batch,
            train_state.step_key(),
            *args,
        )
        updates, opt_state = optimizer.update(grads, train_state.opt_state, params)
        new = TrainState(
            apply_updates(params, updates),
            opt_state,
            model_state,
            train_state.key,
            safe_increment(train_state.step),
        )
        metrics = {"loss": value, **metrics}
        if loss_scale is not None:
            metrics = _mixed_precision_metrics(name, metrics, train_state.opt_state, opt_state)
        if grad_health:
            if loss_scale is not None:
                grads = _skipped_as_zero(grads, train_state.opt_state, opt_state)
            metrics = _with_grad_health(name, metrics, grads, updates, new.params)
        return new, metrics

    return step


def _entry(name: str, fn: Callable[..., Any], stateful: bool) -> Callable[..., Any]:
    """``fn`` checking, when traced, that its first argument is a TrainState with
    ``stateful=True`` and params without (a TrainState given to a plain step would else
    fail on a missing argument)."""

    def checked(*args):
        first = args[0] if args else None
        if stateful and not isinstance(first, TrainState):
            raise TypeError(
                f"{name}: with stateful=True the step takes a TrainState (TrainState.create("
                f"params, optimizer, model_state=..., key=...)), got {type(first).__name__}"
            )
        if not stateful and isinstance(first, TrainState):
            raise TypeError(
                f"{name}: got a TrainState where params are expected; build the step with "
                "stateful=True to train a TrainState, or pass params and opt_state "
                "(train_state.params, train_state.opt_state)"
            )
        return fn(*args)

    return checked


def _check_precision(name: str, policy: Any, loss_scale: Any) -> tuple[Any, Any]:
    """The policy (a string parsed) and the loss scale, checked; warns of float16 without scaling."""
    policy = precision.as_policy(name, policy)
    loss_scale = precision.check_loss_scale(name, loss_scale)
    if policy is not None and policy.uses_float16 and loss_scale is None:
        warnings.warn(
            f"{name}: the policy {policy} computes in float16 without loss scaling: gradients "
            "below 6e-8 underflow to zero and values above 65504 overflow to inf (then NaN "
            "parameters); pass loss_scale=fundl.precision.DynamicLossScale(), or use bfloat16 "
            "(fundl.precision.bf16_policy())",
            UserWarning,
            stacklevel=5,
        )
    return policy, loss_scale


def _step_fn(
    name: str,
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    has_aux: bool,
    stateful: bool,
    grad_health: bool = False,
    plan: DataParallel | None = None,
    policy: Any = None,
    loss_scale: Any = None,
) -> Callable[..., Any]:
    check_bool(name, "grad_health", grad_health)
    policy, loss_scale = _check_precision(name, policy, loss_scale)
    if loss_scale is not None:
        optimizer = precision.loss_scaled(optimizer, loss_scale)
    if not stateful:
        step = _train_step_fn(name, loss_fn, optimizer, has_aux, grad_health, policy, loss_scale)
        return _on_mesh(name, step, plan)
    if has_aux:
        raise ValueError(
            f"{name}: has_aux does not apply with stateful=True: a stateful loss_fn always "
            "returns (loss, dict of metrics, new state)"
        )
    step = _stateful_step_fn(name, loss_fn, optimizer, grad_health, policy, loss_scale)
    return _on_mesh(name, step, plan, True)


def data_parallel(name: str, mesh: Any, axis: Any, shard_params: Any) -> DataParallel | None:
    """The :class:`~fundl.parallel.DataParallel` rule of a builder's ``mesh``, ``axis`` and
    ``shard_params`` arguments, checked, or None without a mesh (the one-device program)."""
    check_bool(name, "shard_params", shard_params)
    if mesh is None:
        if shard_params:
            raise ValueError(
                f"{name}: shard_params=True splits the parameters over a mesh; pass "
                "mesh=fundl.parallel.data_mesh() as well"
            )
        return None
    axis_size(name, mesh, axis)
    return DataParallel(mesh, axis, shard_params)


def place_train_state(plan: DataParallel, train_state: TrainState) -> TrainState:
    """A TrainState on the mesh: params and optimizer state by the rule, the rest copied."""
    return TrainState(
        plan.place(train_state.params),
        plan.place(train_state.opt_state),
        plan.place_replicated(train_state.model_state),
        plan.place_replicated(train_state.key),
        plan.place_replicated(train_state.step),
    )


def _constrain_train_state(plan: DataParallel, train_state: TrainState) -> TrainState:
    return TrainState(
        plan.constrain(train_state.params),
        plan.constrain(train_state.opt_state),
        plan.replicated(train_state.model_state),
        plan.replicated(train_state.key),
        plan.replicated(train_state.step),
    )


def _on_mesh(
    name: str, step: Callable[..., Any], plan: DataParallel | None, stateful: bool = False
) -> Callable[..., Any]:
    """``step`` with its batch split along the data axis and its outputs kept where
    ``plan`` puts them (what ``jit``'s out_shardings does); ``step`` itself without a plan.

    The batch size is checked when traced: it must divide by the devices.
    """
    if plan is None:
        return step

    def run_stateful(train_state, batch, *args):
        plan.check_batch(name, batch)
        new, metrics = step(train_state, plan.constrain_batch(batch), *args)
        return _constrain_train_state(plan, new), plan.replicated(metrics)

    def run(params, opt_state, batch, *args):
        plan.check_batch(name, batch)
        params, opt_state, metrics = step(params, opt_state, plan.constrain_batch(batch), *args)
        return plan.constrain(params), plan.constrain(opt_state), plan.replicated(metrics)

    return run_stateful if stateful else run


def make_train_step(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool = False,
    stateful: bool = False,
    ensemble: bool = False,
    grad_health: bool = False,
    policy: Any = None,
    loss_scale: Any = None,
    jit: bool = True,
    donate: bool = True,
    mesh: Any = None,
    axis: str = "data",
    shard_params: bool = False,
) -> Callable[..., Any]:
    """Build one update step, compiled: the gradient of the loss, then the optimizer's update.

    g = ∇_params loss (fundl's hand-written rules); ``updates, opt_state =
    optimizer.update(g, opt_state, params)``; ``params = apply_updates(params,
    updates)``. ``metrics`` is ``{"loss": loss, **metrics}``, device scalars (no host
    sync); a metric of the loss function named "loss" is refused (it would hide the
    loss optimized). Checked when traced, never per step: the loss is a floating scalar,
    ``opt_state`` has the structure of ``optimizer.init(params)``, and params (not a
    TrainState) without ``stateful``.

    Two forms:

    - ``stateful=False``: ``step(params, opt_state, batch, *args) -> (params, opt_state,
      metrics)``, for ``loss_fn(params, batch, *args) -> loss`` or, with ``has_aux``,
      ``(loss, dict of metrics)``.
    - ``stateful=True``, for models with state (batch norm) or randomness (dropout):
      ``step(train_state, batch, *args) -> (train_state, metrics)`` with a
      :class:`TrainState`, for ``loss_fn(params, batch, *args, state, key, train) ->
      (loss, dict of metrics, new state)``, called with ``train=True`` and this step's
      own key, ``fold_in(key, step)``; the new state (from ``apply_with_state``) is
      carried to the next step.

    Args:
      loss_fn: the loss, in the form above. ``args`` carry anything else it needs.
      optimizer: a ``fundl.optim`` transformation.
      has_aux: whether a plain loss_fn returns ``(loss, aux)``.
      stateful: the TrainState form.
      ensemble: vmap over a leading axis of ``params`` and ``opt_state`` (or of every
        TrainState leaf): N models, from N seeds via :func:`init_ensemble`, or N learning
        rates held in an ``inject_hyperparams`` state; ``batch`` and ``args`` are shared.
      grad_health: also report, per layer (:func:`fundl.train.layer_norms`), the
        gradient norm ``"grad_norm/<layer>"`` and the update-to-weight ratio
        ``"update_ratio/<layer>"`` (:func:`fundl.train.grad_health_metrics`): device
        scalars computed from the gradients and updates the step has anyway. Off by
        default, and then the compiled program is exactly the one without it.
      policy: a :class:`fundl.precision.Policy` (or its string,
        ``"params=float32,compute=bfloat16,output=float32"``): the loss function sees the
        params and the batch's floating leaves cast to ``compute_dtype`` (integer labels
        untouched; ``args`` and the model state as they are), its loss and metrics are
        cast to ``output_dtype``, and the gradients arrive in the params' own dtype
        (float32 master weights). Every floating params leaf must already be in
        ``param_dtype`` — else a ``TypeError`` when traced, naming the leaf: cast them
        once with ``params = policy.cast_to_param(params)`` before ``optimizer.init``.
        None (the default): no cast is traced — the same compiled program as without
        the option.
      loss_scale: a :class:`fundl.precision.DynamicLossScale` (for float16),
        ``StaticLossScale`` or ``NoOpLossScale``: the gradient of S·loss is divided by S,
        a step with inf/NaN gradients is skipped (params and optimizer state unchanged)
        and S adjusted; ``metrics`` gain ``"loss_scale"`` (the S this step used) and
        ``"skipped"`` (1.0 for a skipped step). S lives in the optimizer state:
        initialise it with ``fundl.precision.loss_scaled(optimizer, loss_scale).init(params)``.
        A float16 policy without a loss scale warns when the step is built.
      jit: compile — the ``jax.jit`` function itself, with ``.traces`` counting its
        traces; ``False`` returns the plain function.
      donate: donate params and opt_state (or the TrainState).
      mesh: data parallelism over a ``jax.sharding.Mesh``
        (:func:`fundl.parallel.data_mesh`): the step splits the batch along ``axis``
        (its size must divide by the devices there), keeps params, optimizer state and
        model state replicated — or split, with ``shard_params`` — and XLA adds the
        gradient all-reduce; the loss function is unchanged. Place the inputs with
        :func:`fundl.parallel.shard_batch` and :func:`fundl.parallel.replicate` (or
        :func:`fundl.parallel.shard_params`) so no call moves them. None: one device,
        and the compiled program is the one without these options.
      axis: the mesh axis the batch is split along.
      shard_params: split params and optimizer state ZeRO/FSDP-style
        (:func:`fundl.parallel.param_specs`) instead of replicating them.

    Returns:
      ``step``, in the form above: the compiled function (``step.traces`` counts its
      traces), or the plain one with ``jit=False``.

    Examples:
      Two steps of gradient descent on a linear model (8 examples, 2 features); each
      step halves the error z − y, so the loss drops fourfold (exact in float32):

      >>> def loss_fn(params, batch):  # z = x Wᵀ + b, L = mean((z − y)²)
      ...     z = batch["x"] @ params["W"].T + params["b"][None]
      ...     return fundl.losses.mse(z, batch["y"])
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]] * 2)
      >>> batch = {"x": x, "y": x @ jnp.array([[2.0], [-1.0]])}
      >>> params, opt = {"W": jnp.zeros((1, 2)), "b": jnp.zeros(1)}, fundl.optim.sgd(0.5)
      >>> step = fundl.train.make_train_step(loss_fn, opt)
      >>> opt_state = opt.init(params)
      >>> for _ in range(2):
      ...     params, opt_state, metrics = step(params, opt_state, batch)
      ...     print(f"loss {float(metrics['loss']):.4f}")
      loss 2.5000
      loss 0.6250

      The stateful form (a model with batch norm or dropout) is shown with
      :class:`TrainState`: ``train_state, metrics = step(train_state, batch)``.
    """
    return build_train_step(
        "make_train_step",
        loss_fn,
        optimizer,
        has_aux=has_aux,
        stateful=stateful,
        ensemble=ensemble,
        grad_health=grad_health,
        policy=policy,
        loss_scale=loss_scale,
        jit=jit,
        donate=donate,
        plan=data_parallel("make_train_step", mesh, axis, shard_params),
    )


def build_train_step(
    name: str,
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool,
    stateful: bool = False,
    ensemble: bool = False,
    grad_health: bool = False,
    policy: Any = None,
    loss_scale: Any = None,
    jit: bool = True,
    donate: bool = True,
    plan: DataParallel | None = None,
) -> Callable[..., Any]:
    """:func:`make_train_step` for a caller ``name`` (``fit``), which its errors then name."""
    check_function(name, "loss_fn", loss_fn, "loss_fn(params, batch, ...)")
    check_optimizer(name, optimizer)
    check_flags(name, has_aux=has_aux, stateful=stateful, ensemble=ensemble, jit=jit, donate=donate)
    step = _step_fn(
        name, loss_fn, optimizer, has_aux, stateful, grad_health, plan, policy, loss_scale
    )
    if ensemble:
        step = _vmap_models(step, n_state_args=1 if stateful else 2)
    step = _entry(name, step, stateful)
    if not jit:
        return step
    if stateful:
        arg_names, donated = ("train_state", "batch"), (0,)
    else:
        arg_names, donated = ("params", "opt_state", "batch"), (0, 1)
    return watched_jit(
        step,
        name="train step",
        arg_names=arg_names,
        batch_arg="batch",
        donate_argnums=donated if donate else (),
    )


def _vmap_models(step: Callable[..., Any], n_state_args: int) -> Callable[..., Any]:
    """vmap over a leading axis of the first ``n_state_args`` arguments; the rest shared."""

    def ensemble_step(*args):
        in_axes = (0,) * n_state_args + (None,) * (len(args) - n_state_args)
        return jax.vmap(step, in_axes=in_axes)(*args)

    return ensemble_step


def init_ensemble(init_fn: Callable[[jax.Array], Any], key: Any, n: int) -> Any:
    """N independently initialised models, stacked on a leading axis: vmap(init_fn)(split(key, n)).

    Examples:
      >>> model = fundl.mlp([2, 3, 1])
      >>> params = fundl.train.init_ensemble(model.init, jax.random.key(0), 8)
      >>> params["dense1"]["W"].shape
      (8, 3, 2)
    """
    check_function("init_ensemble", "init_fn", init_fn, "init_fn(key) -> params")
    n = check_int("init_ensemble", "n", n)
    return jax.vmap(init_fn)(jax.random.split(as_key("init_ensemble", key), n))


def make_eval_step(
    metrics_fn: Callable[..., Any],
    *,
    stateful: bool = False,
    jit: bool = True,
    ensemble: bool = False,
    mesh: Any = None,
    axis: str = "data",
    policy: Any = None,
) -> Callable[..., Any]:
    """Build the evaluation step: metrics on a batch, a dict of device scalars.

    - ``stateful=False``: ``evaluate(params, batch, *args)`` with ``metrics_fn(params,
      batch, *args)``.
    - ``stateful=True``: ``evaluate(params, model_state, batch, *args)`` with
      ``metrics_fn(params, batch, *args, state, key=None, train=False)`` — a stateful
      loss function, evaluated deterministically (no key; dropout off, batch norm on its
      running statistics).

    ``metrics_fn`` returns a dict of scalars, a scalar (reported as ``{"loss": value}``),
    or ``(loss, dict)`` — so a plain training loss function serves as is; a stateful one's
    ``(loss, dict, state)`` gives ``{"loss": loss, **dict}``. Checked when traced: every
    metric a scalar, the loss a floating scalar, and no "loss" in the dict of ``(loss,
    dict)`` (a plain dict may hold its own "loss"). One eval step serves every
    dataset: a new batch size (the validation set's last batch, then the test set)
    compiles once more without a :class:`RecompilationWarning`.

    Args:
      metrics_fn: the metrics, in the form above.
      stateful: the form taking the model's state.
      jit: compile (a ``jax.jit`` function with ``.traces``).
      ensemble: vmap over a leading axis of ``params`` (and of the model state).
      mesh: evaluate on a ``jax.sharding.Mesh``: a batch whose size divides by the
        devices of ``axis`` is split along it, any other (a dataset's last batch) is
        evaluated whole on every device; the metrics are the same either way. Params
        and model state stay where they were placed.
      axis: the mesh axis the batch is split along.
      policy: a :class:`fundl.precision.Policy`: params and the batch's floating leaves
        cast to its compute dtype, the metrics to its output dtype (as the train step).
        Unlike the train steps, the params' dtype is not checked against
        ``param_dtype``: evaluation updates nothing, so params of any floating dtype (a
        bfloat16 copy for inference) are evaluated in the compute dtype.

    Returns:
      ``evaluate``, in the form above, returning a dict of scalar device arrays.

    Examples:
      The training loss as the metric; W = (2, −1), b = 0 fits the data exactly:

      >>> def loss_fn(params, batch):  # z = x Wᵀ + b, L = mean((z − y)²)
      ...     z = batch["x"] @ params["W"].T + params["b"][None]
      ...     return fundl.losses.mse(z, batch["y"])
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]] * 2)
      >>> batch = {"x": x, "y": x @ jnp.array([[2.0], [-1.0]])}
      >>> params, opt = {"W": jnp.zeros((1, 2)), "b": jnp.zeros(1)}, None
      >>> evaluate = fundl.train.make_eval_step(loss_fn)
      >>> evaluate({"W": jnp.array([[2.0, -1.0]]), "b": jnp.zeros(1)}, batch)
      {'loss': Array(0., dtype=float32)}
      >>> evaluate(params, batch)  # at W = 0: mean(y²) = (4 + 1 + 4 + 1) / 4
      {'loss': Array(2.5, dtype=float32)}
    """
    name = "make_eval_step"
    check_function(name, "metrics_fn", metrics_fn, "metrics_fn(params, batch, ...)")
    check_flags(name, stateful=stateful, jit=jit, ensemble=ensemble)
    plan = data_parallel(name, mesh, axis, False)
    policy = precision.as_policy(name, policy)

    def as_metrics(out):
        metrics = _eval_metrics(name, out, stateful)
        return metrics if policy is None else policy.cast_to_output(metrics)

    def compute(params, batch):
        return (params, batch) if policy is None else policy.cast_to_compute((params, batch))

    def evaluate(params, batch, *args):
        params, batch = compute(params, batch)
        return as_metrics(call_user_fn(name, "metrics_fn", metrics_fn, (params, batch, *args)))

    def evaluate_stateful(params, model_state, batch, *args):
        params, batch = compute(params, batch)
        stateful_kwargs = dict(state=model_state, key=None, train=False)
        out = call_user_fn(name, "metrics_fn", metrics_fn, (params, batch, *args), stateful_kwargs)
        return as_metrics(out)

    fn, n_models = (evaluate_stateful, 2) if stateful else (evaluate, 1)
    if plan is not None:
        fn = _eval_on_mesh(fn, plan, n_models)
    if ensemble:
        fn = _vmap_models(fn, n_state_args=n_models)
    fn = _eval_entry(name, fn, stateful)
    if not jit:
        return fn
    arg_names = ("params", "model_state", "batch") if stateful else ("params", "batch")
    return watched_jit(
        fn, name="eval step", arg_names=arg_names, batch_arg="batch", any_batch_size=True
    )


def _eval_entry(name: str, fn: Callable[..., Any], stateful: bool) -> Callable[..., Any]:
    """``fn`` refusing, when traced, a TrainState where the params are expected."""

    def checked(*args):
        if args and isinstance(args[0], TrainState):
            state = ", train_state.model_state" if stateful else ""
            raise TypeError(
                f"{name}: got a TrainState where params are expected; pass "
                f"train_state.params{state} and the batch"
            )
        return fn(*args)

    return checked


def _eval_on_mesh(fn: Callable[..., Any], plan: DataParallel, n_models: int) -> Callable[..., Any]:
    """``fn`` with its batch split when its size divides by the devices, else whole."""

    def evaluate(*args):
        batch = args[n_models]
        sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else 0 for leaf in jax.tree.leaves(batch)}
        split = len(sizes) == 1 and min(sizes) > 0 and min(sizes) % plan.devices == 0
        batch = plan.constrain_batch(batch) if split else plan.replicated(batch)
        return plan.replicated(fn(*args[:n_models], batch, *args[n_models + 1 :]))

    return evaluate


def make_scan_steps(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool = False,
    stateful: bool = False,
    ensemble: bool = False,
    grad_health: bool = False,
    policy: Any = None,
    loss_scale: Any = None,
    jit: bool = True,
    donate: bool = True,
    mesh: Any = None,
    axis: str = "data",
    shard_params: bool = False,
) -> Callable[..., Any]:
    """Build k update steps in one ``lax.scan``: the same updates as k calls of the step.

    ``batches`` is a pytree whose leaves have a leading axis of k steps, e.g. x of shape
    (k, batch_size, ...); ``metrics`` holds each step's values stacked, shape (k,) —
    with ``grad_health=True`` each layer's gradient norm and update ratio too, as
    :func:`make_train_step` reports them.
    Plain: ``(params, opt_state, batches, *args) -> (params, opt_state, metrics)``;
    ``stateful=True``: ``(train_state, batches, *args) -> (train_state, metrics)``, each
    step with its own key ``fold_in(key, step)`` — a scan never repeats a dropout mask.
    ``mesh``, ``axis``, ``shard_params``: as for :func:`make_train_step`; each step's
    batch is split along ``axis`` (the stacked ``batches`` may be placed with
    ``NamedSharding(mesh, P(None, axis))``). ``policy`` and ``loss_scale`` apply to every
    step, as in :func:`make_train_step`. ``ensemble=True`` runs every step on N models at
    once, as :func:`make_train_step` does (params and opt_state, or every TrainState leaf,
    with a leading axis of N; the batches shared); ``metrics`` leaves are then (k, N).

    The arguments are those of :func:`make_train_step`.

    Returns:
      ``steps``, in the form above; ``metrics`` leaves of shape (k,), or (k, N).

    Examples:
      The batch of :func:`make_train_step`'s example twice, k = 2: the same two losses.

      >>> def loss_fn(params, batch):  # z = x Wᵀ + b, L = mean((z − y)²)
      ...     z = batch["x"] @ params["W"].T + params["b"][None]
      ...     return fundl.losses.mse(z, batch["y"])
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]] * 2)
      >>> batch = {"x": x, "y": x @ jnp.array([[2.0], [-1.0]])}
      >>> params, opt = {"W": jnp.zeros((1, 2)), "b": jnp.zeros(1)}, fundl.optim.sgd(0.5)
      >>> batches = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), batch)  # (2, 8, ...)
      >>> steps = fundl.train.make_scan_steps(loss_fn, opt)
      >>> params, opt_state, metrics = steps(params, opt.init(params), batches)
      >>> metrics["loss"].shape, [f"{v:.4f}" for v in metrics["loss"].tolist()]
      ((2,), ['2.5000', '0.6250'])
    """
    check_function("make_scan_steps", "loss_fn", loss_fn, "loss_fn(params, batch, ...)")
    check_optimizer("make_scan_steps", optimizer)
    check_flags(
        "make_scan_steps",
        has_aux=has_aux,
        stateful=stateful,
        ensemble=ensemble,
        jit=jit,
        donate=donate,
    )
    plan = data_parallel("make_scan_steps", mesh, axis, shard_params)
    step = _step_fn(
        "make_scan_steps",
        loss_fn,
        optimizer,
        has_aux,
        stateful,
        grad_health,
        plan,
        policy,
        loss_scale,
    )
    if ensemble:
        step = _vmap_models(step, n_state_args=1 if stateful else 2)
    run = _entry("make_scan_steps", _scan(step, stateful, "make_scan_steps"), stateful)
    if not jit:
        return run
    if stateful:
        arg_names, donated = ("train_state", "batches"), (0,)
    else:
        arg_names, donated = ("params", "opt_state", "batches"), (0, 1)
    return watched_jit(
        run,
        name="scan steps",
        arg_names=arg_names,
        batch_arg=None,
        donate_argnums=donated if donate else (),
    )


def _check_batches(name: str, batches: Any) -> None:
    """``batches`` must have array leaves sharing a leading axis of k ≥ 1 steps (shapes only)."""
    flat = jax.tree_util.tree_flatten_with_path(batches)[0]
    if not flat:
        raise ValueError(
            f"{name}: batches has no array leaves; expected a pytree of arrays with a leading "
            f"axis of k steps, e.g. x of shape (k, batch_size, ...), got {batches!r:.80}"
        )
    sizes = {}
    for path, leaf in flat:
        shape = jnp.shape(leaf)
        if not shape:
            raise ValueError(
                f"{name}: batches{jax.tree_util.keystr(path)} is 0-d; every leaf needs a leading "
                "axis of k steps (stack k batches: jax.tree.map(lambda *b: jnp.stack(b), *batches))"
            )
        sizes.setdefault(shape[0], jax.tree_util.keystr(path))
    if len(sizes) > 1:
        shown = ", ".join(f"batches{where} has {k}" for k, where in sizes.items())
        raise ValueError(
            f"{name}: the leaves of batches disagree on the number of steps k: {shown}"
        )


def _scan(step: Callable[..., Any], stateful: bool, name: str = "") -> Callable[..., Any]:
    """k applications of ``step`` over the leading axis of ``batches``, in one ``lax.scan``."""

    def run_stateful(train_state, batches, *args):
        if name:
            _check_batches(name, batches)

        def body(carry, batch):
            return step(carry, batch, *args)

        return jax.lax.scan(body, train_state, batches)

    def run(params, opt_state, batches, *args):
        if name:
            _check_batches(name, batches)

        def body(carry, batch):
            params, opt_state, metrics = step(*carry, batch, *args)
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, metrics

    return run_stateful if stateful else run


def make_epoch(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    batch_size: int,
    *,
    has_aux: bool = False,
    stateful: bool = False,
    ensemble: bool = False,
    grad_health: bool = False,
    policy: Any = None,
    loss_scale: Any = None,
    jit: bool = True,
    donate: bool = True,
    mesh: Any = None,
    axis: str = "data",
    shard_params: bool = False,
) -> Callable[..., Any]:
    """Build one whole epoch in one compiled call, shuffled on device and run in a scan.

    The data (on device) are shuffled by ``fold_in(key, epoch)`` exactly as
    :func:`fundl.data.batches` would, cut into ⌊n / batch_size⌋ full batches (the
    remainder is dropped: a scan needs one shape), and run through ``lax.scan``;
    ``metrics`` are stacked per step. Plain: ``(params, opt_state, data, key, epoch,
    *args) -> (params, opt_state, metrics)``; ``stateful=True``: ``(train_state, data,
    key, epoch, *args) -> (train_state, metrics)``. ``key`` — a PRNG key or an int seed
    s, read as ``jax.random.key(s)`` — orders the data; the model's keys come from the
    TrainState. ``grad_health=True`` adds each layer's gradient norm
    and update ratio to the metrics, as :func:`make_train_step` does, and ``policy`` and
    ``loss_scale`` apply as there. ``mesh``, ``axis``, ``shard_params``: as for
    :func:`make_train_step` (``batch_size`` must divide by the devices); the data are best
    replicated on the mesh (:func:`fundl.parallel.replicate`), and each step's batch is split.
    ``ensemble=True`` trains N models at once, as :func:`make_train_step` does (params and
    opt_state, or every TrainState leaf, with a leading axis of N), on the same batches in
    the same order; ``metrics`` leaves are then (⌊n / b⌋, N).

    The other arguments are those of :func:`make_train_step`.

    Args:
      batch_size: b, 1 ≤ b ≤ n: each epoch runs ⌊n / b⌋ steps.

    Returns:
      ``epoch``, in the form above; ``metrics`` leaves of shape (⌊n / b⌋,), or (⌊n / b⌋, N).

    Examples:
      8 examples in batches of 4: two steps, in the order ``fold_in(key, 0)`` gives.

      >>> def loss_fn(params, batch):  # z = x Wᵀ + b, L = mean((z − y)²)
      ...     z = batch["x"] @ params["W"].T + params["b"][None]
      ...     return fundl.losses.mse(z, batch["y"])
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]] * 2)
      >>> batch = {"x": x, "y": x @ jnp.array([[2.0], [-1.0]])}
      >>> params, opt = {"W": jnp.zeros((1, 2)), "b": jnp.zeros(1)}, fundl.optim.sgd(0.5)
      >>> epoch = fundl.train.make_epoch(loss_fn, opt, 4)
      >>> params, opt_state, metrics = epoch(params, opt.init(params), batch, jax.random.key(0), 0)
      >>> metrics["loss"].shape, [f"{v:.4f}" for v in metrics["loss"].tolist()]
      ((2,), ['3.2500', '0.5156'])
    """
    return build_epoch(
        "make_epoch",
        loss_fn,
        optimizer,
        batch_size,
        has_aux=has_aux,
        stateful=stateful,
        ensemble=ensemble,
        grad_health=grad_health,
        policy=policy,
        loss_scale=loss_scale,
        jit=jit,
        donate=donate,
        plan=data_parallel("make_epoch", mesh, axis, shard_params),
    )


def build_epoch(
    name: str,
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    batch_size: int,
    *,
    has_aux: bool,
    stateful: bool = False,
    ensemble: bool = False,
    grad_health: bool = False,
    policy: Any = None,
    loss_scale: Any = None,
    jit: bool = True,
    donate: bool = True,
    plan: DataParallel | None = None,
) -> Callable[..., Any]:
    """:func:`make_epoch` for a caller ``name`` (``fit``), which its errors then name."""
    check_function(name, "loss_fn", loss_fn, "loss_fn(params, batch, ...)")
    check_optimizer(name, optimizer)
    check_flags(name, has_aux=has_aux, stateful=stateful, ensemble=ensemble, jit=jit, donate=donate)
    batch_size = check_int(name, "batch_size", batch_size)
    if plan is not None and batch_size % plan.devices:
        plan.check_batch(name, jax.ShapeDtypeStruct((batch_size,), jnp.float32))
    step = _step_fn(
        name, loss_fn, optimizer, has_aux, stateful, grad_health, plan, policy, loss_scale
    )
    if ensemble:
        step = _vmap_models(step, n_state_args=1 if stateful else 2)
    scan = _scan(step, stateful)

    def batches(data, key, epoch):
        return fdata.epoch_batches(data, batch_size, _epoch_key(name, key), epoch)

    def run_stateful(train_state, data, key, epoch, *args):
        return scan(train_state, batches(data, key, epoch), *args)

    def run(params, opt_state, data, key, epoch, *args):
        return scan(params, opt_state, batches(data, key, epoch), *args)

    fn = _entry(name, run_stateful if stateful else run, stateful)
    if not jit:
        return fn
    if stateful:
        arg_names, donated = ("train_state", "data", "key", "epoch"), (0,)
    else:
        arg_names, donated = ("params", "opt_state", "data", "key", "epoch"), (0, 1)
    return watched_jit(
        fn,
        name="epoch",
        arg_names=arg_names,
        batch_arg=None,
        donate_argnums=donated if donate else (),
    )


def _epoch_key(name: str, key: Any) -> Any:
    """``as_key`` inside the compiled epoch, where an int seed arrives as a traced integer
    scalar: ``jax.random.key`` of it, the key ``as_key`` makes of the int outside."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.shape(key) == () and jnp.issubdtype(dtype, jnp.integer):
        return jax.random.key(key)
    return as_key(name, key)
