"""`python -m signs_jax.calibrate RUN`: fit a run's temperature on its validation split, store calibration.json.

Training does this itself when it ends (a run with a validation split); this command does it for a run
trained before, or again. Only held-out training images are used, never the test set: a run without a
validation split has nothing to fit on and keeps T = 1.
"""

import argparse
import sys
from pathlib import Path
from typing import Any, Dict

from . import cli

NO_VALIDATION = (
    "{run}: no validation split to fit a temperature on (the test set is never used for it): "
    "confidence stays uncalibrated (T = 1); train with --val-fraction to fit one"
)


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m signs_jax.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory (its best checkpoint is calibrated)")
    p.add_argument("--batch-size", type=int, default=120, help="images per forward pass (default: %(default)s)")
    return p


def validation_split(run_dir: Path):
    """The run's validation split, rebuilt exactly as training held it out; None when it has none."""
    from .checkpoints import read_train_config
    from .cli import recorded_data_dir
    from .data import SPLIT_FILE
    from .experiment import load_run_data

    config = read_train_config(run_dir)
    dataset = load_run_data(config, recorded_data_dir(config, run_dir), Path(run_dir) / SPLIT_FILE)
    if dataset.validation is None or not len(dataset.validation.labels):
        return None
    return dataset.validation


def fit_run(run_dir, batch_size: int = 120) -> Dict[str, Any]:
    """Fit the temperature of the run's best checkpoint on its validation split and write calibration.json;
    the record written. UserError (nothing written) when the run has no validation split or its images
    cannot decide a temperature."""
    from .calibration import calibration_report, checked_temperature, write_calibration
    from .checkpoints import restore_variables
    from .errors import UserError
    from .predict import logits_of

    run_dir = Path(run_dir)
    validation = validation_split(run_dir)
    if validation is None:
        raise UserError(NO_VALIDATION.format(run=run_dir))
    model, variables, step = restore_variables(run_dir)
    logits = logits_of(model, variables, validation.images.astype("float32") / 255.0, batch_size)
    try:
        temperature = checked_temperature(logits, validation.labels)
    except ValueError as e:
        raise UserError(f"{run_dir}: no temperature fitted: {e}; confidence stays uncalibrated (T = 1)") from None
    record = {
        "step": int(step),
        "fitted_on": "validation",
        "examples": int(len(validation.labels)),
        **calibration_report(logits, validation.labels, temperature),
    }
    write_calibration(run_dir, record)
    return record


def describe(record: Dict[str, Any]) -> str:
    return (
        f"temperature {record['temperature']:.4g} fitted on {record['examples']} validation images (step "
        f"{record['step']}): NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f}, "
        f"ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f}"
    )


def run(args) -> int:
    import logging

    from .checkpoints import CONFIG_FILE, has_checkpoint
    from .errors import UserError

    logging.getLogger("absl").setLevel(logging.ERROR)
    run_dir = Path(args.run)
    if not (run_dir / CONFIG_FILE).is_file() or not has_checkpoint(run_dir):
        raise UserError(f"{run_dir}: not a run directory with a checkpoint")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    print(f"{run_dir}: {describe(fit_run(run_dir, args.batch_size))}")
    return 0


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
