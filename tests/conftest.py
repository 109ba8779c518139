"""Shared fixtures: the real SIGNS data ($SIGNS_DATA_DIR, else the copy inside the package), the real-Keras
parity fixtures, and compiled functions.

XLA compiles dominate the suite's time, so compiled functions are built once per session and reused.
"""

import os
from pathlib import Path

from signs_jax._runtime import set_up

# The command-line tools' process set-up, before JAX starts: the tests then run under the XLA flags
# the tools' users get (turning loop unrolling off changes the last bits of some results, and
# training that resumes in a tool must continue this process's numbers exactly). The compilation
# cache stays off: tests that need it give the tools a private one.
set_up(compilation_cache=False)

import h5py  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import FIXTURES, KERAS_FILES  # noqa: E402
from signs_jax.data import PACKAGED_SIGNS, is_packaged, verify_packaged  # noqa: E402

# The longest tests first: xdist's workers then finish together, instead of one of them waiting for the other
# to get through a minute-long test it picked up last.
LONGEST_FIRST = ("test_sweep.py", "test_tutorial.py", "test_parallel.py", "test_finetune.py", "test_explain.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Compiled executables go to a cache of this test run, never to the user's ~/.cache."""
    monkeypatch.setenv("SIGNS_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "jax_cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("SIGNS_DATA_DIR") or PACKAGED_SIGNS)
    if not (path / "test_signs.h5").exists():
        pytest.fail(
            f"SIGNS data not found in {path}: set SIGNS_DATA_DIR to the folder holding test_signs.h5 "
            "(or unset it for the copy inside the package)"
        )
    if is_packaged(path):
        verify_packaged()
    return path


@pytest.fixture(scope="session")
def keras_expected():
    with np.load(FIXTURES / "resnet50_w8_expected.npz") as f:
        return dict(f)


@pytest.fixture(scope="session")
def keras_images(data_dir, keras_expected):
    """The real SIGNS test images Keras computed its reference probabilities on, scaled to [0, 1]."""
    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        images = np.asarray(f["test_set_x"])[keras_expected["test_indices"]]
    return images.astype(np.float32) / 255.0


@pytest.fixture(scope="session")
def keras_loaded():
    """(model, variables) of the Keras 2 full-model fixture, loaded once."""
    import signs_jax

    return signs_jax.load_keras_h5(KERAS_FILES["keras2_model"])


@pytest.fixture(scope="session")
def predict_probs(keras_loaded):
    """Inference on the width-1/8 fixture architecture, (variables, x) -> probs: the predict tool's compiled
    forward at its default batch of 32, so that the parity tests and the tools' tests share one compile."""
    from signs_jax.predict import logits_of

    model, _ = keras_loaded
    return lambda variables, x: jax.nn.softmax(logits_of(model, variables, np.asarray(x), batch_size=32))


@pytest.fixture(scope="session")
def train_forward(keras_loaded):
    """Compiled training-mode forward: (variables, x) -> (probs, updated batch_stats)."""
    model, _ = keras_loaded

    @jax.jit
    def forward(variables, x):
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return jax.nn.softmax(logits), updates["batch_stats"]

    return forward


@pytest.fixture(scope="session")
def small_signs(tmp_path_factory, data_dir):
    """160 train / 40 test real SIGNS images in the course h5 layout."""
    out = tmp_path_factory.mktemp("signs_small")
    for split, n in (("train", 160), ("test", 40)):
        with h5py.File(data_dir / f"{split}_signs.h5", "r") as f:
            x, y = np.asarray(f[f"{split}_set_x"]), np.asarray(f[f"{split}_set_y"])
            classes = np.asarray(f["list_classes"])
        idx = np.random.default_rng(0).permutation(len(y))[:n]
        with h5py.File(out / f"{split}_signs.h5", "w") as f:
            f[f"{split}_set_x"], f[f"{split}_set_y"], f["list_classes"] = x[idx], y[idx], classes
    return out
