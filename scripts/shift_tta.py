"""Test-time augmentation by shifts: the test accuracy of trained runs when each test image's prediction is the
average of copies moved by whole pixels (the edge pixels repeated), against the plain prediction.

    python scripts/shift_tta.py RUN_DIR [RUN_DIR ...] [--float32]

Each run is evaluated on the test split it was trained with, with its best checkpoint; `--float32` computes in
float32 whatever dtype the run trained in. docs/speedrun.md reports what it measured.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

VIEWS = {
    "plain": [(0, 0)],
    "five views, 1 px": [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)],
    "five views, 2 px": [(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)],
    "five views, 3 px": [(0, 0), (3, 0), (-3, 0), (0, 3), (0, -3)],
    "3x3 grid, 2 px": [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2)],
}


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`images` (N, H, W, C) moved down by dy and right by dx pixels; the uncovered border repeats the edge."""
    pad = max(abs(dy), abs(dx))
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width = images.shape[1:3]
    return padded[:, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def accuracies(run_dir: Path, float32: bool):
    import jax.numpy as jnp

    from signs_jax.calibration import softmax
    from signs_jax.checkpoints import read_train_config
    from signs_jax.experiment import load_run_data
    from signs_jax.predict import logits_of
    from signs_jax.weights import load_weights

    model, variables = load_weights(str(run_dir))[:2]  # its best checkpoint, as predict and evaluate take it
    if float32:
        model = model.clone(dtype=jnp.float32)
    test = load_run_data(read_train_config(run_dir)).test
    images = np.asarray(test.images, np.float32) / 255.0
    moves = sorted({move for views in VIEWS.values() for move in views})
    by_move = {move: softmax(logits_of(model, variables, shifted(images, *move))) for move in moves}
    return {
        name: float((sum(by_move[m] for m in views).argmax(1) == test.labels).mean()) for name, views in VIEWS.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories written by signs_jax.train")
    parser.add_argument("--float32", action="store_true", help="compute in float32 whatever the runs trained in")
    args = parser.parse_args(argv)
    from signs_jax._runtime import set_up

    set_up()
    from signs_jax.errors import UserError

    try:
        table = {run: accuracies(run, args.float32) for run in args.runs}
    except UserError as err:  # not a run, a run without a checkpoint, its data gone, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name in VIEWS:
        values = [table[run][name] for run in args.runs]
        each = " ".join(f"{v:.3f}" for v in values)
        print(f"{name:18s} mean {np.mean(values):.3f}  min {np.min(values):.3f}  ({each})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
