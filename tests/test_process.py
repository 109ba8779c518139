"""The command-line tools' process set-up (`signs_jax._runtime`): glibc reuses freed memory, so a step's
large temporaries stop costing page faults, XLA gets the package's CPU flags, JAX the compilation cache;
and a library user's process is left as it was."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import KERAS_FILES, ROOT
from signs_jax import _runtime, evaluate, keras_h5, predict, train

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)
BARE_ENV = {"PATH": "/usr/bin:/bin"}

# Fresh 96 MB blocks from malloc, each written once, as a compiled step allocates its temporaries:
# from a worker thread, like XLA's, and larger than the 64 MB a glibc thread arena can hold. The
# step's own gain is measured by scripts/bench.py (docs/performance.md).
FRESH_BLOCK_FAULTS = """
import ctypes, resource, threading
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
def faults_per_block():
    on_a_worker_thread(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    on_a_worker_thread(20)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 20
"""

FAULTS_AFTER_SET_UP = (
    FRESH_BLOCK_FAULTS
    + """
from signs_jax._runtime import reuse_freed_memory
print(reuse_freed_memory(), faults_per_block())
"""
)


def faults_per_block(**env):
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_AFTER_SET_UP],
        cwd=ROOT,
        env={**BARE_ENV, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.perf
@pytest.mark.slow
@glibc_only
def test_reusing_freed_memory_removes_the_page_faults_of_fresh_allocations():
    set_, faults = faults_per_block(SIGNS_JAX_MALLOC="default")
    assert not set_ and faults > 20_000  # 24,576 fresh 4 KiB pages per block with glibc's defaults
    set_, faults = faults_per_block()
    assert set_ and faults < 100  # the same pages, reused


@pytest.mark.perf
@pytest.mark.slow
@glibc_only
def test_glibc_tunables_give_a_script_the_same_malloc_settings():
    """docs/runtime.md: GLIBC_TUNABLES, read when the process starts, sets what `reuse_freed_memory` sets."""
    tunables = ":".join(f"{name}={value}" for _, value, name in _runtime.MALLOC_SETTINGS)
    assert faults_per_block(SIGNS_JAX_MALLOC="default", GLIBC_TUNABLES=tunables)[1] < 100
    # each of the three is needed: without it the fresh blocks fault again
    for left_out in range(len(_runtime.MALLOC_SETTINGS)):
        partial = ":".join(
            f"{name}={value}" for i, (_, value, name) in enumerate(_runtime.MALLOC_SETTINGS) if i != left_out
        )
        assert faults_per_block(SIGNS_JAX_MALLOC="default", GLIBC_TUNABLES=partial)[1] > 20_000, partial


# The XLA flags of the command-line tools' set-up reach the installed jaxlib, which aborts on a
# flag it does not know; a flag the user set keeps the user's value.
CLI_SET_UP = """
import os
from signs_jax.errors import run_cli
run_cli(lambda: __import__("argparse").ArgumentParser(), lambda args: 0, [])
import jax
print(float(jax.jit(lambda x: (x * 2).sum())(jax.numpy.ones(3))))
print(os.environ.get("XLA_FLAGS", ""))
print(jax.config.jax_compilation_cache_dir)
"""


def cli_set_up(**env):
    done = subprocess.run(
        [sys.executable, "-c", CLI_SET_UP], cwd=ROOT, env={**BARE_ENV, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


@pytest.mark.slow
def test_cli_set_up_hands_jaxlib_the_cpu_flags_it_accepts_and_the_cache(tmp_path):
    result, flags, cache = cli_set_up(JAX_PLATFORMS="cpu", SIGNS_JAX_CACHE=str(tmp_path / "cache"))
    assert result == "6.0"
    assert flags == "--xla_backend_extra_options=xla_cpu_disable_loop_unrolling"
    assert cache == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()


@pytest.mark.slow
def test_cli_set_up_keeps_the_users_xla_flags(tmp_path):
    _, flags, _ = cli_set_up(
        JAX_PLATFORMS="cpu",
        SIGNS_JAX_MALLOC="default",
        SIGNS_JAX_CACHE=str(tmp_path),
        XLA_FLAGS="--xla_backend_extra_options=xla_cpu_disable_slp_vectorizer",
    )
    assert flags == "--xla_backend_extra_options=xla_cpu_disable_slp_vectorizer"


def test_set_up_leaves_malloc_and_xla_flags_alone_where_jax_runs_on_an_accelerator(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(_runtime, "reuse_freed_memory", lambda: pytest.fail("malloc tuned for an accelerator"))
    assert _runtime.set_up(compilation_cache=False) == _runtime.SetUp(malloc=False, xla_flags="", cache=None)
    assert os.environ["XLA_FLAGS"] == ""


def test_cpu_only_follows_jax_platforms_then_the_installed_plugins(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert _runtime.runs_on_cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    assert not _runtime.runs_on_cpu_only()
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setattr(_runtime, "accelerator_plugins", lambda: {"cuda"})
    assert not _runtime.runs_on_cpu_only()
    monkeypatch.setattr(_runtime, "accelerator_plugins", set)
    assert _runtime.runs_on_cpu_only()


@pytest.mark.parametrize(
    "tool, argv, cache",
    [
        (train, ["--data-dir", "{tmp}/none", "--workdir", "{tmp}", "--epochs", "1"], True),
        (train, ["--coordinator", "localhost:1", "--data-dir", "{tmp}/none", "--workdir", "{tmp}"], False),  # no cache
        (predict, ["{tmp}/none.png", "--weights", "{tmp}/none.h5"], True),
        (evaluate, ["--weights", "{tmp}/none.h5", "--data-dir", "{tmp}"], True),
        (keras_h5, ["{tmp}/none.h5"], True),
    ],
)
def test_every_command_line_tool_sets_up_its_process_before_running(monkeypatch, tmp_path, tool, argv, cache):
    calls = []
    monkeypatch.setattr(_runtime, "set_up", lambda compilation_cache=True: calls.append(compilation_cache))
    monkeypatch.delenv("SIGNS_JAX_COORDINATOR", raising=False)
    assert tool.main([word.format(tmp=tmp_path) for word in argv]) == 2  # each fails on the missing file
    assert calls == [cache]


# A library user's process: importing signs_jax, building, initialising, applying and training a
# model, loading a Keras file, leave XLA_FLAGS, JAX's configuration and glibc's malloc as they were.
LIBRARY_USE = (
    FRESH_BLOCK_FAULTS
    + """
import os, sys
import jax, numpy as np
import signs_jax
from signs_jax.recipes import RECIPES
from signs_jax.steps import create_state, make_eval_step, make_optimizer, make_train_step
model = signs_jax.ResNet50(width=0.0625, stage_sizes=(1, 1, 1, 1))
variables = signs_jax.init_variables(model, jax.random.key(0))
jax.jit(model.apply)(variables, np.zeros((2, 64, 64, 3), np.float32))
recipe = RECIPES["original"].replace(batch_size=2)
tx = make_optimizer(recipe, 1)
state, _ = make_train_step(model, tx, recipe)(create_state(variables, tx, 0), np.zeros((2, 64, 64, 3), np.uint8),
                                                np.zeros(2, np.int32))
signs_jax.load_keras_h5(sys.argv[1])
print(os.environ.get("XLA_FLAGS"), jax.config.jax_compilation_cache_dir, faults_per_block())
"""
)


@pytest.mark.slow
def test_using_the_library_leaves_the_process_as_the_user_set_it_up():
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_USE, str(KERAS_FILES["keras2_model"])],
        cwd=ROOT,
        env={**BARE_ENV, "HOME": str(Path.home())},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    xla_flags, cache_dir, faults = done.stdout.split()
    assert (xla_flags, cache_dir) == ("None", "None")
    if platform.libc_ver()[0] == "glibc":
        assert int(faults) > 20_000  # glibc's default malloc: fresh blocks still cost their page faults
