"""Accuracy of trained models on photos from another source, through predict's own input path.

    python scripts/foreign_photos.py RUN [RUN ...] --photos DIR [--fit crop] [--tta] [--adapt] [--json]

DIR holds one sub-folder per class, named like the model's classes (`0/` ... `5/`): for example the
sign_digits photos, which are for measuring only and never reach training. Each image is read exactly as
`python -m signs_jax.predict` reads it with default options (or with `--fit`, `--tta`, `--adapt` as given, the
last adapting BatchNorm to all the photos at once, as `predict DIR --adapt` does), so the numbers are what a
user gets. Prints
accuracy and recall per class for each run, then the mean and the range over the runs (seeds).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from signs_jax.framing import DEFAULT_FIT, FITS, TTA_VIEWS  # noqa: E402
from signs_jax.images import IMAGE_SUFFIXES  # noqa: E402
from signs_jax.predict import adapted_logits, predict_files, probabilities  # noqa: E402
from signs_jax.weights import load_weights  # noqa: E402


def labelled_photos(folder: Path, class_names):
    files, labels = [], []
    for index, name in enumerate(class_names):
        found = sorted(p for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [index] * len(found)
    return files, np.asarray(labels)


def score(weights_spec: str, folder: Path, fit: str = DEFAULT_FIT, tta: bool = False, adapt: bool = False):
    weights = load_weights(weights_spec)
    files, labels = labelled_photos(folder, weights.class_names)
    if not files:
        raise SystemExit(f"error: {folder}: no photos in class folders named {list(weights.class_names)}")
    views = TTA_VIEWS if tta else None
    start = time.perf_counter()
    if adapt:
        pairs, _ = adapted_logits(weights, files, batch_size=32, fit=fit, views=views)
        probs = np.stack([probabilities(logits, weights.temperature) for _, logits in pairs])
    else:
        probs = np.stack([p for _, p in predict_files(weights, files, batch_size=32, fit=fit, views=views)])
    seconds = time.perf_counter() - start
    predicted = probs.argmax(1)
    recall = {
        name: float((predicted[labels == i] == i).mean())
        for i, name in enumerate(weights.class_names)
        if (labels == i).any()
    }
    return {
        "weights": weights.source,
        "photos": len(files),
        "fit": fit,
        "tta": tta,
        "adapt": adapt,
        "seconds_per_photo": seconds / len(files),  # decoding and forward passes, compilation included
        "accuracy": float((predicted == labels).mean()),
        "recall": recall,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", help="run directories or Keras .h5 files (e.g. one per seed)")
    p.add_argument("--photos", required=True, type=Path, help="a folder of class sub-folders")
    p.add_argument("--fit", choices=FITS, default=DEFAULT_FIT, help="as predict's --fit (default: %(default)s)")
    p.add_argument("--tta", action="store_true", help="as predict's --tta")
    p.add_argument("--adapt", action="store_true", help="as predict's --adapt, over all the photos")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    results = [score(spec, args.photos, args.fit, args.tta, args.adapt) for spec in args.weights]
    accuracies = [r["accuracy"] for r in results]
    summary = {
        "runs": results,
        "mean_accuracy": float(np.mean(accuracies)),
        "min_accuracy": min(accuracies),
        "max_accuracy": max(accuracies),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    for r in results:
        recalls = "  ".join(f"{k}:{v:.2f}" for k, v in r["recall"].items())
        print(
            f"{r['accuracy']:.3f}  recall {recalls}  ({r['photos']} photos, {r['weights']}, fit {r['fit']}"
            f"{', tta' if r['tta'] else ''}{', adapt' if r['adapt'] else ''}, "
            f"{r['seconds_per_photo'] * 1000:.1f} ms/photo)"
        )
    print(
        f"mean {summary['mean_accuracy']:.3f}, range {summary['min_accuracy']:.3f}-{summary['max_accuracy']:.3f} "
        f"over {len(results)} run(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
