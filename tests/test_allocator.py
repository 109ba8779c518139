"""The command-line tools make glibc reuse freed memory: a step's large temporaries stop costing page faults."""
import platform
import subprocess
import sys

import pytest

from conftest import ROOT

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# 40 calls that each allocate a fresh 64 MB result, as a train step allocates its temporaries
FAULTS_PER_CALL = """
import resource, sys
import jax, jax.numpy as jnp
from signs_jax.allocator import reuse_freed_memory
print(reuse_freed_memory(), end=" ")
f = jax.jit(lambda x: x + 1.0)
x = jnp.zeros(16 * 2**20)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 40)
"""


def faults_per_call(malloc_env: str):
    env = {"SIGNS_JAX_MALLOC": malloc_env, "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_CALL], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@glibc_only
def test_reusing_freed_memory_removes_the_page_faults_of_fresh_allocations():
    set_default, default_faults = faults_per_call("default")
    set_reuse, reuse_faults = faults_per_call("")
    assert (set_default, set_reuse) == (False, True)
    assert default_faults > 10_000  # 16,384 fresh 4 KiB pages per call with glibc's defaults
    assert reuse_faults < default_faults / 4  # about 2,000 here
