"""Shared test settings: strict broadcasting and dtype promotion, a small hypothesis budget.

Every hypothesis example compiles new shapes, so examples are few, deadlines off, and
the default profile does not shrink a failing example (shrinking one compiled
function after another took over five minutes): the first failure is reported as
found. ``HYPOTHESIS_PROFILE=fundl-shrink`` shrinks, to debug a failure.
"""

import os

import jax
import pytest
from hypothesis import Phase, settings

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile(
    "fundl",
    max_examples=6,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    database=None,  # no .hypothesis/ folder left behind by a test run
)
settings.register_profile("fundl-shrink", settings.get_profile("fundl"), phases=tuple(Phase))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fundl"))


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module: every module compiles its own
    shapes, and keeping them all held the suite at 4.5 GB."""
    yield
    jax.clear_caches()


@pytest.fixture
def key():
    return jax.random.key(0)


def _enable_x64():
    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # JAX before 0.7: the experimental spelling
        from jax.experimental import enable_x64 as enable
    return enable(True)


@pytest.fixture
def x64():
    """``with x64():`` turns on 64-bit types for the block, on every JAX fundl supports."""
    return _enable_x64
