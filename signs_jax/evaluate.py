"""`python -m signs_jax.evaluate`: loss, accuracy, per-class precision/recall and a confusion matrix."""

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple, Optional

from . import cli
from .images import PREDICT_DECODING, Decoding


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m signs_jax.evaluate",
        description="Evaluate a trained model (default: the best checkpoint of the newest run) or a Keras .h5 on the "
        "SIGNS test set, an h5 pair or image folders.",
    )
    cli.add_weights_arguments(p)
    p.add_argument(
        "--data-dir",
        help="SIGNS h5 pair or image folders (default for a run: the data it was trained on; "
        f"for a Keras .h5: {cli.DATA_DIR_DEFAULTS})",
    )
    p.add_argument("--batch-size", type=int, default=120)
    p.add_argument(
        "--confusion-png",
        metavar="PATH",
        help="confusion matrix picture (default: confusion.png in the run directory, or in the current "
        "directory for a Keras .h5); an existing file there is replaced (atomically) only when it is a "
        "picture matplotlib made, never a photo or any other file",
    )
    p.add_argument(
        "--reliability-png",
        metavar="PATH",
        help="reliability diagram (accuracy against confidence, before and after the run's calibration "
        "temperature; default: reliability.png next to the confusion matrix picture); replaced only as "
        "--confusion-png is",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument(
        "--gallery",
        metavar="PNG",
        help="also draw the misclassified test images, most confident first, with their true and predicted "
        "class, the confidence and a heatmap of what the prediction rests on (docs/explain.md); replaced "
        "only as --confusion-png is",
    )
    return p


def confusion_matrix(labels, predictions, num_classes: int):
    import numpy as np

    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def per_class_scores(matrix):
    """Precision and recall of every class from a confusion matrix (rows: truth, columns: prediction)."""
    import numpy as np

    tp = np.diag(matrix).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(matrix.sum(0) > 0, tp / matrix.sum(0), np.nan)
        recall = np.where(matrix.sum(1) > 0, tp / matrix.sum(1), np.nan)
    return precision, recall


def plot_confusion(matrix, names, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import draw_confusion, save_figure

    fig, ax = plt.subplots(figsize=(5, 4.5))
    draw_confusion(ax, matrix, names)
    fig.tight_layout()
    return save_figure(fig, path)


def _data_dir(cli_value, run_dir):
    """--data-dir; else a run's own data (as its config.json records it); else, for a Keras .h5, the default.

    $SIGNS_DATA_DIR does not replace a run's own data: it is a standing default for new runs, often exported
    once per shell, and letting it swap a run's test set would report scores on other data (other near-copies,
    perhaps other classes) without the user having asked for that in this command.
    """
    if cli_value or run_dir is None:
        return cli.data_dir(cli_value)
    from .checkpoints import read_train_config

    return cli.recorded_data_dir(
        read_train_config(run_dir), run_dir, hint=" (pass --data-dir to evaluate on other data)"
    )


class RunSplit(NamedTuple):
    """How `data.load_run_test_data` reads a run's data again: its split and its folder decoding."""

    test_fraction: float
    seed: int
    split_file: Optional[Path]
    decoding: Decoding = PREDICT_DECODING


def _run_split(run_dir, data_dir, data_dir_given: bool) -> RunSplit:
    """The test fraction, seed and split record with which a run's class-folder data is split again, as training
    did, and the folder decoding it trained with.

    The split record is checked, and the run's decoding used, only when `data_dir` is the run's own data: other
    data given by --data-dir is split with the run's fraction and seed, but was never recorded, and is decoded as
    predict decodes photos. A Keras .h5 (no run) gets the defaults.
    """
    from .data import DEFAULT_TEST_FRACTION, SPLIT_FILE

    if run_dir is None:
        return RunSplit(DEFAULT_TEST_FRACTION, 0, None)
    from .checkpoints import read_train_config
    from .files import same_file

    config = read_train_config(run_dir)
    own = not data_dir_given or same_file(Path(data_dir), cli.data_dir(config.data.dir))
    if not own:
        return RunSplit(config.data.test_fraction, config.run.seed, None)
    data, split_file = config.data, Path(run_dir) / SPLIT_FILE
    return RunSplit(data.test_fraction, config.run.seed, split_file, data.decoding)


def run(args) -> int:
    import logging

    import numpy as np

    from .calibration import ECE_BINS, calibration_report, nll, plot_reliability
    from .data import load_run_test_data, near_copy_mask
    from .errors import UserError
    from .predict import logits_of
    from .weights import load_weights

    logging.getLogger("absl").setLevel(logging.ERROR)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    from .files import check_write_target

    if args.confusion_png:
        check_write_target(args.confusion_png, "--confusion-png", "png")
    weights = load_weights(args.weights, args.workdir)
    png = Path(args.confusion_png) if args.confusion_png else (weights.run_dir or Path(".")) / "confusion.png"
    check_write_target(png, "--confusion-png", "png")
    if args.reliability_png:
        check_write_target(args.reliability_png, "--reliability-png", "png")
    reliability_png = Path(args.reliability_png) if args.reliability_png else png.parent / "reliability.png"
    check_write_target(reliability_png, "--reliability-png", "png")
    if args.gallery:
        check_write_target(args.gallery, "--gallery", "png")
    model = weights.model
    data_dir = _data_dir(args.data_dir, weights.run_dir)
    reading = _run_split(weights.run_dir, data_dir, bool(args.data_dir))
    dataset = load_run_test_data(data_dir, tuple(model.input_shape[:2]), *reading)
    if dataset.num_classes != model.num_classes:
        raise UserError(f"{data_dir}: {dataset.num_classes} classes, but the model has {model.num_classes}")
    if dataset.image_shape != tuple(model.input_shape):
        raise UserError(f"{data_dir}: images are {dataset.image_shape}, the model expects {tuple(model.input_shape)}")
    logits = logits_of(model, weights.variables, dataset.test.images.astype(np.float32) / 255.0, args.batch_size)
    labels = dataset.test.labels
    predictions = logits.argmax(1)
    loss, accuracy = nll(logits, labels), float((predictions == labels).mean())
    calibration = calibration_report(logits, labels, weights.temperature)
    matrix = confusion_matrix(labels, predictions, model.num_classes)
    precision, recall = per_class_scores(matrix)
    if tuple(map(str, dataset.class_names)) != tuple(weights.class_names):
        print(
            f"warning: the data's classes {list(dataset.class_names)} are not the model's {list(weights.class_names)}; "
            "labels are compared by index",
            file=sys.stderr,
        )
    seen = dataset.train.images  # every image a training run could have learned from, validation included
    if dataset.validation is not None and len(dataset.validation.labels):
        seen = np.concatenate([seen, dataset.validation.images])
    near = near_copy_mask(dataset.test.images, seen)
    clean = ~near
    result = {
        "weights": weights.source,
        "data": dataset.source,
        "examples": int(len(labels)),
        "loss": loss,
        "accuracy": accuracy,
        "near_copies": int(near.sum()),
        "accuracy_no_near_copies": float((predictions[clean] == labels[clean]).mean()) if clean.any() else None,
        "per_class": {
            name: {
                "precision": None if np.isnan(p) else float(p),
                "recall": None if np.isnan(r) else float(r),
                "support": int(matrix[i].sum()),
            }
            for i, (name, p, r) in enumerate(zip(weights.class_names, precision, recall))
        },
        "confusion_matrix": matrix.tolist(),
        # Before: the raw softmax (T = 1); after: with the run's fitted temperature (1 when it has none).
        "calibration": {**calibration, "bins": ECE_BINS},
    }
    try:
        result["confusion_png"] = str(plot_confusion(matrix, weights.class_names, png))
    except OSError as err:
        raise UserError(f"{png}: cannot write the confusion matrix picture ({err.strerror or err})") from None
    try:
        result["reliability_png"] = str(
            plot_reliability(
                logits, labels, weights.temperature, reliability_png, title=f"reliability, {dataset.source}"
            )
        )
    except OSError as err:
        raise UserError(f"{reliability_png}: cannot write the reliability diagram ({err.strerror or err})") from None
    if args.gallery:
        from .explain_pictures import write_gallery

        result["gallery_png"] = str(
            write_gallery(
                model,
                weights.variables,
                dataset.test.images,
                labels,
                logits,
                weights.class_names,
                weights.temperature,
                args.gallery,
            )
        )
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"weights: {weights.source}\ndata:    {dataset.source} ({len(labels)} test images)")
    clean_accuracy = result["accuracy_no_near_copies"]
    print(
        f"loss {loss:.4f}  accuracy {accuracy:.4f}  accuracy on the {int(clean.sum())} images without a near-copy "
        f"in the training set ({int(near.sum())} have one): "
        + ("-" if clean_accuracy is None else f"{clean_accuracy:.4f}")
    )
    print(f"\n{'class':>8s} {'precision':>10s} {'recall':>8s} {'support':>8s}")
    for name, scores in result["per_class"].items():
        fmt = lambda v: "   -" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{name:>8s} {fmt(scores['precision']):>10s} {fmt(scores['recall']):>8s} {scores['support']:8d}")
    print("\nconfusion matrix (rows: true, columns: predicted)")
    print("      " + " ".join(f"{n:>5s}" for n in weights.class_names))
    for name, row in zip(weights.class_names, matrix):
        print(f"{name:>5s} " + " ".join(f"{v:5d}" for v in row))
    c = calibration
    fitted = "" if weights.temperature != 1 else " (no fitted temperature: T = 1)"
    print(
        f"\ncalibration: temperature {c['temperature']:.4g}{fitted}; expected calibration error ({ECE_BINS} bins) "
        f"{c['ece_before']:.4f} before, {c['ece_after']:.4f} after; NLL {c['nll_before']:.4f} before, "
        f"{c['nll_after']:.4f} after"
    )
    print(f"\nconfusion matrix picture: {result['confusion_png']}\nreliability diagram: {result['reliability_png']}")
    if args.gallery:
        print(f"misclassified images: {result['gallery_png']}")
    return 0


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
