"""Keep freed memory in the process instead of handing it back to the kernel (glibc only).

A compiled ResNet50 step allocates its temporaries afresh on every call: XLA asks for one buffer
for all of them (270 MB for inference at batch 120) plus smaller ones. With glibc's defaults the
large ones come from fresh `mmap`s, so every call page-faults its way through memory the kernel
must zero first (~100,000 faults per float32 train step). `reuse_freed_memory` turns off `mmap`
and trimming and keeps a single arena: a thread arena cannot hold a block over 64 MB and falls
back to `mmap` for it whatever the settings, and XLA allocates from its worker threads. Measured
(docs/performance.md): faults per inference call 66,000 -> 0, and the speed of a process no longer
depends on which arena XLA's threads drew (train 52 or 68 img/s with an arena per core, 69-72
with one). The costs: XLA's compiler threads share the arena's lock (train-step compile 1.1x,
eval compile 1.3x slower in float32), and the process keeps its peak memory until it exits.

The command-line tools call `reuse_freed_memory()` before JAX starts its threads; set
SIGNS_JAX_MALLOC=default to keep glibc's defaults.
"""
import ctypes
import ctypes.util
import os
import platform

ENV = "SIGNS_JAX_MALLOC"
# <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def reuse_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed memory; True if it was set (False elsewhere or when opted out)."""
    if os.environ.get(ENV, "").lower() == "default" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)
