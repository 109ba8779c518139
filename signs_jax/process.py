"""The process set-up that every command-line tool, scripts/bench.py and the tests share.

It must run before JAX starts its threads and reads XLA_FLAGS, i.e. before the first computation.
"""
from .allocator import reuse_freed_memory
from .xla_flags import set_cpu_flags


def set_up_process() -> bool:
    """glibc's malloc settings (`allocator`) and XLA's CPU flags (`xla_flags`); True if malloc was set."""
    malloc_set = reuse_freed_memory()
    set_cpu_flags()
    return malloc_set
