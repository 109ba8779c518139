"""Keep freed memory in the process instead of handing it back to the kernel (glibc only).

A compiled ResNet50 step allocates its temporaries afresh on every call, from XLA's worker
threads. With glibc's defaults the large blocks come from fresh `mmap`s, so every call page-faults
its way through memory the kernel must zero first (~100,000 faults per float32 train step).
`reuse_freed_memory` turns off `mmap` and trimming, so freed blocks stay in the heap for the next
call, and limits glibc to two arenas: the main one and one that the other threads share.

A thread arena's heaps are 64 MB, and a larger block is `mmap`ped whatever the settings, so the
same call also caps XLA's temporary buffers at 32 MB each (`xla_flags.HEAP_SIZE_LIMIT`; XLA
otherwise puts all of a step's temporaries in one buffer of 270-400 MB), and a 64 MB top pad keeps
an emptied heap mapped. Measured (docs/performance.md): faults per train step 127,000 -> 0-100,
and the train-step compile about 1.3x faster than with one arena, whose lock XLA's compiler
threads queue for. The costs: the process keeps its peak memory until it exits, and a single
tensor over 64 MB, which XLA cannot split, is still `mmap`ped in the calls whose allocating thread
drew the second arena. Inference computes large patches in batch chunks for that reason
(`conv.PATCHES_MAX_BYTES`); what remains is float32 training at batches of 112 and more (conv1's
patches) and activations at batches over about 250.

The command-line tools call `reuse_freed_memory()` before JAX starts its threads; set
SIGNS_JAX_MALLOC=default to keep glibc's defaults.
"""
import ctypes
import ctypes.util
import os
import platform

from .xla_flags import HEAP_SIZE_LIMIT, add_xla_flag

ENV = "SIGNS_JAX_MALLOC"
# <malloc.h>
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
# The main arena plus one that the other threads share (see the module docstring).
ARENAS = 2
# A thread arena's heap is unmapped as soon as it is empty unless the top pad covers it.
TOP_PAD = 64 << 20


def reuse_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed memory; True if it was set (False elsewhere or when opted out)."""
    if os.environ.get(ENV, "").lower() == "default" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    settings = ((M_ARENA_MAX, ARENAS), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, TOP_PAD))
    if not all(libc.mallopt(option, value) == 1 for option, value in settings):
        return False
    add_xla_flag(*HEAP_SIZE_LIMIT)
    return True
