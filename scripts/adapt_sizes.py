"""How many unlabelled photos `predict --adapt` needs: accuracy after re-estimating BatchNorm on N of them.

    python scripts/adapt_sizes.py RUN --photos /work/shared/datasets/sign_digits [--sizes 4 8 16 32 128 0]
        [--draws 3] [--eval 600] [--json]

For each N (0: all photos), draws N photos at random (--draws times, seeded), re-estimates every BatchNorm
layer's statistics on them with `signs_jax.adapt.adapt_batch_norm` (labels unused), and measures accuracy
on a fixed random --eval photos (all for N = 0), read as predict reads them. Prints mean, min and max per N.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from foreign_photos import labelled_photos  # noqa: E402

from signs_jax.adapt import adapt_batch_norm  # noqa: E402
from signs_jax.predict import load_images, logits_of  # noqa: E402
from signs_jax.weights import load_weights  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--photos", required=True, type=Path)
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32, 128, 0])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--eval", type=int, default=600, help="photos to measure accuracy on (all for N = 0)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    weights = load_weights(args.run)
    files, labels = labelled_photos(args.photos, weights.class_names)
    _, images = load_images(files, tuple(weights.model.input_shape[:2]))
    rng = np.random.default_rng(0)
    subset = rng.permutation(len(files))[: args.eval]

    def accuracy(variables, which):
        return float((logits_of(weights.model, variables, images[which]).argmax(1) == labels[which]).mean())

    rows = [{"photos": "none (stored statistics)", "accuracy": [accuracy(weights.variables, subset)]}]
    for n in args.sizes:
        draws = 1 if n == 0 or n >= len(files) else args.draws
        found = []
        for _ in range(draws):
            chosen = np.sort(rng.permutation(len(files))[:n]) if n else np.arange(len(files))
            adapted = adapt_batch_norm(weights.model, weights.variables, images[chosen], min_photos=2)
            found.append(accuracy(adapted, np.arange(len(files)) if n == 0 else subset))
        rows.append({"photos": n or f"all {len(files)}", "accuracy": found})
        print(f"{rows[-1]['photos']}: {np.mean(found):.3f} ({min(found):.3f}-{max(found):.3f})", file=sys.stderr)
    if args.json:
        print(json.dumps({"weights": weights.source, "rows": rows}))
        return 0
    print(f"{weights.source}: accuracy on {args.photos} after --adapt on N photos (mean, range over draws)")
    for row in rows:
        acc = row["accuracy"]
        print(f"{str(row['photos']):>26s}  {np.mean(acc):.3f}  ({min(acc):.3f}-{max(acc):.3f}, {len(acc)} draws)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
