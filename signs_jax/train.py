"""`python -m signs_jax.train`: train ResNet50 on SIGNS, resumable and reproducible.

The loop is plain Python around one jit-compiled train step; batches come from a permutation that
depends only on (seed, epoch), and the step's randomness only on (seed, step), so a run resumed from
any checkpoint — mid-epoch included — continues with exactly the batches and numbers it would have had.
"""

import argparse
import csv
import dataclasses
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import cli, config
from .errors import UserError
from .recipes import DEFAULT_RECIPE, FINETUNE_RECIPE, RECIPES, Recipe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m signs_jax.train",
        description="Train the course ResNet50 on SIGNS (or on image folders). Checkpoints, metrics.jsonl, "
        "curves.png and Result.csv go to <workdir>/<run>/. A run directory counts as a run (one predict and evaluate "
        "may pick) once it holds its first checkpoint; a start that fails before that removes the directory it "
        "made, and `--run NAME` may start an incomplete one again. A process training a run locks it.",
    )
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help=f"hyper-parameter set (default: {FINETUNE_RECIPE} with --init-from, else {DEFAULT_RECIPE})",
    )
    p.add_argument("--epochs", type=int, help="number of epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, batch order and augmentation (default: 0)")
    p.add_argument("--data-dir", help=cli.DATA_DIR_HELP + "; a resumed run reads the data it was trained on")
    p.add_argument(
        "--val-fraction",
        type=float,
        help="hold out this stratified fraction of train for validation (default: the recipe's; "
        f"{FINETUNE_RECIPE}: {RECIPES[FINETUNE_RECIPE].val_fraction:g}, at least one image of each class "
        "that has two)",
    )
    p.add_argument(
        "--workdir", default=str(config.DEFAULT_WORKDIR), help="where runs are written (default: %(default)s)"
    )
    p.add_argument("--run", help="run name (default: <recipe>-seed<seed>-<time>); with --resume: the run to continue")
    p.add_argument("--resume", action="store_true", help="continue the newest run in --workdir (or --run)")
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
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype (params stay float32)"
    )
    p.add_argument(
        "--conv",
        default=None,
        help="convolution implementation, xla or matmul (default: matmul on CPU, "
        "xla on GPU/TPU, chosen again wherever the run is resumed or its weights are used)",
    )
    p.add_argument("--eval-batch-size", type=int, default=120, help="images per evaluation pass (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    dist = p.add_argument_group(
        "multi-process training (jax.distributed; or SIGNS_JAX_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)"
    )
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator service")
    dist.add_argument("--num-processes", type=int, help="number of processes in the run")
    dist.add_argument("--process-id", type=int, help="this process's index, 0..N-1")
    return p


# ------------------------------------------------------------------------------------------ flags

MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_WIDTH = 16.0  # 16x the original's filters: already far beyond what any device here holds
MAX_BLOCKS = 64  # per stage (ResNet152 has 36)
MAX_IMAGE_SIDE = 4096
MAX_SEED = 2**32 - 1  # numpy's and JAX's seeds


def output_side(side: int) -> int:
    """The side of the feature map the Dense head sees for an input of `side` pixels (<= 0: nothing left).

    ZeroPad 3 + conv 7x7/2, max-pool 3x3/2 'valid', three stages whose 1x1 convs take stride 2, avg-pool 2x2/2.
    """
    side = (side + 2 * 3 - 7) // 2 + 1
    side = (side - 3) // 2 + 1 if side >= 3 else 0
    for _ in range(3):
        side = (side - 1) // 2 + 1 if side >= 1 else 0
    return side // 2


MIN_IMAGE_SIDE = next(side for side in range(1, 1024) if output_side(side) >= 1)


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def validate_args(args) -> None:
    """Every flag that can be checked without the data, before anything is written: one line naming the flag."""
    if args.epochs is not None and not 1 <= args.epochs <= MAX_EPOCHS:
        raise UserError(f"--epochs {args.epochs}: must be between 1 and {MAX_EPOCHS}")
    if args.batch_size is not None and not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise UserError(f"--batch-size {args.batch_size}: must be between 1 and {MAX_BATCH_SIZE}")
    if not 1 <= args.eval_batch_size <= MAX_BATCH_SIZE:
        raise UserError(f"--eval-batch-size {args.eval_batch_size}: must be between 1 and {MAX_BATCH_SIZE}")
    if args.lr is not None and not (_finite(args.lr) and args.lr > 0):
        raise UserError(f"--lr {args.lr}: must be a finite number above 0")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed {args.seed}: must be between 0 and {MAX_SEED}")
    if args.val_fraction is not None and not (_finite(args.val_fraction) and 0 <= args.val_fraction < 1):
        raise UserError(f"--val-fraction {args.val_fraction}: must be at least 0 and below 1")
    if args.width is not None and (not (_finite(args.width) and args.width > 0) or args.width > MAX_WIDTH):
        raise UserError(f"--width {args.width}: must be above 0 and at most {MAX_WIDTH:g}")
    if args.width is not None and round(config.RESNET50_STEM_FILTERS * args.width) < 1:
        raise UserError(
            f"--width {args.width}: leaves the first convolution without a filter "
            f"(at least {0.5 / config.RESNET50_STEM_FILTERS:g})"
        )
    if args.stage_sizes is not None:
        _stage_sizes(args.stage_sizes)
    if args.image_size and not all(MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE for side in args.image_size):
        raise UserError(
            f"--image-size {' '.join(map(str, args.image_size))}: each side must be between "
            f"{MIN_IMAGE_SIDE} (the model's smallest input) and {MAX_IMAGE_SIDE}"
        )
    if args.num_processes is not None and args.num_processes < 1:
        raise UserError(f"--num-processes {args.num_processes}: must be at least 1")
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or args.process_id + 1):
        raise UserError(f"--process-id {args.process_id}: must be between 0 and --num-processes - 1")
    if args.init_from and not Path(args.init_from).exists():
        raise UserError(
            f"{args.init_from}: no such file or directory "
            "(--init-from takes a Keras .h5, a run directory or a work directory)"
        )
    if args.run is not None and (not args.run or args.run in (".", "..") or "/" in args.run or "\0" in args.run):
        raise UserError(f"--run {args.run!r}: a run name is one folder name (no '/')")


def choose_recipe(args) -> None:
    """--recipe, or the fine-tuning recipe when the run starts from trained weights."""
    if args.recipe is None:
        args.recipe = FINETUNE_RECIPE if args.init_from else DEFAULT_RECIPE


def _stage_sizes(text: str) -> List[int]:
    try:
        stage_sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise UserError(f"--stage-sizes {text!r}: expected four comma-separated block counts") from None
    if len(stage_sizes) != 4 or not all(1 <= n <= MAX_BLOCKS for n in stage_sizes):
        raise UserError(f"--stage-sizes {text!r}: expected four block counts between 1 and {MAX_BLOCKS}")
    return stage_sizes


def _check_against_data(cfg: Dict[str, Any], recipe: Recipe, dataset) -> None:
    """The flags that depend on the data (validation held out): one line naming the flag."""
    import numpy as np

    height, width = dataset.image_shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise UserError(
            f"{dataset.source}: images of {height}x{width} are smaller than the model's smallest input "
            f"({MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}); pass --image-size"
        )
    per_class = np.bincount(dataset.train.labels, minlength=dataset.num_classes)
    if cfg["val_fraction"] > 0 and per_class.min() == 0:
        empty = dataset.class_names[int(per_class.argmin())]
        raise UserError(f"--val-fraction {cfg['val_fraction']}: leaves class {empty} without a training image")
    if recipe.batch_size > len(dataset.train.labels):
        raise UserError(
            f"--batch-size {recipe.batch_size}: larger than the training set ({len(dataset.train.labels)} images)"
        )


# ------------------------------------------------------------------------------------------ setup


class _Finished(Exception):
    """A resumed run that has nothing left to do (the message says so)."""


class RunDirectory:
    """The directory a train process writes: made atomically under a name no other start gets, locked while
    training, and removed again when the start fails before its first checkpoint (only if this process made it).

    Only the primary process of a multi-process run checks, makes, locks or removes anything.
    """

    def __init__(self, args):
        self.args = args
        self.path: Optional[Path] = None
        self.created = False  # made by this process: a failed start may remove it
        self.lock = None
        self.primary = True

    def prepare(self, primary: bool) -> Path:
        """Find the run to resume (and lock it), or check that a new run's name is free; nothing is written yet."""
        from .checkpoints import RunLock, has_checkpoint, runs_in

        args, self.primary = self.args, primary
        workdir = Path(args.workdir)
        if args.resume:
            if args.run:
                path = workdir / args.run
            else:
                from .checkpoints import written_at

                path = max(runs_in(workdir), key=written_at, default=None)
            if path is None or not (path / "config.json").is_file():
                raise UserError(f"{path or workdir}: no run to resume")
            self.path = path
            if primary:
                self.lock = RunLock(path).acquire()
            return path
        if primary:
            try:
                workdir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"{workdir}: cannot create the work directory ({err.strerror})") from None
            if not os.access(workdir, os.W_OK | os.X_OK):
                raise UserError(f"{workdir}: work directory is not writable")
        self.path = workdir / (args.run or f"{args.recipe}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        if primary and args.run:
            self._check_free(has_checkpoint)
        return self.path

    def _check_free(self, has_checkpoint) -> None:
        """A new run's directory may be missing, empty, or an incomplete start (config, no checkpoint) to start
        again."""
        path = self.path
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise UserError(f"{path}: exists and is not a run directory; choose another --run")
        if not path.exists():
            return
        if has_checkpoint(path):
            raise UserError(f"{path}: run already exists (add --resume to continue it, or choose another --run)")
        if any(path.iterdir()) and not any((path / name).exists() for name in ("config.json", "ckpt", "train.lock")):
            raise UserError(f"{path}: exists and is not a training run (not overwriting it); choose another --run")

    def create(self) -> Path:
        """Make the new run's directory (a default name gets a suffix when another start took it) and lock it."""
        from .checkpoints import RunLock, has_checkpoint

        base = self.path
        for attempt in range(2, 1000):
            try:
                self.path.mkdir()
                self.created = True
                break
            except FileExistsError:
                if self.args.run:  # an explicit name: start an incomplete run again, under its lock
                    self.lock = RunLock(self.path).acquire()
                    self._check_free(has_checkpoint)
                    return self.path
                self.path = base.with_name(f"{base.name}-{attempt}")
            except OSError as err:
                raise UserError(f"{self.path}: cannot create the run directory ({err.strerror})") from None
        else:
            raise UserError(f"{base}: every numbered variant of this run name is taken; pass --run NAME")
        try:
            self.lock = RunLock(self.path).acquire()
        except UserError:
            self.created = False  # another start took it over between mkdir and lock: it is theirs now
            raise
        return self.path

    def write_config(self, cfg: Dict[str, Any]) -> None:
        from .files import write_text_atomic

        write_text_atomic(self.path / "config.json", json.dumps(cfg, indent=2))

    def discard_if_incomplete(self) -> None:
        """After a failed start: remove the directory this process made, unless a checkpoint made it a run."""
        from .checkpoints import has_checkpoint

        if self.primary and self.created and self.path is not None and not has_checkpoint(self.path):
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
            self.created = False

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _check_resume(args, cfg: Dict[str, Any], run_dir: Path) -> bool:
    """Flags that cannot apply to the run being resumed are one line; True when --epochs changes the config.

    Raises _Finished when the run has already trained every epoch asked for.
    """
    from .checkpoints import checkpointed_epochs
    from .files import same_file

    if args.data_dir:
        recorded = cli.recorded_data_dir(cfg, run_dir)
        if not same_file(cli.data_dir(args.data_dir), recorded):
            raise UserError(
                f"--data-dir {args.data_dir}: run {run_dir} was trained on {cfg.get('data') or recorded}; "
                "a resumed run keeps its data (leave out --data-dir)"
            )
    done = checkpointed_epochs(run_dir) or 0
    if args.epochs is not None and args.epochs < done:
        raise UserError(
            f"--epochs {args.epochs}: run {run_dir} has already trained {done} epochs; give at least {done}"
        )
    target = args.epochs or cfg["recipe"]["epochs"]
    if done >= target:
        raise _Finished(
            f"run {run_dir} has finished its {done} epochs: nothing to do "
            f"(add --epochs N with N above {done} to train longer)"
        )
    return bool(args.epochs) and args.epochs != cfg["recipe"]["epochs"]


def _new_config(args, dataset, image_size, start) -> Dict[str, Any]:
    from .models import CONV_IMPLEMENTATIONS

    recipe = RECIPES[args.recipe].replace(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    conv = args.conv  # None: the default of the backend the model is built on, at every restore too
    if conv is not None and conv not in CONV_IMPLEMENTATIONS:
        raise UserError(f"--conv {conv}: choose from {', '.join(sorted(CONV_IMPLEMENTATIONS))}")
    if args.stage_sizes is not None:
        stage_sizes = _stage_sizes(args.stage_sizes)
    else:  # fine-tuning keeps the starting model's architecture
        stage_sizes = list(start.model.stage_sizes) if start else list(config.RESNET50_STAGE_SIZES)
    width = (
        args.width
        if args.width is not None
        else (start.model.stem_filters / config.RESNET50_STEM_FILTERS if start else 1.0)
    )
    return {
        "recipe_name": args.recipe,
        "recipe": dataclasses.asdict(recipe),
        "seed": args.seed,
        "val_fraction": recipe.val_fraction if args.val_fraction is None else args.val_fraction,
        "val_at_least_one": args.val_fraction is None and recipe.val_fraction > 0,
        **cli.data_record(cli.data_dir(args.data_dir)),
        "image_size": list(image_size) if image_size else None,
        # A work directory names the run it held then: a run started again later starts from the same weights.
        "init_from": None if start is None else str(start.run_dir or args.init_from),
        "eval_batch_size": args.eval_batch_size,
        "model": {
            "num_classes": dataset.num_classes,
            "class_names": list(dataset.class_names),
            "width": width,
            "stage_sizes": stage_sizes,
            "input_shape": list(dataset.image_shape),
            "dtype": args.dtype,
            "conv": conv,
            "bn_momentum": recipe.bn_momentum,
        },
    }


def _starting_weights(source: str):
    """--init-from, resolved as predict resolves --weights (`weights.load_weights`)."""
    from .weights import load_weights

    return load_weights(source, flag="--init-from")


def _initial_variables(model, cfg, start=None):
    """Fresh variables for the run's model; with --init-from, every weight of the starting model that fits."""
    import jax

    from .models import init_variables

    variables = init_variables(model, jax.random.key(cfg["seed"]))
    if not cfg.get("init_from"):
        return variables
    start = start or _starting_weights(cfg["init_from"])
    return transfer(variables, start.variables, cfg["init_from"])


def transfer(target, source, name: str):
    """Copy every weight of `source` into `target`; a head of another class count stays freshly initialised."""
    import jax
    import numpy as np

    flat_target = dict(jax.tree_util.tree_flatten_with_path(target)[0])
    flat_source = dict(jax.tree_util.tree_flatten_with_path(source)[0])
    kept_head, bad = False, []
    for path, leaf in flat_target.items():
        keys = [k.key for k in path]
        src = flat_source.get(path)
        if src is None:
            bad.append(f"{'/'.join(keys)} missing")
        elif np.shape(src) != leaf.shape:
            if keys[1] == "fc":
                kept_head = True
            else:
                bad.append(f"{'/'.join(keys)} expected {leaf.shape} found {np.shape(src)}")
    if bad:
        raise UserError(f"{name}: weights do not fit the model: " + ", ".join(bad))
    if kept_head:
        print(f"--init-from {name}: class count differs, the Dense head starts fresh")
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf if np.shape(flat_source[path]) != leaf.shape else jax.numpy.asarray(flat_source[path]),
        target,
    )


# ------------------------------------------------------------------------------------------ loop


# Compiled functions are cached per hashable key (model, recipe, ...) with functools.lru_cache, here
# and in the other tools: runs in one process (tests, notebooks, sweeps) share their compiles.
@functools.lru_cache(maxsize=8)
def compiled_optimizer(recipe: Recipe, steps_per_epoch: int):
    from .steps import make_optimizer

    return make_optimizer(recipe, steps_per_epoch)


@functools.lru_cache(maxsize=8)
def compiled_steps(model, recipe: Recipe, steps_per_epoch: int, dp):
    """(train step, eval step, BatchNorm-statistics step) for one model and recipe."""
    from .steps import make_bn_statistics_step, make_eval_step, make_train_step

    tx = compiled_optimizer(recipe, steps_per_epoch)
    return make_train_step(model, tx, recipe, dp), make_eval_step(model, dp), make_bn_statistics_step(model, dp)


class StopRequest:
    """SIGINT/SIGTERM: finish the current step, save, exit cleanly."""

    def __init__(self):
        self.signal: Optional[int] = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, _frame):
        if self.signal is not None:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.signal = signum
        print(
            f"\n{signal.Signals(signum).name}: finishing the current step and saving a checkpoint...",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        return False


def _append_jsonl(path: Path, record: Dict[str, Any]) -> None:
    """One record per line, written in one call: a crash leaves at most a cut last line, which readers skip."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """The whole records of a metrics.jsonl (a line cut by a crash is left out)."""
    records = []
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
    return records


def _write_result_csv(path: Path, row: Dict[str, Any]) -> None:
    from .files import atomic_write

    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)


def _no_sums() -> Dict[str, Any]:
    return {"loss": 0.0, "correct": 0, "seen": 0}


@dataclasses.dataclass(frozen=True)
class _Job:
    """A training run, set up: its directory, config, data, model, optimizer, checkpoints and compiled steps."""

    args: argparse.Namespace
    run_dir: Path
    cfg: Dict[str, Any]
    dataset: Any  # data.Dataset, validation held out
    recipe: Recipe
    model: Any
    dp: Any  # parallel.DataParallel
    steps_per_epoch: int
    tx: Any  # the optax optimizer
    ckpts: Any  # checkpoints.RunCheckpoints
    train_step: Any
    eval_step: Any
    bn_statistics_step: Any
    calibration_images: Any  # a fixed, seeded subset of clean training images for re-estimating BatchNorm statistics
    near_copies: Any  # bool per test image: has a near-copy in train
    start: Any = None  # weights.Weights of --init-from, loaded by a new run's setup

    @property
    def seed(self) -> int:
        return self.cfg["seed"]

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def meta(self, epoch: int, step_in_epoch: int, sums: Dict[str, Any]) -> Dict[str, Any]:
        """A checkpoint's `meta` item: where in the epoch loop its state stands."""
        return {"epoch": epoch, "step_in_epoch": step_in_epoch, "epoch_sums": sums, "seed": self.seed}

    def say(self, *args, **kwargs) -> None:
        """Print on the primary process only."""
        if self.dp.is_primary:
            print(*args, **kwargs)


@dataclasses.dataclass
class _Progress:
    """Where a run stands: the train state, the epoch, the steps of it done and their sums, the epochs' records."""

    state: Any
    epoch: int = 0  # the epoch under way, from 0
    start: int = 0  # steps of it already done (a run resumed mid-epoch)
    sums: Dict[str, Any] = dataclasses.field(default_factory=_no_sums)
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


def _setup(args, place: RunDirectory) -> _Job:
    """Processes and devices, the run directory and its config, the data, the model and the optimizer."""
    import numpy as np

    from .checkpoints import RunCheckpoints, model_from_config, read_config
    from .data import hold_out_validation, load_dataset, near_copy_mask
    from .parallel import DataParallel, initialize_distributed

    initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    dp = DataParallel.over_all_devices()
    if dp.process_count > 1 and not (args.run or args.resume):
        raise UserError("multi-process training needs --run NAME so that every process writes the same run")
    run_dir = place.prepare(dp.is_primary)
    config_changed = True
    if args.resume:
        cfg = read_config(run_dir)
        config_changed = _check_resume(args, cfg, run_dir)
        if args.epochs:
            cfg["recipe"]["epochs"] = args.epochs
    else:
        cfg = None
    data_dir = cli.recorded_data_dir(cfg, run_dir) if cfg else cli.data_dir(args.data_dir)
    start = _starting_weights(args.init_from) if cfg is None and args.init_from else None
    if cfg:
        image_size = tuple(cfg["image_size"]) if cfg.get("image_size") else None
    elif args.image_size:
        image_size = tuple(args.image_size)
    else:  # fine-tuning sees images at the size the starting model was trained at
        image_size = tuple(start.model.input_shape[:2]) if start else None
    dataset = load_dataset(data_dir, image_size)
    new_config = cfg is None
    if new_config:
        cfg = _new_config(args, dataset, image_size, start)
    seed = cfg["seed"]
    if not (cfg.get("val_at_least_one") and dataset.validation is not None):  # else a val*/ folder is held out
        dataset = hold_out_validation(dataset, cfg["val_fraction"], seed, cfg.get("val_at_least_one", False))
    if new_config and cfg["init_from"] and args.batch_size is None:  # a few photos: one batch may hold them all
        cfg["recipe"]["batch_size"] = min(cfg["recipe"]["batch_size"], len(dataset.train.labels))
    recipe = Recipe(**cfg["recipe"])
    model = model_from_config(cfg["model"])
    if model.num_classes != dataset.num_classes or tuple(model.input_shape) != dataset.image_shape:
        raise UserError(
            f"{data_dir}: data ({dataset.num_classes} classes, {dataset.image_shape}) does not fit the run's model"
        )
    _check_against_data(cfg, recipe, dataset)
    steps_per_epoch = len(dataset.train.labels) // recipe.batch_size
    dp.check_batch_size(recipe.batch_size)
    dp.check_batch_size(cfg["eval_batch_size"], "--eval-batch-size")
    if dp.is_primary:
        if not args.resume:
            run_dir = place.create()
        if config_changed:
            place.write_config(cfg)
    calibration = np.random.default_rng([seed, 7]).permutation(len(dataset.train.labels))[
        : recipe.bn_recalibration_images
    ]
    train_step, eval_step, bn_statistics_step = compiled_steps(model, recipe, steps_per_epoch, dp)
    return _Job(
        args=args,
        run_dir=run_dir,
        cfg=cfg,
        dataset=dataset,
        recipe=recipe,
        model=model,
        dp=dp,
        steps_per_epoch=steps_per_epoch,
        tx=compiled_optimizer(recipe, steps_per_epoch),
        ckpts=RunCheckpoints(run_dir),
        train_step=train_step,
        eval_step=eval_step,
        bn_statistics_step=bn_statistics_step,
        calibration_images=_calibration_images(dataset.train.images[calibration], recipe, seed),
        near_copies=near_copy_mask(dataset.test.images, dataset.train.images),
        start=start,
    )


def _calibration_images(images, recipe: Recipe, seed: int):
    """The images BatchNorm statistics are re-estimated on: as they are, or one seeded augmented draw of them."""
    if not recipe.bn_recalibration_augmented or not len(images):
        return images
    import jax
    import numpy as np

    from .augment import augment

    key = jax.random.fold_in(jax.random.key(seed), 7)
    augmented = augment(key, jax.numpy.asarray(images, jax.numpy.float32) / 255.0, recipe.augment_policy)
    return np.asarray(jax.numpy.round(augmented * 255.0)).astype(np.uint8)


def _start(job: _Job) -> _Progress:
    """A fresh state (with a fresh metrics.jsonl), or with --resume the newest checkpoint that restores."""
    from .checkpoints import abstract_train_state
    from .steps import create_state

    recipe, dp, metrics_path = job.recipe, job.dp, job.metrics_path
    if not job.args.resume or not job.ckpts.steps():
        if job.args.resume:
            print(f"{job.run_dir} has no checkpoint yet: starting it from the beginning")
        variables = _initial_variables(job.model, job.cfg, job.start)
        state = dp.replicate(create_state(variables, job.tx, job.seed, bool(recipe.ema_decay)))
        if dp.is_primary:
            metrics_path.unlink(missing_ok=True)
        return _Progress(state)
    abstract = abstract_train_state(job.model, job.tx, job.seed, bool(recipe.ema_decay), dp.replicated)
    state, meta, restored_step = job.ckpts.restore_latest(abstract)
    epoch = meta["epoch"]
    history = [h for h in _read_jsonl(metrics_path) if h["epoch"] <= epoch]  # drop epochs after the restored checkpoint
    if dp.is_primary:
        from .files import write_text_atomic

        write_text_atomic(metrics_path, "".join(json.dumps(h) + "\n" for h in history))
    print(f"resuming {job.run_dir} at epoch {epoch + 1}, step {restored_step}")
    return _Progress(state, epoch, meta["step_in_epoch"], meta["epoch_sums"], history)


def _train_epoch(job: _Job, progress: _Progress, stop: StopRequest, t0: float) -> bool:
    """The remaining steps of `progress.epoch`. False when a stop request ended the run: the state is saved."""
    from tqdm import tqdm

    from .data import train_batches

    recipe, dp, epoch, start = job.recipe, job.dp, progress.epoch, progress.start
    bar = tqdm(
        total=job.steps_per_epoch,
        initial=start,
        desc=f"epoch {epoch + 1}/{recipe.epochs}",
        unit="step",
        disable=True if job.args.no_progress or not dp.is_primary else None,
        leave=False,
        dynamic_ncols=True,
    )
    for k, (images, labels) in enumerate(
        train_batches(job.dataset.train, recipe.batch_size, job.seed, epoch, start), start
    ):
        progress.state, m = job.train_step(progress.state, *dp.shard(images, labels))
        loss, correct, finite = float(m["loss"]), int(m["correct"]), bool(m["finite"])
        if not finite:
            bar.close()
            kept = (
                f"the last good checkpoint in {job.ckpts.directory} is kept"
                if job.ckpts.steps()
                else "no checkpoint had been saved yet"
            )
            raise UserError(f"loss became {loss} at epoch {epoch + 1}, step {k + 1} (try a lower --lr); {kept}")
        sums = progress.sums
        progress.sums = sums = {
            "loss": sums["loss"] + loss * len(labels),
            "correct": sums["correct"] + correct,
            "seen": sums["seen"] + len(labels),
        }
        elapsed = time.perf_counter() - t0
        bar.set_postfix(
            loss=f"{sums['loss'] / sums['seen']:.4f}",
            img_s=f"{(k + 1 - start) * recipe.batch_size / max(elapsed, 1e-9):.1f}",
        )
        bar.update(1)
        if stop.signal is not None:
            bar.close()
            step = int(progress.state.step)
            job.ckpts.save(step, progress.state, job.meta(epoch, k + 1, sums))
            job.ckpts.close()
            print(
                f"saved step {step} to {job.ckpts.directory}; continue with: python -m signs_jax.train --resume "
                f"--workdir {job.args.workdir} --run {job.run_dir.name}"
            )
            return False
    bar.close()
    return True


def _evaluate_epoch(job: _Job, progress: _Progress, t0: float, train_seconds: float):
    """(the epoch's metrics record, the weights it evaluated): BatchNorm recalibrated, then validation and test."""
    from .loops import evaluate, recalibrate_batch_stats

    dataset, dp, sums, eval_batch_size = job.dataset, job.dp, progress.sums, job.cfg["eval_batch_size"]
    variables = progress.state.eval_variables()
    if job.recipe.bn_recalibration_images:
        variables = recalibrate_batch_stats(
            job.bn_statistics_step, variables, job.calibration_images, eval_batch_size, dp
        )
    record = {
        "epoch": progress.epoch + 1,
        "step": int(progress.state.step),
        "train_loss": sums["loss"] / sums["seen"],
        "train_accuracy": sums["correct"] / sums["seen"],
    }
    if dataset.validation is not None:
        record["val_loss"], record["val_accuracy"], _ = evaluate(
            job.eval_step, variables, dataset.validation, eval_batch_size, dp
        )
    if job.recipe.test_each_epoch:
        record.update(_test_record(job, variables))
    record["seconds"] = time.perf_counter() - t0
    record["train_images_per_s"] = sums["seen"] / train_seconds
    return record, variables


def _test_record(job: _Job, variables) -> Dict[str, Any]:
    """Test loss and accuracy, and the accuracy on the test images without a near-copy in train."""
    from .loops import evaluate

    dataset = job.dataset
    loss, accuracy, probs = evaluate(job.eval_step, variables, dataset.test, job.cfg["eval_batch_size"], job.dp)
    correct, clean = probs.argmax(1) == dataset.test.labels, ~job.near_copies
    return {
        "test_loss": loss,
        "test_accuracy": accuracy,
        "test_accuracy_no_near_copies": float(correct[clean].mean()) if clean.any() else None,
    }


def _score(job: _Job, record: Dict[str, Any]) -> Optional[float]:
    """What the kept checkpoint is chosen by: validation accuracy, else test accuracy, else nothing (the newest).

    A fine-tuning run breaks accuracy ties (a few held-out photos tie often, the starting weights included) by
    the lower validation loss.
    """
    if "val_accuracy" in record:
        tie_break = min(record["val_loss"], 1e3) * 1e-9 if job.cfg.get("init_from") else 0.0
        return record["val_accuracy"] - tie_break
    return record.get("test_accuracy")


def _end_epoch(job: _Job, progress: _Progress, t0: float, train_seconds: float) -> None:
    """Evaluate, record the metrics, checkpoint (scored by validation, else test, accuracy), report, plot."""
    from .plots import plot_curves

    record, variables = _evaluate_epoch(job, progress, t0, train_seconds)
    progress.history.append(record)
    if job.dp.is_primary:
        _append_jsonl(job.metrics_path, record)
    score = _score(job, record)
    progress.epoch, progress.start, progress.sums = progress.epoch + 1, 0, _no_sums()
    state = progress.state
    job.ckpts.save(int(state.step), state, job.meta(progress.epoch, 0, progress.sums), score=score, variables=variables)
    val = f"  val {record['val_loss']:.4f}/{record['val_accuracy']:.3f}" if "val_loss" in record else ""
    test = (
        f"  test {record['test_loss']:.4f}/{record['test_accuracy']:.3f}"
        f" (no near-copies {record['test_accuracy_no_near_copies']:.3f})"
        if "test_loss" in record
        else ""
    )
    job.say(
        f"epoch {record['epoch']:3d}/{job.recipe.epochs}  "
        f"train {record['train_loss']:.4f}/{record['train_accuracy']:.3f}{val}"
        f"{test}  {record['seconds']:.1f}s",
        flush=True,
    )
    if job.dp.is_primary:
        plot_curves(progress.history, job.run_dir / "curves.png")


def _write_results(job: _Job, history, final=None) -> None:
    """Result.csv: one row with the run's settings and `final` results (default: its last epoch's)."""
    recipe, final = job.recipe, final or (history[-1] if history else {})
    _write_result_csv(
        job.run_dir / "Result.csv",
        {
            "run": job.run_dir.name,
            "recipe": job.cfg["recipe_name"],
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "lr": recipe.lr,
            "seed": job.seed,
            "test_loss": final.get("test_loss"),
            "test_accuracy": final.get("test_accuracy"),
            "test_accuracy_no_near_copies": final.get("test_accuracy_no_near_copies"),
            "near_copies": int(job.near_copies.sum()),
            "val_accuracy": final.get("val_accuracy"),
            "train_seconds": round(sum(h["seconds"] for h in history), 1),
        },
    )
    print(f"done: test accuracy {final.get('test_accuracy', float('nan')):.4f}; results in {job.run_dir}")


def run(args) -> int:
    """Set up (or resume) a run, train it epoch by epoch, write Result.csv; a stop request saves and returns early.

    A start that fails (or is interrupted) before the first checkpoint removes the run directory it made.
    """
    choose_recipe(args)
    validate_args(args)
    place = RunDirectory(args)
    try:
        return _train(args, place)
    except _Finished as done:
        print(done)
        return 0
    except BaseException:
        place.discard_if_incomplete()
        raise
    finally:
        place.release()


def _train(args, place: RunDirectory) -> int:
    job = _setup(args, place)
    progress = _start(job)
    dataset, recipe, dp = job.dataset, job.recipe, job.dp
    job.say(
        f"run {job.run_dir}: {dataset.source}, {len(dataset.train.labels)} train / "
        f"{len(dataset.test.labels)} test images "
        f"({int(job.near_copies.sum())} test images have a near-copy in train), {job.model.num_classes} classes, "
        f"recipe {job.cfg['recipe_name']}: {recipe.epochs} epochs x {job.steps_per_epoch} steps of {recipe.batch_size}"
        f" on {dp.num_devices} device(s) in {dp.process_count} process(es)"
    )
    if job.cfg.get("init_from") and not job.ckpts.steps():
        _score_start(job, progress)
    with StopRequest() as stop:
        while progress.epoch < recipe.epochs:
            t0 = time.perf_counter()
            if not _train_epoch(job, progress, stop, t0):
                return 0
            _end_epoch(job, progress, t0, train_seconds=time.perf_counter() - t0)
    kept_step = job.ckpts.manager.best_step()
    job.ckpts.close()
    final = _finish_finetuning(job, progress.history, kept_step) if job.cfg.get("init_from") else None
    if dp.is_primary:
        _write_results(job, progress.history, final)
        _calibrate(job)
    return 0


def _calibrate(job: _Job) -> None:
    """The best checkpoint's confidence temperature, fitted on the validation split (docs/calibration.md)."""
    from .calibrate import NO_VALIDATION, describe, fit_run

    record = fit_run(job.run_dir, job.cfg["eval_batch_size"])
    print(f"calibration: {describe(record)}" if record else f"calibration: {NO_VALIDATION.format(run=job.run_dir)}")


def _score_start(job: _Job, progress: _Progress) -> None:
    """Score the starting weights on the held-out images and save them as step 0: a candidate to keep that
    fine-tuning has to beat."""
    from .loops import evaluate

    if job.dataset.validation is None:
        job.say(
            "no image held out (--val-fraction 0, or no class has two): the fine-tuned weights are kept "
            "without a check against the starting ones"
        )
        return
    t0 = time.perf_counter()
    variables = progress.state.eval_variables()
    record = {"epoch": 0, "step": 0}
    record["val_loss"], record["val_accuracy"], _ = evaluate(
        job.eval_step, variables, job.dataset.validation, job.cfg["eval_batch_size"], job.dp
    )
    record["seconds"] = time.perf_counter() - t0
    progress.history.append(record)
    if job.dp.is_primary:
        _append_jsonl(job.metrics_path, record)
    job.ckpts.save(0, progress.state, job.meta(0, 0, _no_sums()), score=_score(job, record), variables=variables)
    job.say(
        f"starting weights: val {record['val_loss']:.4f}/{record['val_accuracy']:.3f} "
        f"on {len(job.dataset.validation.labels)} held-out images",
        flush=True,
    )


def _finish_finetuning(job: _Job, history, kept_step) -> Optional[Dict[str, Any]]:
    """Say which weights the run keeps (the starting ones when no epoch beat them on the held-out images); with a
    recipe that does not test every epoch, the test results of those weights."""
    from .checkpoints import restore_variables

    start = next((h for h in history if h["epoch"] == 0), None)
    if start is not None and kept_step == 0:
        best = max(
            (h for h in history if h["epoch"] > 0), key=lambda h: (h["val_accuracy"], -h["val_loss"]), default=None
        )
        than = f" (best epoch {best['val_accuracy']:.3f})" if best else ""
        job.say(
            f"fine-tuning did not beat the starting weights on the {len(job.dataset.validation.labels)} held-out "
            f"images (accuracy {start['val_accuracy']:.3f}{than}): the run keeps the starting weights"
        )
    kept = next((h for h in history if h["step"] == kept_step), None)
    if kept is not None and "test_accuracy" in kept:
        return kept
    _, variables, step = restore_variables(job.run_dir)
    record = _test_record(job, job.dp.replicate(variables))
    epoch = next((h["epoch"] for h in history if h["step"] == step), None)
    job.say(
        f"kept weights (step {step}{'' if epoch is None else f', epoch {epoch}'}): "
        f"test {record['test_loss']:.4f}/{record['test_accuracy']:.3f}",
        flush=True,
    )
    return {**(kept or (history[-1] if history else {})), **record}


def main(argv=None) -> int:
    from .errors import run_cli
    from .parallel import multi_process

    # the compilation cache serves single-process runs only
    return run_cli(build_parser, run, argv, compilation_cache=lambda args: not multi_process(args.coordinator))


if __name__ == "__main__":
    sys.exit(main())
