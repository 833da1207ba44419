"""Argument checks, in one place: every public function checks what enters with these.

Each check names the function and the argument, shows the value it got and states the
rule, so a bad hyperparameter fails where it is given — when an optimizer, schedule or
layer is built — and never deep inside a traced step. All of them raise ``ValueError``
(``check_floating``, a dtype check on data, raises ``TypeError``).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_int",
    "check_number",
    "check_choice",
    "check_bool",
    "check_floating",
    "check_param_dtype",
    "is_floating_dtype",
    "check_initializers",
    "check_label_range",
    "is_key",
    "as_key",
]


def check_int(name: str, arg: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as a Python int in [low, high]; else ``ValueError`` naming the function and argument.

    Python and numpy integers pass; bools, floats (even 2.0) and strings do not.
    """
    ok = not isinstance(value, bool)
    if ok:
        try:
            value = operator.index(value)
            ok = value >= low and (high is None or value <= high)
        except TypeError:
            ok = False
    if not ok:
        if high is not None:
            rule = f"an integer in [{low}, {high}]"
        else:
            rule = {0: "a non-negative integer", 1: "a positive integer"}.get(
                low, f"an integer >= {low}"
            )
        raise ValueError(f"{name}: {arg} must be {rule}, got {value!r}")
    return value


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "(" if low_open or low is None else "["
    hi = ")" if high_open or high is None else "]"
    left = "-inf" if low is None else f"{low:g}"
    right = "inf" if high is None else f"{high:g}"
    return f"{lo}{left}, {right}{hi}"


def _in_range(
    x: np.ndarray, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    ok = np.isfinite(x)
    if low is not None:
        ok &= x > low if low_open else x >= low
    if high is not None:
        ok &= x < high if high_open else x <= high
    return bool(np.all(ok))


def _describe(value: Any) -> str:
    if isinstance(value, (str, bytes, bool)):
        return f"{value!r} (a {type(value).__name__})"
    if isinstance(value, (jax.Array, np.ndarray)):
        return f"an array of dtype {value.dtype} and shape {tuple(value.shape)}"
    return repr(value)


def check_number(
    name: str,
    arg: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    array: bool = False,
    schedule: bool = False,
) -> Any:
    """Check a real hyperparameter: its type, that it is finite, and that it lies in range.

    Accepted: Python and numpy real numbers (not bool, not str); with ``array=True`` also
    scalar arrays (a concrete one is checked by value; a traced one — inside ``vmap`` or
    ``jit`` — only by dtype); with ``schedule=True`` also a schedule ``step -> value``.
    A fundl schedule carries ``bounds`` (its lowest and highest value over all steps),
    and both must lie in range; any other callable is evaluated at step 0 and that
    value checked.

    Returns:
      a Python float for a number; arrays and schedules unchanged.

    Raises:
      ValueError: naming ``name`` and ``arg``, the value and the rule.
    """
    interval = _interval(low, high, low_open, high_open)
    others = [kind for kind, ok in (("a scalar array", array), ("a schedule", schedule)) if ok]
    rule = f"a finite number in {interval}"
    if others:
        rule += f", or {' or '.join(others)} with values there"

    def fail(got: str, hint: str = "") -> ValueError:
        return ValueError(f"{name}: {arg} must be {rule}; got {got}{hint}")

    if isinstance(value, bool) or isinstance(value, np.bool_):
        raise fail(repr(value), " (a bool, not a number)")
    if isinstance(value, (str, bytes)):
        try:
            hint = f"; pass the number {float(value)!r}, not the string"
        except ValueError:
            hint = ""
        raise fail(_describe(value), hint)
    if isinstance(value, numbers.Real):
        if not _in_range(np.float64(value), low, high, low_open, high_open):
            raise fail(repr(value))
        return float(value)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        real = not is_key(value) and (
            jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
        )
        if not array or not real:
            raise fail(_describe(value))
        if np.ndim(value) != 0:
            raise fail(_describe(value), "; pass a scalar")
        if not isinstance(value, jax.core.Tracer):
            x = np.asarray(value, np.float64)
            if not _in_range(x, low, high, low_open, high_open):
                raise fail(f"an array holding {x.item():.7g}")
        return value
    if callable(value):
        if not schedule:
            raise fail(f"the callable {value!r}", " (this argument takes no schedule)")
        return _check_schedule(name, arg, value, fail, low, high, low_open, high_open)
    raise fail(_describe(value))


def _check_schedule(name, arg, value, fail, low, high, low_open, high_open) -> Any:
    bounds = getattr(value, "bounds", None)
    if bounds is not None:
        lowest, highest = (float(b) for b in bounds)
        label = getattr(value, "__name__", repr(value))
        # A schedule may grow without bound (an LR range test) where the range is open above.
        unbounded_ok = highest == math.inf and high is None
        for which, v in (("lowest", lowest), ("highest", highest)):
            if which == "highest" and unbounded_ok:
                continue
            if not _in_range(np.float64(v), low, high, low_open, high_open):
                raise fail(f"the schedule {label}, whose {which} value is {v!r}")
        return value
    try:
        first = np.asarray(jax.device_get(value(0)), np.float64)
    except Exception as error:  # noqa: BLE001 - any failure of the schedule is the finding
        raise ValueError(
            f"{name}: {arg} is callable, so it is taken as a schedule step -> value, but "
            f"{arg}(0) raised {type(error).__name__}: {error}"
        ) from error
    if first.ndim != 0 or not _in_range(first, low, high, low_open, high_open):
        raise fail(f"a schedule whose value at step 0 is {first.tolist()!r}")
    return value


def check_choice(name: str, arg: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; else ``ValueError`` listing every allowed value."""
    try:
        ok = value in tuple(choices)
    except TypeError:  # an unhashable or uncomparable value
        ok = False
    if not ok:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: {arg} must be one of {allowed}; got {value!r}")
    return value


def check_bool(name: str, arg: str, value: Any) -> bool:
    """``value`` if it is a Python or numpy bool; else ``ValueError`` (1 and "yes" are not bools)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: {arg} must be True or False, got {_describe(value)}")
    return bool(value)


def is_floating_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` names a floating dtype (``jnp.float32``, ``"bfloat16"``, ...)."""
    try:
        return bool(jnp.issubdtype(jnp.dtype(dtype), jnp.floating))
    except TypeError:
        return False


def check_param_dtype(name: str, dtype: Any) -> None:
    """A layer's ``param_dtype`` must be a floating dtype; else ``ValueError`` naming the layer."""
    if not is_floating_dtype(dtype):
        raise ValueError(
            f"{name}: param_dtype must be a floating dtype (e.g. jnp.float32), got {dtype!r}"
        )


def check_initializers(name: str, layer: Any, *args: str) -> None:
    """The layer's fields ``args`` must be initializer functions; else ``TypeError``."""
    for arg in args:
        if not callable(getattr(layer, arg)):
            raise TypeError(
                f"{name}: {arg} must be an initializer function, got {getattr(layer, arg)!r}"
            )


def _not_an_array(x: Any) -> str | None:
    """What ``x`` is when it is neither an array nor a real number (else None): None, a
    list or a dict would reach ``jnp`` and fail with a message naming no fundl function."""
    if isinstance(x, bool) or not isinstance(x, (jax.Array, np.ndarray, np.generic, numbers.Real)):
        hint = "; pass jnp.asarray(...)" if isinstance(x, (list, tuple)) else ""
        return f"{type(x).__name__}{hint}"
    return None


def check_array(name: str, what: str, x: Any) -> None:
    """``TypeError`` unless ``x`` is an array or a real number."""
    got = _not_an_array(x)
    if got is not None:
        raise TypeError(f"{name}: {what} must be an array, got {got}")


def check_floating(name: str, expected: str, x: Any) -> None:
    """``TypeError(f"{name}: expected {expected}, got dtype ...")`` unless x is floating
    (naming its type when it is no array at all)."""
    got = _not_an_array(x)
    if got is not None:
        raise TypeError(f"{name}: expected {expected}, got {got}")
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name}: expected {expected}, got dtype {dtype}")


def check_label_range(name: str, labels: Any, n_classes: int, *, what: str = "labels") -> None:
    """Concrete integer labels must be class indices in [0, n_classes); else ``ValueError``.

    Traced labels (inside ``jit``) cannot be read and are not checked; the callers say
    what such a label gives there.
    """
    if isinstance(labels, jax.core.Tracer) or not np.size(labels):
        return
    values = np.asarray(labels)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"{name}: {what} must be in [0, {n_classes}) for {n_classes} classes, "
            f"got values in [{low}, {high}]"
        )


def check_unit_interval(name: str, what: str, values: Any, remedy: str) -> None:
    """Concrete values must lie in [0, 1] (NaN passes: NaN in gives NaN out); else
    ``ValueError`` naming ``name``, ``what``, the range found and the ``remedy``.

    Probabilities outside [0, 1] are most likely logits, which clipping or a 0.5
    threshold would score without a word. Traced values (under jit) cannot be read and
    are not checked.
    """
    if isinstance(values, jax.core.Tracer) or not np.size(values):
        return
    x = np.asarray(values, np.float64)
    outside = (x < 0) | (x > 1)
    if outside.any():
        raise ValueError(
            f"{name}: {what} must lie in [0, 1], got values in [{np.nanmin(x):.4g}, "
            f"{np.nanmax(x):.4g}] ({int(outside.sum())} outside); {remedy}"
        )


def is_key(x: Any) -> bool:
    """Whether ``x`` is a typed PRNG key array (``jax.random.key``)."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def as_single_key(name: str, key: Any) -> jax.Array:
    """:func:`as_key`, refusing a batch of keys (``jax.random`` would fail on it unnamed)."""
    key = as_key(name, key)
    if key.shape != (() if is_key(key) else (2,)):
        raise ValueError(
            f"{name}: key must be a single PRNG key, got a batch of keys of shape "
            f"{key.shape}; pass one key (jax.vmap over keys for several)"
        )
    return key


def as_key(name: str, key: Any, *, arg: str = "key") -> jax.Array:
    """A PRNG key from what a user passes: a typed key, a raw ``uint32[2]`` key or an int seed.

    An int seed ``s`` becomes ``jax.random.key(s)``, so ``model.init(0)`` works as
    ``model.init(jax.random.key(0))`` does. Anything else raises ``ValueError``.
    """
    if is_key(key):
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.key(int(key))
    if (
        isinstance(key, (jax.Array, np.ndarray))
        and key.dtype == np.uint32
        and key.shape[-1:] == (2,)
    ):
        return key  # a raw key from jax.random.PRNGKey
    raise ValueError(
        f"{name}: {arg} must be a PRNG key (jax.random.key(seed)) or an int seed, "
        f"got {_describe(key)}"
    )
