"""Generate the Keras parity fixtures in tests/fixtures/ with real Keras.

Dev-only (needs tf-keras and TensorFlow: `pip install -e ".[keras]"`); CI only reads its output.

    python scripts/make_keras_fixtures.py

Builds the original ResNet50 at width 1/8 with tf-keras, sets every weight (BatchNorm moving
statistics included) to seeded random values, and writes:
  resnet50_w8_keras2_model.h5     model.save(...)          Keras 2 full model
  resnet50_w8_keras2_weights.h5   model.save_weights(...)  Keras 2 weights only
  resnet50_w8_keras3_legacy.h5    Keras 3 model.save(...)  Keras 3 legacy h5
  resnet50_w8_expected.npz        Keras's probabilities on real SIGNS test images (inference mode
                                  and training mode) and the moving statistics after that training-mode call
Then it checks the way back: signs_jax.save_keras_h5 of the imported weights loads into a fresh tf-keras
model with load_weights and reproduces Keras's probabilities.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras_reference  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

from signs_jax.cli import DATA_DIR_HELP, data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 0.125
SEED = 20261124
IMAGES_PER_CLASS = 4


def randomise(model, rng, features_model, images):
    """Non-trivial weights that keep activations in a sane range through 16 residual blocks."""
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kernel, bias = layer.get_weights()
            fan_in = np.prod(kernel.shape[:3])
            layer.set_weights([rng.normal(0, np.sqrt(2.0 / fan_in), kernel.shape), rng.normal(0, 0.05, bias.shape)])
        elif kind == "BatchNormalization":
            n = layer.get_weights()[0].shape
            # Small gamma on the last BN of each residual branch keeps the residual sum from exploding.
            last = layer.name.endswith("2c") or layer.name.endswith("branch1")
            gamma = rng.uniform(0.1, 0.4, n) if last else rng.uniform(0.5, 1.5, n)
            layer.set_weights([gamma, rng.normal(0, 0.1, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])
        elif kind == "Dense":
            kernel, bias = layer.get_weights()
            layer.set_weights([rng.normal(0, 1, kernel.shape), rng.normal(0, 0.1, bias.shape)])
    # Moving statistics near the real batch statistics, then perturbed: with purely random ones the
    # signal from the image drowns in the offsets and every image gets the same probabilities.
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    for layer in norms:
        layer.momentum = 0.0  # one training-mode call then copies the batch statistics
    model(images, training=True)
    for layer in norms:
        layer.momentum = 0.99
        gamma, beta, mean, var = layer.get_weights()
        mean = mean + rng.normal(0, 0.2, mean.shape) * np.sqrt(var)
        # A floor under the variance: channels with near-zero batch variance would amplify float32
        # rounding through 50 layers until no two implementations agree to 1e-5.
        var = var * rng.uniform(0.7, 1.4, var.shape) + 1.0 * var.mean()
        layer.set_weights([gamma, beta, mean, var])
    # Scale the head so that logits have a spread of about 1.5: probabilities neither one-hot nor flat.
    # (Stretching only the differences between images would amplify float32 rounding instead.)
    feats = features_model.predict(images, verbose=0)
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * (1.5 / (feats @ kernel).std()), bias])


def signs_test_images(data_dir):
    with h5py.File(Path(data_dir) / "test_signs.h5", "r") as f:
        x, y = np.asarray(f["test_set_x"]), np.asarray(f["test_set_y"])
    idx = np.concatenate([np.flatnonzero(y == c)[:IMAGES_PER_CLASS] for c in range(6)])
    return idx, x[idx].astype(np.float32) / 255.0


KERAS3_SCRIPT = r"""
import os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.pop("TF_USE_LEGACY_KERAS", None)
import numpy as np, keras
sys.path.insert(0, sys.argv[1])
import keras_reference as kr
kr.keras, kr.layers = keras, keras.layers
src, dst, images = sys.argv[2], sys.argv[3], sys.argv[4]
model = kr.ResNet50(classes=6, width=float(sys.argv[5]))
weights = np.load(src, allow_pickle=False)
for layer in model.layers:
    n = len(layer.weights)
    if n:
        layer.set_weights([weights[f"{layer.name}/{i}"] for i in range(n)])
model.save(dst)
x = np.load(images)
np.save(dst + ".probs.npy", model.predict(x, verbose=0))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--out", default=ROOT / "tests" / "fixtures", type=Path)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    import tensorflow as tf
    import tf_keras as keras

    tf.random.set_seed(SEED)
    rng = np.random.default_rng(SEED)
    idx, images = signs_test_images(data_dir(args.data_dir))

    model = keras_reference.ResNet50(classes=6, width=WIDTH)
    features = keras.Model(model.input, model.layers[-2].output)
    randomise(model, rng, features, images)

    probs = model.predict(images, verbose=0)
    print("inference probabilities: max", probs.max(1).round(3), "argmax", probs.argmax(1))

    model.save(out / "resnet50_w8_keras2_model.h5", save_format="h5", include_optimizer=False)
    model.save_weights(out / "resnet50_w8_keras2_weights.h5", save_format="h5")

    # Keras 3 writes its own legacy .h5 in a separate process (it cannot share one with tf-keras).
    with tempfile.TemporaryDirectory() as tmp:
        flat = {f"{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}
        np.savez(Path(tmp) / "w.npz", **flat)
        np.save(Path(tmp) / "x.npy", images)
        dst = out / "resnet50_w8_keras3_legacy.h5"
        subprocess.run(
            [
                sys.executable,
                "-c",
                KERAS3_SCRIPT,
                str(Path(__file__).parent),
                str(Path(tmp) / "w.npz"),
                str(dst),
                str(Path(tmp) / "x.npy"),
                str(WIDTH),
            ],
            check=True,
        )
        probs3 = np.load(str(dst) + ".probs.npy")
        os.remove(str(dst) + ".probs.npy")
    print("Keras 3 vs tf-keras max |dp|:", np.abs(probs3 - probs).max())

    # Training mode: batch statistics, and the moving statistics Keras updates from them.
    train_probs = model(images, training=True).numpy()
    moving = {
        f"{layer.name}/{w}": v
        for layer in model.layers
        if type(layer).__name__ == "BatchNormalization"
        for w, v in zip(("moving_mean", "moving_variance"), layer.get_weights()[2:])
    }
    np.savez_compressed(
        out / "resnet50_w8_expected.npz",
        test_indices=idx,
        probabilities=probs,
        probabilities_keras3=probs3,
        train_mode_probabilities=train_probs,
        **{f"moving/{k}": v for k, v in moving.items()},
        width=WIDTH,
        tf_version=tf.__version__,
        keras_version=keras.__version__,
    )
    print("wrote fixtures to", out)
    check_export(out, images, probs)


def check_export(out, images, probs):
    """signs_jax import -> save_keras_h5 -> tf-keras load_weights reproduces Keras's numbers."""
    import signs_jax

    _, variables = signs_jax.load_keras_h5(out / "resnet50_w8_keras2_model.h5")
    with tempfile.TemporaryDirectory() as tmp:
        exported = signs_jax.save_keras_h5(Path(tmp) / "exported.h5", variables)
        fresh = keras_reference.ResNet50(classes=6, width=WIDTH)
        fresh.load_weights(str(exported))
        again = fresh.predict(images, verbose=0)
    err = np.abs(again - probs).max()
    print(f"export -> Keras load_weights: max |dp| = {err:.2e}")
    if err > 1e-6:
        raise SystemExit("export check failed")


if __name__ == "__main__":
    main()
