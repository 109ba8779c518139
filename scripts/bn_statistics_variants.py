"""SIGNS test and foreign-photo accuracy of a run's weights under other BatchNorm statistics.

    python scripts/bn_statistics_variants.py RUN [RUN ...] --photos DIR

Re-estimating BatchNorm statistics reads only the weights, never the statistics a run saved, so a run
trained with one recipe shows, at no training cost, what `bn_recalibration_augmented` (statistics of
augmented copies of the calibration images, as train.py draws them) would have given: the same weights, the
statistics the other setting computes. Rows: `clean` (as trained with bn_recalibration_augmented=False) and
`augmented`. The weights are the run's best checkpoint, as predict loads them.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from foreign_photos import labelled_photos

from signs_jax.checkpoints import read_train_config
from signs_jax.cli import recorded_data_dir
from signs_jax.data import near_copy_mask
from signs_jax.experiment import _calibration_images, load_run_data
from signs_jax.predict import predict_files
from signs_jax.steps import (
    evaluate,
    make_bn_statistics_step,
    make_eval_step,
    recalibrate_batch_stats,
)
from signs_jax.weights import load_weights


def variants(run: str, photos: Path):
    weights = load_weights(run)
    config = read_train_config(weights.run_dir)
    recipe, seed, batch_size = config.recipe, config.run.seed, config.run.eval_batch_size  # as the run trained
    dataset = load_run_data(config, recorded_data_dir(config, weights.run_dir))
    chosen = np.random.default_rng([seed, 7]).permutation(len(dataset.train.labels))[: recipe.bn_recalibration_images]
    clean_test = ~near_copy_mask(dataset.test.images, dataset.train.images)
    files, labels = labelled_photos(photos, weights.class_names)
    stats_step, eval_step = make_bn_statistics_step(weights.model), make_eval_step(weights.model)
    for name, augmented in (("clean", False), ("augmented", True)):
        setting = dataclasses.replace(recipe, bn_recalibration_augmented=augmented)
        images = _calibration_images(dataset.train.images[chosen], setting, seed)
        variables = recalibrate_batch_stats(stats_step, weights.variables, images, batch_size)
        _, test_accuracy, probs = evaluate(eval_step, variables, dataset.test, batch_size)
        no_near = float((probs.argmax(1) == dataset.test.labels)[clean_test].mean())
        predicted = np.stack([p for _, p in predict_files(weights._replace(variables=variables), files)]).argmax(1)
        recall = [float((predicted[labels == i] == i).mean()) for i in range(len(weights.class_names))]
        print(
            f"{weights.source}  {name:9s}  SIGNS test {test_accuracy:.3f} (no near-copies {no_near:.3f})  "
            f"photos {float((predicted == labels).mean()):.3f}  recall " + " ".join(f"{r:.2f}" for r in recall),
            flush=True,
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--photos", required=True, type=Path, help="a folder of class sub-folders")
    args = p.parse_args(argv)
    for run in args.runs:
        variants(run, args.photos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
