"""Gradient verification: fundl's hand-written rules against autodiff and finite differences.

``check(f, *args)`` differentiates ``f`` three ways, in float64 (x64 is enabled for
the check and restored after):

1. the hand-written VJP (fundl's rules, the default mode),
2. JAX autodiff of the reference forward (``fundl.reference_mode()``),
3. central finite differences, (φ(θ + h e_i) − φ(θ − h e_i)) / 2h, h refined from
   fd_step·max(1, |θ_i|) towards fd_step·|θ_i| until two steps agree, skipping (and
   counting, in the row's note) elements at a kink, where the two one-sided
   differences disagree at h and still at h/4: φ is not differentiable there (a ReLU
   input at exactly 0); curvature parts them too, by h·φ'', but that shrinks with h,

where φ(θ) = ⟨c, f(θ)⟩ for a random cotangent c (c = 1 for a scalar f, so the check
is of the full gradient). Beyond first order it also checks (a) a Hessian-vector
product through the hand-written rules (grad of grad) against the reference's, (b)
that ``jax.vmap`` of the rule equals the per-example results stacked (inputs scaled by
1 ± ~1%, keeping their sign; NaN in the same place on both sides agrees), and (c) that
under ``jax.jit`` the rule gives the eager values.

Every comparison gives one row per leaf: the check (which sides were compared), the
leaf (``params['dense1']['W']``), the max absolute error max|a − b|, the relative
error max|a − b| / max|b|, and pass/fail. Default tolerances (:class:`Tolerances`):

==========================  ======================================================
comparison                  passes when, elementwise
==========================  ======================================================
hand vs autodiff, hvp,      |a − b| ≤ 1e-7·|b| + 1e-9  (float64: the two should
vmap, jit, forward          agree to rounding)
hand vs finite diff         |a − b| ≤ 1e-5·|b| + 1e-6  (first step h = 1e-6·max(1, |θ_i|))
==========================  ======================================================

Low precision: when a differentiated input is bfloat16 or float16, the hand rule runs
in that dtype and is compared with the float64 reference; finite differences are
skipped (a fixed step is below these dtypes' resolution). The dtype alone puts any
gradient some way off float64 — bf16 keeps 8 significant bits, and a few chained
layers reach several percent — so the check also runs JAX autodiff of the reference in
the same dtype, and a row passes when

    max|a − b| ≤ max(tol·max|b|, 2 × (autodiff-in-that-dtype's own max error)),

tol = 2⁻⁴ for bfloat16 and 2⁻⁷ for float16 (8 machine epsilons): the hand rule must be
about as accurate as autodiff at that precision. A wrong rule is off by order one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fundl import rules
from fundl._validate import as_key, check_bool, check_int, check_number

__all__ = ["Tolerances", "Row", "Report", "check", "check_model", "LOW_PRECISION_TOLERANCE"]

LOW_PRECISION_TOLERANCE = {
    jnp.dtype(jnp.bfloat16): 2.0**-4,
    jnp.dtype(jnp.float16): 2.0**-7,
}
"""Normwise relative tolerance floor, per low-precision dtype (8 machine epsilons)."""

_KINK = 1e-3  # one-sided slopes differing by this much (relative), at h and h/4: a kink
_FD_LEVELS = 12  # finite-difference steps per element at most: h, h/4, ..., h/4¹¹


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Tolerances of the float64 comparisons (see the module docstring).

    A comparison of a (hand-written) with b (the reference) passes when
    |a − b| ≤ atol + rtol·|b| elementwise.

    Attributes:
      rtol: relative tolerance of the hand-written rule vs reference autodiff, and of
        the hvp, vmap, jit and forward checks.
      atol: their absolute tolerance.
      fd_rtol: relative tolerance of the hand-written rule vs central finite
        differences.
      fd_atol: its absolute tolerance.

    Examples:
      >>> fundl.gradcheck.Tolerances(fd_rtol=1e-4)  # pass as check(..., tolerances=...)
      Tolerances(rtol=1e-07, atol=1e-09, fd_rtol=0.0001, fd_atol=1e-06)
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    fd_rtol: float = 1e-5
    fd_atol: float = 1e-6

    def __post_init__(self) -> None:
        # a negative or NaN tolerance fails every row; a string fails deep inside a check
        for field in ("rtol", "atol", "fd_rtol", "fd_atol"):
            value = check_number("Tolerances", field, getattr(self, field), low=0.0)
            object.__setattr__(self, field, value)


class Row(NamedTuple):
    """One comparison of one leaf: a line of a :class:`Report`'s table.

    Examples:
      >>> row = fundl.gradcheck.Row("vjp: hand vs autodiff", "x", 1e-17, 1e-16, "rtol 1e-07", True)
      >>> row.passed, row.note
      (True, '')
    """

    check: str  # which sides were compared, e.g. "vjp: hand vs autodiff"
    leaf: str  # which leaf, e.g. "params['dense1']['W']"
    max_abs: float  # max |a − b|
    max_rel: float  # max |a − b| / max |b|
    tolerance: str  # the rule it was held to
    passed: bool
    note: str = ""  # e.g. how many elements finite differences sampled


@dataclasses.dataclass(frozen=True)
class Report:
    """The result of :func:`check`: rows, notes, and a table when printed.

    Attributes:
      function: the name of the function checked.
      precision: "float64", or the low-precision dtype compared with float64.
      cotangent: how the output was reduced (1 for a scalar output, else a random
        normal cotangent and its seed).
      rows: one :class:`Row` per comparison and leaf.
      notes: remarks, such as the comparisons that were skipped.

    Examples:
      >>> row = fundl.gradcheck.Row("vjp: hand vs autodiff", "x", 0.0, 0.0, "rtol 1e-07", True)
      >>> report = fundl.gradcheck.Report("tanh", "float64", "1", (row,))
      >>> report.passed, report.failures()
      (True, [])
      >>> print(report)
      gradcheck of tanh (float64; cotangent: 1)
      check                  leaf  max abs err  max rel err  tolerance   ok
      ---------------------  ----  -----------  -----------  ----------  --
      vjp: hand vs autodiff  x     0.00e+00     0.00e+00     rtol 1e-07  ok
      PASSED (1 checks)
    """

    function: str
    precision: str
    cotangent: str
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True when every row passed."""
        return all(row.passed for row in self.rows)

    def failures(self) -> list[Row]:
        """The rows that failed."""
        return [row for row in self.rows if not row.passed]

    def assert_passed(self) -> None:
        """Raise ``AssertionError`` with the table if any row failed."""
        if not self.passed:
            raise AssertionError(f"gradcheck failed:\n{self}")

    def __str__(self) -> str:
        header = ("check", "leaf", "max abs err", "max rel err", "tolerance", "ok")
        body = [
            (
                r.check,
                r.leaf + (f" ({r.note})" if r.note else ""),
                f"{r.max_abs:.2e}",
                f"{r.max_rel:.2e}",
                r.tolerance,
                "ok" if r.passed else "FAIL",
            )
            for r in self.rows
        ]
        widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]

        def fmt(line: Sequence[str]) -> str:
            return "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()

        lines = [
            f"gradcheck of {self.function} ({self.precision}; cotangent: {self.cotangent})",
            fmt(header),
            fmt(["-" * w for w in widths]),
            *(fmt(line) for line in body),
        ]
        lines += [f"note: {note}" for note in self.notes]
        n_failed = len(self.failures())
        lines.append(
            f"PASSED ({len(self.rows)} checks)"
            if n_failed == 0
            else f"FAILED ({n_failed} of {len(self.rows)} checks)"
        )
        return "\n".join(lines)


# --- helpers -------------------------------------------------------------------------


@contextlib.contextmanager
def _x64() -> Iterator[None]:
    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # older JAX
        from jax.experimental import enable_x64 as enable  # type: ignore[no-redef]
    with enable(True):
        yield


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _arg_names(f: Callable[..., Any], n: int) -> list[str]:
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(n):
        if i < len(params) and params[i].kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            names.append(params[i].name)
        else:
            names.append(f"args[{i}]")
    return names


def _max_abs_diff(a: Any, b: Any) -> float:
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(diff.max()) if diff.size else 0.0


def _compare(
    name: str,
    leaf: str,
    a: Any,
    b: Any,
    *,
    rtol: float,
    atol: float,
    normwise: bool,
    note: str = "",
    baseline: float | None = None,
    same_nonfinite: bool = False,
) -> Row:
    """One row: a (hand-written side) against b (reference side), leaf by leaf.

    With ``same_nonfinite``, a NaN (or an infinity of one sign) in the same element of
    both counts as agreement, and the finite rest is compared; otherwise any non-finite
    value fails the row.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return Row(
            name, leaf, math.inf, math.inf, "shapes differ", False, f"{a.shape} vs {b.shape}"
        )
    if same_nonfinite:
        agree = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
        if agree.any():
            note = f"{int(agree.sum())} non-finite in both" + (f", {note}" if note else "")
            a, b = a[~agree], b[~agree]
    diff = np.abs(a - b)
    finite = bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    if not finite:
        max_abs = max_rel = math.nan
    if normwise:
        bound = rtol * scale + atol
        tolerance = f"≤ {rtol:g}·max|b|"
        if baseline is not None:
            bound = max(bound, 2 * baseline)
            tolerance = f"≤ max({rtol:g}·max|b|, 2×{baseline:.1e})"
        passed = finite and max_abs <= bound
    else:
        passed = finite and bool(np.all(diff <= atol + rtol * np.abs(b)))
        tolerance = f"rtol {rtol:g}, atol {atol:g}"
    return Row(name, leaf, max_abs, max_rel, tolerance, passed, note)


def _tree_vdot(a: Sequence[jax.Array], b: Sequence[jax.Array]) -> jax.Array:
    """Σ ⟨a_i, b_i⟩, accumulated in float64 whatever the leaves' dtypes."""
    terms = (jnp.vdot(x, y).astype(jnp.float64) for x, y in zip(a, b))
    return sum(terms, jnp.zeros((), jnp.float64))


class _Problem(NamedTuple):
    """f seen as a function of its differentiable leaves: list of arrays -> list of arrays."""

    fn: Callable[[list[jax.Array]], list[jax.Array]]
    leaves: list[jax.Array]  # the differentiable inputs, in the dtypes f sees
    names: list[str]  # their key paths


def _problem(f: Callable[..., Any], args: tuple, argnums: Sequence[int], cast: Any) -> _Problem:
    """Split args into differentiable float leaves and fixed ones; cast the float ones.

    ``cast`` maps a float leaf to the dtype f should see (float64, or itself).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(args)
    arg_names = _arg_names(f, len(args))
    all_leaves, diff_index, names = [], [], []
    for i, (path, leaf) in enumerate(flat):
        leaf = cast(leaf) if _is_float(leaf) else leaf
        all_leaves.append(leaf)
        arg_index = path[0].idx
        if arg_index in argnums and _is_float(leaf):
            diff_index.append(i)
            names.append(arg_names[arg_index] + jax.tree_util.keystr(path[1:]))

    def fn(diff_leaves: list[jax.Array]) -> list[jax.Array]:
        leaves = list(all_leaves)
        for i, leaf in zip(diff_index, diff_leaves):
            leaves[i] = leaf
        out = f(*jax.tree_util.tree_unflatten(treedef, leaves))
        return [o for o in jax.tree.leaves(out) if _is_float(o)]

    return _Problem(fn, [all_leaves[i] for i in diff_index], names)


def _output_names(f: Callable[..., Any], args: tuple) -> list[str]:
    out = jax.eval_shape(f, *args)
    flat = jax.tree_util.tree_flatten_with_path(out)[0]
    return [
        "out" + jax.tree_util.keystr(p) for p, o in flat if jnp.issubdtype(o.dtype, jnp.floating)
    ]


# A jax.jit inside f caches its trace by argument types and JAX's trace context: each
# pass of each check traces in a context of its own, keyed by the check and the mode, so
# no pass runs a trace another pass (or an earlier check) left in the cache.
_pass_context = rules.cache_key_context("fundl_gradcheck")


_CHECK_IDS = itertools.count()


@contextlib.contextmanager
def _mode(reference: bool, key: Any) -> Iterator[None]:
    """Run f's primitives as hand rules or references, in traces of their own.

    ``key`` names the check (and stage) whose traces these are. The reference passes
    also run under "highest" matmul precision (no effect on float64 values).
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(rules.reference_mode(reference))
        stack.enter_context(_pass_context(("fundl.gradcheck", key, reference)))
        if reference:
            stack.enter_context(jax.default_matmul_precision("highest"))
        yield


def _vjp(problem: _Problem, leaves: list[jax.Array], cotangent: list[jax.Array]):
    out, pullback = jax.vjp(problem.fn, leaves)
    return out, pullback([c.astype(o.dtype) for c, o in zip(cotangent, out)])[0]


def _hvp(
    problem: _Problem, leaves: list[jax.Array], cotangent: list[jax.Array], v: list[jax.Array]
):
    def grad_dot_v(theta):
        return _tree_vdot(
            _vjp(problem, theta, cotangent)[1], [t.astype(x.dtype) for t, x in zip(v, theta)]
        )

    return jax.grad(grad_dot_v)(leaves)


def _finite_differences(
    problem: _Problem,
    leaves: list[jax.Array],
    cotangent: list[jax.Array],
    center: float,
    step: float,
    max_elements: int,
    rng: np.random.Generator,
    tolerances: Tolerances,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Central differences of φ(θ) = ⟨c, f(θ)⟩ at sampled elements of each leaf.

    ``center`` is φ(θ) itself, already known from the reference pass. Element i is
    differenced with steps h_k = step·max(1, |θ_i|)·4⁻ᵏ, the central estimates
    D_k = (φ(θ + h_k e_i) − φ(θ − h_k e_i)) / 2h_k: D_0 stands where the one-sided
    slopes at h_0 agree within a tenth of the kink threshold (φ smooth on the step's
    scale, most elements: one evaluation, as a single step would); elsewhere k = 1, then
    finer steps while consecutive estimates differ by more than a tenth of the tolerance,
    down to about step·|θ_i|/4 (a function curved on the scale of θ_i itself, log θ
    near 0, needs a step relative to θ_i; a larger one leaves the domain or curves
    over it). The estimate is D_{k+1} of the first pair (k, k + 1) that agrees, or of
    the pair that came closest.

    Returns, per leaf: the flat indices sampled, the derivative estimates there, and a
    mask of the elements at a kink — where the one-sided slopes (φ(θ + h) − φ(θ))/h and
    (φ(θ) − φ(θ − h))/h differ by more than ``_KINK`` relative at h_k and still by half
    as much at h_{k+1} = h_k/4. A jump in the slope (a ReLU input at 0) does not shrink
    with h; curvature gives a difference h·φ'' that does, to a quarter. No estimate
    holds at a kink.
    """
    # Flattened in NumPy: eager jnp ops here would each compile for this problem's shapes.
    theta = np.concatenate([np.asarray(leaf, np.float64).reshape(-1) for leaf in leaves])
    offsets = np.cumsum([0] + [leaf.size for leaf in leaves])

    def phi(theta_flat):
        parts = [
            theta_flat[int(start) : int(stop)].reshape(leaf.shape).astype(leaf.dtype)
            for start, stop, leaf in zip(offsets[:-1], offsets[1:], leaves)
        ]
        return _tree_vdot(cotangent, problem.fn(parts))

    chosen = []
    for leaf in leaves:
        idx = np.arange(leaf.size)
        if leaf.size > max_elements:
            idx = np.sort(rng.choice(leaf.size, max_elements, replace=False))
        chosen.append(idx)
    positions = np.concatenate([start + idx for idx, start in zip(chosen, offsets[:-1])])
    batched_phi = jax.jit(jax.vmap(phi))
    chunk = max(1, min(256, len(positions), (1 << 22) // max(theta.size, 1)))

    def evaluate(pos: np.ndarray, hs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """φ(θ + h e_pos) and φ(θ − h e_pos) for each (pos, h)."""
        plus_values, minus_values = np.empty(len(pos)), np.empty(len(pos))
        for start in range(0, len(pos), chunk):
            p, h = pos[start : start + chunk], hs[start : start + chunk]
            n, pad = len(p), chunk - len(p)  # a fixed batch shape: one compilation
            p, h = np.concatenate([p, p[:1].repeat(pad)]), np.concatenate([h, h[:1].repeat(pad)])
            plus = np.tile(theta, (chunk, 1))
            minus = plus.copy()
            plus[np.arange(chunk), p] += h
            minus[np.arange(chunk), p] -= h
            values = np.asarray(batched_phi(jnp.asarray(np.concatenate([plus, minus]))))
            plus_values[start : start + n] = values[:n]
            minus_values[start : start + n] = values[chunk : chunk + n]
        return plus_values, minus_values

    magnitude = np.abs(theta[positions])
    steps = step * np.maximum(1.0, magnitude)[:, None] * 0.25 ** np.arange(_FD_LEVELS)
    with np.errstate(divide="ignore"):  # θ = 0: no scale of its own, the first pair only
        finest = np.where(magnitude > 0, np.ceil(np.log(1 / magnitude) / np.log(4)) + 1, 1)
    finest = np.clip(finest, 1, _FD_LEVELS - 1).astype(int)  # the finest level to try
    plus, minus = np.full(steps.shape, np.nan), np.full(steps.shape, np.nan)
    everyone = np.arange(len(positions))
    plus[:, 0], minus[:, 0] = evaluate(positions, steps[:, 0])
    # One-sided slopes within a tenth of the kink threshold at the first step: φ is
    # smooth on the step's scale and the central difference stands (no finer steps).
    first = (plus[:, 0] - minus[:, 0]) / (2 * steps[:, 0])
    first_gap = np.abs((plus[:, 0] - center) - (center - minus[:, 0])) / steps[:, 0]
    with np.errstate(invalid="ignore"):
        settled = first_gap <= 0.1 * _KINK * np.maximum(1.0, np.abs(first))
    unsettled = everyone[~settled]
    if unsettled.size:
        plus[unsettled, 1], minus[unsettled, 1] = evaluate(
            positions[unsettled], steps[unsettled, 1]
        )
    pair = np.full(len(positions), -1)  # the first pair (k, k + 1) that agrees, k
    for k in range(_FD_LEVELS - 1):
        d = (plus[:, k : k + 2] - minus[:, k : k + 2]) / (2 * steps[:, k : k + 2])
        budget = 0.1 * (tolerances.fd_atol + tolerances.fd_rtol * np.abs(d[:, 1]))
        with np.errstate(invalid="ignore"):
            pair[(pair < 0) & ~settled & (np.abs(d[:, 0] - d[:, 1]) <= budget)] = k
        todo = everyone[(pair < 0) & ~settled & (finest > k + 1)]
        if not todo.size:
            break
        plus[todo, k + 2], minus[todo, k + 2] = evaluate(positions[todo], steps[todo, k + 2])

    central = (plus - minus) / (2 * steps)
    disagreement = np.abs(central[:, :-1] - central[:, 1:])
    closest = np.where(np.isnan(disagreement), np.inf, disagreement).argmin(axis=1)
    pair = np.where(pair < 0, closest, pair)  # none agreed: the pair that came closest
    estimates = np.where(settled, first, central[everyone, pair + 1])
    gap = np.abs((plus - center) / steps - (center - minus) / steps)  # one-sided slopes
    coarse, fine = gap[everyone, pair], gap[everyone, pair + 1]
    kinks = (coarse > _KINK * np.maximum(1.0, np.abs(estimates))) & (fine > 0.5 * coarse)
    kinks &= ~settled
    bounds = np.cumsum([len(c) for c in chosen])[:-1]
    return list(zip(chosen, np.split(estimates, bounds), np.split(kinks, bounds)))


@contextlib.contextmanager
def _reported_as_row(check_name: str, rows: list[Row]) -> Iterator[None]:
    """A check that raises (a rule JAX cannot differentiate again, say) is a failed row."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - any failure of the rule is the finding
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        rows.append(
            Row(
                check_name,
                "(all)",
                math.nan,
                math.nan,
                "raised",
                False,
                f"{type(error).__name__}: {message}",
            )
        )


def _random_like(rng: np.random.Generator, shapes: Sequence[Any]) -> list[jax.Array]:
    """Standard normal float64 arrays of the given shapes (or of the arrays' shapes).

    Drawn with NumPy: ``jax.random.normal`` compiles a program per shape, which cost
    most of a check's time.
    """
    return [
        jnp.asarray(rng.standard_normal(tuple(getattr(a, "shape", a))), jnp.float64) for a in shapes
    ]


# --- the check, section by section ----------------------------------------------------


@dataclasses.dataclass
class _Run:
    """What every section of one check shares."""

    hand: _Problem  # f of the differentiated leaves, as the hand rule sees them
    ref: _Problem  # the same in float64, for the reference
    out_names: list[str]
    cotangent: list[jax.Array]
    low_dtype: Any  # None, or the low-precision dtype under check
    same: dict[str, Any]  # tolerance options of the like-for-like comparisons
    check_id: int  # keys this check's own traces (see _mode)
    hand_step: Callable[..., Any] = None  # jitted (θ, c) -> (f(θ), VJP), hand rules
    hand_out: list[jax.Array] = dataclasses.field(default_factory=list)
    hand_grad: list[jax.Array] = dataclasses.field(default_factory=list)
    ref_out: list[jax.Array] = dataclasses.field(default_factory=list)
    ref_grad: list[jax.Array] = dataclasses.field(default_factory=list)


# Each pass is one jit compilation (eager, op by op, would compile every op for every new
# shape); jit traces on the first call, inside the caller's mode block.
def _compiled_vjp(problem: _Problem) -> Callable[..., Any]:
    return jax.jit(lambda theta, ct: _vjp(problem, theta, ct))


def _first_order(run: _Run, calls: dict[str, int]) -> tuple[list[Row], list[str]]:
    """Forward and VJP, hand rules against autodiff of the references.

    ``calls``: the live count of primitive calls (:func:`fundl.rules.count_calls`),
    read around each pass: a pass that traced no primitive while the other did ran a
    cached trace of the other mode.
    """
    before = calls["hand"]
    with _mode(False, run.check_id):
        run.hand_step = _compiled_vjp(run.hand)
        run.hand_out, run.hand_grad = run.hand_step(run.hand.leaves, run.cotangent)
    traced = {"hand": calls["hand"] - before}
    before = calls["reference"]
    with _mode(True, run.check_id):
        run.ref_out, run.ref_grad = _compiled_vjp(run.ref)(run.ref.leaves, run.cotangent)
    traced["reference"] = calls["reference"] - before
    untraced = [mode for mode in ("hand", "reference") if traced[mode] == 0]
    notes = []
    if len(untraced) == 2:
        notes.append(
            "no fundl primitive ran in either mode: f uses none, so 'hand vs autodiff' "
            "compares autodiff with itself (finite differences still check it)"
        )
    elif untraced:  # only where JAX lacks make_user_context (see _mode)
        notes.append(
            f"no fundl primitive was traced in {untraced[0]} mode: a jax.jit inside f reused "
            "a trace cached in the other mode, so 'hand vs autodiff' compared a side with "
            "itself and is marked failed; rerun the check in a fresh process"
        )
    # Low precision: JAX autodiff of the reference in the same dtype shows how far from
    # float64 the dtype alone lands; the hand rule may be off by twice that.
    base_out = base_grad = [None] * (len(run.ref_out) + len(run.ref_grad))
    if run.low_dtype is not None:
        with _mode(True, run.check_id):
            low_out, low_grad = _compiled_vjp(run.hand)(run.hand.leaves, run.cotangent)
        base_out = [_max_abs_diff(a, b) for a, b in zip(low_out, run.ref_out)]
        base_grad = [_max_abs_diff(a, b) for a, b in zip(low_grad, run.ref_grad)]
    rows = [
        _compare("forward: hand vs reference", n, a, b, **run.same, baseline=base)
        for n, a, b, base in zip(run.out_names, run.hand_out, run.ref_out, base_out)
    ] + [
        _compare("vjp: hand vs autodiff", n, a, b, **run.same, baseline=base)
        for n, a, b, base in zip(run.hand.names, run.hand_grad, run.ref_grad, base_grad)
    ]
    if len(untraced) == 1:
        rows = [row._replace(passed=False, note="void: a cached trace") for row in rows]
    return rows, notes


def _finite_difference_rows(
    run: _Run, tolerances: Tolerances, step: float, max_elements: int, rng: np.random.Generator
) -> list[Row]:
    center = sum(  # φ(θ) = ⟨c, f(θ)⟩, in NumPy (no eager compile for these shapes)
        float(np.vdot(np.asarray(c, np.float64), np.asarray(o, np.float64)))
        for c, o in zip(run.cotangent, run.ref_out)
    )
    samples = _finite_differences(
        run.ref, run.ref.leaves, run.cotangent, center, step, max_elements, rng, tolerances
    )
    rows = []
    for n, g, (idx, estimate, kink) in zip(run.hand.names, run.hand_grad, samples):
        note = f"{len(idx)}/{g.size} elements"
        if kink.any():
            note += f", {int(kink.sum())} at a kink skipped"
        hand = np.asarray(g).reshape(-1)[idx]
        rows.append(
            _compare(
                "vjp: hand vs finite diff",
                n,
                hand[~kink],
                estimate[~kink],
                rtol=tolerances.fd_rtol,
                atol=tolerances.fd_atol,
                normwise=False,
                note=note,
            )
        )
    return rows


def _hvp_rows(run: _Run, rng: np.random.Generator) -> list[Row]:
    """A Hessian-vector product through the hand rules (grad of grad) vs the references'."""
    name = "hvp: hand vs autodiff"
    rows: list[Row] = []
    with _reported_as_row(name, rows):

        def compiled_hvp(problem: _Problem) -> Callable[..., Any]:
            return jax.jit(lambda theta, v: _hvp(problem, theta, run.cotangent, v))

        v = _random_like(rng, run.ref.leaves)
        with _mode(False, run.check_id):
            hand = compiled_hvp(run.hand)(run.hand.leaves, v)
        with _mode(True, run.check_id):
            ref = compiled_hvp(run.ref)(run.ref.leaves, v)
            baseline = [None] * len(ref)
            if run.low_dtype is not None:
                low = compiled_hvp(run.hand)(run.hand.leaves, v)
                baseline = [_max_abs_diff(a, b) for a, b in zip(low, ref)]
        for n, a, b, base in zip(run.hand.names, hand, ref, baseline):
            rows.append(_compare(name, n, a, b, **run.same, baseline=base))
    return rows


def _jit_rows(run: _Run) -> list[Row]:
    """The jitted hand VJP (from the first-order pass) against the same run eagerly."""
    name = "jit: jitted vs eager"
    rows: list[Row] = []
    with _reported_as_row(name, rows), _mode(False, run.check_id):
        eager_out, eager_grad = _vjp(run.hand, run.hand.leaves, run.cotangent)
        names = run.out_names + run.hand.names
        jitted = run.hand_out + run.hand_grad
        for n, a, b in zip(names, jitted, eager_out + eager_grad):
            rows.append(_compare(name, n, a, b, **run.same))
    return rows


def _vmap_rows(run: _Run, rng: np.random.Generator, batch: int = 3) -> list[Row]:
    """vmap of the hand VJP over nearby inputs and cotangents vs each one alone."""
    name = "vmap: batched vs stacked"
    rows: list[Row] = []
    with _reported_as_row(name, rows), _mode(False, run.check_id):
        # The batch is built and taken apart in NumPy (float64, then each leaf's dtype):
        # eager jnp ops would each compile once more for this problem's shapes.
        leaves = [np.asarray(x, np.float64) for x in run.hand.leaves]
        noise = [rng.standard_normal((batch, *x.shape)) for x in leaves]
        # Scaled by 1 ± ~1%, so each input keeps its sign and stays in f's domain (log
        # near 0); zeros are nudged to ±1e-3 to make the examples differ there too.
        thetas = [
            (np.where(x == 0, 1e-3 * e, x * (1 + 0.01 * e))).astype(leaf.dtype)
            for x, e, leaf in zip(leaves, noise, run.hand.leaves)
        ]
        cotangents = [
            np.asarray(c, np.float64)[None] + 0.5 * rng.standard_normal((batch, *c.shape))
            for c in run.cotangent
        ]
        batched = jax.jit(jax.vmap(lambda t, c: _vjp(run.hand, t, c)))(thetas, cotangents)
        singles = [
            run.hand_step([t[i] for t in thetas], [c[i] for c in cotangents]) for i in range(batch)
        ]
        for part, names in ((0, run.out_names), (1, run.hand.names)):
            for j, n in enumerate(names):
                stacked = np.stack([np.asarray(single[part][j]) for single in singles])
                rows.append(
                    _compare(name, n, batched[part][j], stacked, **run.same, same_nonfinite=True)
                )
    return rows


def check(
    f: Callable[..., Any],
    *args: Any,
    argnums: int | Sequence[int] | None = None,
    key: int | jax.Array = 0,
    tolerances: Tolerances = Tolerances(),
    fd_step: float = 1e-6,
    fd_max_elements: int = 64,
    hvp: bool = True,
    vmap: bool = True,
    jit: bool = True,
) -> Report:
    """Check ``f``'s hand-written rules against autodiff, finite differences and more.

    Args:
      f: a function of pytrees of arrays, built from fundl primitives (a model, a loss,
        a single activation). Its floating-point outputs are checked.
      *args: example inputs. Every floating-point leaf is cast to float64 (unless the
        differentiated ones are bfloat16/float16, see "Low precision"); integer leaves
        (labels) are held fixed.
      argnums: which positional args to differentiate (default: all).
      key: seed (int) or PRNG key for the random cotangent, tangent and perturbations.
      tolerances: the float64 tolerances (:class:`Tolerances`).
      fd_step: relative finite-difference step: the first is fd_step·max(1, |θ_i|),
        refined towards fd_step·|θ_i| where needed (see the module docstring).
      fd_max_elements: per leaf, how many elements finite differences visit (a random
        sample when the leaf is larger; the row says how many).
      hvp: run the grad-of-grad check.
      vmap: run the vmap check.
      jit: run the jit check.

    Returns:
      A :class:`Report`; ``print`` it for the table, ``report.passed`` for a verdict,
      ``report.assert_passed()`` in a test.

    Raises:
      ValueError: without inputs, without a floating-point input to differentiate or
        output to check, or for ``argnums`` out of range.

    Examples:
      The first-order checks of tanh (the default also runs the hvp, jit and vmap
      checks):

      >>> report = fundl.gradcheck.check(
      ...     fundl.activations.tanh, jnp.array([0.5, -1.0, 2.0]), hvp=False, jit=False, vmap=False
      ... )
      >>> report.passed, [row.check for row in report.rows]
      (True, ['forward: hand vs reference', 'vjp: hand vs autodiff', 'vjp: hand vs finite diff'])
    """
    if not args:
        raise ValueError("gradcheck.check: no inputs; call check(f, *example_args)")
    argnums = tuple(range(len(args))) if argnums is None else argnums
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(args) for i in argnums
    ):
        raise ValueError(f"gradcheck.check: argnums {argnums} out of range for {len(args)} args")
    if len(set(argnums)) != len(argnums):
        raise ValueError(f"gradcheck.check: argnums {argnums} names an argument twice")
    if not callable(f):
        raise TypeError(f"gradcheck.check: f must be a function, got {f!r}")
    if not isinstance(tolerances, Tolerances):
        raise TypeError(
            f"gradcheck.check: tolerances must be a gradcheck.Tolerances, got {tolerances!r}"
        )
    check_number("gradcheck.check", "fd_step", fd_step, low=0.0, low_open=True)
    check_int("gradcheck.check", "fd_max_elements", fd_max_elements)
    for flag, value in (("hvp", hvp), ("vmap", vmap), ("jit", jit)):
        check_bool("gradcheck.check", flag, value)
    if isinstance(key, bool) or (isinstance(key, int) and key < 0):
        raise ValueError(
            f"gradcheck.check: key must be a PRNG key or an int seed >= 0, got {key!r}"
        )
    if not isinstance(key, int):
        key = as_key("gradcheck.check", key)
    dtypes = {jnp.result_type(x) for i in argnums for x in jax.tree.leaves(args[i]) if _is_float(x)}
    if not dtypes:
        raise ValueError("gradcheck.check: no floating-point inputs to differentiate")
    low = [d for d in dtypes if d in LOW_PRECISION_TOLERANCE]
    low_dtype = max(low, key=LOW_PRECISION_TOLERANCE.get) if low else None
    seed = int(key) if isinstance(key, int) else int(jax.random.randint(key, (), 0, 2**31 - 1))

    with rules.count_calls() as calls, _x64():
        r_cot, r_fd, r_hvp, r_vmap = (np.random.default_rng([seed, i]) for i in range(4))
        to64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
        hand = _problem(f, args, argnums, to64 if low_dtype is None else jnp.asarray)
        out_names = _output_names(f, args)
        if not out_names:
            raise ValueError("gradcheck.check: f has no floating-point output to differentiate")
        check_id = next(_CHECK_IDS)
        with _mode(False, (check_id, "output shapes")):  # not the hand pass's trace
            out_shapes = jax.eval_shape(hand.fn, hand.leaves)
        scalar = len(out_shapes) == 1 and out_shapes[0].shape == ()
        if low_dtype is None:
            same = dict(rtol=tolerances.rtol, atol=tolerances.atol, normwise=False)
        else:
            same = dict(rtol=LOW_PRECISION_TOLERANCE[low_dtype], atol=0.0, normwise=True)
        run = _Run(
            hand=hand,
            ref=_problem(f, args, argnums, to64),
            out_names=out_names,
            cotangent=[jnp.ones((), jnp.float64)] if scalar else _random_like(r_cot, out_shapes),
            low_dtype=low_dtype,
            same=same,
            check_id=check_id,
        )

        rows, notes = _first_order(run, calls)
        if low_dtype is None:
            rows += _finite_difference_rows(run, tolerances, fd_step, fd_max_elements, r_fd)
        else:
            notes.append(
                f"finite differences skipped: their fixed step is below {low_dtype} resolution"
            )
        if hvp:
            rows += _hvp_rows(run, r_hvp)
        if jit:
            rows += _jit_rows(run)
        if vmap:
            rows += _vmap_rows(run, r_vmap)

    precision = "float64" if low_dtype is None else f"{low_dtype} hand rule vs float64 reference"
    cotangent = "1 (full gradient of a scalar output)" if scalar else f"random normal (seed {seed})"
    name = getattr(f, "__name__", type(f).__name__)
    return Report(name, precision, cotangent, tuple(rows), tuple(notes))


def check_model(
    model: Any,
    params: Any,
    x: Any,
    y: Any,
    loss: Callable[..., jax.Array],
    *,
    state: Any = None,
    model_key: Any = None,
    train: bool = False,
    **options: Any,
) -> Report:
    """Check the gradient of ``loss(model(params, x), y)`` with respect to params.

    Without ``state``, ``model_key`` or ``train`` the model runs as
    ``model.apply(params, x)``; with any of them, as ``model.apply_with_state(params,
    state, x, key=model_key, train=train)`` — a model with batch norm (its state held
    fixed, the batch statistics differentiated in training mode) or dropout (a fixed
    key: a fixed mask).

    Args:
      model: a layer or container (e.g. ``Sequential``), or a function
        ``apply(params, x)``.
      params: its parameters.
      x: a batch's inputs.
      y: its targets.
      loss: a loss ``loss(predictions, targets) -> scalar``, e.g.
        ``fundl.losses.softmax_cross_entropy``.
      state: the model's state (``model.init_state(...)``).
      model_key: the PRNG key the model draws from (dropout masks), held fixed.
      train: run the model in training mode.
      **options: passed to :func:`check` (tolerances, key, fd_max_elements, ...).

    Returns:
      A :class:`Report` with one row per check and leaf of ``params``.

    Examples:
      A dense layer, W of shape (n_out, n_in) = (2, 3), under a squared error on a batch
      of 4 (first-order checks only, as in :func:`check`'s example):

      >>> layer = fundl.nn.Dense(2)
      >>> params = {"W": jnp.array([[0.5, -1.0, 2.0], [1.0, 0.5, -0.5]]), "b": jnp.zeros(2)}
      >>> x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
      >>> report = fundl.gradcheck.check_model(
      ...     layer, params, x, y, fundl.losses.mse, hvp=False, jit=False, vmap=False
      ... )
      >>> report.passed, [row.leaf for row in report.rows if row.check.startswith("vjp")]
      (True, ["params['W']", "params['b']", "params['W']", "params['b']"])
    """
    if not callable(loss):
        raise TypeError(
            f"gradcheck.check_model: loss must be a function loss(predictions, targets), got {loss!r}"
        )
    train = check_bool("gradcheck.check_model", "train", train)
    name = getattr(loss, "__name__", "loss")
    if state is not None or model_key is not None or train:
        if not hasattr(model, "apply_with_state"):
            raise TypeError(
                "gradcheck.check_model: state, model_key and train need a layer with "
                f"apply_with_state, got {model!r}"
            )

        def model_loss(params, x, y, state, model_key):
            out, _ = model.apply_with_state(params, state, x, key=model_key, train=train)
            return loss(out, y)

        model_loss.__name__ = f"{name}({type(model).__name__}, train={train})"
        args = (params, x, y, {} if state is None else state, model_key)
        return check(model_loss, *args, argnums=0, **options)

    apply = model.apply if hasattr(model, "apply") else model
    if not callable(apply):
        raise TypeError(
            f"gradcheck.check_model: expected a model with apply or a function, got {model!r}"
        )

    def plain_loss(params, x, y):
        return loss(apply(params, x), y)

    if hasattr(model, "apply"):
        owner = type(model).__name__
    elif hasattr(model, "__self__"):  # a bound method such as model.apply
        owner = f"{type(model.__self__).__name__}.{model.__name__}"
    else:
        owner = getattr(model, "__qualname__", "model")
    plain_loss.__name__ = f"{name}({owner})"
    return check(plain_loss, params, x, y, argnums=0, **options)
