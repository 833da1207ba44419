"""Per-example gradients and differentially private SGD (DP-SGD, Abadi et al. 2016).

:func:`per_example_grads` gives the gradient of each example's loss, ``vmap`` over
the batch of ``jax.grad`` of the loss on a batch of one — fundl's hand-written rules
run underneath, batched. :func:`dp_aggregate` turns those into one private gradient
(each clipped to norm C, summed, Gaussian noise of standard deviation σC added,
divided by the batch size), and :func:`make_dp_train_step` compiles the whole step,
the privatised gradient then going through any ``fundl.optim`` optimizer.

fundl does no privacy accounting: the ε a run spends for a given δ depends on σ, the
sampling rate and the number of steps, and is computed by an accountant (see
docs/privacy.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fundl._validate import as_single_key, check_bool, check_number
from fundl.optim.base import GradientTransformation, apply_updates, safe_increment
from fundl.train.recompile import watched_jit
from fundl.train.state import TrainState
from fundl.train.steps import check_flags, check_optimizer, loss_and_aux, loss_metrics_state
from fundl.tree import accumulation_dtype, global_norm

__all__ = ["DP_METRICS", "dp_aggregate", "make_dp_train_step", "per_example_grads"]

DP_METRICS = ("per_example_grad_norm", "clipped_fraction")
"""The metrics :func:`dp_aggregate` reports: the mean of ‖g_i‖ before clipping, and the
fraction of examples with ‖g_i‖ > C (those clipping changed)."""


def _leading_size(name: str, tree: Any, what: str) -> int:
    """The common leading (batch) size of every leaf of ``tree``; ``ValueError`` if they differ."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not flat:
        raise ValueError(f"{name}: {what} holds no arrays; it needs a leading batch axis")
    sizes: dict[int, str] = {}
    for path, leaf in flat:
        shape = tuple(jnp.shape(leaf))
        where = f"{what}{jax.tree_util.keystr(path)}"
        if not shape:
            raise ValueError(
                f"{name}: every leaf of {what} needs a leading batch axis, but {where} is a "
                "scalar; pass values shared by all examples as extra arguments instead"
            )
        sizes.setdefault(shape[0], f"{where} has {shape[0]} (shape {shape})")
    if len(sizes) > 1:
        raise ValueError(
            f"{name}: the leaves of {what} disagree on the leading (batch) size: "
            + ", ".join(sizes.values())
        )
    return next(iter(sizes))


def _batch_of_one(example: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x)[None], example)


def _plain_per_example(name: str, loss_fn: Callable[..., Any], has_aux: bool):
    """(params, batch, *args) -> (losses (N,), aux stacked (N, ...), grads (N, ...))."""

    def one(params, example, *args):
        return loss_and_aux(name, loss_fn(params, _batch_of_one(example), *args), has_aux)

    value_and_grad = jax.value_and_grad(one, has_aux=True)

    def run(params, batch, *args):
        _leading_size(name, batch, "batch")
        in_axes = (None, 0) + (None,) * len(args)
        (losses, aux), grads = jax.vmap(value_and_grad, in_axes=in_axes)(params, batch, *args)
        return losses, aux, grads

    return run


def _stateful_per_example(name: str, loss_fn: Callable[..., Any]):
    """(params, model_state, batch, keys (N,), *args) -> (losses, metrics, grads), per example."""

    def one(params, model_state, example, key, *args):
        out = loss_fn(params, _batch_of_one(example), *args, state=model_state, key=key, train=True)
        value, metrics, _ = loss_metrics_state(name, out, model_state)
        return value, metrics

    value_and_grad = jax.value_and_grad(one, has_aux=True)

    def run(params, model_state, batch, keys, *args):
        in_axes = (None, None, 0, 0) + (None,) * len(args)
        (losses, metrics), grads = jax.vmap(value_and_grad, in_axes=in_axes)(
            params, model_state, batch, keys, *args
        )
        return losses, metrics, grads

    return run


def per_example_grads(
    loss_fn: Callable[..., Any], params: Any, batch: Any, *args: Any, has_aux: bool = False
) -> Any:
    """The gradient of each example's loss: g_i = ∇_params loss(params, batch[i:i+1], *args).

    ``jax.vmap`` over the leading axis of every leaf of ``batch`` of ``jax.grad`` of
    ``loss_fn`` evaluated on a batch of one (each leaf of shape (1, ...)), so the loss
    is written for batches as usual and fundl's hand-written backward rules run,
    batched. ``args`` are shared by all examples. Memory: N copies of the gradient.

    Compile it with ``jax.jit(functools.partial(per_example_grads, loss_fn))`` (the loss
    fixed, params and batch traced), or inside your own compiled step.

    Args:
      loss_fn: ``loss_fn(params, batch, *args) -> loss``, a floating scalar; with
        ``has_aux``, ``(loss, dict of metrics)``.
      params: the parameters (a pytree).
      batch: a pytree whose leaves share a leading batch size N.
      *args: anything else ``loss_fn`` needs, shared by all examples.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      a pytree like ``params`` whose leaves have a leading axis (N, ...); with
      ``has_aux``, ``(grads, aux)`` with each aux value stacked per example (N, ...).

    Raises:
      ValueError: when the batch's leaves disagree on N, or a leaf is a scalar.
      TypeError: when the loss (of one example) is not a floating scalar.

    Examples:
      >>> model = fundl.mlp([2, 3, 1])
      >>> params = model.init(jax.random.key(0))
      >>> def loss_fn(params, batch):
      ...     return fundl.losses.mse(model.apply(params, batch["x"]), batch["y"])
      >>> batch = {"x": jnp.ones((5, 2)), "y": jnp.zeros((5, 1))}
      >>> import functools   # compiled; eagerly: per_example_grads(loss_fn, params, batch)
      >>> per_example = jax.jit(functools.partial(fundl.privacy.per_example_grads, loss_fn))
      >>> grads = per_example(params, batch)
      >>> grads["dense1"]["W"].shape   # (N, n_out, n_in)
      (5, 3, 2)
    """
    has_aux = check_bool("per_example_grads", "has_aux", has_aux)
    _check_loss_fn("per_example_grads", loss_fn)
    _, aux, grads = _plain_per_example("per_example_grads", loss_fn, has_aux)(params, batch, *args)
    return (grads, aux) if has_aux else grads


def _check_loss_fn(name: str, loss_fn: Any) -> None:
    if not callable(loss_fn):
        raise TypeError(f"{name}: loss_fn must be a function, got {loss_fn!r}")


def _check_dp_hyperparameters(name: str, l2_norm_clip: Any, noise_multiplier: Any):
    clip = check_number(name, "l2_norm_clip", l2_norm_clip, low=0.0, low_open=True)
    sigma = check_number(name, "noise_multiplier", noise_multiplier, low=0.0)
    return clip, sigma


def dp_aggregate(
    per_example_grads: Any, key: Any, *, l2_norm_clip: float, noise_multiplier: float
) -> tuple[Any, dict[str, jax.Array]]:
    """The private gradient of DP-SGD from per-example gradients (Abadi et al. 2016, Alg. 1).

    ḡ_i = g_i · min(1, C / ‖g_i‖)  (‖·‖ the global L2 norm over every leaf of example i),
    g̃ = (Σ_i ḡ_i + N(0, σ²C² I)) / N.

    The norms, the sum and the noise are computed in float32 (or float64 where the
    gradients are), and g̃ is cast back to each leaf's dtype. Each ‖g_i‖ is
    :func:`fundl.tree.global_norm` of example i, right for every finite gradient (a
    float32 sum of squares would overflow beyond about 1.8e19 and drop the example). The
    noise of leaf j (in ``jax.tree.leaves`` order, L leaves) is ``σC ·
    jax.random.normal(jax.random.split(key, L)[j], shape, dtype)``; with σ = 0 none is
    drawn. Use a fresh key every step: the
    same noise twice cancels in a difference of two steps. A NaN gradient gives NaN.

    Args:
      per_example_grads: a pytree whose leaves have a leading axis of N examples, as
        :func:`per_example_grads` gives.
      key: a PRNG key (or int seed) for the noise.
      l2_norm_clip: C > 0.
      noise_multiplier: σ ≥ 0 (the noise's standard deviation is σC).

    Returns:
      ``(g̃, metrics)``: g̃ shaped like one example's gradient (the leading axis gone);
      metrics ``{"per_example_grad_norm": mean_i ‖g_i‖, "clipped_fraction": the fraction
      of examples with ‖g_i‖ > C}``.

    Examples:
      >>> g = {"w": jnp.array([[0.0, 4.0], [1.0, 0.0]])}   # N = 2, norms 4 and 1
      >>> private, metrics = fundl.privacy.dp_aggregate(
      ...     g, jax.random.key(0), l2_norm_clip=2.0, noise_multiplier=0.0)
      >>> private["w"].tolist()   # ([0, 2] + [1, 0]) / 2
      [0.5, 1.0]
      >>> float(metrics["clipped_fraction"])
      0.5
    """
    name = "dp_aggregate"
    clip, sigma = _check_dp_hyperparameters(name, l2_norm_clip, noise_multiplier)
    return _aggregate(name, per_example_grads, _noise_key(name, key), clip, sigma)


def _aggregate(
    name: str, grads: Any, key: jax.Array, clip: float, sigma: float
) -> tuple[Any, dict[str, jax.Array]]:
    n = _leading_size(name, grads, "per_example_grads")
    if n == 0:
        raise ValueError(f"{name}: the batch is empty (0 examples); DP-SGD divides by its size")
    leaves, treedef = jax.tree.flatten(grads)
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            # an integer sum of clipped gradients, noised, would be truncated back to int
            raise TypeError(
                f"{name}: per_example_grads must be floating-point, got dtype "
                f"{jnp.result_type(leaf)} at per_example_grads{jax.tree_util.keystr(path)}"
            )
    dtype = accumulation_dtype(leaves)
    wide = [jnp.asarray(leaf).astype(dtype) for leaf in leaves]
    # each example's global norm, overflow-safe: a finite ‖g_i‖ beyond float32's sqrt(max)
    # is clipped like any other, not lost to an infinite sum of squares
    norms = jax.vmap(global_norm)(wide)  # (N,)
    factor = jnp.minimum(1.0, clip / norms)  # ‖g‖ = 0: C/0 = inf, factor 1; NaN stays NaN
    keys = jax.random.split(key, len(leaves)) if sigma > 0 else [None] * len(leaves)
    out = []
    for x, leaf, k in zip(wide, leaves, keys):
        total = jnp.sum(x * factor.reshape((n,) + (1,) * (x.ndim - 1)), axis=0)
        if k is not None:
            total = total + (sigma * clip) * jax.random.normal(k, x.shape[1:], dtype)
        out.append((total / n).astype(jnp.result_type(leaf)))
    metrics = {
        "per_example_grad_norm": jnp.mean(norms),
        "clipped_fraction": jnp.mean((norms > clip).astype(dtype)),
    }
    return jax.tree.unflatten(treedef, out), metrics


def _merge_metrics(name: str, losses: jax.Array, aux: dict, dp: dict) -> dict[str, jax.Array]:
    """{"loss": mean loss, each metric's mean over the examples, the DP metrics}."""
    clash = sorted(k for k in aux if k in ("loss", *DP_METRICS))
    if clash:
        raise ValueError(
            f"{name}: the loss function's metrics {clash} clash with the names the DP step "
            f"reports (loss, {', '.join(DP_METRICS)}); rename them"
        )
    means = {k: jnp.mean(v, axis=0) for k, v in aux.items()}
    return {"loss": jnp.mean(losses), **means, **dp}


def make_dp_train_step(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    l2_norm_clip: float,
    noise_multiplier: float,
    has_aux: bool = False,
    stateful: bool = False,
    jit: bool = True,
    donate: bool = True,
) -> Callable[..., Any]:
    """Build a DP-SGD update step: per-example gradients, clipped, summed, noised, averaged.

    g_i = ∇ loss(params, example i) (:func:`per_example_grads`); g̃ = (Σ_i g_i ·
    min(1, C/‖g_i‖) + N(0, σ²C² I)) / N (:func:`dp_aggregate`); then ``updates,
    opt_state = optimizer.update(g̃, opt_state, params)`` and ``params =
    apply_updates(params, updates)`` — any ``fundl.optim`` optimizer (Abadi et al. use
    SGD; Adam works as well). With σ = 0 and C larger than every ‖g_i‖ this is the
    ordinary step on the mean loss.

    Two forms, as :func:`fundl.train.make_train_step`:

    - ``stateful=False``: ``step(params, opt_state, batch, key, *args) -> (params,
      opt_state, metrics)`` for ``loss_fn(params, batch, *args)``; ``key`` draws this
      step's noise and must be new every step (e.g. ``jax.random.fold_in(root, t)``).
    - ``stateful=True``: ``step(train_state, batch, *args) -> (train_state, metrics)``
      with a :class:`~fundl.train.TrainState`, for ``loss_fn(params, batch, *args,
      state, key, train) -> (loss, metrics, state)``; the keys come from the state's
      counter: ``model_key, noise_key = split(fold_in(key, step))``, example i's loss
      gets ``split(model_key, N)[i]`` (its own dropout mask). The model state must be
      empty: per-example gradients have no batch statistics (batch norm mixes
      examples; use ``LayerNorm`` or ``RMSNorm``).

    ``metrics``: ``"loss"`` and each of the loss function's metrics averaged over the
    examples, and :data:`DP_METRICS` (``"per_example_grad_norm"``, the mean ‖g_i‖
    before clipping, and ``"clipped_fraction"``). They are computed from the private
    data and are not themselves private.

    Args:
      loss_fn: the loss of a batch, in the form above; evaluated on batches of one.
      optimizer: a ``fundl.optim`` transformation.
      l2_norm_clip: C > 0, checked here.
      noise_multiplier: σ ≥ 0, checked here.
      has_aux: whether a plain ``loss_fn`` returns ``(loss, dict of metrics)``.
      stateful: the TrainState form.
      jit: compile (the ``jax.jit`` function, with ``.traces``); ``False`` returns the
        plain function.
      donate: donate params and opt_state (or the TrainState).

    Returns:
      the step function of the chosen form.

    Raises:
      ValueError: for C ≤ 0, σ < 0, or ``has_aux`` with ``stateful=True``.

    Examples:
      A training loop draws each step's noise from its own key::

          step = make_dp_train_step(loss_fn, optim.sgd(0.1), l2_norm_clip=1.0,
                                    noise_multiplier=1.1)
          root = jax.random.key(0)
          for t, batch in enumerate(batches):
              params, opt_state, metrics = step(params, opt_state, batch,
                                                jax.random.fold_in(root, t))

      One step (eager, ``jit=False``) on 4 examples, each with gradient −2(1, 1) of
      norm 2.83 > C = 1, so all are clipped:

      >>> def loss_fn(params, batch):
      ...     return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
      >>> params, opt = {"w": jnp.zeros(2)}, fundl.optim.sgd(0.1)
      >>> step = fundl.privacy.make_dp_train_step(
      ...     loss_fn, opt, l2_norm_clip=1.0, noise_multiplier=1.1, jit=False)
      >>> batch = {"x": jnp.ones((4, 2)), "y": jnp.ones(4)}
      >>> params, opt_state, metrics = step(params, opt.init(params), batch, jax.random.key(0))
      >>> {k: round(float(v), 4) for k, v in sorted(metrics.items())}
      {'clipped_fraction': 1.0, 'loss': 1.0, 'per_example_grad_norm': 2.8284}
    """

    name = "make_dp_train_step"
    _check_loss_fn(name, loss_fn)
    check_optimizer(name, optimizer)
    clip, sigma = _check_dp_hyperparameters(name, l2_norm_clip, noise_multiplier)
    check_flags(name, has_aux=has_aux, stateful=stateful, jit=jit, donate=donate)
    if stateful and has_aux:
        raise ValueError(
            f"{name}: has_aux does not apply with stateful=True: a stateful loss_fn always "
            "returns (loss, dict of metrics, new state)"
        )
    if stateful:
        step = _stateful_dp_step(name, loss_fn, optimizer, clip, sigma)
        arg_names, donated = ("train_state", "batch"), (0,)
    else:
        step = _plain_dp_step(name, loss_fn, optimizer, has_aux, clip, sigma)
        arg_names, donated = ("params", "opt_state", "batch", "key"), (0, 1)
    if not jit:
        return step
    return watched_jit(
        step,
        name="DP train step",
        arg_names=arg_names,
        batch_arg="batch",
        donate_argnums=donated if donate else (),
    )


def _noise_key(name: str, key: Any) -> jax.Array:
    """A PRNG key from a key or an int seed, the seed possibly traced (an int32 scalar)."""
    if isinstance(key, jax.Array) and key.shape == () and jnp.issubdtype(key.dtype, jnp.integer):
        return jax.random.key(key)
    return as_single_key(name, key)


def _plain_dp_step(name, loss_fn, optimizer, has_aux, clip, sigma):
    per_example = _plain_per_example(name, loss_fn, has_aux)

    def step(params, opt_state, batch, key, *args):
        key = _noise_key(name, key)
        losses, aux, grads = per_example(params, batch, *args)
        grad, dp_metrics = _aggregate(name, grads, key, clip, sigma)
        updates, opt_state = optimizer.update(grad, opt_state, params)
        metrics = _merge_metrics(name, losses, aux, dp_metrics)
        return apply_updates(params, updates), opt_state, metrics

    return step


def _stateful_dp_step(name, loss_fn, optimizer, clip, sigma):
    per_example = _stateful_per_example(name, loss_fn)

    def step(train_state, batch, *args):
        if not isinstance(train_state, TrainState):
            raise TypeError(
                f"{name}: with stateful=True the step takes a TrainState (TrainState.create("
                f"params, optimizer, key=...)), got {type(train_state).__name__}"
            )
        if jax.tree.leaves(train_state.model_state):
            raise ValueError(
                f"{name}: the model has state (e.g. batch-norm statistics), which per-example "
                "gradients cannot use: a batch statistic mixes examples, so one example's "
                "gradient is not its own; use LayerNorm or RMSNorm instead of BatchNorm"
            )
        n = _leading_size(name, batch, "batch")
        model_key, noise_key = jax.random.split(train_state.step_key())
        params = train_state.params
        losses, aux, grads = per_example(
            params, train_state.model_state, batch, jax.random.split(model_key, n), *args
        )
        grad, dp_metrics = _aggregate(name, grads, noise_key, clip, sigma)
        updates, opt_state = optimizer.update(grad, train_state.opt_state, params)
        new = TrainState(
            apply_updates(params, updates),
            opt_state,
            train_state.model_state,
            train_state.key,
            safe_increment(train_state.step),
        )
        return new, _merge_metrics(name, losses, aux, dp_metrics)

    return step
