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
)
settings.register_profile("fundl-shrink", settings.get_profile("fundl"), phases=tuple(Phase))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fundl"))


@pytest.fixture
def key():
    return jax.random.key(0)
