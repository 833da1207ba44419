"""Checks shared by every module that validates hyperparameters when they are given."""

from __future__ import annotations

import operator
from typing import Any


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
