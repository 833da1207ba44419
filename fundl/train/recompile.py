"""The recompilation watch: a compiled step that says why it was compiled again.

``watched_jit(fn, ...)`` is ``jax.jit(fn)`` that counts its traces in ``.traces`` and,
when traced again after its first use — a changed shape or dtype, a Python number
where an array was — warns once with a :class:`RecompilationWarning` naming the
argument that changed, at the user's line. The jitted function itself is returned:
no Python wrapper between the caller and JAX's C++ dispatch, which a step of a few
microseconds would feel.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax

__all__ = ["RecompilationWarning", "watched_jit"]


class RecompilationWarning(UserWarning):
    """A compiled step was traced (and compiled) again after its first use.

    The message names the argument whose shape, dtype or structure changed. A smaller
    final batch of an epoch does not warn (nor does any batch size of an eval step).

    Examples:
      >>> import warnings
      >>> def loss_fn(params, batch):
      ...     return fundl.losses.mse(batch["x"] @ params["W"].T, batch["y"])
      >>> params, opt = {"W": jnp.zeros((1, 2))}, fundl.optim.sgd(0.1)
      >>> step = fundl.train.make_train_step(loss_fn, opt)
      >>> opt_state = opt.init(params)
      >>> small, large = ({"x": jnp.ones((n, 2)), "y": jnp.ones((n, 1))} for n in (4, 8))
      >>> params, opt_state, _ = step(params, opt_state, small)
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     params, opt_state, _ = step(params, opt_state, large)
      >>> print(caught[0].message)  # doctest: +ELLIPSIS
      train step is being compiled again (trace 2) because batch['x'] changed from
      float32[4,2] to float32[8,2]. ...
    """


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


def caller_stacklevel() -> int:
    """The stacklevel of the first frame outside JAX and fundl.train: the user's call."""
    here = os.path.dirname(__file__)
    frame, level = sys._getframe(1), 1
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (
            os.path.dirname(filename) == here
            or f"{os.sep}jax{os.sep}" in filename
            or f"{os.sep}jaxlib{os.sep}" in filename
        ):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def _batch_size_change(batch_name: str | None, old: Any, new: Any, path: str, any_size: bool):
    """A leaf of the batch whose only change is its leading (batch) dimension.

    A smaller final batch of an epoch is expected of a train step; an eval step expects
    any batch size (each dataset has its own).
    """
    if batch_name is None or not path.startswith(batch_name) or old is None or new is None:
        return False
    same_rest = (
        len(old.shape) == len(new.shape) >= 1
        and old.shape[1:] == new.shape[1:]
        and old.dtype == new.dtype
    )
    return same_rest and (any_size or new.shape[0] < old.shape[0])


def _leaf_paths(signature: list, start: int) -> list[str]:
    """The leaf paths of the argument whose structure entry is ``signature[start]``."""
    paths = []
    for path, _, aval in signature[start + 1 :]:
        if aval is None:  # the next argument's structure
            break
        paths.append(path)
    return paths


def _leaf_change(first: list, now: list, start: int) -> str:
    """How the leaves of one argument differ: the first added and removed, or the containers."""
    before, after = _leaf_paths(first, start), _leaf_paths(now, start)
    seen_before, seen_after = set(before), set(after)
    added = [p for p in after if p not in seen_before]
    removed = [p for p in before if p not in seen_after]
    parts = [
        f"{what} {', '.join(paths[:3])}{' and more' if len(paths) > 3 else ''}"
        for what, paths in (("added", added), ("removed", removed))
        if paths
    ]
    if parts:
        return "; ".join(parts)
    a, b = (
        text if len(text) <= 120 else text[:117] + "..."
        for text in (first[start][1], now[start][1])
    )
    return f"same leaves, other containers: {a} became {b}"


class _TraceWatch:
    """Counts a compiled step's traces and warns, once, when it is traced again."""

    def __init__(
        self, name: str, arg_names: Sequence[str], batch_arg: str | None, any_batch_size: bool
    ) -> None:
        self.name = name
        self.traces = 0
        self._arg_names = tuple(arg_names)
        self._batch_arg = batch_arg
        self._any_batch_size = any_batch_size
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
            stacklevel=caller_stacklevel(),
        )

    def _change(self, first: list, now: list) -> str | None:
        # each argument's tree structure comes before its leaves, so a leaf added to or
        # removed from an argument is found here, at that argument, before the lengths
        for i, ((path_a, text_a, aval_a), (path_b, text_b, aval_b)) in enumerate(zip(first, now)):
            if path_a != path_b:
                return f"the structure of {path_a.split('[')[0]} changed ({path_a} became {path_b})"
            if text_a == text_b:
                continue
            if aval_a is None:
                return f"the structure of {path_a} changed ({_leaf_change(first, now, i)})"
            if _batch_size_change(self._batch_arg, aval_a, aval_b, path_a, self._any_batch_size):
                continue
            hint = ""
            if getattr(aval_a, "weak_type", False) != getattr(aval_b, "weak_type", False):
                hint = (
                    " ('~' marks a weak type: a Python number where an array was, or the reverse)"
                )
            return f"{path_a} changed from {text_a} to {text_b}{hint}"
        if len(first) != len(now):
            return f"the number of arguments changed ({len(first)} became {len(now)})"
        return None


def watched_jit(
    fn: Callable[..., Any],
    *,
    name: str,
    arg_names: Sequence[str],
    batch_arg: str | None,
    any_batch_size: bool = False,
    donate_argnums: tuple[int, ...] = (),
) -> Any:
    """``jax.jit(fn)`` that counts its traces in ``.traces`` and warns when traced again.

    Args:
      fn: the step.
      name: how the warning calls it ("train step").
      arg_names: names of the leading positional arguments, for the message.
      batch_arg: the argument holding the batch, whose leading dim may shrink (a final
        partial batch) without a warning; None for none.
      any_batch_size: the batch's leading dim may change either way (an eval step, run
        on datasets of different sizes).
      donate_argnums: arguments whose buffers the step may reuse.
    """
    watch = _TraceWatch(name, arg_names, batch_arg, any_batch_size)

    def traced(*args: Any) -> Any:
        watch.on_trace(args)
        jitted.traces = watch.traces
        return fn(*args)

    traced.__name__ = traced.__qualname__ = name.replace(" ", "_")
    jitted = jax.jit(traced, donate_argnums=donate_argnums)
    jitted.traces = 0
    return jitted
