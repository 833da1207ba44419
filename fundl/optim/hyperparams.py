"""Hyperparameters held in the optimizer state (in the spirit of optax's ``inject_hyperparams``).

``inject_hyperparams(adam)(learning_rate=1e-3)`` builds Adam whose real
hyperparameters live in ``state.hyperparams`` as arrays. Changing one between calls
(``with_hyperparams(state, learning_rate=1e-4)``, or a plateau rule), or giving each
model of a ``vmap`` its own, changes array *values*, never the traced program: a
jitted step is not compiled again. Values are checked by the same rules as the
optimizer's own arguments (:data:`fundl.optim.HYPERPARAMETERS`), whether they are
given to ``inject_hyperparams`` or later to ``with_hyperparams``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fundl.optim.base import (
    HYPERPARAMETERS,
    GradientTransformation,
    Range,
    check_state,
    safe_increment,
)

__all__ = ["inject_hyperparams", "with_hyperparams", "InjectState"]


class InjectState(NamedTuple):
    """State of an optimizer with injected hyperparameters: the step count, their values, and
    the optimizer's own state.

    Examples:
      >>> opt = fundl.optim.inject_hyperparams(fundl.optim.sgd)(learning_rate=0.5, momentum=0.9)
      >>> state = opt.init({"w": jnp.zeros(2)})
      >>> int(state.count), sorted(state.hyperparams), type(state.inner).__name__
      (0, ['learning_rate', 'momentum'], 'TraceState')
    """

    count: jax.Array  # steps taken, int32 scalar (schedules are evaluated at it)
    hyperparams: dict[str, jax.Array]  # name -> current value, float scalar arrays (a
    # Hyperparams: a dict that also knows, as static data, which names follow a schedule)
    inner: Any  # the optimizer's own state


class _Hyperparams(dict):
    """``state.hyperparams``: a dict of values that knows which names follow a schedule.

    The scheduled names are static pytree data (like a dict's keys), not leaves, so
    ``jit``, ``vmap``, ``scan`` and checkpoints see the same leaves, at the same key
    paths, as for a plain dict; only :func:`with_hyperparams` reads them.
    """

    scheduled: tuple[str, ...] = ()

    def __init__(self, values: Any = (), scheduled: tuple[str, ...] = ()) -> None:
        super().__init__(values)
        self.scheduled = tuple(sorted(scheduled))


def _flatten(h: _Hyperparams):
    keys = tuple(sorted(h))
    children = [(jax.tree_util.DictKey(k), h[k]) for k in keys]
    return children, (keys, h.scheduled)


def _unflatten(aux: tuple, children: Any) -> _Hyperparams:
    keys, scheduled = aux
    return _Hyperparams(zip(keys, children), scheduled)


jax.tree_util.register_pytree_with_keys(_Hyperparams, _flatten, _unflatten)


def _like(values: dict, like: Any) -> Any:
    """``values`` in ``like``'s container: keeps the scheduled names (a state restored
    without a template holds a plain dict, which is kept plain, so a scan's carry keeps
    its structure)."""
    if isinstance(like, _Hyperparams):
        return _Hyperparams(values, like.scheduled)
    return dict(values)


def _is_real(value: Any) -> bool:
    """A value that can live in the state: a number (not a bool) or an array."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (numbers.Real, jax.Array, np.ndarray))


def _injectable(arg: str) -> bool:
    """Whether ``arg`` may live in the state: a real hyperparameter, or one not in the table."""
    return isinstance(HYPERPARAMETERS.get(arg, Range()), Range)


def inject_hyperparams(
    factory: Callable[..., GradientTransformation], *, static_args: tuple[str, ...] = ("mask",)
) -> Callable[..., GradientTransformation]:
    """Wrap an optimizer factory so its real hyperparameters live in the state.

    Numbers and scalar arrays become float arrays in ``state.hyperparams``; callables
    are schedules, evaluated at the step count each update and recorded there. Kept
    out of the state and passed to ``factory`` unchanged: the arguments named in
    ``static_args`` (by default ``mask``), and every argument whose rule in
    :data:`fundl.optim.HYPERPARAMETERS` is not a real number (``nesterov``,
    ``moment_dtype``, ``mask``, counts such as ``patience``), bools and strings.

    Everything is checked when the optimizer is built: each schedule against its
    argument's rule (with its ``bounds``), then ``factory`` itself with the given
    numbers and each schedule's value at step 0.

    ``state.hyperparams`` is a dict that also records, as static pytree data (not
    leaves: jitted steps, ``vmap``, checkpoints and their key paths are as for a plain
    dict), which names follow a schedule, so :func:`with_hyperparams` refuses to set
    one (the schedule would overwrite it at the next update). A state restored from a
    checkpoint without a template holds a plain dict and loses that record: restore
    it into ``opt.init(params)``.

    Examples:
      >>> opt = fundl.optim.inject_hyperparams(fundl.optim.adam)(learning_rate=1e-3)
      >>> state = opt.init({"w": jnp.zeros(3)})
      >>> state = fundl.optim.with_hyperparams(state, learning_rate=3e-4)  # no recompilation
      >>> round(float(state.hyperparams["learning_rate"]), 6)
      0.0003
    """
    if isinstance(factory, GradientTransformation) or not callable(factory):
        built = " (an optimizer already built: pass its factory, e.g. fundl.optim.adam)" * (
            isinstance(factory, GradientTransformation)
        )
        raise TypeError(
            "inject_hyperparams: factory must be an optimizer factory such as fundl.optim.adam "
            f"(a function of hyperparameters returning a GradientTransformation), got "
            f"{factory!r:.80}{built}"
        )
    if isinstance(static_args, str):  # tuple("mask") would be four names
        raise ValueError(
            f"inject_hyperparams: static_args must be a tuple of argument names, got the string "
            f"{static_args!r}; write ({static_args!r},)"
        )
    try:
        static_args = tuple(static_args)
    except TypeError:
        raise ValueError(
            f"inject_hyperparams: static_args must be a tuple of argument names, got {static_args!r}"
        ) from None
    for arg in static_args:
        if not isinstance(arg, str):
            raise ValueError(
                f"inject_hyperparams: static_args must be argument names (strings), got {arg!r}"
            )
    name = getattr(factory, "__name__", repr(factory))

    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        if args:
            raise TypeError(
                f"inject_hyperparams({name}): pass the hyperparameters by name, e.g. "
                f"inject_hyperparams({name})(learning_rate=1e-3), got positional arguments {args!r}"
            )
        dynamic = {
            k: v
            for k, v in kwargs.items()
            if k not in static_args and _injectable(k) and (callable(v) or _is_real(v))
        }
        schedules = {k: v for k, v in dynamic.items() if callable(v)}
        numeric = {k: v for k, v in dynamic.items() if k not in schedules}
        static = {k: v for k, v in kwargs.items() if k not in dynamic}
        for k, schedule in schedules.items():
            HYPERPARAMETERS.get(k, Range())._replace(schedule=True)(name, k, schedule)

        def values_at(count: jax.Array, hyperparams: dict[str, jax.Array]) -> dict[str, jax.Array]:
            scheduled = {
                k: jnp.asarray(s(count)).astype(jnp.result_type(float))
                for k, s in schedules.items()
            }
            return {**hyperparams, **scheduled}

        count = jnp.zeros([], jnp.int32)
        factory(**static, **values_at(count, numeric))  # check them all now, as the user gave them
        numeric = {k: jnp.asarray(v).astype(jnp.result_type(float)) for k, v in numeric.items()}

        recorded = _Hyperparams((), tuple(schedules))

        def init(params: Any) -> InjectState:
            count = jnp.zeros([], jnp.int32)
            hyperparams = values_at(count, numeric)
            inner = factory(**static, **hyperparams).init(params)
            return InjectState(count, _like(hyperparams, recorded), inner)

        def update(updates: Any, state: InjectState, params: Any = None, **extra_args: Any):
            check_state("inject_hyperparams", state, InjectState)
            hyperparams = values_at(state.count, state.hyperparams)
            inner = factory(**static, **hyperparams)
            updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
            new = _like(hyperparams, state.hyperparams)
            return updates, InjectState(safe_increment(state.count), new, inner_state)

        return GradientTransformation(init, update)

    return build


def with_hyperparams(state: InjectState, **values: Any) -> InjectState:
    """A copy of ``state`` with new hyperparameter values (kept in their dtypes and shapes).

    Each value is a number or a scalar array (a traced one under ``vmap`` too), checked
    by its name's rule in :data:`fundl.optim.HYPERPARAMETERS` (any finite number for a
    name the table does not know): ``with_hyperparams(state, learning_rate=-1.0)`` is
    refused as ``adam(-1.0)`` is.

    Args:
      state: the state of an :func:`inject_hyperparams` optimizer.
      **values: new values by name, numbers or scalar arrays.

    Returns:
      an :class:`InjectState` like ``state``, its ``hyperparams`` replaced.

    Raises:
      TypeError: if ``state`` is not an :class:`InjectState`.
      ValueError: for a name the state does not hold, a name that follows a schedule
        (its value is recomputed at every update, so a new one would be overwritten),
        or a value its rule refuses.

    Examples:
      Halve the learning rate between two steps of one jitted step function (a new
      value in the state, not a new program: it is not compiled again):

      >>> opt = fundl.optim.inject_hyperparams(fundl.optim.sgd)(learning_rate=0.2)
      >>> params, g = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
      >>> step = jax.jit(opt.update)
      >>> state = opt.init(params)
      >>> updates, state = step(g, state, params)
      >>> state = fundl.optim.with_hyperparams(state, learning_rate=0.1)
      >>> updates, state = step(g, state, params)
      >>> np.asarray(updates["w"], np.float64).round(4).tolist()
      [-0.1, -0.1]
      >>> fundl.optim.with_hyperparams(state, learning_rate=-1.0)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ValueError: with_hyperparams: learning_rate must be ...

      A scheduled hyperparameter is the schedule's to set:

      >>> lr = fundl.optim.schedules.cosine_decay(0.1, 10)
      >>> opt = fundl.optim.inject_hyperparams(fundl.optim.adam)(learning_rate=lr)
      >>> fundl.optim.with_hyperparams(opt.init(params), learning_rate=0.5)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ValueError: with_hyperparams: learning_rate follows a schedule, ...
    """
    if not isinstance(state, InjectState):
        raise TypeError(
            f"with_hyperparams: expected the state of an inject_hyperparams optimizer, got {type(state).__name__}"
        )
    unknown = sorted(set(values) - set(state.hyperparams))
    if unknown:
        raise ValueError(
            f"with_hyperparams: unknown hyperparameter(s) {unknown}; the state holds {sorted(state.hyperparams)}"
        )
    scheduled = sorted(set(values) & set(getattr(state.hyperparams, "scheduled", ())))
    if scheduled:
        one = len(scheduled) == 1
        raise ValueError(
            f"with_hyperparams: {', '.join(scheduled)} "
            + ("follows a schedule, which sets it" if one else "follow schedules, which set them")
            + " again at every update, so a new value would be overwritten; to set it by hand, "
            "build the optimizer with a number for it (inject_hyperparams(...)("
            f"{scheduled[0]}=...)) or give a schedule with the values you want"
        )
    new = dict(state.hyperparams)
    for arg, value in values.items():
        rule = HYPERPARAMETERS.get(arg, Range())._replace(schedule=False)
        value = rule("with_hyperparams", arg, value)
        old = state.hyperparams[arg]
        # a copy: the state is the caller's no longer, so a donating step that consumes
        # it cannot delete the caller's array (vmap over the caller's rates returns them)
        value = jnp.array(value, dtype=old.dtype, copy=True)
        new[arg] = jnp.broadcast_to(value, old.shape)
    return state._replace(hyperparams=_like(new, state.hyperparams))
