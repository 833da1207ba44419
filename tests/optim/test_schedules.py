"""fundl.optim.schedules: values against closed forms in float64, jit and vmap, errors.

Every reference below is written again from the schedule's definition (for cyclical and
one_cycle, in PyTorch's own step-by-step form), never by calling the module.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundl.optim import schedules


# ------------------------------------------------------------------ float64 references


def _piecewise(init, boundaries_and_scales):
    def ref(s):
        value = init
        for b, scale in boundaries_and_scales.items():
            if s >= b:
                value *= scale
        return value

    return ref


def _exponential(init, rate, n, *, staircase=False, begin=0, end=None):
    def ref(s):
        t = max(s - begin, 0)
        p = t // n if staircase else t / n
        value = init * rate**p
        if end is None:
            return value
        return max(value, end) if rate < 1 else min(value, end)

    return ref


def _inverse_time(init, rate, n, *, staircase=False):
    return lambda s: init / (1 + rate * ((s // n) if staircase else s / n))


def _polynomial(init, end, n, *, power=1.0, begin=0):
    def ref(s):
        t = min(max(s - begin, 0), n)
        return (init - end) * (1 - t / n) ** power + end

    return ref


def _cosine(init, n, end=0.0):
    return lambda s: end + (init - end) * 0.5 * (1 + math.cos(math.pi * min(s, n) / n))


def _warmup_cosine(peak, warmup, n, *, init=0.0, end=0.0):
    def ref(s):
        if s < warmup:
            return init + (peak - init) * s / warmup
        t = min(s - warmup, n - warmup)
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * t / (n - warmup)))

    return ref


def _cyclic_torch(base, top, n, mode="triangular", gamma=1.0):
    """PyTorch CyclicLR.get_lr with step_size_up = step_size_down = n."""

    def ref(s):
        total = 2.0 * n
        cycle = math.floor(1 + s / total)
        x = 1.0 + s / total - cycle
        scale_factor = x / 0.5 if x <= 0.5 else (x - 1) / (0.5 - 1)
        height = (top - base) * scale_factor
        if mode == "triangular":
            return base + height
        if mode == "triangular2":
            return base + height * (1 / 2.0 ** (cycle - 1))
        return base + height * gamma**s

    return ref


def _one_cycle_torch(max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
    """PyTorch OneCycleLR.get_lr (cos, two phases); v_min after the last step."""
    initial = max_lr / div_factor
    min_lr = initial / final_div_factor
    phases = [
        (float(pct_start * total_steps) - 1, initial, max_lr),
        (total_steps - 1, max_lr, min_lr),
    ]

    def anneal(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def ref(s):
        if s > total_steps - 1:
            return min_lr
        start_step = 0
        for i, (end_step, start, end) in enumerate(phases):
            if s <= end_step or i == len(phases) - 1:
                return anneal(start, end, (s - start_step) / (end_step - start_step))
            start_step = end_step

    return ref


# One table: (id, schedule, float64 reference, steps to check).
CASES = [
    ("constant", schedules.constant(0.3), lambda s: 0.3, [0, 1, 7, 10**6]),
    (
        "piecewise_constant",
        schedules.piecewise_constant(0.1, {30: 0.1, 10: 0.5, 20: 2.0}),  # unsorted on purpose
        _piecewise(0.1, {10: 0.5, 20: 2.0, 30: 0.1}),
        [0, 9, 10, 11, 19, 20, 29, 30, 31, 1000],
    ),
    (
        "piecewise_constant_at_0",
        schedules.piecewise_constant(2.0, {0: 0.25}),
        _piecewise(2.0, {0: 0.25}),
        [0, 1, 50],
    ),
    (
        "step_decay",
        schedules.step_decay(0.2, 0.5, 7),
        lambda s: 0.2 * 0.5 ** (s // 7),
        [0, 1, 6, 7, 8, 13, 14, 70, 100],
    ),
    (
        "exponential_decay",
        schedules.exponential_decay(0.1, 0.5, 10),
        _exponential(0.1, 0.5, 10),
        [0, 1, 5, 10, 15, 20, 100],
    ),
    (
        "exponential_decay_staircase_begin_floor",
        schedules.exponential_decay(
            0.1, 0.5, 10, staircase=True, transition_begin=5, end_value=0.02
        ),
        _exponential(0.1, 0.5, 10, staircase=True, begin=5, end=0.02),
        [0, 4, 5, 6, 14, 15, 16, 25, 34, 35, 45, 1000],
    ),
    (
        "exponential_decay_growth_ceiling",
        schedules.exponential_decay(0.1, 2.0, 10, transition_begin=3, end_value=0.5),
        _exponential(0.1, 2.0, 10, begin=3, end=0.5),
        [0, 3, 4, 13, 20, 26, 27, 50, 1000],
    ),
    (
        "inverse_time_decay",
        schedules.inverse_time_decay(0.1, 0.5, 10),
        _inverse_time(0.1, 0.5, 10),
        [0, 1, 9, 10, 11, 100, 10**5],
    ),
    (
        "inverse_time_decay_staircase",
        schedules.inverse_time_decay(0.1, 0.5, 10, staircase=True),
        _inverse_time(0.1, 0.5, 10, staircase=True),
        [0, 1, 9, 10, 11, 19, 20, 100],
    ),
    (
        "polynomial_decay",
        schedules.polynomial_decay(0.1, 0.001, 100, power=2.0, transition_begin=10),
        _polynomial(0.1, 0.001, 100, power=2.0, begin=10),
        [0, 9, 10, 11, 60, 109, 110, 111, 1000],
    ),
    (
        "polynomial_decay_linear_rise",
        schedules.polynomial_decay(0.0, 1.0, 4),
        _polynomial(0.0, 1.0, 4),
        [0, 1, 2, 3, 4, 5],
    ),
    (
        "cosine_decay",
        schedules.cosine_decay(0.1, 100, end_value=0.01),
        _cosine(0.1, 100, 0.01),
        [0, 1, 25, 50, 99, 100, 101, 1000],
    ),
    (
        "warmup_cosine_decay",
        schedules.warmup_cosine_decay(1.0, 10, 110, init_value=0.1, end_value=0.05),
        _warmup_cosine(1.0, 10, 110, init=0.1, end=0.05),
        [0, 1, 5, 9, 10, 11, 60, 109, 110, 111, 1000],
    ),
    (
        "warmup_cosine_decay_no_warmup",
        schedules.warmup_cosine_decay(0.5, 0, 20),
        _warmup_cosine(0.5, 0, 20),
        [0, 1, 10, 19, 20, 21],
    ),
    (
        "cyclical_triangular",
        schedules.cyclical(0.01, 0.1, 5),
        _cyclic_torch(0.01, 0.1, 5),
        list(range(0, 41)) + [1000, 1003, 10**6 + 2, 10**6 + 5],
    ),
    (
        "cyclical_triangular2",
        schedules.cyclical(0.01, 0.1, 5, mode="triangular2"),
        _cyclic_torch(0.01, 0.1, 5, mode="triangular2"),
        list(range(0, 41)),
    ),
    (
        "cyclical_exp_range",
        schedules.cyclical(0.01, 0.1, 5, mode="exp_range", gamma=0.99),
        _cyclic_torch(0.01, 0.1, 5, mode="exp_range", gamma=0.99),
        list(range(0, 41)) + [500, 505],
    ),
    (
        "one_cycle",
        schedules.one_cycle(0.1, 100),
        _one_cycle_torch(0.1, 100),
        list(range(0, 101)) + [105, 10**4],
    ),
    (
        # phase 1 ends between steps (e₁ = 1.5): PyTorch keeps it a float
        "one_cycle_fractional_peak",
        schedules.one_cycle(2.0, 10, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
        _one_cycle_torch(2.0, 10, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
        list(range(0, 13)),
    ),
]
IDS = [case[0] for case in CASES]


def _assert_close(actual, expected, rtol=1e-5):
    """float32 against float64: relative, with an absolute floor at the schedule's scale."""
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    actual = np.asarray(actual, np.float64)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-6 * scale)


@pytest.mark.parametrize(("name", "schedule", "ref", "steps"), CASES, ids=IDS)
def test_values_match_the_closed_form(name, schedule, ref, steps):
    actual = [schedule(s) for s in steps]
    for a in actual:
        chex.assert_shape(a, ())
        chex.assert_type(a, jnp.float32)
    _assert_close(np.stack(actual), [ref(s) for s in steps])


@pytest.mark.parametrize(("name", "schedule", "ref", "steps"), CASES, ids=IDS)
def test_jit_and_vmap_equal_eager(name, schedule, ref, steps):
    eager = np.stack([np.asarray(schedule(s)) for s in steps])
    step_array = jnp.asarray(steps, jnp.int32)
    jitted = np.stack([np.asarray(jax.jit(schedule)(s)) for s in step_array])
    batched = jax.vmap(schedule)(step_array)
    whole = jax.jit(schedule)(step_array)  # an array of steps, no vmap
    chex.assert_shape([batched, whole], (len(steps),))
    chex.assert_type([batched, whole], jnp.float32)
    for other in (jitted, batched, whole):
        np.testing.assert_allclose(other, eager, rtol=1e-6, atol=1e-7 * np.max(np.abs(eager)))


@pytest.mark.parametrize(("name", "schedule", "ref", "steps"), CASES, ids=IDS)
def test_shaped_like_the_step_and_usable_in_scan(name, schedule, ref, steps):
    chex.assert_shape(schedule(jnp.zeros((2, 3), jnp.int32)), (2, 3))

    def body(count, _):
        return count + 1, schedule(count)

    _, values = jax.lax.scan(body, jnp.int32(0), length=12)
    _assert_close(values, [ref(s) for s in range(12)])


def test_one_cycle_landmarks():
    s = schedules.one_cycle(0.1, 100)
    _assert_close(s(0), 0.1 / 25)
    _assert_close(s(29), 0.1)  # e₁ = 0.3 · 100 − 1
    _assert_close(s(99), 0.1 / 25 / 1e4)
    _assert_close(s(150), 0.1 / 25 / 1e4)


def test_warmup_cosine_landmarks():
    s = schedules.warmup_cosine_decay(1.0, 10, 110, init_value=0.1, end_value=0.05)
    _assert_close(s(0), 0.1)
    _assert_close(s(10), 1.0)
    _assert_close(s(60), (1.0 + 0.05) / 2)  # halfway through the cosine
    _assert_close(s(110), 0.05)


@given(step=st.integers(0, 10**5))
def test_bounded_and_monotone(step):
    decays = [
        schedules.step_decay(1.0, 0.9, 3),
        schedules.exponential_decay(1.0, 0.9, 7, end_value=0.1),
        schedules.inverse_time_decay(1.0, 0.3, 5),
        schedules.polynomial_decay(1.0, 0.1, 500, power=0.5),
        schedules.cosine_decay(1.0, 800, end_value=0.1),
    ]
    for s in decays:
        now, after = float(s(step)), float(s(step + 1))
        assert 0 <= after <= now <= 1.0
    for mode in ("triangular", "triangular2", "exp_range"):
        s = schedules.cyclical(0.1, 1.0, 13, mode=mode, gamma=0.999)
        assert 0.1 - 1e-7 <= float(s(step)) <= 1.0 + 1e-6
    assert float(schedules.cyclical(0.1, 1.0, 13)(step)) == pytest.approx(
        float(schedules.cyclical(0.1, 1.0, 13)(step + 26)), rel=1e-5
    )
    v = float(schedules.one_cycle(1.0, 1000)(step))
    assert 1 / 25 / 1e4 * (1 - 1e-4) <= v <= 1.0 + 1e-6


# Each case's bounds, worked out by hand from its arguments: (lowest, highest) over steps ≥ 0.
BOUNDS = {
    "constant": (0.3, 0.3),
    "piecewise_constant": (0.01, 0.1),  # 0.1 → 0.05 → 0.1 → 0.01
    "piecewise_constant_at_0": (0.5, 0.5),  # the scale of boundary 0 applies from step 0
    "step_decay": (0.0, 0.2),
    "exponential_decay": (0.0, 0.1),
    "exponential_decay_staircase_begin_floor": (0.02, 0.1),
    "exponential_decay_growth_ceiling": (0.1, 0.5),
    "inverse_time_decay": (0.0, 0.1),
    "inverse_time_decay_staircase": (0.0, 0.1),
    "polynomial_decay": (0.001, 0.1),
    "polynomial_decay_linear_rise": (0.0, 1.0),
    "cosine_decay": (0.01, 0.1),
    "warmup_cosine_decay": (0.05, 1.0),
    "warmup_cosine_decay_no_warmup": (0.0, 0.5),
    "cyclical_triangular": (0.01, 0.1),
    "cyclical_triangular2": (0.01, 0.1),
    "cyclical_exp_range": (0.01, 0.1),
    "one_cycle": (0.1 / 25 / 1e4, 0.1),
    "one_cycle_fractional_peak": (0.002, 2.0),
}


@pytest.mark.parametrize(("name", "schedule", "ref", "steps"), CASES, ids=IDS)
def test_bounds_hold_every_value(name, schedule, ref, steps):
    lowest, highest = schedule.bounds
    np.testing.assert_allclose([lowest, highest], BOUNDS[name], rtol=1e-12)
    values = np.asarray(jax.vmap(schedule)(jnp.asarray(steps + list(range(200)), jnp.int32)))
    slack = 1e-6 * max(abs(lowest), abs(highest))  # float32 values against float64 bounds
    assert lowest - slack <= values.min() and values.max() <= highest + slack


def test_bounds_of_growing_and_negative_schedules():
    assert schedules.exponential_decay(0.1, 2.0, 10).bounds == (0.1, math.inf)
    assert schedules.step_decay(-1.0, 2.0, 1).bounds == (-math.inf, -1.0)
    assert schedules.step_decay(-1.0, 0.5, 1).bounds == (-1.0, 0.0)
    assert schedules.inverse_time_decay(0.1, 0.0, 10).bounds == (0.1, 0.1)
    assert schedules.exponential_decay(0.1, 1.0, 10, end_value=0.5).bounds == (0.1, 0.1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: schedules.constant(float("nan")),
            r"constant: value must be a finite number in \(-inf, inf\); got nan$",
        ),
        (
            lambda: schedules.constant("0.1"),
            r"constant: value must be a finite number in \(-inf, inf\); got '0\.1' \(a str\); "
            r"pass the number 0\.1, not the string$",
        ),
        (
            lambda: schedules.constant(jnp.array(0.1)),
            r"constant: value must be a finite number in \(-inf, inf\); got an array",
        ),
        (
            lambda: schedules.piecewise_constant(0.1, [(10, 0.5)]),
            r"piecewise_constant: boundaries_and_scales must be a dict \{boundary: scale\}, got \[\(10, 0\.5\)\]",
        ),
        (
            lambda: schedules.piecewise_constant(0.1, {-1: 0.5}),
            r"piecewise_constant: every boundary must be a non-negative integer, got -1$",
        ),
        (
            lambda: schedules.piecewise_constant(0.1, {2.5: 0.5}),
            r"piecewise_constant: every boundary must be a non-negative integer, got 2\.5$",
        ),
        (
            lambda: schedules.piecewise_constant(0.1, {10: -0.5}),
            r"piecewise_constant: the scale at boundary 10 must be a finite number in \[0, inf\); "
            r"got -0\.5$",
        ),
        (
            lambda: schedules.piecewise_constant(float("inf"), {}),
            r"piecewise_constant: init_value must be a finite number in \(-inf, inf\); got inf$",
        ),
        (
            lambda: schedules.step_decay(0.1, 0.5, 0),
            r"step_decay: step_size must be a positive integer, got 0$",
        ),
        (
            lambda: schedules.step_decay(0.1, 0.5, True),
            r"step_decay: step_size must be a positive integer, got True$",
        ),
        (
            lambda: schedules.step_decay(0.1, -0.5, 10),
            r"step_decay: decay_rate must be a finite number in \(0, inf\); got -0\.5$",
        ),
        (
            lambda: schedules.exponential_decay(0.1, 0.0, 10),
            r"exponential_decay: decay_rate must be a finite number in \(0, inf\); got 0\.0$",
        ),
        (
            lambda: schedules.exponential_decay(0.1, 0.5, 0),
            r"exponential_decay: transition_steps must be a positive integer, got 0$",
        ),
        (
            lambda: schedules.exponential_decay(0.1, 0.5, 10, transition_begin=-1),
            r"exponential_decay: transition_begin must be a non-negative integer, got -1$",
        ),
        (
            lambda: schedules.exponential_decay(0.1, 0.5, 10, end_value=float("inf")),
            r"exponential_decay: end_value must be a finite number in \(-inf, inf\); got inf$",
        ),
        (
            lambda: schedules.exponential_decay(0.1, 0.5, 10, staircase=1),
            r"exponential_decay: staircase must be True or False, got 1$",
        ),
        (
            # a decay floored above its start would be the floor from step 0 on
            lambda: schedules.exponential_decay(1e-3, 0.5, 10, end_value=1.0),
            r"exponential_decay: with decay_rate=0\.5, end_value is a floor and must be at most "
            r"init_value; got end_value=1\.0, init_value=0\.001$",
        ),
        (
            lambda: schedules.exponential_decay(0.1, 2.0, 10, end_value=0.01),
            r"exponential_decay: with decay_rate=2\.0, end_value is a ceiling and must be at least "
            r"init_value; got end_value=0\.01, init_value=0\.1$",
        ),
        (
            lambda: schedules.inverse_time_decay(0.1, -1.0, 10),
            r"inverse_time_decay: decay_rate must be a finite number in \[0, inf\); got -1\.0$",
        ),
        (
            lambda: schedules.inverse_time_decay(0.1, 0.5, 10.0),
            r"inverse_time_decay: decay_steps must be a positive integer, got 10\.0$",
        ),
        (
            lambda: schedules.inverse_time_decay(0.1, 0.5, 10, staircase="no"),
            r"inverse_time_decay: staircase must be True or False, got 'no' \(a str\)$",
        ),
        (
            lambda: schedules.polynomial_decay(0.1, 0.0, 100, power=0),
            r"polynomial_decay: power must be a finite number in \(0, inf\); got 0$",
        ),
        (
            lambda: schedules.polynomial_decay(0.1, None, 100),
            r"polynomial_decay: end_value must be a finite number in \(-inf, inf\); got None$",
        ),
        (
            lambda: schedules.cosine_decay(0.1, 0),
            r"cosine_decay: decay_steps must be a positive integer, got 0$",
        ),
        (
            lambda: schedules.warmup_cosine_decay(1.0, 10, 10),
            r"warmup_cosine_decay: decay_steps must be greater than warmup_steps \(it counts from step 0 "
            r"and includes the warm-up\), got decay_steps=10, warmup_steps=10",
        ),
        (
            lambda: schedules.warmup_cosine_decay(1.0, -1, 10),
            r"warmup_cosine_decay: warmup_steps must be a non-negative integer, got -1$",
        ),
        (
            lambda: schedules.warmup_cosine_decay(0.1, 10, 100, init_value=0.5),
            r"warmup_cosine_decay: init_value must be at most peak_value \(the peak is the highest "
            r"value\); got init_value=0\.5 > peak_value=0\.1$",
        ),
        (
            lambda: schedules.warmup_cosine_decay(0.1, 10, 100, end_value=0.2),
            r"warmup_cosine_decay: end_value must be at most peak_value .*; got end_value=0\.2 > "
            r"peak_value=0\.1$",
        ),
        (
            lambda: schedules.cyclical(0.01, 0.1, 5, mode="triangle"),
            r"cyclical: mode must be one of 'triangular', 'triangular2', 'exp_range'; got 'triangle'$",
        ),
        (
            lambda: schedules.cyclical(0.01, 0.1, 0),
            r"cyclical: step_size must be a positive integer, got 0$",
        ),
        (
            lambda: schedules.cyclical(0.01, 0.1, 5, mode="exp_range", gamma=0.0),
            r"cyclical: gamma must be a finite number in \(0, 1\]; got 0\.0$",
        ),
        (
            lambda: schedules.cyclical(0.01, 0.1, 5, mode="exp_range", gamma=1.5),  # would grow
            r"cyclical: gamma must be a finite number in \(0, 1\]; got 1\.5$",
        ),
        (
            lambda: schedules.cyclical(0.1, 0.01, 5),
            r"cyclical: max_value must be at least base_value \(the cycles rise from base to max\); "
            r"got max_value=0\.01 < base_value=0\.1$",
        ),
        (
            lambda: schedules.one_cycle(0.1, 1),
            r"one_cycle: total_steps must be an integer >= 2, got 1$",
        ),
        (
            lambda: schedules.one_cycle(0.1, 100, pct_start=1.0),
            r"one_cycle: pct_start must be a finite number in \(0, 1\); got 1\.0$",
        ),
        (
            lambda: schedules.one_cycle(0.1, 100, pct_start=0),
            r"one_cycle: pct_start must be a finite number in \(0, 1\); got 0$",
        ),
        (
            lambda: schedules.one_cycle(0.1, 3),
            r"one_cycle: pct_start \* total_steps must be greater than 1 so the rise ends after step 0, "
            r"got 0\.3 \* 3 = 0\.8999999999999999; raise pct_start or total_steps",
        ),
        (
            lambda: schedules.one_cycle(-0.1, 100),
            r"one_cycle: max_value must be a finite number in \[0, inf\); got -0\.1$",
        ),
        (
            # below 1, the start max / div_factor would be above the peak
            lambda: schedules.one_cycle(1e-3, 100, div_factor=0.01),
            r"one_cycle: div_factor must be a finite number in \[1, inf\); got 0\.01$",
        ),
        (
            lambda: schedules.one_cycle(0.1, 100, div_factor=0),
            r"one_cycle: div_factor must be a finite number in \[1, inf\); got 0$",
        ),
        (
            lambda: schedules.one_cycle(0.1, 100, final_div_factor=0.5),
            r"one_cycle: final_div_factor must be a finite number in \[1, inf\); got 0\.5$",
        ),
    ],
)
def test_bad_hyperparameters_raise_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "step, got",
    [
        ("3", r"'3' \(a str\)"),  # was read as the number 3
        (True, r"True \(a bool\)"),  # was read as step 1
        (1j, r"1j \(a complex\)"),  # was float()'s TypeError
        (jax.random.key(0), r"an array of dtype key<fry>"),  # was convert_element_type's
    ],
)
def test_a_step_that_is_no_step_count_is_refused(step, got):
    with pytest.raises(
        ValueError, match=rf"^cosine_decay: the step must be a step count.*got {got}"
    ):
        schedules.cosine_decay(0.1, 10)(step)


def test_a_negative_step_is_refused():
    # warmup_cosine_decay(-3) was −0.3: off the curve and below the schedule's bounds
    with pytest.raises(ValueError, match=r"^warmup_cosine_decay: the step must be ≥ 0.*got -3$"):
        schedules.warmup_cosine_decay(0.1, 10, 20)(-3)
    with pytest.raises(ValueError, match=r"^piecewise_constant: the step must be ≥ 0"):
        schedules.piecewise_constant(0.1, {2: 0.5})(np.array([1, -1]))


def test_numpy_hyperparameters_are_accepted():
    s = schedules.step_decay(np.float32(0.5), np.float64(0.5), np.int64(2))
    _assert_close(s(4), 0.125)


def test_public_api():
    assert set(schedules.__all__) == {
        "Schedule",
        "constant",
        "piecewise_constant",
        "step_decay",
        "exponential_decay",
        "inverse_time_decay",
        "polynomial_decay",
        "cosine_decay",
        "warmup_cosine_decay",
        "cyclical",
        "one_cycle",
    }
    for name in schedules.__all__:
        if name != "Schedule":
            assert getattr(schedules, name).__doc__, name
    name = schedules.cosine_decay(0.1, 10).__name__
    assert name == "cosine_decay(init_value=0.1, decay_steps=10, end_value=0.0)"
    assert schedules.cosine_decay.__name__ == "cosine_decay"  # the builder keeps its own name
    assert "Half a cosine" in schedules.cosine_decay.__doc__
