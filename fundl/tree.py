"""Pytree helpers shared by losses and optimizers: norms, masks, structure and shape checks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "global_norm",
    "accumulation_dtype",
    "is_weight",
    "mask_tree",
    "check_mask",
    "check_same_structure",
    "check_same_shapes",
]

PathPredicate = Callable[[tuple, Any], bool]


def accumulation_dtype(tree: Any) -> np.dtype:
    """The dtype to accumulate ``tree``'s leaves in: their widest inexact dtype, at least float32.

    bfloat16 and float16 leaves give float32, float64 leaves (with x64 on) float64. A
    complex leaf makes it complex, with parts as wide as the widest leaf (complex64 and
    float64 leaves give complex128, in either order), so casting a complex leaf to it
    keeps the imaginary part; :func:`global_norm` takes the real dtype of the same
    width for its norm. It is read from the dtypes alone, never from
    JAX's promotion rules, so it holds under ``jax_numpy_dtype_promotion="strict"``;
    cast each leaf to it explicitly.

    Args:
      tree: any pytree of arrays (integer and bool leaves count as float32).

    Returns:
      a NumPy dtype: float32, or float64 if a leaf is float64 or complex128; complex64
      or complex128 (the complex dtype of that width) if a leaf is complex.

    Examples:
      >>> fundl.tree.accumulation_dtype({"W": jnp.zeros((2, 2), jnp.bfloat16), "step": 3})
      dtype('float32')
    """
    bits, complex_ = 32, False  # the widest real precision, and whether a leaf is complex
    for leaf in jax.tree.leaves(tree):
        dtype = np.dtype(jnp.result_type(leaf))
        if jnp.issubdtype(dtype, jnp.inexact):
            bits = max(bits, jnp.finfo(dtype).bits)  # complex64 -> 32: its parts' width
            complex_ = complex_ or jnp.issubdtype(dtype, jnp.complexfloating)
    # complex64 beside float64 is complex128: neither the imaginary part nor float64's
    # precision is lost, whichever leaf comes first
    return np.dtype(f"complex{2 * bits}") if complex_ else np.dtype(f"float{bits}")


def _real_parts(leaf: Any, dtype: Any) -> list[jax.Array]:
    """``[x]`` in ``dtype``, or ``[Re x, Im x]`` for a complex x (|x|² = Σ their squares)."""
    x = jnp.asarray(leaf)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return [jnp.real(x).astype(dtype), jnp.imag(x).astype(dtype)]
    return [x.astype(dtype)]


def global_norm(tree: Any) -> jax.Array:
    """‖tree‖ = sqrt(Σ over every leaf of Σ |x|²), accumulated in float32 (or wider).

    Right for every finite input: where Σ x² overflows (float32 values beyond about
    1.8e19) it is sqrt(Σ (x·2⁻ᵏ)²)·2ᵏ instead (k = 80 for float32: exact scalings by a
    power of two). Both sums read the same leaves and one is selected (``jnp.where``: no
    branch, no host sync). A NaN anywhere gives NaN; an inf, and no NaN, gives inf. A
    complex leaf counts |x|² = (Re x)² + (Im x)², so the norm is real.

    Args:
      tree: any pytree of arrays.

    Returns:
      a real scalar: float32, or float64 if a leaf is float64 or complex128.

    Examples:
      >>> tree = {"W": jnp.array([[3.0, 0.0]]), "b": jnp.array([4.0], jnp.bfloat16)}
      >>> norm = fundl.tree.global_norm(tree)
      >>> round(float(norm), 4), norm.dtype
      (5.0, dtype('float32'))
      >>> f'{float(fundl.tree.global_norm({"g": jnp.array([3e19, 4e19])})):.4g}'  # Σ x² overflows
      '5e+19'
      >>> float(fundl.tree.global_norm({"z": jnp.array([3j, 4.0])}))
      5.0
    """
    dtype = np.finfo(accumulation_dtype(tree)).dtype  # complex64 -> float32
    parts = [part for leaf in jax.tree.leaves(tree) for part in _real_parts(leaf, dtype)]
    k = np.finfo(dtype).maxexp * 5 // 8  # float32: 80 (|x·2⁻ᵏ|² < 2⁹⁶); float64: 640
    # behind a barrier, so that XLA cannot fold (x·2⁻ᵏ)² into x²·2⁻²ᵏ (which flushes to 0)
    down = lax.optimization_barrier(jnp.asarray(2.0**-k, dtype))
    # x·x, not jnp.square: the same number, but its derivative does not form 2x, which
    # overflows beyond 1.7e38 (and 0·inf is NaN) where the other sum is selected
    plain = sum((jnp.sum(x * x) for x in parts), jnp.zeros((), dtype))
    small = sum((jnp.sum((x * down) * (x * down)) for x in parts), jnp.zeros((), dtype))
    ok = jnp.isfinite(plain)
    # each sqrt sees 1 where it is not selected: no inf·0 = NaN in the gradient
    rescaled = jnp.sqrt(jnp.where(ok, 1.0, small)) * jnp.asarray(2.0**k, dtype)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, plain, 1.0)), rescaled)


def is_weight(path: tuple, leaf: Any) -> bool:
    """The default "is this a weight?" rule: a leaf with two or more dims.

    Dense W and conv kernels are weights; biases and normalization scales (vectors) are
    not. Used by ``fundl.losses.l2_penalty`` and the optimizers' weight-decay masks.

    Args:
      path: the leaf's key path (unused; a mask predicate receives it).
      leaf: an array.

    Returns:
      ``leaf.ndim >= 2``.

    Examples:
      >>> fundl.tree.is_weight((), jnp.zeros((3, 2))), fundl.tree.is_weight((), jnp.zeros(3))
      (True, False)
    """
    del path
    return jnp.ndim(leaf) >= 2


def _where(path: tuple) -> str:
    """A key path as the user indexes it: ``['dense']['W']``, or ``(root)`` for the tree itself."""
    return jax.tree_util.keystr(path) or "(root)"


_MASK_RULE = (
    "None, a pytree of bools, a predicate (key_path, leaf) -> bool, or a function of the "
    "params tree returning a pytree of bools (optax's form)"
)


def _takes_params_tree(name: str, arg: str, mask: Callable) -> bool:
    """Whether a callable mask takes the whole params tree (one argument, optax's form)
    rather than ``(key_path, leaf)`` (two): read from its signature, refused if unclear."""
    try:
        signature = inspect.signature(mask)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: {arg} is a callable whose signature cannot be read ({mask!r}); pass a "
            "function of one argument, params -> pytree of bools, or of two, (key_path, leaf) "
            "-> bool"
        ) from None

    def accepts(n: int) -> bool:
        try:
            signature.bind(*range(n))
        except TypeError:
            return False
        return True

    one, two = accepts(1), accepts(2)
    if one == two:
        raise ValueError(
            f"{name}: {arg} must take one argument (the params tree, returning a pytree of "
            "bools, as optax's masks) or two ((key_path, leaf) -> bool), so that its form is "
            f"clear; {mask!r} with signature {signature} takes {'either' if one else 'neither'}"
        )
    return one


def _check_bools(name: str, arg: str, mask: Any, got: str = "got") -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
        if not isinstance(leaf, (bool, np.bool_)):
            raise ValueError(
                f"{name}: {arg} must be {_MASK_RULE}; {got} {leaf!r} at {_where(path)}"
            )


def check_mask(name: str, arg: str, mask: Any) -> Any:
    """``mask`` if it is None, a pytree of bools, or a callable of a clear form.

    A callable taking one argument is optax's form, ``mask(params) -> pytree of bools``;
    one taking two is a predicate ``(key_path, leaf) -> bool``, asked leaf by leaf. The
    form is read from the signature here, when an optimizer is built (a callable that
    takes either or neither is refused); the parameters come later, so the mask's
    structure is checked against them by :func:`mask_tree`.

    Args:
      name: the function checking, for the message.
      arg: the argument's name, for the message.
      mask: the value to check.

    Returns:
      ``mask``, unchanged.

    Raises:
      ValueError: naming ``name``, ``arg`` and the key path of the first leaf that is
        not a bool, or the callable whose form is unclear.

    Examples:
      >>> fundl.tree.check_mask("adamw", "mask", {"W": True, "b": 0})  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ValueError: adamw: mask must be None, a pytree of bools, ...; got 0 at ['b']
      >>> fundl.tree.check_mask("adamw", "mask", lambda *args: True)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ValueError: adamw: mask must take one argument (the params tree, ...) or two ...
    """
    if mask is None:
        return mask
    if callable(mask):
        _takes_params_tree(name, arg, mask)
        return mask
    _check_bools(name, arg, mask)
    return mask


def _predicate_value(name: str, path: tuple, chosen: Any) -> bool:
    """What a ``(key_path, leaf) -> bool`` predicate returned for one leaf, as a bool.

    True, False, a NumPy bool and a concrete 0-d bool array pass; anything else (an
    array per element, an int, None, a traced bool under ``jit``) is a ``TypeError``:
    ``bool()`` of it would fail with NumPy's "truth value ... is ambiguous", or pick
    the leaf by the truthiness of something that is not a choice.
    """
    if isinstance(chosen, (bool, np.bool_)):
        return bool(chosen)
    if isinstance(chosen, (jax.Array, np.ndarray)):
        if not isinstance(chosen, jax.core.Tracer) and chosen.shape == () and chosen.dtype == bool:
            return bool(chosen)
        traced = isinstance(chosen, jax.core.Tracer)
        got = (
            f"{'a traced' if traced else 'an'} array of dtype {chosen.dtype} and shape "
            f"{tuple(chosen.shape)}"
        )
        if traced:
            got += " (decide from the path, shape or dtype, which are known when traced)"
    else:
        got = f"{chosen!r} of type {type(chosen).__name__}"
    raise TypeError(
        f"{name}: a mask predicate (key_path, leaf) -> bool must return True or False for "
        f"each leaf; for the leaf at {_where(path)} it returned {got}"
    )


def mask_tree(name: str, params: Any, mask: PathPredicate | Any | None) -> list[bool]:
    """One bool per leaf of ``params``: which leaves ``mask`` selects.

    Args:
      name: the function asking, for error messages.
      params: any pytree of arrays.
      mask: ``None`` (every leaf); a pytree of bools with the structure of ``params``;
        a predicate ``(key_path, leaf) -> bool``, asked for each leaf; or a function of
        one argument, ``mask(params) -> pytree of bools`` like ``params`` (optax's form).
        A callable's form is read from its signature (see :func:`check_mask`).

    Returns:
      a list of bools, one per leaf of ``params`` in ``jax.tree.leaves`` order.

    Raises:
      ValueError: if a pytree ``mask`` (given, or returned by ``mask(params)``) differs
        from ``params`` in structure or holds something other than bools.
      TypeError: if a predicate returns anything but a bool (True, False, a NumPy bool
        or a concrete 0-d bool array) for a leaf — an array of bools, say — naming
        ``name`` and the leaf's key path.

    Examples:
      >>> params = {"W": jnp.zeros((3, 2)), "b": jnp.zeros(3)}
      >>> fundl.tree.mask_tree("demo", params, fundl.tree.is_weight)
      [True, False]
      >>> fundl.tree.mask_tree("demo", params, {"W": False, "b": True})
      [False, True]
      >>> fundl.tree.mask_tree("demo", params, lambda p: jax.tree.map(lambda x: x.ndim == 1, p))
      [False, True]
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if mask is None:
        return [True] * len(flat)
    if callable(mask):
        if not _takes_params_tree(name, "mask", mask):
            return [_predicate_value(name, path, mask(path, leaf)) for path, leaf in flat]
        mask = mask(params)
        _check_bools(name, "mask", mask, "mask(params) gave")
        check_same_structure(name, params, mask, "params", "mask(params)")
        return [bool(m) for m in jax.tree.leaves(mask)]
    check_same_structure(name, params, mask, "params", "mask")
    return [bool(m) for m in jax.tree.leaves(mask)]


def _first_difference(a: Any, b: Any) -> str:
    paths_a = [_where(p) for p, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    paths_b = [_where(p) for p, _ in jax.tree_util.tree_flatten_with_path(b)[0]]
    for pa, pb in zip(paths_a, paths_b):
        if pa != pb:
            return f"{pa} vs {pb}"
    if len(paths_a) != len(paths_b):
        longer, extra = (paths_a, "first") if len(paths_a) > len(paths_b) else (paths_b, "second")
        return f"{longer[min(len(paths_a), len(paths_b))]} only in the {extra}"
    return (
        "same leaves, different containers: "
        + f"{jax.tree.structure(a)} vs {jax.tree.structure(b)}"
    )


def check_same_structure(
    name: str, a: Any, b: Any, what_a: str, what_b: str, *, hint: str = ""
) -> None:
    """Raise ``ValueError`` naming the first differing key path if a and b differ in structure.

    ``hint`` (e.g. "; the state may belong to another model") ends the message.

    Args:
      name: the function checking, for the message.
      a: a pytree.
      b: a pytree.
      what_a: what ``a`` is, for the message ("grads").
      what_b: what ``b`` is ("params").
      hint: text appended to the message.

    Raises:
      ValueError: ``f"{name}: {what_a} and {what_b} differ in structure at {where}{hint}"``.

    Examples:
      >>> grads, params = {"W": jnp.zeros(2)}, {"W": jnp.zeros(2), "b": jnp.zeros(2)}
      >>> fundl.tree.check_same_structure("update", grads, params, "grads", "params")
      Traceback (most recent call last):
      ValueError: update: grads and params differ in structure at ['b'] only in the second
    """
    if jax.tree.structure(a) != jax.tree.structure(b):
        raise ValueError(
            f"{name}: {what_a} and {what_b} differ in structure at {_first_difference(a, b)}{hint}"
        )


def check_same_shapes(
    name: str, a: Any, b: Any, what_a: str, what_b: str, *, hint: str = ""
) -> None:
    """As :func:`check_same_structure`, then leaf by leaf: the same shape, never a broadcast.

    Raises ``ValueError(f"{name}: {what_a} and {what_b} differ in shape at {key_path}:
    {shape_a} vs {shape_b}{hint}")`` for the first leaf whose shapes differ. Shapes are
    static, so under ``jit`` the check runs once, when the function is traced.

    Args:
      name: the function checking, for the message.
      a: a pytree of arrays.
      b: a pytree of arrays.
      what_a: what ``a`` is, for the message ("grads").
      what_b: what ``b`` is ("params").
      hint: text appended to the message.

    Raises:
      ValueError: for the first difference in structure, or in shape.

    Examples:
      >>> grads, params = {"W": jnp.zeros((1, 2))}, {"W": jnp.zeros((2, 1))}
      >>> fundl.tree.check_same_shapes("update", grads, params, "grads", "params")
      Traceback (most recent call last):
      ValueError: update: grads and params differ in shape at ['W']: (1, 2) vs (2, 1)
    """
    check_same_structure(name, a, b, what_a, what_b, hint=hint)
    leaves_b = jax.tree.leaves(b)
    for i, leaf_a in enumerate(jax.tree.leaves(a)):
        shape_a, shape_b = jnp.shape(leaf_a), jnp.shape(leaves_b[i])
        if shape_a != shape_b:
            path = jax.tree_util.tree_flatten_with_path(a)[0][i][0]
            raise ValueError(
                f"{name}: {what_a} and {what_b} differ in shape at {_where(path)}: "
                f"{shape_a} vs {shape_b}{hint}"
            )
