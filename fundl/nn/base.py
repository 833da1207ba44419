"""What every layer shares: the check that parameters fit the layer's config.

A layer is a frozen, hashable config with ``init(key, input_shape) -> params`` and
``apply(params, x)``. Parameters are a plain pytree, so nothing stops a user from
passing another model's: :func:`check_params` compares them, when ``apply`` is traced,
with what the layer's own ``init`` would make for this input (``jax.eval_shape``, no
arrays created, cached per layer and input shape) and names the first leaf that
differs. Shapes are static, so the check costs nothing inside a compiled step.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

__all__ = ["check_params", "expected_params"]


def _example_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One example's shape: the batch dim dropped (``init`` takes it with or without)."""
    return shape[1:] if len(shape) > 1 else shape


@functools.lru_cache(maxsize=1024)
def _expected(layer: Any, example_shape: tuple[int, ...]) -> Any:
    return jax.eval_shape(lambda key: layer.init(key, example_shape), jax.random.key(0))


def expected_params(layer: Any, input_shape: tuple[int, ...]) -> Any:
    """The parameters' structure and shapes (``jax.ShapeDtypeStruct`` leaves) for an input.

    Args:
      layer: a layer config (hashable), with ``init(key, input_shape)``.
      input_shape: the shape of the input, batch dims included or not.
    """
    return _expected(layer, _example_shape(tuple(input_shape)))


def _paths(tree: Any) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def check_params(layer: Any, params: Any, input_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``params`` has the structure and shapes ``layer.init`` makes.

    A layer's ``apply`` calls this first (a container adds the layer's name to the
    message), so another model's parameters never run silently.

    Args:
      layer: the layer config; its ``repr`` starts the message.
      params: the parameters given to ``apply``.
      input_shape: the shape of the input ``apply`` got.
    """
    expected = _paths(expected_params(layer, input_shape))
    try:
        given = _paths(params)
    except TypeError:  # not a pytree at all
        given = {"": params}
    missing = [path for path in expected if path not in given]
    extra = [path for path in given if path not in expected]
    hint = "Are these another model's parameters?"
    if missing or extra:
        parts = [f"missing params{p}" for p in missing] + [f"unexpected params{p}" for p in extra]
        wanted = ", ".join(f"params{p}" for p in expected) or "no parameters"
        raise ValueError(
            f"{layer!r}: {'; '.join(parts)} (for inputs of shape {tuple(input_shape)} it "
            f"takes {wanted}). {hint}"
        )
    for path, spec in expected.items():
        shape = getattr(given[path], "shape", None)
        if shape is None or tuple(shape) != tuple(spec.shape):
            raise ValueError(
                f"{layer!r}: params{path} has shape {None if shape is None else tuple(shape)}; "
                f"for inputs of shape {tuple(input_shape)} it expects {tuple(spec.shape)}. {hint}"
            )
