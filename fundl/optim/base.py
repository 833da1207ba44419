"""The optimizer contract: gradient transformations, ``chain`` and ``apply_updates``.

A gradient transformation is a pair of pure functions (optax's contract):

    init(params) -> state
    update(updates, state, params=None, **extra_args) -> (updates, new_state)

``updates`` come in as gradients and leave as the step to add to the parameters;
``state`` is a pytree of arrays (step counts included), so ``update`` can be jitted,
vmapped, scanned, donated, checkpointed and sharded. Extra keyword arguments (such as
``value=`` for :func:`fundl.optim.reduce_on_plateau`) pass through :func:`chain` to
every transformation; the ones that do not use them ignore them.

Every hyperparameter is checked when a transformation is built, by the rule its name
has in :data:`HYPERPARAMETERS` (the blocks and the named optimizers are
:func:`validated`, :func:`fundl.optim.with_hyperparams` reads the same table). The
gradients are checked against the parameters and the state leaf by leaf, shapes
included, when ``update`` is traced: nothing broadcasts silently. Optimizers update
floating-point leaves: an integer or bool parameter (which a step would truncate) is
refused by ``init``, and an integer or float0 gradient by ``update``.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import check_bool, check_int, check_number, is_floating_dtype
from fundl.tree import accumulation_dtype, check_mask, check_same_shapes, check_same_structure

__all__ = [
    "GradientTransformation",
    "ScalarOrSchedule",
    "apply_updates",
    "chain",
    "identity",
    "stateless",
    "EmptyState",
    "MomentDtype",
    "Range",
    "HYPERPARAMETERS",
    "validated",
]

ScalarOrSchedule = Any
"""A float (or scalar array), or a schedule ``step -> value``."""

MomentDtype = Any
"""Where moment estimates live: None (the default: the parameter's dtype, at least
float32, so bfloat16 parameters get float32 moments), "param" (the parameter's own
dtype), or a floating dtype."""


class GradientTransformation(NamedTuple):
    """A pair of pure functions: ``init(params) -> state`` and
    ``update(updates, state, params=None, **extra) -> (updates, state)``.

    ``params`` is any pytree of arrays; ``updates`` come in as gradients, a pytree with
    the structure and shapes of ``params``, and leave as the step u to add to them
    (p ← p + u, :func:`apply_updates`). ``state`` is a pytree of arrays: a NamedTuple
    such as :class:`fundl.optim.AdamState`, or :class:`EmptyState` for none.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra) -> (updates, state)``.

    Examples:
      >>> opt = fundl.optim.sgd(0.1)  # p ← p − 0.1·g
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([0.5, -1.0])}, state, params)
      >>> np.asarray(updates["w"], np.float64).round(4).tolist()
      [-0.05, 0.1]
    """

    init: Callable[..., Any]
    update: Callable[..., Any]


class EmptyState(NamedTuple):
    """The state of a stateless transformation: no fields, no arrays.

    Examples:
      >>> fundl.optim.clip(1.0).init({"w": jnp.zeros(3)})
      EmptyState()
    """


# --- hyperparameter rules ----------------------------------------------------------


class Range(NamedTuple):
    """The rule of a real hyperparameter: a finite number in an interval.

    Python and numpy numbers (not bools, not strings) and scalar arrays pass (a traced
    one, inside ``vmap`` or ``jit``, is checked by dtype only); with ``schedule=True``
    also a schedule, whose ``bounds`` must lie in the interval. Calling the rule
    checks a value and returns it (a number as a Python float); ``note``, if given,
    ends the error message in parentheses (why the interval is what it is).

    Examples:
      >>> beta = fundl.optim.Range(0.0, 1.0, high_open=True)  # [0, 1), the rule of b1
      >>> beta("adam", "b1", 0.9)
      0.9
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    schedule: bool = False
    note: str = ""

    def __call__(self, name: str, arg: str, value: Any) -> Any:
        try:
            return check_number(
                name,
                arg,
                value,
                low=self.low,
                high=self.high,
                low_open=self.low_open,
                high_open=self.high_open,
                array=True,
                schedule=self.schedule,
            )
        except ValueError as error:
            if not self.note:
                raise
            raise ValueError(f"{error} ({self.note})") from None


def _check_moment_dtype(name: str, arg: str, moment_dtype: Any) -> MomentDtype:
    if moment_dtype is None or (isinstance(moment_dtype, str) and moment_dtype == "param"):
        return moment_dtype
    if not is_floating_dtype(moment_dtype):
        raise ValueError(
            f"{name}: {arg} must be None, 'param' or a floating dtype, got {moment_dtype!r}"
        )
    return moment_dtype


def _check_transformation(name: str, arg: str, value: Any) -> GradientTransformation:
    if not isinstance(value, GradientTransformation):
        raise TypeError(f"{name}: {arg} must be a GradientTransformation, got {value!r}")
    return value


_FRACTION = Range(0.0, 1.0, high_open=True)  # a decay β in [0, 1)
_NON_NEGATIVE = Range(0.0)
# ε of m/(√v + ε): at least float32's smallest normal number, 1.2e-38. A smaller ε
# rounds to 0 (or to a subnormal, which XLA flushes to 0) where the division is
# computed, and an unused parameter's zero gradient then gives 0/0 = NaN.
_EPS = Range(
    float(np.finfo(np.float32).tiny),
    note="ε must be at least float32's smallest normal number, 1.2e-38: a smaller one rounds "
    "to 0 in float32, and a zero gradient then gives 0/0 = NaN",
)

Rule = Callable[[str, str, Any], Any]
"""``rule(function_name, arg, value) -> value``, raising ``ValueError`` for a bad value."""

HYPERPARAMETERS: Mapping[str, Rule] = types.MappingProxyType(
    {
        # real hyperparameters (Range: numbers, scalar arrays; the learning rate also schedules)
        "learning_rate": Range(0.0, schedule=True),
        "momentum": _FRACTION,
        "beta": _FRACTION,
        "decay": _FRACTION,
        "b1": _FRACTION,
        "b2": _FRACTION,
        "eps": _EPS,
        "weight_decay": _NON_NEGATIVE,
        "lam": _NON_NEGATIVE,
        "initial_accumulator_value": _NON_NEGATIVE,
        "max_abs": _NON_NEGATIVE,
        "max_norm": _NON_NEGATIVE,
        "step_size": Range(),
        "factor": Range(0.0, 1.0, low_open=True, high_open=True),
        "rtol": _NON_NEGATIVE,
        "atol": _NON_NEGATIVE,
        "min_scale": Range(0.0, 1.0),
        # counts
        "k": check_int,
        "patience": check_int,
        "accumulation_size": check_int,
        "cooldown": functools.partial(check_int, low=0),
        # options
        "nesterov": check_bool,
        "centered": check_bool,
        "moment_dtype": _check_moment_dtype,
        "mask": check_mask,
        "inner": _check_transformation,
    }
)
"""The rule of every hyperparameter of ``fundl.optim``, by argument name (read-only).

A rule is ``rule(function_name, arg, value) -> value`` and raises ``ValueError``
naming the function, the argument, the value and the rule
(``HYPERPARAMETERS["b1"]("adam", "b1", 1.0)`` refuses 1.0). A :class:`Range` is a real
hyperparameter: only those can live in an :func:`fundl.optim.inject_hyperparams`
state (the others stay static), and :func:`fundl.optim.with_hyperparams` checks new
values with them.
"""


def validated(fn: Callable | None = None, /, **rules: Rule) -> Any:
    """Check a transformation factory's arguments by name when it is called.

    ``@validated`` above ``def adam(learning_rate, b1=0.9, ...)`` checks every argument
    the caller passes by its rule in :data:`HYPERPARAMETERS` (``@validated(eps=rule)``
    gives one argument another rule), with errors naming the factory, and calls it with
    the checked values (numbers as Python floats). Every argument must have a rule:
    a factory with an unknown one fails when it is defined, not when it is used.

    The transformation it returns also refuses, naming the factory and the key path, an
    integer or bool parameter in ``init`` and an integer or float0 gradient (what
    ``jax.grad(..., allow_int=True)`` gives an integer parameter) in ``update``: a step
    would truncate it (0.1·5 added to an int32 is 0). The check reads dtypes only, so
    under ``jit`` it runs when the step is traced.

    Args:
      fn: the factory, ``fn(**hyperparameters) -> GradientTransformation`` (omitted
        when ``validated(...)`` is called with rules only).
      **rules: rules for some arguments, instead of theirs in :data:`HYPERPARAMETERS`.

    Returns:
      the factory, checking its arguments on every call.

    Raises:
      TypeError: when the factory is defined, if an argument has no rule; when it is
        called, for arguments its signature does not take (naming the factory).
      ValueError: when it is called, for a value its argument's rule refuses.

    Examples:
      >>> @fundl.optim.validated
      ... def slow_sgd(learning_rate):
      ...     return fundl.optim.sgd(learning_rate / 10)
      >>> slow_sgd(-1.0)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ValueError: slow_sgd: learning_rate must be ...
      >>> slow_sgd(0.1).init({"w": jnp.zeros(2), "steps": jnp.array(3)})  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ValueError: slow_sgd: parameter params['steps'] is int32; optimizers update ...
    """
    if fn is None:
        return functools.partial(validated, **rules)
    signature = inspect.signature(fn)
    rules = {arg: rules.get(arg, HYPERPARAMETERS.get(arg)) for arg in signature.parameters}
    missing = [arg for arg, rule in rules.items() if rule is None]
    if missing:
        raise TypeError(f"validated: {fn.__name__} has arguments without a rule: {missing}")

    @functools.wraps(fn)
    def build(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:  # Python's message names neither the factory nor its form
            raise TypeError(f"{fn.__name__}: {error}; it takes {fn.__name__}{signature}") from None
        for arg, value in bound.arguments.items():
            bound.arguments[arg] = rules[arg](fn.__name__, arg, value)
        built = fn(*bound.args, **bound.kwargs)
        if isinstance(built, GradientTransformation):
            return _floating_only(fn.__name__, built)
        return built

    return build


_NOT_FLOATING = (
    "optimizers update floating-point leaves: keep integer values in the model state or "
    "outside the parameters"
)


def _check_floating(name: str, tree: Any, what: str) -> None:
    """Refuse a leaf of ``tree`` that is not inexact (integer, bool, float0): dtypes only."""
    for i, leaf in enumerate(jax.tree.leaves(tree)):
        path = None
        kind = "parameter params" if what == "params" else "gradient grads"
        # a number is a parameter (a float scalar); a gradient is an array, as jax.grad gives
        number = what == "params" and isinstance(leaf, numbers.Number)
        if not (hasattr(leaf, "dtype") and hasattr(leaf, "astype")) and not number:
            path = jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(tree)[0][i][0])
            raise ValueError(
                f"{name}: {kind}{path} is a {type(leaf).__name__} ({leaf!r:.40}), not an array; "
                f"{what} must be a pytree of arrays"
            )
        dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            path = jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(tree)[0][i][0])
            if dtype == jax.dtypes.float0:
                shown = "float0 (jax.grad(..., allow_int=True) gives it for an integer parameter)"
            else:
                shown = np.dtype(dtype).name
            raise ValueError(f"{name}: {kind}{path} is {shown}; {_NOT_FLOATING}")


def _floating_only(name: str, t: GradientTransformation) -> GradientTransformation:
    """``t``, refusing integer, bool and float0 leaves: params at init, gradients at update."""

    def init(params: Any) -> Any:
        _check_floating(name, params, "params")
        return t.init(params)

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any):
        _check_floating(name, updates, "grads")
        if params is not None:
            check_same_shapes(name, updates, params, "grads", "params")
        return t.update(updates, state, params, **extra_args)

    return GradientTransformation(init, update)


# --- the contract ------------------------------------------------------------------


def stateless(fn: Callable[[Any, Any], Any]) -> GradientTransformation:
    """A transformation without state from ``fn(updates, params) -> updates``.

    u ← fn(u, p); its state is :class:`EmptyState` (so :func:`chain` keeps none for it).

    Args:
      fn: ``fn(updates, params) -> updates``, pytrees like the parameters (``params``
        is None when ``update`` is called without them).

    Returns:
      a :class:`GradientTransformation`.

    Examples:
      >>> double = fundl.optim.stateless(lambda u, p: jax.tree.map(lambda x: 2 * x, u))
      >>> updates, _ = double.update({"w": jnp.array([1.0, -3.0])}, double.init(None))
      >>> print(updates["w"])
      [ 2. -6.]
    """

    if not callable(fn):
        raise TypeError(
            f"stateless: fn must be a function fn(updates, params) -> updates, got {fn!r}"
        )

    def init(params: Any) -> EmptyState:
        del params
        return EmptyState()

    def update(updates: Any, state: EmptyState, params: Any = None, **extra_args: Any):
        return fn(updates, params), state

    return GradientTransformation(init, update)


def identity() -> GradientTransformation:
    """Leave updates unchanged: u ← u.

    Returns:
      a stateless :class:`GradientTransformation`.

    Examples:
      >>> opt = fundl.optim.identity()
      >>> updates, _ = opt.update({"w": jnp.array([1.0, -3.0])}, opt.init(None))
      >>> print(updates["w"])
      [ 1. -3.]
    """
    return stateless(lambda updates, params: updates)


def _is_stateless(t: GradientTransformation) -> bool:
    """Whether ``t`` keeps no state: its state for an empty pytree is ``EmptyState()``."""
    try:
        return isinstance(t.init({}), EmptyState)
    except Exception:  # noqa: BLE001 - an init that needs real params keeps state
        return False


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transformations one after another: ``chain(clip_by_global_norm(1.0), adam(1e-3))``.

    Updates flow through each transformation in order. The state holds the states of
    the members that keep one (stateless members, such as clipping or a constant
    learning rate, are recognised when the chain is built): that state itself when
    one member keeps state — so ``adam(1e-3).init(params)`` is an ``AdamState`` —
    a tuple of them, in order, when several do, and ``EmptyState()`` when none does.
    Integer, bool and float0 leaves are refused as by :func:`validated` (parameters in
    ``init``, gradients in ``update``).
    Every node a compiled step's arguments carry costs host time on each call, which a
    small, dispatch-bound model feels (an extra level of nesting around Adam's state
    cost 10–20% of a 20 µs step). When ``params`` are given, the gradients must match
    them leaf by leaf: the first difference in structure or shape raises a
    ``ValueError`` naming its key path (and both shapes).

    Args:
      *transforms: the :class:`GradientTransformation` s, in the order updates go
        through them.

    Returns:
      a :class:`GradientTransformation`; extra keyword arguments of ``update`` (such as
      ``value=``) reach every member.

    Examples:
      Clip the gradient [3, 4] (norm 5) to norm 1, then step with α = 0.1:

      >>> opt = fundl.optim.chain(fundl.optim.clip_by_global_norm(1.0), fundl.optim.sgd(0.1))
      >>> params = {"w": jnp.array([0.0, 0.0])}
      >>> updates, state = opt.update({"w": jnp.array([3.0, 4.0])}, opt.init(params), params)
      >>> np.asarray(updates["w"], np.float64).round(4).tolist()
      [-0.06, -0.08]
      >>> type(fundl.optim.chain(fundl.optim.clip(1.0), fundl.optim.adam(1e-3)).init(params))
      <class 'fundl.optim.scaling.AdamState'>
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise TypeError(f"chain: argument {i} is not a GradientTransformation, got {t!r}")
    stateful = [i for i, t in enumerate(transforms) if not _is_stateless(t)]

    def init(params: Any) -> Any:
        _check_floating("chain", params, "params")  # also when no member keeps state
        states = tuple(transforms[i].init(params) for i in stateful)
        return _pack(states)

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any):
        _check_floating("chain", updates, "grads")
        if params is not None:
            check_same_shapes("chain", updates, params, "grads", "params")
        states = dict(zip(stateful, _unpack(state, len(stateful))))
        for i, t in enumerate(transforms):
            updates, new = t.update(updates, states.get(i, EmptyState()), params, **extra_args)
            if i in states:
                states[i] = new
        return updates, _pack(tuple(states[i] for i in stateful))

    return GradientTransformation(init, update)


def _pack(states: tuple) -> Any:
    if not states:
        return EmptyState()
    return states[0] if len(states) == 1 else states


def _unpack(state: Any, n: int) -> tuple:
    if n == 0:
        return ()
    if n == 1:
        return (state,)
    if not (isinstance(state, tuple) and len(state) == n):
        raise ValueError(f"chain: expected a tuple of {n} states, got {type(state).__name__}")
    return state


def apply_updates(params: Any, updates: Any) -> Any:
    """params + updates, leaf by leaf, each result in its parameter's dtype.

    p ← p + u. The sum is taken in the wider of the two dtypes (a float32 update to a
    bfloat16 parameter is added in float32, then rounded once). Every update must have
    its parameter's shape: nothing broadcasts.

    Args:
      params: a pytree of arrays.
      updates: a pytree with the structure and the shapes of ``params`` (the output of
        ``update``).

    Returns:
      the new parameters, like ``params`` (dtypes included).

    Raises:
      ValueError: naming the first key path where the structures or the shapes differ.

    Examples:
      >>> params = {"w": jnp.array([1.0, 2.0], jnp.bfloat16)}
      >>> new = fundl.optim.apply_updates(params, {"w": jnp.array([-0.5, 0.25])})
      >>> print(new["w"], new["w"].dtype)
      [0.5 2.25] bfloat16
    """
    check_same_shapes("apply_updates", params, updates, "params", "updates")
    return jax.tree.map(_add, params, updates)


def _add(p: jax.Array, u: jax.Array) -> jax.Array:
    if jnp.result_type(p) == jnp.result_type(u):
        return p + u
    dtype = accumulation_dtype((p, u))
    return (p.astype(dtype) + u.astype(dtype)).astype(jnp.result_type(p))


# --- helpers the transformations share (package-internal: not in fundl.optim) -----


def value_at(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    """A hyperparameter's value at step ``count``: call a schedule, pass a number through."""
    return value(count) if callable(value) else value


def in_dtype(value: Any, dtype: Any) -> Any:
    """A hyperparameter ready to meet arrays of ``dtype``.

    A Python number stays as it is (weakly typed: it takes the array's dtype, and
    1 − β is computed exactly in float64 first); an array (an injected or swept
    hyperparameter, a schedule's value) is cast, since strict dtype promotion would
    refuse float32 meeting bfloat16 or float64.
    """
    if type(value) in (int, float):  # not numpy scalars: JAX types those strongly
        return value
    return jnp.asarray(value).astype(dtype)


def scaled(u: jax.Array, factor: Any) -> jax.Array:
    """u · factor in u's dtype, multiplied in float32 at least and rounded once.

    A Python number (the learning rate) meeting a bfloat16 or float16 u is not first
    rounded to that dtype: 3e-4 in bfloat16 is 2.995e-4, every step 0.18% short. An
    array factor is multiplied in the wider of the two dtypes.
    """
    if type(factor) in (int, float):
        return (u.astype(accumulation_dtype(u)) * factor).astype(u.dtype)
    dtype = accumulation_dtype((u, factor))
    return (u.astype(dtype) * jnp.asarray(factor).astype(dtype)).astype(u.dtype)


def _moment_dtype(leaf: Any, moment_dtype: MomentDtype) -> Any:
    if moment_dtype is None:
        return accumulation_dtype(leaf)
    if isinstance(moment_dtype, str):
        return jnp.result_type(leaf)
    return jnp.dtype(moment_dtype)


def moments_like(params: Any, moment_dtype: MomentDtype) -> Any:
    """Zeros shaped like ``params``, each in its moment dtype."""
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _moment_dtype(p, moment_dtype)), params)


_FOREIGN_STATE = "; the state may belong to another model: init the optimizer with these params"


def check_against_state(name: str, updates: Any, state_tree: Any) -> None:
    """Gradients and a per-parameter state tree must match leaf by leaf, shapes included."""
    check_same_shapes(name, updates, state_tree, "grads", "optimizer state", hint=_FOREIGN_STATE)


def check_structure_against_state(name: str, updates: Any, state_tree: Any) -> None:
    """As :func:`check_against_state` for a state with one scalar per leaf (structure only)."""
    check_same_structure(name, updates, state_tree, "grads", "optimizer state", hint=_FOREIGN_STATE)


def check_state(name: str, state: Any, kind: type) -> None:
    """``state`` must be the ``kind`` (a NamedTuple) this transformation's ``init`` gives."""
    if not isinstance(state, kind):
        raise TypeError(
            f"{name}: state must be the {kind.__name__} that {name}'s init(params) returns, got "
            f"{type(state).__name__}; pass the state from init (or from the previous update) "
            "of this same optimizer"
        )


def safe_increment(count: jax.Array) -> jax.Array:
    """count + 1, saturating at the int32 maximum instead of wrapping to negative."""
    return jnp.where(count < jnp.iinfo(jnp.int32).max, count + 1, count)
