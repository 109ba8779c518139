"""`python -m signs_jax.predict IMAGE [IMAGE | DIR ...]`: class and probabilities for each image.

Nothing heavy is imported before the arguments are parsed: `--help` and argument errors never load JAX.
"""

import argparse
import csv
import functools
import json
import sys

from . import cli
from .adapt import MIN_PHOTOS
from .calibration import DEFAULT_THRESHOLD
from .framing import DEFAULT_FIT, FITS, TTA_VIEWS
from .images import DEFAULT_INTERPOLATION, INTERPOLATIONS

BATCH_BUCKETS = (1, 8)  # besides --batch-size: a one-image predict should not pay for a 32-image batch
MAX_BATCH_SIZE = 1024  # a larger batch only costs memory (the batch is padded and allocated whole)


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m signs_jax.predict",
        description="Classify hand-sign photos with a trained model (default: the best checkpoint of the newest "
        "run under checkpoints/) or a Keras .h5.",
        epilog="--csv is checked before anything is read or written: it must not be one of the IMAGE inputs (under "
        "any spelling or symlink), a directory, a name with an image suffix, or an existing file other than a text "
        "file, and its folder must exist. It is written to a temporary file and renamed into place, so an old CSV "
        "is either kept whole or replaced whole.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    cli.add_weights_arguments(p)
    p.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default=DEFAULT_INTERPOLATION,
        help="resize filter (default: %(default)s; 'nearest' is what Keras load_img uses; 'box' = 'area')",
    )
    p.add_argument(
        "--fit",
        default=DEFAULT_FIT,
        metavar="MODE",
        help="how a photo of another aspect ratio becomes the square input: squash (resize all of it, as Keras), "
        "crop (centre crop to square), pad (centre it on a square of its border's median colour) or hand (the "
        "square that frames the hand as SIGNS does, for a hand against a plain wall; else squash) "
        "(default: %(default)s; measured in docs/predict.md)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help=f"average the probabilities over {len(TTA_VIEWS)} views of each photo (as framed, mirrored, a 1.11x "
        "centre zoom and it mirrored): that many forward passes per photo; --threshold applies to the averaged "
        "uncalibrated probabilities",
    )
    p.add_argument(
        "--ignore-exif", action="store_true", help="do not rotate by the EXIF orientation (as Keras load_img)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image: path, class, confidence, uncertain, raw_confidence, probabilities",
    )
    p.add_argument(
        "--csv",
        metavar="FILE",
        help="also write the rows to a CSV file (the original's Result.csv); see the rule below",
    )
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="show the K most likely classes (default: 1)")
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="P",
        help="mark an answer uncertain when its uncalibrated confidence (max softmax of the raw logits) "
        "is below P (default: %(default)s, measured in docs/calibration.md; 0 marks nothing)",
    )
    p.add_argument(
        "--adapt",
        action="store_true",
        help=f"re-estimate every BatchNorm layer's statistics on the photos given (no labels; at least "
        f"{MIN_PHOTOS} photos, all held in memory), then predict them with those",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help=f"images per forward pass, 1..{MAX_BATCH_SIZE} (default: %(default)s)",
    )
    p.add_argument(
        "--explain",
        metavar="DIR",
        help="also write one picture per image to DIR (made if missing): the photo, a heatmap of what the "
        "prediction rests on (docs/explain.md) and the predicted class with its probability; maps of the "
        "weights as stored (not --adapt's)",
    )
    return p


def fixed_batch_size(num_files: int, batch_size: int) -> int:
    """The one batch shape of a run (one compile): the smallest bucket that holds all files, at most --batch-size."""
    want = min(num_files, batch_size)
    return next((b for b in BATCH_BUCKETS if want <= b < batch_size), batch_size)


def predict_files(
    weights,
    files,
    interpolation=DEFAULT_INTERPOLATION,
    exif=True,
    batch_size=32,
    on_error=None,
    progress=None,
    fit=DEFAULT_FIT,
    views=None,
):
    """Yield (path, probabilities) for every readable file, in order: softmax(logits / T) with the weights'
    calibration temperature T (1 when they have none), averaged over `views` when given (`--tta`)."""
    for path, logits in predict_logits(weights, files, interpolation, exif, batch_size, on_error, progress, fit, views):
        yield path, probabilities(logits, weights.temperature)


def probabilities(logits, temperature: float = 1.0):
    """softmax(logits / T): of one image's logits (classes,), or the mean over its views' (views, classes)."""
    from .calibration import softmax

    probs = softmax(logits, temperature)
    return probs.mean(0) if probs.ndim == 2 else probs


def predict_logits(
    weights,
    files,
    interpolation=DEFAULT_INTERPOLATION,
    exif=True,
    batch_size=32,
    on_error=None,
    progress=None,
    fit=DEFAULT_FIT,
    views=None,
):
    """Yield (path, logits) for every readable file, in order: logits (classes,), or (len(views), classes)
    when `views` (`framing.View`s, e.g. `framing.TTA_VIEWS`) are given; `fit` as in `images.decode_image`.

    Memory stays bounded whatever the number of files: images are decoded one batch at a time, every
    batch is padded to the same shape (one compile), and the next batch is decoded while the previous
    one runs (JAX dispatches asynchronously), so at most two batches are alive. With `views`, a batch of
    `batch_size` files is one forward pass of `batch_size * len(views)` images.
    """
    import numpy as np

    model = weights.model
    size = tuple(model.input_shape[:2])
    forward = compiled_forward(model)
    per_file = 1 if views is None else len(views)
    in_flight = None  # (paths, logits on the device) of the batch being computed

    def finished(done_paths, logits):
        logits = np.asarray(logits)[: len(done_paths) * per_file]
        return zip(done_paths, logits if views is None else logits.reshape(len(done_paths), per_file, -1))

    for paths, pending in _decoded_batches(
        files, size, interpolation, exif, batch_size, on_error, progress, fit, views
    ):
        # A fresh array each batch: on CPU, JAX may alias the numpy buffer while the batch computes.
        x = np.zeros((batch_size * per_file, *size, 3), np.float32)
        x[: len(pending) * per_file] = np.stack(pending).reshape(-1, *size, 3)
        launched = (paths, forward(weights.variables, x))
        if in_flight:
            yield from finished(*in_flight)
        in_flight = launched
    if in_flight:
        yield from finished(*in_flight)


def _decoded_batches(
    files, size, interpolation, exif, batch_size, on_error=None, progress=None, fit=DEFAULT_FIT, views=None
):
    """(paths, images) of up to `batch_size` readable files at a time; an unreadable one goes to `on_error`."""
    from .images import ImageError, load_image

    pending, paths = [], []
    for path in files:
        try:
            pending.append(load_image(path, size, interpolation, exif, fit=fit, views=views))
            paths.append(path)
        except ImageError as err:
            if on_error:
                on_error(str(err))
        if progress:
            progress.update(1)
        if len(pending) == batch_size:
            yield paths, pending
            pending, paths = [], []
    if pending:
        yield paths, pending


def prediction_record(path, logits, weights, threshold: float = DEFAULT_THRESHOLD, top_k: int = 1) -> dict:
    """What `--json` prints for one image (and the table and the CSV show): path, class, confidence (with the
    weights' temperature), uncertain (raw_confidence below `threshold`), raw_confidence, probabilities, and
    top_k ([class, probability] pairs, best first) when `top_k` > 1. `logits`: (classes,), or (views, classes)
    with `--tta`, whose raw_confidence is the max of the views' mean uncalibrated probabilities."""
    from .calibration import uncertainty_score

    names = weights.class_names
    probs = probabilities(logits, weights.temperature)
    order = probs.argsort()[::-1]
    raw_confidence = float(uncertainty_score(logits) if logits.ndim == 1 else probabilities(logits).max())
    record = {
        "path": str(path),
        "class": names[order[0]],
        "confidence": float(probs[order[0]]),
        "uncertain": raw_confidence < threshold,
        "raw_confidence": raw_confidence,
        "probabilities": [float(p) for p in probs],
    }
    if top_k > 1:
        record["top_k"] = [[names[i], float(probs[i])] for i in order[: min(top_k, len(names))]]
    return record


def check_threshold(threshold: float) -> None:
    """--threshold: a confidence in [0, 1] (0 marks nothing), else one line."""
    import math

    from .errors import UserError

    if not (math.isfinite(threshold) and 0 <= threshold <= 1):
        raise UserError(f"--threshold {threshold}: must be a confidence between 0 and 1 (0: mark nothing)")


def load_images(
    files,
    size,
    interpolation=DEFAULT_INTERPOLATION,
    exif=True,
    on_error=None,
    progress=None,
    fit=DEFAULT_FIT,
    views=None,
):
    """(paths, images (N, H, W, 3) float32 in [0, 1]) of every readable file, all in memory (for --adapt);
    (N, len(views), H, W, 3) with `views`."""
    import numpy as np

    paths, images = [], []
    for batch_paths, batch in _decoded_batches(files, size, interpolation, exif, 256, on_error, progress, fit, views):
        paths += batch_paths
        images += batch
    empty_shape = (0, *size, 3) if views is None else (0, len(views), *size, 3)
    return paths, (np.stack(images) if images else np.zeros(empty_shape, np.float32))


def logits_of(model, variables, images, batch_size: int = 32):
    """Logits (N, classes) of images already in memory ((N, H, W, 3) float in [0, 1]), in fixed-shape batches."""
    import numpy as np

    forward = compiled_forward(model)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = np.zeros((batch_size, *images.shape[1:]), np.float32)
        x[: len(chunk)] = chunk
        out.append(np.asarray(forward(variables, x))[: len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


@functools.lru_cache(maxsize=8)
def compiled_forward(model):
    """`(variables, images in [0, 1]) -> logits`, jitted once per model: repeated in-process calls
    (tests, notebooks) with an equal model reuse the compiled executable."""
    import jax

    return jax.jit(lambda variables, x: model.apply(variables, x))


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


def validate_args(args) -> None:
    """The flags, and the CSV target against the inputs, before anything is read or written: one line."""

    from .errors import UserError
    from .files import check_write_target

    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be at least 1")
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise UserError(f"--batch-size {args.batch_size}: must be between 1 and {MAX_BATCH_SIZE}")
    if args.fit not in FITS:
        raise UserError(f"--fit {args.fit}: must be one of {', '.join(FITS)}")
    check_threshold(args.threshold)
    if args.csv:
        check_write_target(args.csv, "--csv", "csv", inputs=args.inputs)
    if args.explain:
        from .explain_pictures import check_explain_dir

        check_explain_dir(args.explain)


def run(args) -> int:
    import logging

    from .errors import UserError
    from .images import expand_inputs
    from .weights import load_weights

    validate_args(args)
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes on read-only checkpoint directories
    files, errors = expand_inputs(args.inputs)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    weights = load_weights(args.weights, args.workdir)
    names = weights.class_names
    if args.top_k > len(names):
        raise UserError(f"--top-k {args.top_k}: the model has {len(names)} classes")
    k = args.top_k
    failed = len(errors)
    answered = uncertain = 0

    def report_error(message):
        nonlocal failed
        failed += 1
        print(f"error: {message}", file=sys.stderr, flush=True)

    from tqdm import tqdm

    csv_header = ["path", "class", "confidence", *[f"p({n})" for n in names], "uncertain", "raw_confidence"]
    csv_rows = [csv_header] if args.csv else None
    width = max([6, *map(len, names)]) + 1  # room for the uncertain mark
    path_width = min(40, max([4, *(len(str(f)) for f in files[:1000])]))
    batch = fixed_batch_size(len(files), args.batch_size)
    views = TTA_VIEWS if args.tta else None
    with tqdm(total=len(files), unit="img", disable=None, leave=False, file=sys.stderr) as bar:
        if args.adapt:
            results, adapted_on = adapted_logits(
                weights,
                files,
                batch,
                views,
                interpolation=args.interpolation,
                exif=not args.ignore_exif,
                on_error=report_error,
                progress=bar,
                fit=args.fit,
            )
        else:
            results, adapted_on = (
                predict_logits(
                    weights, files, args.interpolation, not args.ignore_exif, batch, report_error, bar, args.fit, views
                ),
                None,
            )
        if not args.json:
            print(
                f"# weights: {weights.source}; temperature {weights.temperature:.4g}"
                + ("" if weights.run_dir is None or weights.temperature != 1 else " (not fitted)")
                + f"; fit {args.fit}"
                + (f"; mean of {len(views)} views (--tta)" if views else "")
                + f"; ? = uncertain (uncalibrated confidence below {args.threshold:g})"
                + (f"; BatchNorm adapted to these {adapted_on} photos" if adapted_on else "")
            )
            print(
                f"{'path':{path_width}s} {'class':>{width}s} {'conf':>6s} {'raw':>6s} {'uncertain':>9s}  "
                + " ".join(f"p({n})".rjust(max(7, len(n) + 3)) for n in names)
                + ("  top-k" if k > 1 else "")
            )
        for path, logits in results:
            record = prediction_record(path, logits, weights, args.threshold, k)
            answered, uncertain = answered + 1, uncertain + record["uncertain"]
            if args.json:
                print(json.dumps(record), flush=True)
            else:
                top = "  " + ", ".join(f"{n}:{p:.3f}" for n, p in record["top_k"]) if k > 1 else ""
                cells = " ".join(f"{p:{max(7, len(n) + 3)}.4f}" for n, p in zip(names, record["probabilities"]))
                shown = record["class"] + ("?" if record["uncertain"] else "")
                bar.write(
                    f"{str(path):{path_width}s} {shown:>{width}s} {record['confidence']:6.3f} "
                    f"{record['raw_confidence']:6.3f} {'yes' if record['uncertain'] else 'no':>9s}  {cells}{top}",
                    file=sys.stdout,
                )
            if csv_rows is not None:
                csv_rows.append(
                    [
                        record["path"],
                        record["class"],
                        f"{record['confidence']:.6f}",
                        *[f"{p:.6f}" for p in record["probabilities"]],
                        "yes" if record["uncertain"] else "no",
                        f"{record['raw_confidence']:.6f}",
                    ]
                )
    if csv_rows is not None:  # only a finished run replaces an existing CSV
        _write_csv(args.csv, csv_rows)
    if args.explain:  # after the predictions: each map costs a backward pass
        from .explain_pictures import write_explanations

        write_explanations(weights, files, args.explain, args.interpolation, not args.ignore_exif)
    if uncertain and not args.json:  # last, once nothing can fail; JSON is for programs, its records carry the flag
        print(uncertain_advice(uncertain, answered), file=sys.stderr)
    return 1 if failed else 0


def adapted_logits(weights, files, batch_size=32, views=None, **reading):
    """--adapt: every photo decoded (`reading`: `load_images`'s interpolation, exif, on_error, progress, fit),
    BatchNorm statistics re-estimated on all of them, then their logits. Returns ((path, logits) pairs as
    `predict_logits` yields them, the number of photos adapted on)."""
    from .adapt import adapt_batch_norm

    size = tuple(weights.model.input_shape[:2])
    paths, images = load_images(files, size, views=views, **reading)
    if views is None:
        variables = adapt_batch_norm(weights.model, weights.variables, images)
        return zip(paths, logits_of(weights.model, variables, images, batch_size)), len(paths)
    # The statistics come from the photos as framed (the first view), one image per photo as without --tta.
    variables = adapt_batch_norm(weights.model, weights.variables, images[:, 0])
    logits = logits_of(weights.model, variables, images.reshape(-1, *size, 3), batch_size * len(views))
    return zip(paths, logits.reshape(len(paths), len(views), -1)), len(paths)


def uncertain_advice(uncertain: int, answered: int) -> str:
    """One line for the end of a prediction with unsure answers: what makes a photo read well (measured on the
    shift benchmark, docs/shifts.md), since the usual cause is a photo unlike SIGNS's, not a hard hand sign."""
    return (
        f"note: {uncertain} of {answered} answers are uncertain; photos read best when you frame the hand so that "
        "it fills most of a square frame, upright, against a plain light wall, in even light "
        "(docs/predict.md#taking-a-photo)"
    )


def _write_csv(path, rows) -> None:
    """The CSV appears whole, replacing an old one atomically (an interrupted predict keeps the old one)."""
    from .errors import UserError
    from .files import atomic_write

    try:
        with atomic_write(path, newline="") as f:
            csv.writer(f).writerows(rows)
    except OSError as err:
        raise UserError(f"{path}: cannot write the CSV file ({err.strerror or err})") from None


if __name__ == "__main__":
    sys.exit(main())
