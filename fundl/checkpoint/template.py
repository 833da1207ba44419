"""Stored leaves as arrays: as JAX arrays without a template, or filling a template.

:func:`match_template` pairs a template's leaves with a file's tensors by key path and
checks shapes and dtypes (``partial`` lets the template hold only part of the file);
:func:`like` turns a stored array into its template leaf's type; :func:`to_jax` is the
conversion without a template. Errors say the file and the key path; the public
functions add their own name.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fundl.checkpoint.errors import CheckpointError
from fundl.checkpoint.format import clip
from fundl.checkpoint.manifest import Manifest, show

__all__ = ["like", "match_template", "to_jax"]


def to_jax(path: Any, info: dict, data: np.ndarray) -> jax.Array:
    """A stored leaf as a JAX array (a typed key array for keys), under JAX's dtype rules."""
    if "key_impl" in info:
        try:
            key = jax.random.wrap_key_data(jnp.asarray(data), impl=info["key_impl"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(
                f"{path}: {show(info['path'])} is not a valid {clip(info['key_impl'], 40)!r} "
                f"key: {clip(str(e))}"
            ) from None
        if str(key.dtype) != info["dtype"]:
            raise CheckpointError(
                f"{path}: {show(info['path'])} is a {key.dtype} key but the manifest says "
                f"{clip(info['dtype'], 40)}"
            )
        return key
    if data.dtype.itemsize == 8 and data.dtype.kind in "iu" and not jax.config.jax_enable_x64:
        narrow = np.int32 if data.dtype.kind == "i" else np.uint32
        if data.size and (data.min() < np.iinfo(narrow).min or data.max() > np.iinfo(narrow).max):
            raise ValueError(
                f"{path}: {show(info['path'])} is {data.dtype} with values beyond "
                f"{np.dtype(narrow).name}, which JAX would wrap with jax_enable_x64 off; "
                "enable x64 or pass a template with a numpy leaf there"
            )
    return jnp.asarray(data)


_PY_SCALARS = {bool: "bool", int: "int", float: "float"}


def _kind(dtype: Any) -> str:
    """bool, int, float or complex: what a Python scalar or a weakly-typed array fixes."""
    if str(dtype).startswith("key<"):
        return str(dtype)
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        return str(dtype)
    for kind, family in (
        ("bool", jnp.bool_),
        ("int", jnp.integer),
        ("float", jnp.floating),
        ("complex", jnp.complexfloating),
    ):
        if jnp.issubdtype(dtype, family):
            return kind
    return dtype.name


def _check_leaf(path: Any, where: str, info: dict, expected: Any) -> None:
    """Raise ``ValueError`` if the stored leaf ``info`` does not fit the template leaf.

    A Python scalar or a weakly-typed leaf (how ``jax.eval_shape`` sees a Python scalar)
    fixes only the kind (bool, int, float); any other leaf fixes the exact dtype.
    """
    shape, dtype = tuple(info["shape"]), info["dtype"]
    prefix = f"{path}: {show(where)}"
    if type(expected) in _PY_SCALARS:
        kind, expected_shape = _PY_SCALARS[type(expected)], ()
        wanted_dtype = f"a Python {kind}"
        wanted_shape = f"a scalar ({wanted_dtype})"
    elif isinstance(expected, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        expected_shape, wanted_shape = tuple(expected.shape), str(tuple(expected.shape))
        kind = _kind(expected.dtype) if getattr(expected, "weak_type", False) else None
        wanted_dtype = (
            f"a weakly-typed {expected.dtype} (any {kind})" if kind else str(expected.dtype)
        )
    else:
        raise TypeError(
            f"the template's leaf at {show(where)} is a {type(expected).__name__}; "
            "template leaves are arrays, jax.ShapeDtypeStruct or Python bool, int and float"
        )
    if shape != expected_shape:
        raise ValueError(f"{prefix} has shape {shape}, the template expects {wanted_shape}")
    if (_kind(dtype) != kind) if kind else (dtype != str(expected.dtype)):
        raise ValueError(f"{prefix} has dtype {dtype}, the template expects {wanted_dtype}")


def match_template(
    path: Any, manifest: Manifest, template: Any, *, partial: bool
) -> tuple[list[tuple[str, Any]], Any]:
    """Pair each template leaf with its stored tensor, checking key paths, shapes and dtypes.

    Key paths are compared as ``jax.tree_util.keystr`` strings. With ``partial`` the
    file may hold leaves the template lacks; otherwise both must hold the same key paths.

    Returns:
      ``[(tensor name, template leaf), ...]`` in the template's order, and its treedef.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    wanted = [(jax.tree_util.keystr(p), leaf) for p, leaf in flat]
    stored = {info["path"]: tensor for tensor, info in manifest.leaves.items()}
    for where, _ in wanted:
        if where not in stored:
            raise ValueError(f"{path}: the template has {show(where)} but the checkpoint does not")
    if not partial:
        template_paths = {where for where, _ in wanted}
        for where in stored:
            if where not in template_paths:
                raise ValueError(
                    f"{path}: the checkpoint has {show(where)} but the template does not "
                    "(pass partial=True to read only the template's leaves)"
                )
    pairs = []
    for where, expected in wanted:
        tensor = stored[where]
        _check_leaf(path, where, manifest.leaves[tensor], expected)
        pairs.append((tensor, expected))
    return pairs, treedef


def like(path: Any, info: dict, data: np.ndarray, expected: Any) -> Any:
    """A stored leaf as the template leaf's type: a Python scalar, numpy, or JAX on its sharding."""
    if type(expected) in _PY_SCALARS:
        return type(expected)(data.item())
    if isinstance(expected, np.ndarray):
        return data.copy()
    if isinstance(expected, np.generic):
        return data[()]
    if getattr(expected, "weak_type", False):
        cast = data.astype(expected.dtype)
        if _kind(data.dtype) == "int" and np.any(cast != data):
            raise ValueError(
                f"{path}: {show(info['path'])} holds values beyond {expected.dtype}, "
                "the dtype of the template's weakly-typed leaf"
            )
        # From a Python number, jnp.asarray makes a weakly-typed array again.
        value = jnp.asarray(cast.item()) if cast.ndim == 0 else jnp.asarray(cast)
    else:
        value = to_jax(path, info, data)
    sharding = getattr(expected, "sharding", None)
    return value if sharding is None else jax.device_put(value, sharding)
