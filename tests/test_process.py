"""The command-line tools' process set-up (`signs_jax.process`): glibc reuses freed memory, so a step's
large temporaries stop costing page faults, and XLA gets the package's CPU flags."""
import os
import platform
import subprocess
import sys

import pytest

from helpers import ROOT
from signs_jax.xla_flags import NO_LOOP_UNROLLING, add_xla_flag

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# 20 fresh 96 MB blocks from malloc, written once, as a compiled step allocates its temporaries:
# from a worker thread, like XLA's, and larger than the 64 MB a glibc thread arena can hold. The
# step's own gain is measured by scripts/bench.py (docs/performance.md).
FAULTS_PER_CALL = """
import ctypes, resource, threading
from signs_jax.allocator import reuse_freed_memory
print(reuse_freed_memory(), end=" ")
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def fresh_blocks(count, size=96 << 20):
    for _ in range(count):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
def on_a_worker_thread(count):
    worker = threading.Thread(target=fresh_blocks, args=(count,))
    worker.start()
    worker.join()
on_a_worker_thread(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
on_a_worker_thread(20)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 20)
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
    assert default_faults > 20_000  # 24,576 fresh 4 KiB pages per block with glibc's defaults
    assert reuse_faults < 100  # the same pages, reused


# The XLA flags of the command-line tools' set-up reach the installed jaxlib, which aborts on a
# flag it does not know; a flag the user set keeps the user's value.
XLA_SETUP = """
import os
from signs_jax.errors import run_cli
run_cli(lambda: __import__("argparse").ArgumentParser(), lambda args: 0, [])
import jax
print(float(jax.jit(lambda x: (x * 2).sum())(jax.numpy.ones(3))))
print(os.environ.get("XLA_FLAGS", ""))
"""


def cli_setup(**env):
    done = subprocess.run([sys.executable, "-c", XLA_SETUP], cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_cli_setup_hands_jaxlib_the_cpu_flags_it_accepts():
    result, flags = cli_setup(JAX_PLATFORMS="cpu")
    assert result == "6.0"
    assert flags == "--xla_backend_extra_options=xla_cpu_disable_loop_unrolling"


def test_cli_setup_keeps_the_users_xla_flags_and_adds_none_for_other_platforms(monkeypatch):
    _, flags = cli_setup(JAX_PLATFORMS="cpu", SIGNS_JAX_MALLOC="default",
                         XLA_FLAGS="--xla_backend_extra_options=xla_cpu_disable_slp_vectorizer")
    assert flags == "--xla_backend_extra_options=xla_cpu_disable_slp_vectorizer"
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    monkeypatch.setenv("XLA_FLAGS", "")
    assert not add_xla_flag(*NO_LOOP_UNROLLING) and os.environ["XLA_FLAGS"] == ""
