"""JAX's persistent compilation cache, as one opt-in call.

A fresh process compiles every program again: the train step, the eval step, the
model's init, each eager op. With the cache on, each compiled program is also written
to a folder, keyed by its HLO, the compile options, the device kind and the JAX and
jaxlib versions; a later process (the same script run again, a notebook restarted)
that builds the same program reads it back instead of compiling it. A changed model,
shape, dtype, flag or JAX version is a different key: it compiles and is written as a
new entry. Nothing changes in what the programs compute.
"""

from __future__ import annotations

import os
import pathlib

import jax

from fundl._validate import check_int, check_number

__all__ = ["enable_compilation_cache"]


def enable_compilation_cache(
    path: str | os.PathLike,
    *,
    min_compile_time_secs: float = 0.0,
    min_entry_size_bytes: int = 0,
) -> pathlib.Path:
    """Turn on JAX's persistent compilation cache in the folder ``path`` (created if missing).

    The same as setting JAX's options ``jax_enable_compilation_cache`` = True,
    ``jax_compilation_cache_dir`` = path, ``jax_persistent_cache_min_compile_time_secs``
    and ``jax_persistent_cache_min_entry_size_bytes`` (or the ``JAX_COMPILATION_CACHE_DIR``,
    ... environment variables) — a program is written to the cache when its compile
    took at least ``min_compile_time_secs`` and its entry has at least
    ``min_entry_size_bytes`` — and it also works when called after the process has
    already compiled something (JAX decides once per process whether to use the cache;
    this call makes it decide again), or after the cache was switched off with
    ``JAX_ENABLE_COMPILATION_CACHE=false``. JAX's own default threshold is 1 s, which on a
    CPU leaves out most of a small model's programs; 0 caches every program.

    The cache is keyed by the program, the device kind and the JAX version, so one
    folder serves several projects and machines; JAX bounds its size
    (``jax_compilation_cache_max_size``, no bound by default). Delete the folder to
    empty it.

    Args:
      path: the cache folder.
      min_compile_time_secs: cache a program only if its compile took at least this
        long (≥ 0).
      min_entry_size_bytes: cache a program only if its entry is at least this large
        (≥ 0). As in JAX, 0 lets JAX put its own minimum for the cache's file system in
        its place (open-source JAX's is 0), and ``-1`` means no minimum, never replaced.

    Returns:
      the cache folder, as an absolute path.

    Raises:
      TypeError: if ``path`` is not a str or ``os.PathLike``.
      ValueError: for a negative threshold, or a ``path`` that is a file.

    Examples:
      In a script, once, before training:
      ``fundl.enable_compilation_cache("~/.cache/fundl-jax")``; its second run reads
      the compiled steps from the folder. Here, a folder removed after, and JAX's
      setting put back as it was (None: no cache):

      >>> import tempfile
      >>> from jax.experimental.compilation_cache import compilation_cache
      >>> before = jax.config.jax_compilation_cache_dir
      >>> with tempfile.TemporaryDirectory() as d:
      ...     folder = fundl.enable_compilation_cache(d)
      ...     _ = jax.jit(lambda x: 2.0 * x + 1.0)(jnp.arange(3.0))  # compiled, and written
      ...     print(folder.is_absolute(), len(list(folder.iterdir())) > 0)
      ...     jax.config.update("jax_compilation_cache_dir", before)
      ...     compilation_cache.reset_cache()
      True True
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"enable_compilation_cache: path must be a folder (str or os.PathLike), got {path!r}"
        )
    min_compile_time_secs = check_number(
        "enable_compilation_cache", "min_compile_time_secs", min_compile_time_secs, low=0.0
    )
    min_entry_size_bytes = check_int(
        "enable_compilation_cache", "min_entry_size_bytes", min_entry_size_bytes, low=-1
    )
    folder = pathlib.Path(path).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"enable_compilation_cache: {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    # JAX_ENABLE_COMPILATION_CACHE=false would leave the folder unused, silently.
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_secs)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", min_entry_size_bytes)
    _reset_jax_cache()
    return folder


def _reset_jax_cache() -> None:
    """Make JAX decide again whether to use the cache (it decides at the first compile of a
    process, and keeps the folder it opened then)."""
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()
