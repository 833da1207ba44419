"""Mixed precision: a dtype policy for parameters, compute and outputs, and loss scaling.

A :class:`Policy` names three floating dtypes (jmp's and Flax's split):

- ``param_dtype``: the dtype the parameters are stored and updated in — the float32
  "master weights" the optimizer adds its updates to;
- ``compute_dtype``: the dtype the loss function runs in — the parameters and the
  batch's floating inputs are cast to it before the forward pass (bfloat16 or float16:
  half the memory traffic, and the fast matrix units of GPUs and TPUs);
- ``output_dtype``: the dtype the loss and the metrics leave the loss function in.

Only floating leaves are cast: integer labels, bool masks and PRNG keys pass through.
The gradients come back in the parameters' dtype (the transpose of a cast is the cast
back), so the optimizer never sees a low-precision gradient.

float16 has the range of ±65504 and no numbers below 6·10⁻⁸: small gradients underflow
to zero and large ones overflow to inf. Loss scaling multiplies the loss by S before
differentiating (every gradient is then S times larger, clear of the underflow) and
divides the gradients by S afterwards; a step whose gradients hold an inf or NaN is
skipped — parameters and optimizer state unchanged. :class:`DynamicLossScale` halves S
on such a step and doubles it after ``period`` good steps in a row (jmp's
``DynamicLossScale``, PyTorch's ``GradScaler``); :class:`StaticLossScale` keeps S fixed;
:class:`NoOpLossScale` is S = 1 and never skips. bfloat16 has float32's range and needs
no loss scaling.

The train steps apply both: ``make_train_step(loss_fn, optimizer, policy=bf16_policy())``
or ``policy=f16_policy(), loss_scale=DynamicLossScale()`` (and ``fit(..., policy=,
loss_scale=)``). The loss scale's state lives in the optimizer state —
:func:`loss_scaled` wraps the optimizer — so the step stays a pure function and a
checkpoint of the optimizer state carries the scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import check_int, check_number
from fundl.optim.base import GradientTransformation, safe_increment
from fundl.tree import accumulation_dtype, check_same_shapes

__all__ = [
    "DynamicLossScale",
    "LossScaleState",
    "LossScaledState",
    "NoOpLossScale",
    "Policy",
    "StaticLossScale",
    "all_finite",
    "bf16_policy",
    "cast_floating",
    "f16_policy",
    "f32_policy",
    "loss_scaled",
    "select_tree",
]

# --- dtypes and the policy -------------------------------------------------------------

_DTYPE_NAMES = {
    "float16": "float16",
    "f16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "f32": "float32",
    "single": "float32",
    "full": "float32",
    "float64": "float64",
    "f64": "float64",
    "double": "float64",
}
_KEYS = {
    "params": "param_dtype",
    "param": "param_dtype",
    "p": "param_dtype",
    "compute": "compute_dtype",
    "c": "compute_dtype",
    "output": "output_dtype",
    "o": "output_dtype",
}


def _floating_dtype(arg: str, value: Any, name: str = "Policy") -> np.dtype:
    """``value`` (a dtype, a type such as jnp.bfloat16, or a name) as a floating np.dtype."""
    if isinstance(value, str):
        dtype_name = _DTYPE_NAMES.get(value.strip().lower())
        if dtype_name is None:
            raise ValueError(
                f"{name}: {arg} {value!r} is not a dtype name; use one of "
                f"{', '.join(sorted(_DTYPE_NAMES))}"
            )
        value = dtype_name
    if value is None:  # jnp.dtype(None) is float64: never what a policy means
        raise TypeError(f"{name}: {arg} must be a floating dtype, got None")
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"{name}: {arg} must be a floating dtype, got {value!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{name}: {arg} must be a floating dtype (float16, bfloat16, float32 or float64), "
            f"got {dtype}; a policy casts floating leaves only — integer labels and bool "
            "masks are never cast, so they need no dtype here"
        )
    return dtype


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Cast every floating array leaf of ``tree`` to ``dtype``; leave every other leaf as is.

    Integer and bool arrays (labels, masks), PRNG keys and Python scalars pass through
    unchanged, and so does a leaf already in ``dtype`` (no convert op is traced).

    Examples:
      >>> batch = {"x": jnp.ones((2, 3)), "y": jnp.array([1, 0])}
      >>> cast = fundl.precision.cast_floating(batch, jnp.bfloat16)
      >>> cast["x"].dtype, cast["y"].dtype
      (dtype(bfloat16), dtype('int32'))

    Raises:
      ValueError: for a ``dtype`` that is not floating (casting weights to int32 would
        truncate them); ``TypeError`` for one that is no dtype.
    """
    dtype = _floating_dtype("dtype", dtype, "cast_floating")

    def cast(x: Any) -> Any:
        if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
            return x
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
            return x
        return jnp.asarray(x).astype(dtype)

    return jax.tree.map(cast, tree)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype the parameters, the computation and the outputs of a step use.

    param_dtype: parameters, their gradients and the optimizer's update; compute_dtype:
    the parameters and the batch's floating inputs as the loss function sees them;
    output_dtype: the loss and the metrics. Each a floating dtype (float16, bfloat16,
    float32, float64), as a dtype, a type (``jnp.bfloat16``) or a name (``"bf16"``);
    an integer or bool dtype is a ``ValueError`` here, when the policy is built. A
    policy is frozen and hashable (a valid static argument of ``jit``).

    Examples:
      >>> policy = fundl.precision.Policy.from_string("params=float32,compute=bfloat16,output=float32")
      >>> policy.compute_dtype
      dtype(bfloat16)
      >>> policy.cast_to_compute({"W": jnp.ones(2), "y": jnp.array([1, 2])})["W"].dtype
      dtype(bfloat16)
    """

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    output_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        for field in ("param_dtype", "compute_dtype", "output_dtype"):
            object.__setattr__(self, field, _floating_dtype(field, getattr(self, field)))

    @classmethod
    def from_string(cls, spec: str) -> Policy:
        """Parse jmp's policy strings: ``"params=float32,compute=bfloat16,output=float32"``.

        Keys: ``params``/``p``, ``compute``/``c``, ``output``/``o``; an unnamed compute
        dtype is the params' and an unnamed output dtype the compute's (as jmp). A single
        dtype (``"bf16"``) is all three. Names: float16 (f16, half), bfloat16 (bf16),
        float32 (f32, single, full), float64 (f64, double).
        """
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(
                f"Policy.from_string: expected a string such as "
                f"'params=float32,compute=bfloat16,output=float32', got {spec!r}"
            )
        if "=" not in spec:
            dtype = _floating_dtype("dtype", spec)
            return cls(dtype, dtype, dtype)
        fields: dict[str, np.dtype] = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            field = _KEYS.get(key.strip().lower())
            if not sep or field is None:
                raise ValueError(
                    f"Policy.from_string: cannot read {part.strip()!r} in {spec!r}; write "
                    "key=dtype pairs with the keys params (p), compute (c), output (o)"
                )
            if field in fields:
                raise ValueError(f"Policy.from_string: {key.strip()!r} given twice in {spec!r}")
            fields[field] = _floating_dtype(field, value)
        param = fields.get("param_dtype", jnp.dtype(jnp.float32))
        compute = fields.get("compute_dtype", param)
        return cls(param, compute, fields.get("output_dtype", compute))

    def cast_to_param(self, tree: Any) -> Any:
        """``tree``'s floating leaves in ``param_dtype``."""
        return cast_floating(tree, self.param_dtype)

    def cast_to_compute(self, tree: Any) -> Any:
        """``tree``'s floating leaves in ``compute_dtype``."""
        return cast_floating(tree, self.compute_dtype)

    def cast_to_output(self, tree: Any) -> Any:
        """``tree``'s floating leaves in ``output_dtype``."""
        return cast_floating(tree, self.output_dtype)

    @property
    def uses_float16(self) -> bool:
        """Whether the parameters or the computation are float16 (and need loss scaling)."""
        f16 = jnp.dtype(jnp.float16)
        return f16 in (self.param_dtype, self.compute_dtype)

    def __str__(self) -> str:
        return (
            f"params={self.param_dtype.name},compute={self.compute_dtype.name},"
            f"output={self.output_dtype.name}"
        )


def bf16_policy() -> Policy:
    """float32 parameters, bfloat16 compute, float32 outputs: mixed precision without loss scaling.

    Examples:
      >>> print(fundl.precision.bf16_policy())
      params=float32,compute=bfloat16,output=float32
    """
    return Policy(jnp.float32, jnp.bfloat16, jnp.float32)


def f16_policy() -> Policy:
    """float32 parameters, float16 compute, float32 outputs; pair it with a :class:`DynamicLossScale`.

    Examples:
      >>> print(fundl.precision.f16_policy())
      params=float32,compute=float16,output=float32
    """
    return Policy(jnp.float32, jnp.float16, jnp.float32)


def f32_policy() -> Policy:
    """float32 everywhere: the same program as no policy.

    Examples:
      >>> print(fundl.precision.f32_policy())
      params=float32,compute=float32,output=float32
    """
    return Policy(jnp.float32, jnp.float32, jnp.float32)


def as_policy(name: str, policy: Any) -> Policy | None:
    """``policy`` as a :class:`Policy` (a string is parsed), or None; else ``TypeError``."""
    if policy is None or isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return Policy.from_string(policy)
    raise TypeError(
        f"{name}: policy must be a fundl.precision.Policy (e.g. fundl.precision.bf16_policy()), "
        f"a string such as 'params=float32,compute=bfloat16,output=float32', or None; "
        f"got {policy!r}"
    )


# --- finiteness -------------------------------------------------------------------------


def all_finite(tree: Any) -> jax.Array:
    """One bool scalar: whether every floating leaf of ``tree`` is free of inf and NaN.

    Examples:
      >>> bool(fundl.precision.all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.inf])}))
      False
    """
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def select_tree(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leaf by leaf ``where(pred, on_true, on_false)`` for a scalar bool ``pred``; same structures.

    ``on_true`` and ``on_false`` must agree in structure, leaf shapes and dtypes (a
    broadcast or a promotion would change the tree), else ``ValueError``.

    Examples:
      >>> fundl.precision.select_tree(jnp.asarray(False), {"w": jnp.ones(2)}, {"w": jnp.zeros(2)})
      {'w': Array([0., 0.], dtype=float32)}
    """
    if not hasattr(pred, "dtype") or pred.shape != () or pred.dtype != jnp.bool_:
        got = f"dtype {pred.dtype} and shape {pred.shape}" if hasattr(pred, "dtype") else repr(pred)
        raise ValueError(f"select_tree: pred must be a scalar bool array, got {got}")
    check_same_shapes("select_tree", on_true, on_false, "on_true", "on_false")
    for a, b in zip(jax.tree.leaves(on_true), jax.tree.leaves(on_false)):
        if jnp.result_type(a) != jnp.result_type(b):
            raise ValueError(
                f"select_tree: on_true and on_false differ in dtype: {jnp.result_type(a)} vs "
                f"{jnp.result_type(b)}"
            )
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


# --- loss scales ------------------------------------------------------------------------


class LossScaleState(NamedTuple):
    """The state of a loss scale: the scale S and how many good steps ran since it last changed.

    A loss scale's ``init()`` makes it; its ``adjust(state, grads_finite)`` returns the next.

    Examples:
      >>> state = fundl.precision.DynamicLossScale().init()
      >>> float(state.scale), int(state.good_steps)  # S = 2¹⁵
      (32768.0, 0)
      >>> state = fundl.precision.DynamicLossScale().adjust(state, jnp.asarray(True))
      >>> float(state.scale), int(state.good_steps)  # a step with finite gradients
      (32768.0, 1)
    """

    scale: jax.Array  # float32 scalar: S, the factor the loss is multiplied by
    good_steps: jax.Array  # int32 scalar: steps with finite gradients since S last changed


def _state(scale: float) -> LossScaleState:
    return LossScaleState(jnp.asarray(scale, jnp.float32), jnp.zeros((), jnp.int32))


class _LossScale:
    """What every loss scale shares: scaling the loss and unscaling the gradients by S.

    ``scale``, ``unscale`` and ``adjust`` take the :class:`LossScaleState` that ``init()``
    made; anything else (None, a dict, the optimizer's whole state) is a ``TypeError``
    naming the method, checked on the Python type when the step is traced.
    """

    skips_nonfinite: ClassVar[bool] = True  # skip the update of a step with inf/NaN gradients

    def init(self) -> LossScaleState:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _check_state(self, method: str, state: Any) -> None:
        if isinstance(state, LossScaleState):
            return
        name = f"{type(self).__name__}.{method}"
        hint = (
            "; pass opt_state.loss_scale, the loss scale's part of the loss_scaled state"
            if isinstance(state, LossScaledState)
            else ""
        )
        raise TypeError(
            f"{name}: state must be a fundl.precision.LossScaleState (made by "
            f"{type(self).__name__}(...).init()), got {type(state).__name__}{hint}"
        )

    def scale(self, loss: jax.Array, state: LossScaleState) -> jax.Array:
        """S · loss, in float32 at least: a float16 loss times S = 2¹⁵ would overflow."""
        self._check_state("scale", state)
        wide = accumulation_dtype(loss)
        return jnp.asarray(loss).astype(wide) * state.scale.astype(wide)

    def unscale(self, grads: Any, state: LossScaleState) -> Any:
        """grads / S, each leaf divided in float32 (at least) and returned in its own dtype."""
        self._check_state("unscale", state)

        def unscale(g: jax.Array) -> jax.Array:
            if not jnp.issubdtype(jnp.result_type(g), jnp.floating):
                return g
            wide = accumulation_dtype(g)
            return (g.astype(wide) / state.scale.astype(wide)).astype(g.dtype)

        return jax.tree.map(unscale, grads)

    def adjust(self, state: LossScaleState, grads_finite: jax.Array) -> LossScaleState:
        """The state after a step whose gradients were (or were not) all finite."""
        self._check_state("adjust", state)
        del grads_finite
        return state


@dataclasses.dataclass(frozen=True)
class NoOpLossScale(_LossScale):
    """S = 1, and no step is skipped: the step without loss scaling, with its metrics.

    Lets one code path serve every policy (``DynamicLossScale()`` for float16,
    ``NoOpLossScale()`` otherwise).

    Examples:
      >>> float(fundl.precision.NoOpLossScale().init().scale)
      1.0
    """

    skips_nonfinite: ClassVar[bool] = False

    def init(self) -> LossScaleState:
        """S = 1."""
        return _state(1.0)


@dataclasses.dataclass(frozen=True)
class StaticLossScale(_LossScale):
    """A fixed S: loss · S is differentiated, the gradients divided by S; a step with
    inf/NaN gradients is skipped (S stays).

    Examples:
      >>> ls = fundl.precision.StaticLossScale(128.0)
      >>> float(ls.scale(jnp.asarray(0.5), ls.init()))
      64.0
    """

    scale_value: float = 2.0**15

    def __post_init__(self) -> None:
        value = check_number(
            "StaticLossScale", "scale_value", self.scale_value, low=0.0, low_open=True
        )
        object.__setattr__(self, "scale_value", value)

    def init(self) -> LossScaleState:
        """S = ``scale_value``."""
        return _state(self.scale_value)


@dataclasses.dataclass(frozen=True)
class DynamicLossScale(_LossScale):
    """S adapts: divided by ``factor`` on a step with inf/NaN gradients (which is skipped),
    multiplied by ``factor`` after ``period`` steps in a row with finite gradients.

        finite step:  good ← good + 1;  if good = period: S ← factor·S, good ← 0
        skipped step: S ← max(S / factor, min_scale), good ← 0

    (jmp's ``DynamicLossScale``; PyTorch's ``GradScaler`` with growth_interval = period,
    growth_factor = factor, backoff_factor = 1/factor). S never grows to inf.

    Args:
      initial: the first S (2¹⁵, as jmp; PyTorch starts at 2¹⁶).
      period: good steps in a row before S grows.
      factor: the growth and back-off factor, > 1.
      min_scale: the smallest S, in (0, initial].

    Examples:
      >>> ls = fundl.precision.DynamicLossScale(initial=8.0, period=2)
      >>> state = ls.adjust(ls.init(), jnp.asarray(False))  # an inf gradient: S halves
      >>> float(state.scale)
      4.0
    """

    initial: float = 2.0**15
    period: int = 2000
    factor: float = 2.0
    min_scale: float = 1.0

    def __post_init__(self) -> None:
        name = "DynamicLossScale"
        initial = check_number(name, "initial", self.initial, low=0.0, low_open=True)
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "period", check_int(name, "period", self.period))
        factor = check_number(name, "factor", self.factor, low=1.0, low_open=True)
        object.__setattr__(self, "factor", factor)
        low = check_number(name, "min_scale", self.min_scale, low=0.0, high=initial, low_open=True)
        object.__setattr__(self, "min_scale", low)

    def init(self) -> LossScaleState:
        """S = ``initial``, no good steps yet."""
        return _state(self.initial)

    def adjust(self, state: LossScaleState, grads_finite: jax.Array) -> LossScaleState:
        """Halve S (by ``factor``) after a non-finite step; grow it after ``period`` good ones."""
        self._check_state("adjust", state)
        scale, good = state.scale, state.good_steps
        due = grads_finite & (good + 1 >= self.period)
        grown = scale * jnp.float32(self.factor)
        grown = jnp.where(jnp.isfinite(grown), grown, scale)
        lowered = jnp.maximum(scale / jnp.float32(self.factor), jnp.float32(self.min_scale))
        new_scale = jnp.where(grads_finite, jnp.where(due, grown, scale), lowered)
        new_good = jnp.where(grads_finite & ~due, good + 1, 0).astype(jnp.int32)
        return LossScaleState(new_scale, new_good)


def check_loss_scale(name: str, loss_scale: Any) -> Any:
    """``loss_scale`` if it is None or one of the loss scales; else ``TypeError``."""
    if loss_scale is None or isinstance(loss_scale, _LossScale):
        return loss_scale
    raise TypeError(
        f"{name}: loss_scale must be a fundl.precision DynamicLossScale, StaticLossScale or "
        f"NoOpLossScale, or None; got {loss_scale!r}"
    )


# --- the optimizer that carries the loss scale -------------------------------------------


class LossScaledState(NamedTuple):
    """The state of :func:`loss_scaled`: the loss scale's, a count of skipped steps, the optimizer's.

    Examples:
      >>> scale = fundl.precision.StaticLossScale(128.0)
      >>> opt = fundl.precision.loss_scaled(fundl.optim.sgd(0.1), scale)
      >>> state = opt.init({"w": jnp.ones(2)})
      >>> state._fields
      ('loss_scale', 'skipped', 'inner')
      >>> float(state.loss_scale.scale), int(state.skipped)
      (128.0, 0)
    """

    loss_scale: LossScaleState  # S and the good-step count
    skipped: jax.Array  # int32 scalar: steps skipped so far for inf/NaN gradients
    inner: Any  # the wrapped optimizer's state, unchanged by a skipped step


def loss_scaled(optimizer: GradientTransformation, loss_scale: Any) -> GradientTransformation:
    """``optimizer``, skipping steps with inf/NaN gradients and adjusting the loss scale's S.

    ``update(grads, state, params)`` takes the gradients already divided by S
    (``loss_scale.unscale``): if every one is finite, the wrapped optimizer's update and
    state; else zero updates and the wrapped state unchanged (with ``NoOpLossScale``,
    the update always). Either way S is adjusted (``loss_scale.adjust``). The train
    steps' ``loss_scale=`` runs this: initialise their optimizer state with
    ``loss_scaled(optimizer, loss_scale).init(params)`` (or ``TrainState.create(params,
    loss_scaled(optimizer, loss_scale))``), which holds S — read it at
    ``opt_state.loss_scale.scale``.

    Examples:
      >>> opt = fundl.precision.loss_scaled(fundl.optim.sgd(0.1), fundl.precision.DynamicLossScale())
      >>> state = opt.init({"w": jnp.ones(2)})
      >>> updates, state = opt.update({"w": jnp.array([1.0, jnp.inf])}, state, {"w": jnp.ones(2)})
      >>> updates["w"], float(state.loss_scale.scale), int(state.skipped)
      (Array([0., 0.], dtype=float32), 16384.0, 1)
    """
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(
            f"loss_scaled: optimizer must be a fundl.optim GradientTransformation, got {optimizer!r}"
        )
    check_loss_scale("loss_scaled", loss_scale)
    if loss_scale is None:
        raise TypeError("loss_scaled: loss_scale must be a loss scale, got None")

    def init(params: Any) -> LossScaledState:
        return LossScaledState(loss_scale.init(), jnp.zeros((), jnp.int32), optimizer.init(params))

    def update(grads: Any, state: LossScaledState, params: Any = None, **extra: Any):
        if not isinstance(state, LossScaledState):
            raise TypeError(
                "loss_scaled: the state must come from loss_scaled(optimizer, loss_scale).init"
                f"(params), got {type(state).__name__}"
            )
        finite = all_finite(grads)
        updates, inner = optimizer.update(grads, state.inner, params, **extra)
        skipped = state.skipped
        if loss_scale.skips_nonfinite:
            updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
            inner = select_tree(finite, inner, state.inner)
            skipped = jnp.where(finite, skipped, safe_increment(skipped))
        return updates, LossScaledState(loss_scale.adjust(state.loss_scale, finite), skipped, inner)

    return GradientTransformation(init, update)
