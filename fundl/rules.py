"""Hand-written backward rules: how a fundl primitive is declared and switched.

A primitive is a differentiable building block written as three plain functions that
sit together in its module, in reading order:

    @primitive
    def relu(z):                      # the reference forward, plain jax.numpy
        return jnp.where(z > 0, z, 0)

    def relu_fwd(z):                  # forward that saves the residuals
        return relu(z), z > 0

    def relu_bwd(mask, g):            # backward rule: cotangent in, VJP out
        return (jnp.where(mask, g, 0),)

    relu.defvjp(relu_fwd, relu_bwd)   # registered with jax.custom_vjp

Positional arguments are the differentiable inputs (arrays or pytrees of arrays);
keyword-only arguments are static options (hashable Python values such as an axis, a
slope or a reduction name) and are passed to ``fwd`` and ``bwd`` as keywords.

Calling the primitive runs the hand-written rule (``jax.grad`` then uses ``bwd``).
Inside ``with reference_mode():`` it runs the reference instead, differentiated by
JAX itself. The mode is read when a function is *traced*, and it is part of
``jax.jit``'s cache key: a jitted function called in the other mode is traced again.

Reverse mode (``grad``, ``vjp``, ``jacrev``), grad of grad and ``hessian``, ``vmap``,
``jit`` and ``scan`` work in both modes; forward mode alone (``jvp``, ``jacfwd``,
``linearize``) needs ``reference_mode()``, because a ``jax.custom_vjp`` has no
forward rule (``jvp`` and ``jacfwd`` raise a ``TypeError`` saying so; ``linearize``
fails with JAX's own error when its linear function is applied). The table in docs/gradient-verification.md, checked by a test, lists
each transformation.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools
import inspect
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import jax

__all__ = [
    "Primitive",
    "Static",
    "primitive",
    "reference_mode",
    "using_reference",
    "count_calls",
]

_REFERENCE = contextvars.ContextVar("fundl_reference_mode", default=False)


def cache_key_context(name: str, default: Any = None) -> Callable[[Any], Any]:
    """``context(value)``: a block in which ``value`` is part of ``jax.jit``'s cache key, so
    a function jitted (and traced) under one value is traced again under another.

    A user context (``jax.make_user_context``) on JAX ≥ 0.7, ``default`` outside every
    block; before it, a piece of XLA metadata called ``name``, also part of the trace
    context. Neither changes a computed value.
    """
    if hasattr(jax, "make_user_context"):
        return jax.make_user_context(default)
    from jax.experimental.xla_metadata import set_xla_metadata  # pragma: no cover

    return lambda value: set_xla_metadata(**{name: repr(value)})  # pragma: no cover


# The mode is part of jax.jit's cache key: a function jitted in one mode is traced again
# in the other, never served the other mode's trace.
_jit_key = cache_key_context("fundl_reference_mode", False)
_COUNTERS: contextvars.ContextVar[tuple[collections.Counter, ...]] = contextvars.ContextVar(
    "fundl_call_counters", default=()
)
_FORWARD_MODE_HINT = (
    "forward-mode autodiff (jax.jvp, jax.jacfwd, jax.linearize) cannot run through "
    "fundl's hand-written reverse rules (a jax.custom_vjp has no forward rule): use "
    "reverse mode (jax.grad, jax.jacrev, jax.vjp; jax.hessian works too), or run the "
    "plain references inside `with fundl.reference_mode():`"
)


@contextlib.contextmanager
def reference_mode(enabled: bool = True) -> Iterator[None]:
    """Run every fundl primitive as its plain ``jax.numpy`` reference.

    Inside the block, ``jax.grad`` differentiates the references with JAX autodiff, and
    the forward-mode transformations (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``)
    work; ``jax.hessian`` works in both modes. ``reference_mode(False)`` restores the
    hand-written rules inside an outer block. The mode is part of ``jax.jit``'s cache
    key: a jitted function called in both modes is traced in each, so the block never
    runs a trace (or compiled program) of the other mode's rules.

    Args:
      enabled: True to run the references, False for the hand-written rules.

    Examples:
        >>> with fundl.reference_mode():
        ...     _, tangent = jax.jvp(fundl.activations.tanh, (jnp.zeros(2),), (jnp.ones(2),))
        >>> tangent
        Array([1., 1.], dtype=float32)
    """
    token = _REFERENCE.set(bool(enabled))
    try:
        with _jit_key(bool(enabled)):
            yield
    finally:
        _REFERENCE.reset(token)


def using_reference() -> bool:
    """True inside ``reference_mode()``: primitives run their references.

    Returns:
      whether a fundl primitive called (or traced) now runs its plain reference.

    Examples:
      >>> fundl.using_reference()
      False
      >>> with fundl.reference_mode():
      ...     print(fundl.using_reference())
      True
    """
    return _REFERENCE.get()


@contextlib.contextmanager
def count_calls() -> Iterator[collections.Counter]:
    """Count the fundl primitive calls made (or traced) inside the block, by mode.

    Yields a ``collections.Counter`` with keys ``"hand"`` and ``"reference"``; blocks
    nest, and each counts what ran inside it. A call traced by ``jax.jit`` counts once
    per trace, a cached compiled call not at all — which is how ``fundl.gradcheck`` tells
    that a pass really ran the rules it meant to run.

    Examples:
      >>> with fundl.rules.count_calls() as calls:
      ...     _ = fundl.activations.relu(jnp.ones(3))
      >>> calls["hand"]
      1
    """
    counter: collections.Counter = collections.Counter(hand=0, reference=0)
    token = _COUNTERS.set(_COUNTERS.get() + (counter,))
    try:
        yield counter
    finally:
        _COUNTERS.reset(token)


def _hashable(name: str, option: str, value: Any) -> Hashable:
    """A hashable stand-in for an option value, for the rule cache.

    Hashable values are themselves; a pytree of hashable leaves (a dict mask of bools,
    say) is its tree structure and leaves; anything else raises ``TypeError``.
    """
    try:
        hash(value)
        return value
    except TypeError:
        pass
    leaves, treedef = jax.tree.flatten(value)
    frozen = []
    for leaf in leaves:
        if hasattr(leaf, "shape") and getattr(leaf, "size", 2) == 1:
            leaf = leaf.item()  # a 0-d numpy bool in a mask
        try:
            hash(leaf)
        except TypeError:
            raise TypeError(
                f"{name}: option {option}={value!r} must be hashable (a static option keys "
                "the compiled rule), or a pytree of hashable leaves; got a leaf of type "
                f"{type(leaf).__name__}"
            ) from None
        frozen.append(leaf)
    return (treedef, tuple(frozen))


class Primitive:
    """A differentiable function with a reference forward and a hand-written VJP.

    Build one with the :func:`primitive` decorator, then register the rule with
    :meth:`defvjp`. Calling it runs ``reference(*inputs, **options)`` forward and, under
    ``jax.grad``, the hand-written ``bwd`` backward (the reference differentiated by JAX
    inside :func:`reference_mode`).

    Attributes:
      reference: the plain ``jax.numpy`` forward.
      fwd: ``fwd(*inputs, **options) -> (out, residuals)``, or None before ``defvjp``.
      bwd: ``bwd(residuals, g, **options) -> cotangents``, one per input.
      derivative: g'(z) for elementwise activations; else None.
      name: the reference's name.

    Examples:
      ``vjp`` runs the rule by hand: the forward, then the pullback of a cotangent g
      (for ReLU, g where z > 0):

      >>> relu = fundl.activations.relu
      >>> isinstance(relu, fundl.Primitive), relu.name
      (True, 'relu')
      >>> out, pullback = relu.vjp(jnp.array([-1.0, 2.0]))
      >>> out.tolist(), pullback(jnp.array([5.0, 5.0]))[0].tolist()
      ([0.0, 2.0], [0.0, 5.0])
    """

    def __init__(self, reference: Callable[..., Any], check: Callable[..., None] | None):
        if not callable(reference):
            raise TypeError(
                f"primitive: expected the reference forward function, got {reference!r}"
            )
        if check is not None and not callable(check):
            raise TypeError(
                f"primitive {getattr(reference, '__name__', reference)!r}: check must be a "
                f"function check(*inputs, **options) or None, got {check!r}"
            )
        functools.update_wrapper(self, reference)
        self.reference = reference
        self.name = reference.__name__
        self.check = check
        self.fwd: Callable[..., Any] | None = None
        self.bwd: Callable[..., Any] | None = None
        self.derivative: Callable[..., Any] | None = None
        signature = inspect.signature(reference)
        no_default = [
            p.name
            for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
        ]
        if no_default:
            raise TypeError(
                f"primitive {self.name}: keyword-only options need defaults, {no_default} have none"
            )
        self._defaults = {
            p.name: p.default
            for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        positional = [
            p
            for p in signature.parameters.values()
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        self._input_names = tuple(p.name for p in positional)
        self._input_defaults = tuple(p.default for p in positional)
        self._hand_cache: dict[tuple, Callable[..., Any]] = {}

    def defvjp(
        self,
        fwd: Callable[..., Any],
        bwd: Callable[..., Any],
        *,
        derivative: Callable[..., Any] | None = None,
    ) -> None:
        """Register ``fwd(*inputs, **options) -> (out, residuals)`` and
        ``bwd(residuals, g, **options) -> tuple of cotangents, one per input``.

        ``derivative``, for elementwise functions, is g'(z) itself (the notes'
        backprop step 3 multiplies dA by it).
        """
        for arg, fn in (("fwd", fwd), ("bwd", bwd)):
            if not callable(fn):
                raise TypeError(f"{self.name}.defvjp: {arg} must be a function, got {fn!r}")
        if derivative is not None and not callable(derivative):
            raise TypeError(
                f"{self.name}.defvjp: derivative must be a function or None, got {derivative!r}"
            )
        self.fwd, self.bwd, self.derivative = fwd, bwd, derivative
        self._hand_cache.clear()

    def options(self, **kwargs: Any) -> dict[str, Any]:
        """The full static options of a call: the defaults, updated with ``kwargs``.

        Raises ``TypeError`` for an option the primitive does not take.
        """
        unknown = set(kwargs) - set(self._defaults)
        if unknown:
            allowed = ", ".join(sorted(self._defaults)) or "none"
            raise TypeError(
                f"{self.name}: unknown option(s) {sorted(unknown)}; allowed options: {allowed}"
            )
        return {**self._defaults, **kwargs}

    def hand(self, *inputs: Any, **kwargs: Any) -> Any:
        """Call with the hand-written rule, whatever the mode (the inputs checked as a call)."""
        inputs = self._inputs(inputs)
        options = self.options(**kwargs)
        if self.check is not None:
            self.check(*inputs, **options)
        return self._hand(inputs, options)

    def _hand(self, inputs: tuple[Any, ...], options: dict[str, Any]) -> Any:
        if self.fwd is None or self.bwd is None:
            raise NotImplementedError(f"{self.name}: no backward rule registered (defvjp)")
        key = tuple(sorted((k, _hashable(self.name, k, v)) for k, v in options.items()))
        fn = self._hand_cache.get(key)
        if fn is None:
            fn = self._build_hand(options)
            self._hand_cache[key] = fn
        return fn(*inputs)

    def vjp(self, *inputs: Any, **kwargs: Any) -> tuple[Any, Callable[[Any], tuple[Any, ...]]]:
        """Run the hand-written rule directly, without JAX autodiff.

        Returns ``(out, pullback)`` where ``pullback(g)`` is ``bwd(residuals, g)``: one
        cotangent per input. This is how :func:`fundl.nn.backprop` steps backward.
        """
        if self.fwd is None or self.bwd is None:
            raise NotImplementedError(f"{self.name}: no backward rule registered (defvjp)")
        inputs = self._inputs(inputs)
        options = self.options(**kwargs)
        if self.check is not None:
            self.check(*inputs, **options)
        out, residuals = self.fwd(*inputs, **options)
        return out, lambda g: tuple(self.bwd(residuals, g, **options))

    def _build_hand(self, options: dict[str, Any]) -> Callable[..., Any]:
        reference, fwd, bwd = self.reference, self.fwd, self.bwd

        @jax.custom_vjp
        def hand(*inputs):
            return reference(*inputs, **options)

        def hand_fwd(*inputs):
            return fwd(*inputs, **options)

        def hand_bwd(residuals, g):
            return tuple(bwd(residuals, g, **options))

        hand.defvjp(hand_fwd, hand_bwd)
        return hand

    def _inputs(self, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        n = len(self._input_names)
        missing = [
            name
            for name, default in zip(
                self._input_names[len(inputs) :], self._input_defaults[len(inputs) :]
            )
            if default is inspect.Parameter.empty
        ]
        if len(inputs) > n or missing:
            raise TypeError(
                f"{self.name}: expected inputs ({', '.join(self._input_names)}), "
                f"got {len(inputs)} positional input(s)"
            )
        return tuple(inputs) + self._input_defaults[len(inputs) :]

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        inputs = self._inputs(inputs)
        options = self.options(**kwargs)
        if self.check is not None:
            self.check(*inputs, **options)
        mode = "reference" if _REFERENCE.get() else "hand"
        for counter in _COUNTERS.get():
            counter[mode] += 1
        if mode == "reference":
            return self.reference(*inputs, **options)
        try:
            return self._hand(inputs, options)
        except TypeError as error:
            message = str(error)
            if "forward-mode autodiff" in message and "reference_mode" not in message:
                raise TypeError(f"{self.name}: {_FORWARD_MODE_HINT}") from error
            raise

    def __repr__(self) -> str:
        return f"<fundl primitive {self.name}>"


def primitive(
    reference: Callable[..., Any] | None = None, *, check: Callable[..., None] | None = None
) -> Any:
    """Declare a fundl primitive from its reference forward (a decorator).

    Args:
      reference: the plain ``jax.numpy`` forward. Positional parameters are the
        differentiable inputs; keyword-only parameters (with defaults) are static options.
      check: optional ``check(*inputs, **options)`` run on every call before dispatch,
        for shape, dtype and value errors (it sees tracers under ``jit``).

    Returns:
      A :class:`Primitive`; register its rule with ``.defvjp(fwd, bwd)``.

    Examples:
      f(x) = x³ with its rule written by hand, ∂f/∂x = 3x²:

      >>> @fundl.primitive
      ... def cube(x):
      ...     return x**3
      >>> def cube_fwd(x):
      ...     return cube.reference(x), x  # residuals: the input
      >>> def cube_bwd(x, g):
      ...     return (g * 3 * x**2,)  # one cotangent per input
      >>> cube.defvjp(cube_fwd, cube_bwd)
      >>> jax.grad(lambda x: jnp.sum(cube(x)))(jnp.array([1.0, 2.0])).tolist()
      [3.0, 12.0]
    """
    if reference is None:
        return lambda fn: Primitive(fn, check)
    return Primitive(reference, check)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Static:
    """Metadata a rule keeps in its residuals (a shape, a dtype): static, no array, no bytes.

    A ``_fwd`` returns residuals as a pytree; a plain Python int there would become a
    traced array under ``jit``. ``Static(x.shape)`` stays a Python value, read back as
    ``residual.value`` in ``_bwd``.

    Attributes:
      value: any hashable Python value.

    Examples:
      The gradient of a sum needs only the input's shape, kept as a ``Static``:

      >>> @fundl.primitive
      ... def total(x):
      ...     return jnp.sum(x)
      >>> def total_fwd(x):
      ...     return jnp.sum(x), fundl.rules.Static(x.shape)
      >>> def total_bwd(shape, g):
      ...     return (jnp.full(shape.value, g),)
      >>> total.defvjp(total_fwd, total_bwd)
      >>> jax.jit(jax.grad(total))(jnp.ones((2, 3))).shape
      (2, 3)
    """

    value: Any
