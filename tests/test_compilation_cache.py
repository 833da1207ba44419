"""fundl.enable_compilation_cache: programs written to the folder and read back."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl

OPTIONS = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture
def restore_jax_cache():
    before = {name: getattr(jax.config, name) for name in OPTIONS}
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()


def test_programs_are_written_and_read_back(tmp_path, restore_jax_cache):
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **_: hits.append(event) if event.endswith("cache_hits") else None
    )
    jnp.sin(jnp.ones(2)).block_until_ready()  # compiled before: the call must still work
    folder = fundl.enable_compilation_cache(tmp_path / "cache")
    assert folder == (tmp_path / "cache").absolute() and folder.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0

    def f(x):  # a program no other test compiles
        return jnp.cos(x) * 1.2345 + 6.789

    x = jnp.arange(3.0)
    expected = np.cos(np.arange(3.0)) * 1.2345 + 6.789
    np.testing.assert_allclose(jax.jit(f)(x), expected, rtol=1e-6)
    assert list(folder.iterdir()), "nothing was written to the cache folder"
    jax.clear_caches()  # the in-memory caches: the next compile must come from the folder
    np.testing.assert_allclose(jax.jit(f)(x), expected, rtol=1e-6)
    assert hits, "the second compile did not read the cache"


def test_it_turns_the_cache_on_where_jax_was_told_not_to_use_it(tmp_path, restore_jax_cache):
    # JAX_ENABLE_COMPILATION_CACHE=false used to leave the folder empty, without a word.
    jax.config.update("jax_enable_compilation_cache", False)
    folder = fundl.enable_compilation_cache(tmp_path / "cache", min_entry_size_bytes=-1)
    assert jax.config.jax_enable_compilation_cache is True
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1
    y = jax.jit(lambda x: jnp.tanh(x) * 2.4681 - 1.3579)(jnp.arange(2.0))
    np.testing.assert_allclose(y, np.tanh(np.arange(2.0)) * 2.4681 - 1.3579, rtol=1e-6)
    assert list(folder.iterdir()), "nothing was written to the cache folder"


def test_bad_arguments(tmp_path, restore_jax_cache):
    with pytest.raises(TypeError, match=r"enable_compilation_cache: path must be a folder"):
        fundl.enable_compilation_cache(3)
    with pytest.raises(ValueError, match=r"min_compile_time_secs must be .*got -1"):
        fundl.enable_compilation_cache(tmp_path, min_compile_time_secs=-1)
    with pytest.raises(ValueError, match=r"min_entry_size_bytes must be an integer >= -1"):
        fundl.enable_compilation_cache(tmp_path, min_entry_size_bytes=0.5)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"exists and is not a folder"):
        fundl.enable_compilation_cache(tmp_path / "file")
