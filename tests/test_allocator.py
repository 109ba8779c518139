"""The command-line tools make glibc reuse freed memory: a step's large temporaries stop costing page faults."""
import platform
import subprocess
import sys

import pytest

from conftest import ROOT

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# 40 fresh 64 MB blocks from malloc, written once, as a train step allocates its temporaries. They
# are allocated on this (main) thread, so the arena is known; the step's own gain is measured by
# scripts/bench.py (docs/performance.md).
FAULTS_PER_CALL = """
import ctypes, resource
from signs_jax.allocator import reuse_freed_memory
print(reuse_freed_memory(), end=" ")
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def fresh_block(size=64 << 20):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
fresh_block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    fresh_block()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 40)
"""


def faults_per_call(malloc_env: str):
    env = {"SIGNS_JAX_MALLOC": malloc_env, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@glibc_only
def test_reusing_freed_memory_removes_the_page_faults_of_fresh_allocations():
    set_default, default_faults = faults_per_call("default")
    set_reuse, reuse_faults = faults_per_call("")
    assert (set_default, set_reuse) == (False, True)
    assert default_faults > 10_000  # 16,384 fresh 4 KiB pages per call with glibc's defaults
    assert reuse_faults < 100  # the same pages, reused
