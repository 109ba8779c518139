"""Keep freed memory in the process instead of handing it back to the kernel (glibc only).

A compiled ResNet50 step allocates its ~400 MB of temporaries afresh on every call. With glibc's
defaults the large ones come from fresh `mmap`s, and the worker threads' arenas unmap a heap as
soon as it is empty, so a float32 train step takes ~100,000 page faults in which the kernel zeroes
memory (0.2 s of CPU time on a 2-core machine). No `mmap`, no trimming, a 64 MB top pad (which
keeps empty thread heaps mapped) and one arena per core make glibc reuse the same pages: faults
per step ~10-20k, train step and inference 1.1-1.2x, train epochs 1.13x (docs/performance.md). One
arena in all removes a few more faults but makes XLA's compiler threads queue for it (compile 1.3x
slower). The cost: the process keeps its peak memory until it exits. Open: under this setting the
bfloat16 train step is bimodal from one process to the next (82 or 114 img/s, against 96 without).

The command-line tools call `reuse_freed_memory()` before JAX starts its threads; set
SIGNS_JAX_MALLOC=default to keep glibc's defaults.
"""
import ctypes
import ctypes.util
import os
import platform

ENV = "SIGNS_JAX_MALLOC"
# <malloc.h>
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8


def reuse_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed memory; True if it was set (False elsewhere or when opted out)."""
    if os.environ.get(ENV, "").lower() == "default" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    cores = len(os.sched_getaffinity(0))
    settings = ((M_ARENA_MAX, cores), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 << 20))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)
