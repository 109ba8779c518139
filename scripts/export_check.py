"""Export a model as StableHLO and ONNX and compare both with JAX on the whole SIGNS test set.

    python scripts/export_check.py [WEIGHTS] [--data-dir DIR] [--batch-size N]

WEIGHTS as `python -m signs_jax.export` takes it (default: the newest run under checkpoints/). Prints, for each
format, the largest absolute difference of any probability from what predict computes, over the test split's
images fed in batches of --batch-size (the last one smaller: the exports take any batch size). The StableHLO
module is run through `jax.export.deserialize` as a user without signs_jax would; the ONNX model through
onnxruntime. Results: docs/export.md.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from signs_jax import export  # noqa: E402
from signs_jax.data import PACKAGED_SIGNS, load_dataset  # noqa: E402
from signs_jax.predict import logits_of, probabilities  # noqa: E402
from signs_jax.weights import load_weights  # noqa: E402


def batches(images, size):
    return [images[start : start + size] for start in range(0, len(images), size)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="?", help="run directory, work directory or Keras .h5 (default: newest run)")
    p.add_argument("--data-dir", default=str(PACKAGED_SIGNS), help="SIGNS h5 pair (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=50)
    args = p.parse_args()

    import jax
    import onnxruntime

    weights = load_weights(args.weights)
    test = load_dataset(args.data_dir, weights.model.input_shape[:2]).test
    images = test.images.astype(np.float32) / 255.0
    logits = logits_of(weights.model, weights.variables, images)
    expected = np.stack([probabilities(row, weights.temperature) for row in logits])
    sizes = sorted({len(b) for b in batches(images, args.batch_size)})
    print(f"weights: {weights.source} (temperature {weights.temperature:g})")
    print(f"images: {len(images)} SIGNS test images from {args.data_dir}, batches of {sizes}")

    with tempfile.TemporaryDirectory() as folder:
        hlo = export.export_stablehlo(weights, Path(folder) / "model.stablehlo")
        onnx = export.export_onnx(weights, Path(folder) / "model.onnx")
        exported = jax.export.deserialize(hlo.read_bytes())
        session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        got = {
            "stablehlo": np.concatenate([np.asarray(exported.call(b)) for b in batches(images, args.batch_size)]),
            "onnx": np.concatenate(
                [session.run([export.ONNX_OUTPUT], {export.ONNX_INPUT: b})[0] for b in batches(images, args.batch_size)]
            ),
        }
    for name, probs in got.items():
        same_class = np.mean(probs.argmax(1) == expected.argmax(1))
        print(f"{name:>9}: max |p - p_jax| = {np.abs(probs - expected).max():.3g}, same class for {same_class:.0%}")


if __name__ == "__main__":
    main()
