"""Small blocks that turn gradients into update directions (optax's ``scale_by_*``).

Each keeps its moment estimates in ``moment_dtype`` — by default the parameter's dtype
but at least float32, so bfloat16 parameters get float32 moments (bf16 moments lose
small gradients: adding 1e-3 to 1.0 in bfloat16 gives 1.0) — and returns updates in
the gradients' dtype. Keep the moments of float16 parameters in float32 (the default)
too: a float16 second moment underflows, (1 − β₂)g² below about 6e-8 becomes 0. The
division m/(√v + ε) is computed in at least float32 whatever the moments' dtype, so ε
(float16 rounds 1e-8 to 0) keeps a zero gradient's update 0, not 0/0 = NaN. The named
optimizers in :mod:`fundl.optim.alias` are ``chain``s of these blocks and a
learning-rate scale.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fundl.optim.base import (
    GradientTransformation,
    MomentDtype,
    Range,
    ScalarOrSchedule,
    check_against_state,
    check_state,
    in_dtype,
    moments_like,
    safe_increment,
    scaled,
    stateless,
    validated,
    value_at,
)
from fundl.tree import accumulation_dtype, check_same_shapes, global_norm

__all__ = [
    "scale",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_ema",
    "scale_by_rms",
    "scale_by_adam",
    "scale_by_adagrad",
    "scale_by_lion",
    "scale_by_trust_ratio",
    "ScheduleState",
    "TraceState",
    "EmaState",
    "RmsState",
    "AdamState",
    "AdagradState",
    "LionState",
]


def _float(count: jax.Array) -> jax.Array:
    """A step count as a float (float64 when x64 is on)."""
    return count.astype(jnp.result_type(float))


def _refuse_complex(name: str, params: Any) -> None:
    """A second moment of g² is meaningless for complex g (optax keeps |g|², PyTorch treats
    the real and imaginary parts as two parameters): refused rather than computed wrong."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
            raise TypeError(
                f"{name}: parameter params{jax.tree_util.keystr(path)} is complex "
                f"({jnp.result_type(leaf)}); its second moment of g² would be complex and the "
                "update meaningless: optimize the real and imaginary parts as two real "
                "parameters (jnp.stack([z.real, z.imag]))"
            )


def _update_moment(updates: Any, moments: Any, decay: Any, *, order: int = 1) -> Any:
    """The moving average Adam, RMSprop, Lion and the notes' momentum share: m ← βm + (1 − β)gᵏ.

    Leaf by leaf, with k = ``order``.

    g is cast into the moment's dtype first (a bfloat16 gradient into a float32 moment),
    and squared there for k = 2, so nothing is lost to the gradient's precision.
    β may be a number or a scalar array (injected, or swept under ``vmap``).

    Args:
      updates: the gradients g, a pytree.
      moments: the moments m, a pytree like ``updates``, in the moment dtype.
      decay: β in [0, 1).
      order: k, 1 (a mean of g) or 2 (a mean of g²).

    Returns:
      the new moments, like ``moments``.
    """

    def one(g: jax.Array, m: jax.Array) -> jax.Array:
        g = g.astype(m.dtype)
        g = jnp.square(g) if order == 2 else g
        beta = in_dtype(decay, m.dtype)
        return beta * m + (1 - beta) * g

    return jax.tree.map(one, updates, moments)


def _in_grad_dtype(updates: Any, directions: Any) -> Any:
    """Each direction (in its moment's dtype) cast back to its gradient's dtype."""
    return jax.tree.map(lambda g, d: d.astype(g.dtype), updates, directions)


def _divide_by_root(updates: Any, second_moments: Any, eps: Any) -> Any:
    """u ← g / (√v + ε) leaf by leaf, returned in g's dtype (RMSprop, Adagrad).

    Computed in v's dtype, at least float32: float16 would round ε = 1e-8 to 0, and a
    zero gradient would give 0/0 = NaN.
    """

    def one(g: jax.Array, v: jax.Array) -> jax.Array:
        dtype = accumulation_dtype(v)  # v's own dtype for float32 and float64 moments
        root = jnp.sqrt(v.astype(dtype))
        return (g.astype(dtype) / (root + in_dtype(eps, dtype))).astype(g.dtype)

    return jax.tree.map(one, updates, second_moments)


# --- constant and scheduled scales --------------------------------------------------


@validated
def scale(step_size: float) -> GradientTransformation:
    """Multiply updates by a constant: u ← s·u.

    Args:
      step_size: s, any finite number (negative to descend) or a scalar array.

    Returns:
      a stateless :class:`fundl.optim.GradientTransformation`; updates keep their dtypes.

    Examples:
      >>> half = fundl.optim.scale(0.5)
      >>> u, _ = half.update({"w": jnp.array([1.0, -3.0])}, half.init(None))
      >>> np.asarray(u["w"], np.float64).round(4).tolist()
      [0.5, -1.5]
    """
    return stateless(lambda updates, params: jax.tree.map(lambda u: scaled(u, step_size), updates))


class ScheduleState(NamedTuple):
    """State of a scheduled learning rate: the step count the schedule is evaluated at.

    Examples:
      >>> lr = fundl.optim.schedules.cosine_decay(0.1, 100)
      >>> fundl.optim.scale_by_learning_rate(lr).init({"w": jnp.zeros(3)})
      ScheduleState(count=Array(0, dtype=int32))
    """

    count: jax.Array  # steps taken, int32 scalar


@validated
def scale_by_learning_rate(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """Descend: u ← −α·u, with α a number or a schedule α(step).

    Args:
      learning_rate: α ≥ 0, a float, a scalar array (for ``vmap`` sweeps) or a
        schedule ``step -> α`` evaluated at the number of updates taken so far (whose
        ``bounds`` must be ≥ 0).

    Returns:
      a :class:`fundl.optim.GradientTransformation`: stateless for a number, with a
      :class:`ScheduleState` (the step count) for a schedule.

    Examples:
      α halves every step (0.1, 0.05, 0.025):

      >>> lr = fundl.optim.schedules.exponential_decay(0.1, 0.5, 1)
      >>> block = fundl.optim.scale_by_learning_rate(lr)
      >>> g, state = {"w": jnp.ones(2)}, block.init({"w": jnp.ones(2)})
      >>> for _ in range(3):
      ...     u, state = block.update(g, state)
      ...     print(np.asarray(u["w"], np.float64).round(4).tolist())
      [-0.1, -0.1]
      [-0.05, -0.05]
      [-0.025, -0.025]
    """
    if not callable(learning_rate):
        return scale(-learning_rate)

    def init(params: Any) -> ScheduleState:
        return ScheduleState(jnp.zeros([], jnp.int32))

    def update(updates: Any, state: ScheduleState, params: Any = None, **extra_args: Any):
        check_state("scale_by_learning_rate", state, ScheduleState)
        lr = value_at(learning_rate, state.count)
        new = jax.tree.map(lambda u: scaled(u, -lr), updates)
        return new, ScheduleState(safe_increment(state.count))

    return GradientTransformation(init, update)


# --- momentum ------------------------------------------------------------------------


class TraceState(NamedTuple):
    """State of heavy-ball momentum: the velocity v, a pytree like the parameters.

    Examples:
      >>> fundl.optim.sgd(0.1, 0.9).init({"w": jnp.zeros(2)})
      TraceState(velocity={'w': Array([0., 0.], dtype=float32)})
    """

    velocity: Any  # v, like params, in the moment dtype


@validated
def scale_by_momentum(
    momentum: float = 0.9, *, nesterov: bool = False, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Heavy-ball momentum (Polyak; PyTorch's SGD): v ← μv + g; u ← v.

    With ``nesterov=True`` (Sutskever et al., 2013, as PyTorch): u ← g + μv, using the
    new v.

    Args:
      momentum: μ in [0, 1).
      nesterov: use Nesterov's look-ahead (True or False).
      moment_dtype: dtype of v (see :data:`fundl.optim.MomentDtype`).

    Returns:
      a :class:`fundl.optim.GradientTransformation` with a :class:`TraceState`.

    Examples:
      The same gradient twice: v = 1, then 0.9·1 + 1 = 1.9:

      >>> block = fundl.optim.scale_by_momentum(0.9)
      >>> g = {"w": jnp.ones(2)}
      >>> state = block.init(g)
      >>> for _ in range(2):
      ...     u, state = block.update(g, state)
      ...     print(np.asarray(u["w"], np.float64).round(4).tolist())
      [1.0, 1.0]
      [1.9, 1.9]

      With ``nesterov=True`` the update looks ahead, g + μv: 1.9, then 1 + 0.9·1.9 = 2.71:

      >>> block = fundl.optim.scale_by_momentum(0.9, nesterov=True)
      >>> state = block.init(g)
      >>> for _ in range(2):
      ...     u, state = block.update(g, state)
      ...     print(np.asarray(u["w"], np.float64).round(4).tolist())
      [1.9, 1.9]
      [2.71, 2.71]
    """

    def init(params: Any) -> TraceState:
        return TraceState(moments_like(params, moment_dtype))

    def update(updates: Any, state: TraceState, params: Any = None, **extra_args: Any):
        check_state("scale_by_momentum", state, TraceState)
        check_against_state("scale_by_momentum", updates, state.velocity)

        def step(g, v):  # μv + g, in v's dtype
            return in_dtype(momentum, v.dtype) * v + g.astype(v.dtype)

        velocity = jax.tree.map(step, updates, state.velocity)
        out = jax.tree.map(step, updates, velocity) if nesterov else velocity
        return _in_grad_dtype(updates, out), TraceState(velocity)

    return GradientTransformation(init, update)


class EmaState(NamedTuple):
    """State of an exponential moving average of gradients: v, a pytree like the parameters.

    Examples:
      >>> fundl.optim.momentum(0.1).init({"w": jnp.zeros(2)})
      EmaState(velocity={'w': Array([0., 0.], dtype=float32)})
    """

    velocity: Any  # v, like params, in the moment dtype


@validated
def scale_by_ema(decay: float = 0.9, *, moment_dtype: MomentDtype = None) -> GradientTransformation:
    """The notes' momentum: v ← βv + (1 − β)g; u ← v (no bias correction).

    Compared with heavy-ball momentum (v ← βv + g) the step is (1 − β) times smaller
    for the same learning rate: ``momentum(α, β)`` equals ``sgd(α(1 − β), β)``.

    Args:
      decay: β in [0, 1).
      moment_dtype: dtype of v.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`EmaState`.

    Examples:
      The same gradient twice: v = 0.1, then 0.9·0.1 + 0.1 = 0.19:

      >>> block = fundl.optim.scale_by_ema(0.9)
      >>> g = {"w": jnp.ones(2)}
      >>> state = block.init(g)
      >>> for _ in range(2):
      ...     u, state = block.update(g, state)
      ...     print(np.asarray(u["w"], np.float64).round(4).tolist())
      [0.1, 0.1]
      [0.19, 0.19]
    """

    def init(params: Any) -> EmaState:
        return EmaState(moments_like(params, moment_dtype))

    def update(updates: Any, state: EmaState, params: Any = None, **extra_args: Any):
        check_state("scale_by_ema", state, EmaState)
        check_against_state("scale_by_ema", updates, state.velocity)
        velocity = _update_moment(updates, state.velocity, decay)
        return _in_grad_dtype(updates, velocity), EmaState(velocity)

    return GradientTransformation(init, update)


# --- adaptive scalings ---------------------------------------------------------------


class RmsState(NamedTuple):
    """State of RMSprop: the mean square ``nu`` and, centered, the mean ``mu``.

    Examples:
      >>> state = fundl.optim.rmsprop(1e-3).init({"w": jnp.zeros(2)})
      >>> state.nu["w"].shape, state.mu  # not centered: no mean
      ((2,), ())
    """

    nu: Any  # E[g²], like params, in the moment dtype
    mu: Any  # E[g] (centered only; else an empty tuple)


@validated
def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    *,
    centered: bool = False,
    moment_dtype: MomentDtype = None,
) -> GradientTransformation:
    """RMSprop (Hinton, 2012; PyTorch's form): v ← ρv + (1 − ρ)g²; u ← g / (√v + ε).

    Centered (Graves, 2013): also m ← ρm + (1 − ρ)g and u ← g / (√max(v − m², 0) + ε)
    (v − m² ≥ 0 in exact arithmetic, but it rounds below 0 for a nearly constant g).
    ε sits outside the square root, as in PyTorch (optax puts it inside).

    Args:
      decay: ρ in [0, 1).
      eps: ε ≥ 1.2e-38 (float32's smallest normal number: a smaller ε rounds to 0).
      centered: divide by the centered second moment (an estimate of the variance).
      moment_dtype: dtype of v and m.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`RmsState`.

    Examples:
      One step from v = 0: v = 0.1·g², so u = g/√(0.1·g²) = ±√10:

      >>> block = fundl.optim.scale_by_rms(0.9)
      >>> g = {"w": jnp.array([1.0, -2.0])}
      >>> u, state = block.update(g, block.init(g))
      >>> np.asarray(u["w"], np.float64).round(4).tolist()
      [3.1623, -3.1623]
      >>> np.asarray(state.nu["w"], np.float64).round(4).tolist()
      [0.1, 0.4]
    """

    def init(params: Any) -> RmsState:
        _refuse_complex("scale_by_rms", params)
        mu = moments_like(params, moment_dtype) if centered else ()
        return RmsState(moments_like(params, moment_dtype), mu)

    def update(updates: Any, state: RmsState, params: Any = None, **extra_args: Any):
        check_state("scale_by_rms", state, RmsState)
        check_against_state("scale_by_rms", updates, state.nu)
        nu = _update_moment(updates, state.nu, decay, order=2)
        if centered:
            mu = _update_moment(updates, state.mu, decay)
            # clamped: in floating point v − m² can round below 0 (g nearly constant),
            # and √ of it would be NaN
            variance = jax.tree.map(lambda v, m: jnp.maximum(v - jnp.square(m), 0), nu, mu)
        else:
            mu, variance = (), nu
        return _divide_by_root(updates, variance, eps), RmsState(nu, mu)

    return GradientTransformation(init, update)


class AdamState(NamedTuple):
    """State of Adam: the step count t and the moments m and v, pytrees like the parameters.

    Examples:
      >>> state = fundl.optim.adam(1e-3).init({"w": jnp.zeros((2, 3), jnp.bfloat16)})
      >>> int(state.count), state.mu["w"].shape, state.nu["w"].dtype  # float32 moments
      (0, (2, 3), dtype('float32'))
    """

    count: jax.Array  # steps taken t, int32 scalar
    mu: Any  # first moment m, like params, in the moment dtype
    nu: Any  # second moment v, like params, in the moment dtype


@validated
def scale_by_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Adam's direction (Kingma & Ba, 2015), with bias correction.

    m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  m̂ = m/(1 − β₁ᵗ);  v̂ = v/(1 − β₂ᵗ);
    u ← m̂ / (√v̂ + ε)   (ε outside the square root, as in the paper and PyTorch).

    The division is computed in at least float32 (float16 moments round ε = 1e-8 to 0).

    Args:
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 1.2e-38 (float32's smallest normal number: a smaller ε rounds to 0).
      moment_dtype: dtype of m and v (float32 or wider for float16 parameters: a
        float16 v underflows to 0 for (1 − β₂)g² below about 6e-8).

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`AdamState`.

    Examples:
      The first direction is g/|g| = ±1 whatever the size of g (m̂ = g, v̂ = g²); the
      second, after g = [1, 0], is m̂/√v̂ with m̂ = [1, −0.9474] and v̂ = [1, 1.999]:

      >>> block = fundl.optim.scale_by_adam()
      >>> g = {"w": jnp.array([1.0, -2.0])}
      >>> u, state = block.update(g, block.init(g))
      >>> np.asarray(u["w"], np.float64).round(4).tolist()
      [1.0, -1.0]
      >>> u, state = block.update({"w": jnp.array([1.0, 0.0])}, state)
      >>> np.asarray(u["w"], np.float64).round(4).tolist()
      [1.0, -0.6701]
    """

    def init(params: Any) -> AdamState:
        _refuse_complex("scale_by_adam", params)
        # Two separate buffers: a donated state must not hold one array twice.
        mu, nu = moments_like(params, moment_dtype), moments_like(params, moment_dtype)
        return AdamState(jnp.zeros([], jnp.int32), mu, nu)

    def update(updates: Any, state: AdamState, params: Any = None, **extra_args: Any):
        check_state("scale_by_adam", state, AdamState)
        check_against_state("scale_by_adam", updates, state.mu)
        count = safe_increment(state.count)
        mu = _update_moment(updates, state.mu, b1)
        nu = _update_moment(updates, state.nu, b2, order=2)
        t = _float(count)
        c1 = 1 - in_dtype(b1, t.dtype) ** t
        c2 = 1 - in_dtype(b2, t.dtype) ** t

        def direction(g, m, v):
            # in the moments' dtype, at least float32: float16 rounds ε = 1e-8 to 0
            dtype = accumulation_dtype(v)
            m_hat = m.astype(dtype) / c1.astype(dtype)
            v_hat = v.astype(dtype) / c2.astype(dtype)
            return (m_hat / (jnp.sqrt(v_hat) + in_dtype(eps, dtype))).astype(g.dtype)

        return jax.tree.map(direction, updates, mu, nu), AdamState(count, mu, nu)

    return GradientTransformation(init, update)


class AdagradState(NamedTuple):
    """State of Adagrad: the running sum of squared gradients G, a pytree like the parameters.

    Examples:
      >>> fundl.optim.adagrad(0.1, initial_accumulator_value=0.1).init({"w": jnp.zeros(2)})
      AdagradState(sum_of_squares={'w': Array([0.1, 0.1], dtype=float32)})
    """

    sum_of_squares: Any  # G = G₀ + Σ g², like params, in the moment dtype


@validated
def scale_by_adagrad(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Adagrad (Duchi et al., 2011; PyTorch's form): G ← G + g²; u ← g / (√G + ε).

    Args:
      initial_accumulator_value: G₀ ≥ 0 (PyTorch: 0; optax: 0.1).
      eps: ε ≥ 1.2e-38, outside the square root (PyTorch: 1e-10).
      moment_dtype: dtype of G.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with an :class:`AdagradState`.

    Examples:
      The same gradient twice: u = g/|g| = ±1, then g/√(2g²) = ±0.7071:

      >>> block = fundl.optim.scale_by_adagrad()
      >>> g = {"w": jnp.array([3.0, -0.5])}
      >>> u, state = block.update(g, block.init(g))
      >>> u, state = block.update(g, state)
      >>> np.asarray(u["w"], np.float64).round(4).tolist()
      [0.7071, -0.7071]
      >>> np.asarray(state.sum_of_squares["w"], np.float64).round(4).tolist()
      [18.0, 0.5]
    """

    def init(params: Any) -> AdagradState:
        _refuse_complex("scale_by_adagrad", params)
        zeros = moments_like(params, moment_dtype)
        return AdagradState(
            jax.tree.map(lambda z: z + in_dtype(initial_accumulator_value, z.dtype), zeros)
        )

    def update(updates: Any, state: AdagradState, params: Any = None, **extra_args: Any):
        check_state("scale_by_adagrad", state, AdagradState)
        check_against_state("scale_by_adagrad", updates, state.sum_of_squares)
        total = jax.tree.map(
            lambda g, s: s + jnp.square(g.astype(s.dtype)), updates, state.sum_of_squares
        )
        return _divide_by_root(updates, total, eps), AdagradState(total)

    return GradientTransformation(init, update)


class LionState(NamedTuple):
    """State of Lion: the momentum m, a pytree like the parameters.

    Examples:
      >>> fundl.optim.lion(1e-4).init({"w": jnp.zeros(2)})
      LionState(mu={'w': Array([0., 0.], dtype=float32)})
    """

    mu: Any  # momentum m, like params, in the moment dtype


@validated
def scale_by_lion(
    b1: float = 0.9, b2: float = 0.99, *, moment_dtype: MomentDtype = None
) -> GradientTransformation:
    """Lion's direction (Chen et al., 2023): u ← sign(β₁m + (1 − β₁)g); m ← β₂m + (1 − β₂)g.

    Both are the same moving average with two decays: the update interpolates with β₁,
    the momentum keeps β₂.

    Args:
      b1: β₁ in [0, 1), the interpolation for the update.
      b2: β₂ in [0, 1), the momentum decay.
      moment_dtype: dtype of m.

    Returns:
      a :class:`fundl.optim.GradientTransformation` with a :class:`LionState`.

    Examples:
      From m = 0: u = sign(0.1·g) = ±1, and m = 0.01·g:

      >>> block = fundl.optim.scale_by_lion()
      >>> g = {"w": jnp.array([0.5, -2.0])}
      >>> u, state = block.update(g, block.init(g))
      >>> np.asarray(u["w"], np.float64).round(4).tolist()
      [1.0, -1.0]
      >>> np.asarray(state.mu["w"], np.float64).round(4).tolist()
      [0.005, -0.02]
    """

    def init(params: Any) -> LionState:
        return LionState(moments_like(params, moment_dtype))

    def update(updates: Any, state: LionState, params: Any = None, **extra_args: Any):
        check_state("scale_by_lion", state, LionState)
        check_against_state("scale_by_lion", updates, state.mu)
        direction = jax.tree.map(jnp.sign, _update_moment(updates, state.mu, b1))
        mu = _update_moment(updates, state.mu, b2)
        return _in_grad_dtype(updates, direction), LionState(mu)

    return GradientTransformation(init, update)


@validated(eps=Range(0.0))
def scale_by_trust_ratio(eps: float = 0.0) -> GradientTransformation:
    """LAMB's layer-wise trust ratio (You et al., 2020): u ← u·‖p‖/(‖u‖ + ε) per leaf.

    The ratio is 1 where ‖p‖ or ‖u‖ is zero. Needs ``params``.

    Args:
      eps: ε ≥ 0 (0 is safe: a zero ‖u‖ gives the ratio 1).

    Returns:
      a stateless :class:`fundl.optim.GradientTransformation`; ``update`` needs
      ``params``, a pytree like the updates.

    Examples:
      ‖p‖ = 5 and ‖u‖ = 1, so u is multiplied by 5:

      >>> block = fundl.optim.scale_by_trust_ratio()
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> u, _ = block.update({"w": jnp.array([0.6, 0.8])}, block.init(params), params)
      >>> np.asarray(u["w"], np.float64).round(4).tolist()
      [3.0, 4.0]
    """

    def rescale(u, p):
        p_norm, u_norm = global_norm(p), global_norm(u)
        dtype = u_norm.dtype
        p_norm = p_norm.astype(dtype)
        ratio = jnp.where(
            (p_norm > 0) & (u_norm > 0), p_norm / (u_norm + in_dtype(eps, dtype)), 1.0
        )
        return scaled(u, ratio)

    def fn(updates: Any, params: Any) -> Any:
        if params is None:
            raise ValueError(
                "scale_by_trust_ratio: needs params; call update(grads, state, params)"
            )
        check_same_shapes("scale_by_trust_ratio", updates, params, "grads", "params")
        return jax.tree.map(rescale, updates, params)

    return stateless(fn)
