"""Acceptance check with a full-size Keras ResNet50.h5 trained by real Keras (dev only; needs tf-keras).

    python scripts/check_full_keras_model.py --out /tmp/ResNet50.h5

Trains the original model with the course recipe (Adam, batch 32, 2 epochs by default) in tf-keras,
saves it with `model.save("ResNet50.h5")`, then loads the file with signs_jax and compares both
frameworks' probabilities on all 120 SIGNS test images. The .h5 (about 270 MB) stays out of the repo.
"""

import argparse
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras_reference  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from signs_jax.cli import DATA_DIR_HELP, data_dir  # noqa: E402


def load_split(data_dir, split):
    with h5py.File(Path(data_dir) / f"{split}_signs.h5", "r") as f:
        return np.asarray(f[f"{split}_set_x"]).astype(np.float32) / 255.0, np.asarray(f[f"{split}_set_y"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ResNet50.h5"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="compare an existing --out file instead of training")
    parser.add_argument(
        "--images",
        nargs="*",
        default=[],
        help="image files: compare `python -m signs_jax.predict "
        "--interpolation nearest --ignore-exif --json` with Keras load_img + predict on them",
    )
    args = parser.parse_args()

    import tf_keras as keras

    signs = data_dir(args.data_dir)
    x_train, y_train = load_split(signs, "train")
    x_test, y_test = load_split(signs, "test")
    if args.reuse and args.out.exists():
        model = keras.models.load_model(args.out)
    else:
        model = keras_reference.ResNet50(input_shape=(64, 64, 3), classes=6)
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        perm = np.random.default_rng(0).permutation(len(y_train))  # the h5 is stored in label order
        t0 = time.perf_counter()
        model.fit(
            x_train[perm], keras.utils.to_categorical(y_train[perm], 6), epochs=args.epochs, batch_size=32, verbose=2
        )
        print(f"Keras training: {time.perf_counter() - t0:.1f}s")
        model.save(args.out)
    keras_probs = model.predict(x_test, batch_size=40, verbose=0)
    print(f"Keras test accuracy (inference mode): {(keras_probs.argmax(1) == y_test).mean():.4f}")

    import jax

    import signs_jax

    ours, variables = signs_jax.load_keras_h5(args.out)
    probs = np.asarray(jax.jit(lambda v, x: jax.nn.softmax(ours.apply(v, x)))(variables, x_test))
    diff = np.abs(probs - keras_probs).max()
    print(
        f"{args.out}: {signs_jax.count_numbers(variables['params']):,} params; "
        f"max |p_signs_jax - p_keras| over 120 test images = {diff:.2e}; "
        f"argmax agree: {(probs.argmax(1) == keras_probs.argmax(1)).mean():.3f}"
    )
    if diff > 1e-4:
        raise SystemExit("FAIL: more than 1e-4 apart")
    if args.images:
        compare_predict_cli(model, args.out, args.images)


def compare_predict_cli(model, weights, images):
    """The predict CLI in a fresh process against Keras's own image loading and prediction."""
    import json
    import subprocess

    import tf_keras as keras

    size = model.input_shape[1:3]
    batch = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=size)) / 255.0 for p in images])
    keras_probs = model.predict(batch, verbose=0)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "signs_jax.predict",
            *images,
            "--weights",
            str(weights),
            "--interpolation",
            "nearest",
            "--ignore-exif",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    ours = np.array([json.loads(line)["probabilities"] for line in out.stdout.splitlines()])
    diff = np.abs(ours - keras_probs).max()
    print(f"predict CLI vs Keras load_img + predict on {len(images)} image files: max |dp| = {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("FAIL: more than 1e-4 apart")


if __name__ == "__main__":
    main()
