"""JAX's persistent compilation cache in a project-owned directory.

A command-line predict spends most of its cold start compiling; with the cache, a second process
loads the compiled executable from disk instead. Must run before the first computation.
"""
import os
from pathlib import Path

CACHE_ENV = "SIGNS_JAX_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "signs_jax" / "jax")


def enable_compilation_cache() -> Path:
    """Write every compiled executable to the cache (thresholds at zero: our compiles are all worth it)."""
    import jax

    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return path  # an unwritable cache only costs speed
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
