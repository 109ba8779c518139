"""The process set-up of the command-line tools: glibc's malloc, XLA's CPU flags, JAX's compilation cache.

`set_up()` runs once per tool process, after the command line is parsed and before JAX starts its
threads or reads XLA_FLAGS. Nothing a library user imports calls it: importing signs_jax, building
models, loading weights and calling steps leave the process as the user set it up.
docs/runtime.md says how a script gets the same set-up (and the tools' numbers) from environment
variables; docs/performance.md holds the measurements behind each setting.
"""

import ctypes
import ctypes.util
import dataclasses
import os
import pkgutil
import platform
from importlib.metadata import entry_points
from pathlib import Path
from typing import Optional

MALLOC_ENV = "SIGNS_JAX_MALLOC"  # "default": keep glibc's own malloc settings
CACHE_ENV = "SIGNS_JAX_CACHE"  # the compilation cache's directory

# A compiled step allocates its temporaries afresh on every call, XLA from its worker threads. With
# glibc's defaults the large ones are fresh `mmap`s, so every call page-faults through memory the
# kernel must zero first, and a thread arena (it cannot hold a block over 64 MB) falls back to `mmap`
# whatever the settings. One arena with no `mmap` and no trimming reuses the freed memory, and the
# speed of a process no longer depends on which arena XLA's threads drew. The costs: XLA's compiler
# threads share the arena's lock (slower compiles), and the process keeps its peak memory until it
# exits. Tuned for XLA's CPU backend: on an accelerator the temporaries live in device memory.
# (<malloc.h> option, value, the GLIBC_TUNABLES name that sets the same at process start)
MALLOC_SETTINGS = (
    (-8, 1, "glibc.malloc.arena_max"),  # M_ARENA_MAX
    (-4, 0, "glibc.malloc.mmap_max"),  # M_MMAP_MAX
    (-1, 2**31 - 1, "glibc.malloc.trim_threshold"),  # M_TRIM_THRESHOLD
)

# LLVM's loop unrolling in XLA's CPU kernels: turned off, the train step compiles faster at the same
# step time. XLA refuses the flag by its own name; it reaches the CPU backend through the extra options.
CPU_XLA_FLAGS = (("--xla_backend_extra_options", "xla_cpu_disable_loop_unrolling"),)


@dataclasses.dataclass(frozen=True)
class SetUp:
    """What `set_up` changed: malloc settings applied, XLA_FLAGS afterwards, the cache directory or None."""

    malloc: bool
    xla_flags: str
    cache: Optional[Path]


def set_up(compilation_cache: bool = True) -> SetUp:
    """Apply the tools' process set-up: malloc and XLA flags where JAX runs on the CPU, and the cache."""
    cpu = runs_on_cpu_only()
    malloc = cpu and reuse_freed_memory()
    if cpu:
        for name, value in CPU_XLA_FLAGS:
            add_xla_flag(name, value)
    cache = enable_compilation_cache() if compilation_cache else None
    return SetUp(malloc, os.environ.get("XLA_FLAGS", ""), cache)


def accelerator_plugins() -> set:
    """Names of installed JAX PJRT plugins (CUDA, ROCm, TPU), found without starting JAX."""
    names = {entry.name for entry in entry_points(group="jax_plugins")}
    try:
        import jax_plugins
    except ImportError:
        return names
    return names | {module.name for module in pkgutil.iter_modules(jax_plugins.__path__)}


def runs_on_cpu_only() -> bool:
    """Whether JAX will pick the CPU: JAX_PLATFORMS says so, or no accelerator plugin is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not accelerator_plugins()


def reuse_freed_memory() -> bool:
    """Set glibc's malloc to `MALLOC_SETTINGS`; True if set (False off glibc or with SIGNS_JAX_MALLOC=default).

    A setting the user gave in GLIBC_TUNABLES is left as the user set it.
    """
    if os.environ.get(MALLOC_ENV, "").lower() == "default":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    users = {item.split("=")[0] for item in os.environ.get("GLIBC_TUNABLES", "").split(":")}
    return all(libc.mallopt(option, value) == 1 for option, value, tunable in MALLOC_SETTINGS if tunable not in users)


def add_xla_flag(name: str, value: str) -> bool:
    """Append `name=value` to XLA_FLAGS unless the user set `name`; True if added."""
    flags = os.environ.get("XLA_FLAGS", "")
    if any(flag.split("=")[0] == name for flag in flags.split()):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {name}={value}".strip()
    return True


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "signs_jax" / "jax")


def enable_compilation_cache() -> Optional[Path]:
    """JAX's persistent compilation cache in `cache_dir()`: a second run of a tool loads its compiled
    executables from disk instead of compiling them. Every executable is written (thresholds at
    zero: all of ours are worth keeping). None when the directory cannot be made: that only costs speed."""
    import jax

    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
