"""Checks shared by every module that validates hyperparameters when they are given."""

from __future__ import annotations

import operator
from typing import Any

import jax.numpy as jnp


def check_int(name: str, arg: str, value: Any, *, low: int = 1) -> int:
    """``value`` as a Python int ≥ ``low``; else ``ValueError`` naming the function and argument.

    Python and numpy integers pass; bools, floats (even 2.0) and strings do not.
    """
    ok = not isinstance(value, bool)
    if ok:
        try:
            value = operator.index(value)
            ok = value >= low
        except TypeError:
            ok = False
    if not ok:
        rule = {0: "a non-negative integer", 1: "a positive integer"}.get(
            low, f"an integer >= {low}"
        )
        raise ValueError(f"{name}: {arg} must be {rule}, got {value!r}")
    return value


def check_floating(name: str, expected: str, x: Any) -> None:
    """``TypeError(f"{name}: expected {expected}, got dtype ...")`` unless x is floating."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name}: expected {expected}, got dtype {dtype}")
