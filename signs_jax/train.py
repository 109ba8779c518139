"""`python -m signs_jax.train`: train ResNet50 on SIGNS, resumable and reproducible.

A thin layer over `signs_jax.train_and_evaluate`: the flags, `--config FILE` and `--set key=value` build one
TrainConfig (signs_jax/config.py); this module adds the process set-up, signal handling and one-line errors.
"""

import argparse
import sys
from typing import Any, Dict

from . import cli, config
from .config import TrainConfig
from .errors import UserError
from .recipes import DEFAULT_RECIPE, FINETUNE_RECIPE, RECIPES

# Each flag and the config key it sets (what errors name, and what --resume compares).
FLAG_KEYS = {
    "recipe": "recipe_name",
    "epochs": "recipe.epochs",
    "batch_size": "recipe.batch_size",
    "lr": "recipe.lr",
    "seed": "run.seed",
    "data_dir": "data.dir",
    "val_fraction": "recipe.val_fraction",
    "test_fraction": "data.test_fraction",
    "init_from": "run.init_from",
    "width": "model.width",
    "stage_sizes": "model.stage_sizes",
    "image_size": "data.image_size",
    "dtype": "model.dtype",
    "conv": "model.conv",
    "eval_batch_size": "run.eval_batch_size",
}
FLAG_OF_KEY = {key: "--" + dest.replace("_", "-") for dest, key in FLAG_KEYS.items()}


def label(key: str) -> str:
    """What the user types for a config key: its flag, else `--set key`."""
    return FLAG_OF_KEY.get(key, f"--set {key}")


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m signs_jax.train",
        description="Train the course ResNet50 on SIGNS (or on image folders). Checkpoints, metrics.jsonl, "
        "curves.png and Result.csv go to <workdir>/<run>/. A run directory counts as a run (one predict and evaluate "
        "may pick) once it holds its first checkpoint; a start that fails before that removes the directory it "
        "made, and `--run NAME` may start an incomplete one again. A process training a run locks it.",
        epilog="Every flag sets a field of the run's TrainConfig (config.json in the run); --set reaches the rest: "
        "--set recipe.weight_decay=0.01 --set recipe.augment_policy=photo. Named experiments for --config: "
        + ", ".join(config.named_configs()),
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="start from a config: a named experiment (signs_jax/configs/), a Python file with get_config(), "
        "or a run's config.json; flags and --set override it",
    )
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config field, typed and checked (e.g. recipe.lr=3e-3, model.stage_sizes=1,1,1,1); repeatable",
    )
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help=f"hyper-parameter set (default: {FINETUNE_RECIPE} with --init-from, else {DEFAULT_RECIPE})",
    )
    p.add_argument("--epochs", type=int, help="number of epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--seed", type=int, help="seed for init, batch order, augmentation and splits (default: 0)")
    p.add_argument("--data-dir", help=cli.DATA_DIR_HELP + "; a resumed run reads the data it was trained on")
    p.add_argument(
        "--val-fraction",
        type=float,
        help="hold out this stratified fraction of train for validation, at least one image of each class that "
        f"has two (default: the recipe's; {FINETUNE_RECIPE}: {RECIPES[FINETUNE_RECIPE].val_fraction:g})",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        help="class folders without a train/test split: this stratified, seeded share of each class is the test "
        "set, recorded in the run's split.json (default: 0.2)",
    )
    p.add_argument(
        "--workdir", default=str(config.DEFAULT_WORKDIR), help="where runs are written (default: %(default)s)"
    )
    p.add_argument("--run", help="run name (default: <recipe>-seed<seed>-<time>); with --resume: the run to continue")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest run in --workdir (or --run); a flag that differs from the run's config is an "
        "error, except a higher --epochs",
    )
    p.add_argument(
        "--init-from",
        metavar="PATH",
        help="fine-tune: start from a Keras .h5, a run directory or a work directory (its newest run), "
        "as predict's --weights; the input size is the starting model's unless --image-size is given, the "
        "head is replaced when the class count differs, and the starting weights are kept when fine-tuning "
        "does not improve on them on the held-out images",
    )
    p.add_argument(
        "--width", type=float, help="filter-count multiplier (default: the --init-from model's, else 1, the original)"
    )
    p.add_argument("--stage-sizes", help="blocks per stage (default: the --init-from model's, else 3,4,6,3, ResNet50)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize image-folder data to H W")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="compute dtype (default: the recipe's, bfloat16 for fast, else float32; params stay float32)",
    )
    p.add_argument(
        "--conv",
        default=None,
        help="convolution implementation, xla or matmul (default: matmul on CPU, "
        "xla on GPU/TPU, chosen again wherever the run is resumed or its weights are used)",
    )
    p.add_argument("--eval-batch-size", type=int, help="images per evaluation pass (default: 120)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    dist = p.add_argument_group(
        "multi-process training (jax.distributed; or SIGNS_JAX_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)"
    )
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator service")
    dist.add_argument("--num-processes", type=int, help="number of processes in the run")
    dist.add_argument("--process-id", type=int, help="this process's index, 0..N-1")
    return p


def overrides_from_args(args) -> Dict[str, Any]:
    """The config keys the command line sets: each flag given, then each --set (which wins)."""
    overrides = {}
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if dest == "stage_sizes":
            value = config.parse_value(key, value)
        elif dest == "image_size":
            value = tuple(value)
        overrides[key] = value
    overrides.update(config.parse_overrides(args.assignments))
    return overrides


def config_from_args(args) -> TrainConfig:
    """The TrainConfig of a new run: --config (else the defaults), then the flags and --set; checked."""
    base = config.load_config(args.config) if args.config else TrainConfig()
    result = config.apply_overrides(base, overrides_from_args(args)).with_recipe()
    config.validate(result, label)
    return result


def _validate_processes(args) -> None:
    if args.num_processes is not None and args.num_processes < 1:
        raise UserError(f"--num-processes {args.num_processes}: must be at least 1")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or args.process_id + 1):
        raise UserError(f"--process-id {args.process_id}: must be between 0 and --num-processes - 1")
    if args.run is not None and (not args.run or args.run in (".", "..") or "/" in args.run or "\0" in args.run):
        raise UserError(f"--run {args.run!r}: a run name is one folder name (no '/')")


def _resumed_config(args) -> TrainConfig:
    """The stored config with the command line's keys applied: any key that changes it is one line."""
    from pathlib import Path

    from .checkpoints import read_train_config
    from .experiment import resumed_config
    from .rundir import find_run

    run_dir = find_run(Path(args.workdir), args.run)
    stored = read_train_config(run_dir)
    given = config.load_config(args.config) if args.config else stored
    overrides = overrides_from_args(args)
    if "data.dir" in overrides:  # compared as recorded: an absolute path, or the packaged copy by name
        overrides["data.dir"] = cli.data_record(cli.data_dir(overrides["data.dir"]))
    given = config.apply_overrides(given, overrides)
    config.validate(given, label)
    resumed_config(stored, given, run_dir, label)  # the conflicts, in the user's words
    return given


def run(args) -> int:
    """Build the config, then `train_and_evaluate` with signal handling (a stop saves and returns early)."""
    from .experiment import NothingToDo, train_and_evaluate
    from .parallel import initialize_distributed

    _validate_processes(args)
    try:
        cfg = _resumed_config(args) if args.resume else config_from_args(args)
    except NothingToDo as done:
        print(done)
        return 0
    initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    train_and_evaluate(
        cfg,
        args.workdir,
        resume=args.resume,
        run_name=args.run,
        progress=not args.no_progress,
        handle_signals=True,
    )
    return 0


def main(argv=None) -> int:
    from .errors import run_cli
    from .parallel import multi_process

    # the compilation cache serves single-process runs only
    return run_cli(build_parser, run, argv, compilation_cache=lambda args: not multi_process(args.coordinator))


if __name__ == "__main__":
    sys.exit(main())
