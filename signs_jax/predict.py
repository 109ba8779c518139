"""`python -m signs_jax.predict IMAGE [IMAGE | DIR ...]`: class and probabilities for each image."""
import argparse
import csv
import json
import sys
from pathlib import Path

from . import config
from .images import INTERPOLATIONS

BATCH_SIZES = (1, 8, 32)  # a few fixed shapes: one compile each, cached on disk across runs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m signs_jax.predict",
        description="Classify hand-sign photos with a trained model (default: the best checkpoint of the newest "
        "run under checkpoints/) or a Keras .h5.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--weights", help="a run directory, a work directory (its newest run) or a Keras .h5")
    p.add_argument("--workdir", default=str(config.DEFAULT_WORKDIR), help="where to look for runs (default: %(default)s)")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default="area",
                   help="resize filter (default: %(default)s; 'nearest' is what Keras load_img uses)")
    p.add_argument("--ignore-exif", action="store_true", help="do not rotate by the EXIF orientation (as Keras load_img)")
    p.add_argument("--json", action="store_true", help="one JSON object per image: path, class, probabilities")
    p.add_argument("--csv", metavar="FILE", help="also write the rows to a CSV file")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="show the K most likely classes (default: 1)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    return p


def _bucket(n: int, largest: int) -> int:
    return next((b for b in BATCH_SIZES if b >= n and b <= largest), largest)


def predict_files(weights, files, interpolation="area", exif=True, batch_size=32, on_error=None, progress=None):
    """Yield (path, probabilities) for every readable file, reading one batch at a time."""
    import jax
    import numpy as np

    from .images import ImageError, load_image

    model = weights.model
    size = tuple(model.input_shape[:2])
    forward = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x)))
    pending, paths = [], []

    def flush():
        n = len(pending)
        b = _bucket(n, batch_size)
        x = np.zeros((b, *size, 3), np.float32)
        x[:n] = np.stack(pending)
        probs = np.asarray(forward(weights.variables, x))[:n]
        out = list(zip(list(paths), probs))
        pending.clear()
        paths.clear()
        return out

    for path in files:
        try:
            pending.append(load_image(path, size, interpolation, exif))
            paths.append(path)
        except ImageError as err:
            if on_error:
                on_error(str(err))
        if progress:
            progress.update(1)
        if len(pending) == batch_size:
            yield from flush()
    if pending:
        yield from flush()


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


def run(args) -> int:
    from .cache import enable_compilation_cache
    from .images import expand_inputs
    from .weights import load_weights

    if args.top_k < 1 or args.batch_size < 1:
        from .errors import UserError

        raise UserError("--top-k and --batch-size must be at least 1")
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes on read-only checkpoint directories
    enable_compilation_cache()
    files, errors = expand_inputs(args.inputs)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    weights = load_weights(args.weights, args.workdir)
    names = weights.class_names
    failed = len(errors)

    def report_error(message):
        nonlocal failed
        failed += 1
        print(f"error: {message}", file=sys.stderr)

    from tqdm import tqdm

    csv_file = open(args.csv, "w", newline="") if args.csv else None
    writer = None
    if csv_file:
        writer = csv.writer(csv_file)
        writer.writerow(["path", "class", "confidence", *[f"p({n})" for n in names]])
    if not args.json:
        print(f"# weights: {weights.source}")
        print(f"{'path':40s} {'class':>6s} {'conf':>6s}  " + " ".join(f"p({n})".rjust(7) for n in names))
    with tqdm(total=len(files), unit="img", disable=None, leave=False, file=sys.stderr) as bar:
        for path, probs in predict_files(weights, files, args.interpolation, not args.ignore_exif, args.batch_size, report_error, bar):
            order = probs.argsort()[::-1]
            best = names[order[0]]
            if args.json:
                record = {"path": str(path), "class": best, "probabilities": [float(p) for p in probs]}
                if args.top_k > 1:
                    record["top_k"] = [[names[i], float(probs[i])] for i in order[: args.top_k]]
                print(json.dumps(record), flush=True)
            else:
                top = "  " + ", ".join(f"{names[i]}:{probs[i]:.3f}" for i in order[1 : args.top_k]) if args.top_k > 1 else ""
                bar.write(f"{str(path):40s} {best:>6s} {probs[order[0]]:6.3f}  " + " ".join(f"{p:7.4f}" for p in probs) + top, file=sys.stdout)
            if writer:
                writer.writerow([str(path), best, f"{probs[order[0]]:.6f}", *[f"{p:.6f}" for p in probs]])
    if csv_file:
        csv_file.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
