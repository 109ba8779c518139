"""Helpers the test modules share: paths, the tiny model's flags, and how to call and read the tools."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
KERAS_FILES = {
    "keras2_model": FIXTURES / "resnet50_w8_keras2_model.h5",
    "keras2_weights": FIXTURES / "resnet50_w8_keras2_weights.h5",
    "keras3_legacy": FIXTURES / "resnet50_w8_keras3_legacy.h5",
}
KERAS_MODEL = str(KERAS_FILES["keras2_model"])
# The predict tool's default batch. evaluate runs on the Keras fixture pass it: both tools then share one
# compiled forward of the fixture (evaluate's own default batch would be one more compile of it).
PREDICT_BATCH = ["--batch-size", "32"]

# The narrowest, shallowest ResNet50 variant that still has every kind of block: training tests use it.
TINY = [
    "--width",
    "0.0625",
    "--stage-sizes",
    "1,1,1,1",
    "--batch-size",
    "16",
    "--no-progress",
    "--eval-batch-size",
    "40",
]


def run_train(*args) -> int:
    from signs_jax import train

    return train.main([str(a) for a in args])


TIMING_KEYS = ("seconds", "train_seconds", "train_images_per_s", "first_step_seconds", "median_step_seconds")


def metrics_of(run_dir: Path):
    """A run's metrics.jsonl without the timing fields (which differ between equal runs)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def shallow_keras_h5(path: Path, num_classes: int = 6, seed: int = 0) -> Path:
    """A Keras .h5 of the tiny variant (TINY's width and depth), randomly initialised, written by save_keras_h5:
    for tests about what the tools do with a .h5, not about reading real Keras files (test_keras_parity)."""
    import jax

    import signs_jax

    model = signs_jax.ResNet50(num_classes, width=0.0625, stage_sizes=(1, 1, 1, 1))
    return signs_jax.save_keras_h5(path, signs_jax.init_variables(model, jax.random.key(seed)))


def final_params(run_dir: Path):
    """The variables of a run's newest checkpoint."""
    from signs_jax.checkpoints import restore_variables

    newest = max(int(p.name) for p in (run_dir / "ckpt").iterdir() if p.name.isdigit())
    _, variables, _ = restore_variables(run_dir, step=newest)
    return variables


def assert_bitwise_equal(a, b):
    import jax

    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b):
        assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


def error_line(capsys, *args) -> str:
    """Run train with `args`, expect exit status 2 and exactly one line on stderr; return that line."""
    assert run_train(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def json_lines(text):
    return [json.loads(line) for line in text.strip().splitlines()]


def train_process(args, env_extra=None, **popen):
    """`python -m signs_jax.train ARGS` as a real process (for signals, kill -9 and several processes).

    A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so would
    the child, and the Ctrl-C tests would test nothing: this process handles SIGINT again first (an
    exec resets a handled signal to its default action; it keeps an ignored one ignored).
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), **(env_extra or {}))
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return subprocess.Popen(
        [sys.executable, "-m", "signs_jax.train", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def signs_test_files(data_dir: Path, out: Path, count: int, name: str = "{i:02d}.png", **save) -> list:
    """The first `count` SIGNS test images written to `out` as image files named by `name` (the format follows
    its suffix; `save` goes to Pillow, e.g. quality=95)."""
    import h5py
    from PIL import Image

    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        images = np.asarray(f["test_set_x"][:count])
    paths = [out / name.format(i=i) for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image).save(path, **save)
    return paths
