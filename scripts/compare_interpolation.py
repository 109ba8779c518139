"""Which resize filter should predict use? (picks predict's default: docs/interpolation.md)

    python scripts/compare_interpolation.py [--data-dir DIR] [--scale 24] [--weights RUN_OR_H5]
    python scripts/compare_interpolation.py --photos DIR --weights RUN [RUN ...]

With --photos: the accuracy of each run on real labelled photos (class folders, e.g. sign_digits) read with each
filter, as predict reads them; then the mean over the runs.

Otherwise, closest to the 64x64 training pixels:

Synthetic large photos: each SIGNS test image is enlarged `--scale` times (`--enlarge`, bicubic), given sensor
noise (Gaussian, sigma `--noise` grey levels per full-size pixel) and saved as a JPEG (quality 92),
like a phone photo of the same scene. Each filter then shrinks it back to 64x64 with
`signs_jax.images.load_image`; reported: RMS distance to the original 64x64 pixels (grey levels),
decode+resize time of one 3024x3024 JPEG, and, with --weights, the accuracy on the shrunk images.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from signs_jax.cli import DATA_DIR_HELP, data_dir  # noqa: E402
from signs_jax.images import load_image  # noqa: E402

METHODS = [  # (label, interpolation, JPEG draft decoding)
    ("nearest (Keras load_img)", "nearest", False),
    ("area, full decode", "area", False),
    ("area + draft", "area", True),
    ("bilinear + draft (default)", "bilinear", True),
    ("bicubic + draft", "bicubic", True),
    ("lanczos, full decode", "lanczos", False),
    ("lanczos + draft", "lanczos", True),
]


def photo_accuracy(photos: Path, runs) -> None:
    """Each run's accuracy on the labelled photos in `photos` (class folders), per filter, and the mean."""
    from foreign_photos import labelled_photos

    from signs_jax.predict import predict_files
    from signs_jax.weights import load_weights

    weights = [load_weights(run) for run in runs]
    files, labels = labelled_photos(photos, weights[0].class_names)
    print(f"{len(files)} photos in {photos}")
    print(f"{'filter':30s} " + " ".join(f"{Path(run).name[-12:]:>12s}" for run in runs) + f" {'mean':>7s}")
    for label, interpolation, draft in METHODS:
        if not draft and interpolation != "nearest":
            continue  # predict always decodes JPEGs in draft: the "full decode" rows are the synthetic study's
        scores = []
        for w in weights:
            predicted = [int(np.argmax(p)) for _, p in predict_files(w, files, interpolation=interpolation)]
            scores.append(float((np.array(predicted) == labels).mean()))
        print(f"{label:30s} " + " ".join(f"{a:12.3f}" for a in scores) + f" {np.mean(scores):7.3f}", flush=True)


def enlarge(image: np.ndarray, scale: int, noise: float, rng, filter="bicubic") -> Image.Image:
    big = Image.fromarray(image).resize((64 * scale, 64 * scale), getattr(Image.Resampling, filter.upper()))
    big = np.asarray(big, np.float32)
    big += rng.normal(0, noise, big.shape).astype(np.float32)
    return Image.fromarray(np.clip(big + 0.5, 0, 255).astype(np.uint8))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--scale", type=int, default=24, help="enlargement of the synthetic photos (64 -> 64*scale pixels)")
    p.add_argument("--noise", type=float, default=12.0)
    p.add_argument("--images", type=int, default=120)
    p.add_argument(
        "--enlarge",
        default="bicubic",
        choices=["bicubic", "bilinear", "lanczos"],
        help="how the synthetic photos are enlarged (the scene between the 64x64 pixels)",
    )
    p.add_argument(
        "--weights",
        nargs="+",
        help="also report accuracy with this model (run directory or Keras .h5); with --photos: runs",
    )
    p.add_argument("--photos", type=Path, help="labelled photos in class folders: accuracy per filter of --weights")
    args = p.parse_args()
    if args.photos:
        if not args.weights:
            p.error("--photos needs --weights")
        photo_accuracy(args.photos, args.weights)
        return

    with h5py.File(Path(data_dir(args.data_dir)) / "test_signs.h5", "r") as f:
        originals = np.asarray(f["test_set_x"])[: args.images]
        labels = np.asarray(f["test_set_y"])[: args.images]
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="interp_"))
    paths = []
    for i, image in enumerate(originals):
        paths.append(tmp / f"{i:03d}.jpg")
        enlarge(image, args.scale, args.noise, rng, args.enlarge).save(paths[-1], quality=92)
    big = tmp / "big.jpg"
    enlarge(originals[0], 3024 // 64 + 1, args.noise, rng, args.enlarge).resize((3024, 3024)).save(big, quality=92)

    forward = None
    if args.weights:
        import jax

        from signs_jax.weights import load_weights

        w = load_weights(args.weights[0])
        forward = jax.jit(lambda x: jax.nn.softmax(w.model.apply(w.variables, x)))
        print(
            "accuracy on the original 64x64 pixels: "
            f"{(np.asarray(forward(originals / 255.0)).argmax(1) == labels).mean():.3f}"
        )

    print(
        f"{len(paths)} photos of {64 * args.scale}x{64 * args.scale} pixels ({args.enlarge} enlargement), "
        f"noise sigma {args.noise}"
    )
    print(f"{'filter':30s} {'RMS to 64x64':>12s} {'3024px ms':>10s}" + (f" {'accuracy':>9s}" if forward else ""))
    for label, interpolation, draft in METHODS:
        shrunk = np.stack([load_image(q, (64, 64), interpolation, draft=draft) for q in paths])
        rms = float(np.sqrt(np.mean((shrunk * 255 - originals) ** 2)))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            load_image(big, (64, 64), interpolation, draft=draft)
            times.append(time.perf_counter() - t0)
        line = f"{label:30s} {rms:12.2f} {1000 * min(times):10.1f}"
        if forward:
            line += f" {(np.asarray(forward(shrunk)).argmax(1) == labels).mean():9.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
