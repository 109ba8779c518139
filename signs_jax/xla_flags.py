"""XLA flags this package sets for its own processes on CPU, each one measured (docs/performance.md).

XLA reads XLA_FLAGS once, when JAX creates its backend, so these are set at start-up, before the
first JAX computation, by `process.set_up_process` (every command-line tool, bench.py, the tests). A
flag already in XLA_FLAGS is left as the user set it, and nothing is added where JAX may run on an
accelerator (JAX_PLATFORMS without "cpu", or an installed GPU/TPU plugin): the flags are CPU tuning.
"""
import os
import pkgutil
from importlib.metadata import entry_points

ENV = "XLA_FLAGS"

# LLVM's loop unrolling in XLA's CPU kernels: turned off, the train-step compile takes 1-2 s less
# at the same step time (XLA refuses the flag by its own name; it only reaches the CPU backend
# through the extra options).
NO_LOOP_UNROLLING = ("--xla_backend_extra_options", "xla_cpu_disable_loop_unrolling")


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


def add_xla_flag(name: str, value: str) -> bool:
    """Append `name=value` to XLA_FLAGS for a CPU-only process unless the user set `name`; True if added."""
    flags = os.environ.get(ENV, "")
    if not runs_on_cpu_only() or any(flag.split("=")[0] == name for flag in flags.split()):
        return False
    os.environ[ENV] = f"{flags} {name}={value}".strip()
    return True


def set_cpu_flags() -> bool:
    """Add this package's CPU compile flags (NO_LOOP_UNROLLING) to XLA_FLAGS; True if added."""
    return add_xla_flag(*NO_LOOP_UNROLLING)
