"""Shared test settings: strict broadcasting, and a small hypothesis budget.

Every hypothesis example compiles new shapes, so examples are few and deadlines off.
"""

import jax
import pytest
from hypothesis import settings

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile("fundl", max_examples=6, deadline=None, derandomize=True)
settings.load_profile("fundl")


@pytest.fixture
def key():
    return jax.random.key(0)
