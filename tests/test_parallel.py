"""Data parallelism: 1 device, 4 forced host devices and 2 real processes (jax.distributed, gloo) agree."""

import json
import socket

import numpy as np
import pytest

from helpers import TINY, final_params, metrics_of, run_train, train_process

pytestmark = pytest.mark.slow  # several real processes and a 4-device subprocess

# Ten steps at a tenth of the default learning rate, in float32 (default-v1: the default computes in bfloat16,
# whose rounding alone exceeds the tolerances below). A tiny network at a high learning rate is
# chaotic: float rounding of different reduction orders (one device vs a sharded batch) grows step
# by step into visibly different runs. A real data-parallel fault (per-device BatchNorm statistics,
# gradients not summed over devices) differs by far more, from the first step.
EPOCHS = ["--recipe", "default-v1", "--epochs", "1", "--lr", "2e-4"]


def finished(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def assert_same_training(a, b):
    """Equal within float tolerance, except where float noise drives the update.

    Every conv of the Keras model has a bias and a BatchNorm right after it, so that bias's true
    gradient is exactly zero and what is computed is rounding noise; Adam rescales noise into steps
    of about the learning rate. Those biases (and the moving means that follow them) therefore
    random-walk differently under any change of reduction order, while the function the network
    computes does not depend on them in training.
    """
    import jax

    for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)):
        keys = [k.key for k in path]
        noise_driven = keys[0] == "batch_stats" or (
            keys[-1] == "bias" and not keys[-2].startswith("bn") and keys[-2] != "fc"
        )
        atol = 2e-2 if noise_driven else 1e-5
        np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), atol=atol, rtol=1e-3, err_msg=jax.tree_util.keystr(path)
        )


@pytest.fixture(scope="module")
def single_device_run(small_signs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dp1")
    assert run_train("--data-dir", small_signs, "--workdir", workdir, "--run", "one", *EPOCHS, *TINY) == 0
    return workdir / "one"


def test_four_host_devices_match_one_device(single_device_run, small_signs, tmp_path):
    out = finished(
        train_process(
            ["--data-dir", small_signs, "--workdir", tmp_path, "--run", "four", *EPOCHS, *TINY],
            {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        )
    )
    assert "on 4 device(s) in 1 process(es)" in out
    assert_same_training(final_params(tmp_path / "four"), final_params(single_device_run))
    one, four = metrics_of(single_device_run), metrics_of(tmp_path / "four")
    assert [r["test_accuracy"] for r in four] == [r["test_accuracy"] for r in one]
    np.testing.assert_allclose([r["train_loss"] for r in four], [r["train_loss"] for r in one], rtol=1e-5)


def test_batch_that_does_not_divide_by_the_devices(small_signs, tmp_path):
    proc = train_process(
        ["--data-dir", small_signs, "--workdir", tmp_path, *TINY, "--batch-size", "18"],
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "batch size 18 does not divide by the 4 devices" in out and "Traceback" not in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_and_resume_alone(single_device_run, small_signs, tmp_path):
    coordinator = f"127.0.0.1:{_free_port()}"
    common = [
        "--data-dir",
        small_signs,
        "--workdir",
        tmp_path,
        "--run",
        "dist",
        *EPOCHS,
        *TINY,
        "--coordinator",
        coordinator,
        "--num-processes",
        "2",
    ]
    procs = [train_process([*common, "--process-id", i]) for i in (0, 1)]
    outs = [finished(p) for p in procs]
    assert "on 2 device(s) in 2 process(es)" in outs[0]
    assert "epoch" not in outs[1]  # only process 0 reports and writes metrics
    run_dir = tmp_path / "dist"
    assert len(metrics_of(run_dir)) == 1
    assert_same_training(final_params(run_dir), final_params(single_device_run))

    # the checkpoint written by two processes resumes in one
    assert run_train("--workdir", tmp_path, "--resume", "--run", "dist", "--epochs", "2", "--no-progress") == 0
    assert [r["epoch"] for r in metrics_of(run_dir)] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["model"]["stage_sizes"] == [1, 1, 1, 1]
