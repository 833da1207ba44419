"""Shared test settings: strict broadcasting and dtype promotion, a small hypothesis budget.

Every hypothesis example compiles new shapes, so examples are few, deadlines off, and
the default profile does not shrink a failing example (shrinking one compiled
function after another took over five minutes): the first failure is reported as
found. ``HYPOTHESIS_PROFILE=fundl-shrink`` shrinks, to debug a failure.
"""

import importlib.util
import os
import pathlib
import shutil
import tempfile

import jax
import pytest
from hypothesis import Phase, settings

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


# --- one compilation cache per test process --------------------------------------------------
# Tests build the same programs again and again (a fresh closure, a fresh model object, the
# in-memory caches cleared after each module): JAX's persistent cache, keyed by the program
# itself, hands the compiled executable back instead (about 10% of the suite's CPU time).
# It changes no program and no result, only how often XLA compiles the same one. Each xdist
# worker has its own folder (JAX's cache writes are not atomic between processes), under
# one folder that lives for the session. FUNDL_TEST_COMPILATION_CACHE=off turns it off.
_CACHE_ENV = "FUNDL_TEST_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    if os.environ.get("FUNDL_TEST_COMPILATION_CACHE") == "off":
        return
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        config.fundl_cache = tempfile.mkdtemp(prefix="fundl-test-jax-cache-")
        os.environ[_CACHE_ENV] = config.fundl_cache  # the xdist workers inherit it
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    folder = os.path.join(os.environ[_CACHE_ENV], worker)
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    folder = getattr(config, "fundl_cache", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


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


# --- float32 matrix products on GPU and TPU -------------------------------------------------
# On a CPU a float32 dot or convolution computes in float32. On a GPU (TF32 tensor cores:
# inputs rounded to 10 mantissa bits) or a TPU (one bfloat16 pass: 7 bits), JAX's default
# precision for them is lower, and two computations of the same float32 value — vmapped and
# looped, batched and whole — can differ by 1e-5 to 1e-3 relative where the CPU agrees to
# 1e-7. Tests state which precision they assume: `highest_precision` where agreement of two
# computations is the point, `f32_tol` where a float32 result is held to a reference.

# FUNDL_TEST_EMULATE_MATMUL=tf32 (a GPU's default) or bf16 (a TPU's) runs the suite on a CPU
# with float32 dots and convolutions computed as on that device, and `f32_tol` widened as on
# that backend (tests/_matmul_emulation.py; .ci/precision runs the whole suite both ways).
# --import-mode=importlib puts no test folder on sys.path: the helper is loaded by its path.
_spec = importlib.util.spec_from_file_location(
    "fundl_tests_matmul_emulation", pathlib.Path(__file__).with_name("_matmul_emulation.py")
)
matmul_emulation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matmul_emulation)
if os.environ.get("FUNDL_TEST_EMULATE_MATMUL"):  # for the whole run
    matmul_emulation.install(os.environ["FUNDL_TEST_EMULATE_MATMUL"])


@pytest.fixture
def emulate_matmul():
    """tests/_matmul_emulation.py, for the tests of the emulation itself."""
    return matmul_emulation


# The relative error of a float32 matmul at the backend's default precision (about 8 roundings
# of its inputs), and 0 where float32 matmuls are float32.
_MATMUL_RTOL = {"gpu": 4e-3, "cuda": 4e-3, "rocm": 4e-3, "tpu": 3e-2}


def reduced_matmul_precision() -> float:
    """The relative error float32 matmuls may carry here (0.0 on a CPU or under "highest")."""
    if jax.config.jax_default_matmul_precision in ("highest", "float32"):
        return 0.0
    return _MATMUL_RTOL.get(matmul_emulation.backend() or jax.default_backend(), 0.0)


def float32_tolerance(rtol: float = 1e-5, atol: float = 1e-6) -> dict:
    """``{"rtol", "atol"}`` for a float32 result that went through matmuls or convolutions:
    the given values on a CPU, widened (atol in proportion) to the backend's matmul precision
    on a GPU or TPU. Use as ``assert_allclose(a, b, **f32_tol())``."""
    floor = reduced_matmul_precision()
    if floor <= rtol:
        return {"rtol": rtol, "atol": atol}
    return {"rtol": floor, "atol": atol * floor / rtol}


@pytest.fixture
def f32_tol():
    """:func:`float32_tolerance`: backend-aware tolerances for float32 matmul results."""
    return float32_tolerance


@pytest.fixture
def highest_precision():
    """Run the test with float32 matmuls at full float32 precision on every backend
    (``jax.default_matmul_precision("highest")``; a no-op on a CPU): for tests whose point
    is that two computations agree to float32 rounding."""
    with jax.default_matmul_precision("highest"):
        yield


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
