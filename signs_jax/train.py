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

from . import config
from .errors import UserError
from .recipes import RECIPES, Recipe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m signs_jax.train",
        description="Train the course ResNet50 on SIGNS (or on image folders). Checkpoints, metrics.jsonl, "
        "curves.png and Result.csv go to <workdir>/<run>/.",
    )
    p.add_argument("--recipe", choices=sorted(RECIPES), default="default", help="hyper-parameter set (default: %(default)s)")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, batch order and augmentation (default: 0)")
    p.add_argument("--data-dir", help=f"SIGNS h5 pair or image folders (default: ${config.DATA_DIR_ENV}, then ./datasets)")
    p.add_argument("--val-fraction", type=float, default=0.0, help="hold out this stratified fraction of train for validation")
    p.add_argument("--workdir", default=str(config.DEFAULT_WORKDIR), help="where runs are written (default: %(default)s)")
    p.add_argument("--run", help="run name (default: <recipe>-seed<seed>-<time>); with --resume: the run to continue")
    p.add_argument("--resume", action="store_true", help="continue the newest run in --workdir (or --run)")
    p.add_argument("--init-from", metavar="PATH", help="start from a Keras .h5 or a run directory; the head is replaced when the class count differs")
    p.add_argument("--width", type=float, default=1.0, help="filter-count multiplier (default: 1, the original)")
    p.add_argument("--stage-sizes", default="3,4,6,3", help="blocks per stage (default: %(default)s, ResNet50)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize image-folder data to H W")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype (params stay float32)")
    p.add_argument("--conv", default=None, help="convolution implementation, xla or matmul (default: matmul on CPU, "
                   "xla on GPU/TPU, chosen again wherever the run is resumed or its weights are used)")
    p.add_argument("--eval-batch-size", type=int, default=120)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    dist = p.add_argument_group("multi-process training (jax.distributed; or SIGNS_JAX_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)")
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator service")
    dist.add_argument("--num-processes", type=int, help="number of processes in the run")
    dist.add_argument("--process-id", type=int, help="this process's index, 0..N-1")
    return p


# ------------------------------------------------------------------------------------------ setup


def _prepare_run_dir(args) -> Path:
    workdir = Path(args.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{workdir}: cannot create the work directory ({err.strerror})") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"{workdir}: work directory is not writable")
    if args.resume:
        from .checkpoints import newest_run

        run_dir = workdir / args.run if args.run else newest_run(workdir)
        if run_dir is None or not (run_dir / "config.json").exists():
            raise UserError(f"{run_dir or workdir}: no run to resume")
        return run_dir
    name = args.run or f"{args.recipe}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = workdir / name
    if (run_dir / "config.json").exists():
        raise UserError(f"{run_dir}: run already exists (add --resume to continue it, or choose another --run)")
    return run_dir  # created once the data has loaded, so a failed start leaves nothing behind


def _new_config(args, dataset) -> Dict[str, Any]:
    from .models import CONV_IMPLEMENTATIONS

    recipe = RECIPES[args.recipe].replace(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    conv = args.conv  # None: the default of the backend the model is built on, at every restore too
    if conv is not None and conv not in CONV_IMPLEMENTATIONS:
        raise UserError(f"--conv {conv}: choose from {', '.join(sorted(CONV_IMPLEMENTATIONS))}")
    try:
        stage_sizes = [int(s) for s in args.stage_sizes.split(",")]
    except ValueError:
        raise UserError(f"--stage-sizes {args.stage_sizes!r}: expected four comma-separated block counts") from None
    if len(stage_sizes) != 4 or min(stage_sizes) < 1:
        raise UserError(f"--stage-sizes {args.stage_sizes!r}: expected four positive block counts")
    return {
        "recipe_name": args.recipe,
        "recipe": dataclasses.asdict(recipe),
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "data_dir": str(config.data_dir(args.data_dir)),
        "image_size": list(args.image_size) if args.image_size else None,
        "init_from": args.init_from,
        "eval_batch_size": args.eval_batch_size,
        "model": {
            "num_classes": dataset.num_classes,
            "class_names": list(dataset.class_names),
            "width": args.width,
            "stage_sizes": stage_sizes,
            "input_shape": list(dataset.image_shape),
            "dtype": args.dtype,
            "conv": conv,
            "bn_momentum": recipe.bn_momentum,
        },
    }


def _initial_variables(model, cfg):
    import jax

    from .models import init_variables

    variables = init_variables(model, jax.random.key(cfg["seed"]))
    if not cfg.get("init_from"):
        return variables
    source = Path(cfg["init_from"])
    if source.suffix.lower() in (".h5", ".hdf5", ".keras"):
        from .keras_h5 import load_keras_h5

        _, loaded = load_keras_h5(source)
    else:
        from .checkpoints import restore_variables

        _, loaded, _ = restore_variables(source)
    return transfer(variables, loaded, str(source))


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
        lambda path, leaf: leaf if np.shape(flat_source[path]) != leaf.shape else jax.numpy.asarray(flat_source[path]), target
    )


# ------------------------------------------------------------------------------------------ loop


class _CompiledSteps:
    """Jitted steps per (model, recipe, steps per epoch): runs in one process share their compiles."""

    @functools.lru_cache(maxsize=8)
    def optimizer(self, recipe: Recipe, steps_per_epoch: int):
        from .steps import make_optimizer

        return make_optimizer(recipe, steps_per_epoch)

    @functools.lru_cache(maxsize=8)
    def __call__(self, model, recipe: Recipe, steps_per_epoch: int, dp):
        from .steps import make_bn_statistics_step, make_eval_step, make_train_step

        return (make_train_step(model, self.optimizer(recipe, steps_per_epoch), recipe, dp), make_eval_step(model, dp),
                make_bn_statistics_step(model, dp))


compiled_steps = _CompiledSteps()


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
        print(f"\n{signal.Signals(signum).name}: finishing the current step and saving a checkpoint...", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        return False


def _append_jsonl(path: Path, record: Dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _write_result_csv(path: Path, row: Dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    tmp.replace(path)


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


def _setup(args) -> _Job:
    """Processes and devices, the run directory and its config, the data, the model and the optimizer."""
    import numpy as np

    from .checkpoints import RunCheckpoints, model_from_config, read_config
    from .data import hold_out_validation, load_dataset, near_copy_mask
    from .parallel import DataParallel, initialize_distributed

    initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    dp = DataParallel.over_all_devices()
    if dp.process_count > 1 and not (args.run or args.resume):
        raise UserError("multi-process training needs --run NAME so that every process writes the same run")
    run_dir = _prepare_run_dir(args)
    if args.resume:
        cfg = read_config(run_dir)
        if args.epochs:
            cfg["recipe"]["epochs"] = args.epochs
    else:
        cfg = None
    data_dir = Path(cfg["data_dir"]) if cfg else config.data_dir(args.data_dir)
    image_size = tuple(cfg["image_size"]) if cfg and cfg.get("image_size") else (tuple(args.image_size) if args.image_size else None)
    dataset = load_dataset(data_dir, image_size)
    if cfg is None:
        cfg = _new_config(args, dataset)
    if dp.is_primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    seed = cfg["seed"]
    dataset = hold_out_validation(dataset, cfg["val_fraction"], seed)
    recipe = Recipe(**cfg["recipe"])
    model = model_from_config(cfg["model"])
    if model.num_classes != dataset.num_classes or tuple(model.input_shape) != dataset.image_shape:
        raise UserError(f"{data_dir}: data ({dataset.num_classes} classes, {dataset.image_shape}) does not fit the run's model")

    steps_per_epoch = len(dataset.train.labels) // recipe.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"batch size {recipe.batch_size} is larger than the training set ({len(dataset.train.labels)} images)")
    dp.check_batch_size(recipe.batch_size)
    dp.check_batch_size(cfg["eval_batch_size"], "--eval-batch-size")
    calibration = np.random.default_rng([seed, 7]).permutation(len(dataset.train.labels))[: recipe.bn_recalibration_images]
    train_step, eval_step, bn_statistics_step = compiled_steps(model, recipe, steps_per_epoch, dp)
    return _Job(
        args=args, run_dir=run_dir, cfg=cfg, dataset=dataset, recipe=recipe, model=model, dp=dp,
        steps_per_epoch=steps_per_epoch, tx=compiled_steps.optimizer(recipe, steps_per_epoch), ckpts=RunCheckpoints(run_dir),
        train_step=train_step, eval_step=eval_step, bn_statistics_step=bn_statistics_step,
        calibration_images=dataset.train.images[calibration],
        near_copies=near_copy_mask(dataset.test.images, dataset.train.images),
    )


def _start(job: _Job) -> _Progress:
    """A fresh state (with a fresh metrics.jsonl), or with --resume the newest checkpoint that restores."""
    from .checkpoints import abstract_train_state
    from .steps import create_state

    recipe, dp, metrics_path = job.recipe, job.dp, job.metrics_path
    if not job.args.resume:
        state = dp.replicate(create_state(_initial_variables(job.model, job.cfg), job.tx, job.seed, bool(recipe.ema_decay)))
        if dp.is_primary:
            metrics_path.unlink(missing_ok=True)
        return _Progress(state)
    abstract = abstract_train_state(job.model, job.tx, job.seed, bool(recipe.ema_decay), dp.replicated)
    state, meta, restored_step = job.ckpts.restore_latest(abstract)
    epoch = meta["epoch"]
    history = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    history = [h for h in history if h["epoch"] <= epoch]  # drop epochs after the restored checkpoint
    if dp.is_primary:
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))
    print(f"resuming {job.run_dir} at epoch {epoch + 1}, step {restored_step}")
    return _Progress(state, epoch, meta["step_in_epoch"], meta["epoch_sums"], history)


def _train_epoch(job: _Job, progress: _Progress, stop: StopRequest, t0: float) -> bool:
    """The remaining steps of `progress.epoch`. False when a stop request ended the run: the state is saved."""
    from tqdm import tqdm

    from .data import train_batches

    recipe, dp, epoch, start = job.recipe, job.dp, progress.epoch, progress.start
    bar = tqdm(total=job.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="step",
               disable=True if job.args.no_progress or not dp.is_primary else None, leave=False, dynamic_ncols=True)
    for k, (images, labels) in enumerate(train_batches(job.dataset.train, recipe.batch_size, job.seed, epoch, start), start):
        progress.state, m = job.train_step(progress.state, *dp.shard(images, labels))
        loss, correct, finite = float(m["loss"]), int(m["correct"]), bool(m["finite"])
        if not finite:
            bar.close()
            raise UserError(
                f"loss became {loss} at epoch {epoch + 1}, step {k + 1} (try a lower --lr); "
                f"the last good checkpoint in {job.ckpts.directory} is kept"
            )
        sums = progress.sums
        progress.sums = sums = {"loss": sums["loss"] + loss * len(labels), "correct": sums["correct"] + correct,
                                "seen": sums["seen"] + len(labels)}
        elapsed = time.perf_counter() - t0
        bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.4f}", img_s=f"{(k + 1 - start) * recipe.batch_size / max(elapsed, 1e-9):.1f}")
        bar.update(1)
        if stop.signal is not None:
            bar.close()
            step = int(progress.state.step)
            job.ckpts.save(step, progress.state, job.meta(epoch, k + 1, sums))
            job.ckpts.close()
            print(f"saved step {step} to {job.ckpts.directory}; continue with: python -m signs_jax.train --resume "
                  f"--workdir {job.args.workdir} --run {job.run_dir.name}")
            return False
    bar.close()
    return True


def _evaluate_epoch(job: _Job, progress: _Progress, t0: float, train_seconds: float):
    """(the epoch's metrics record, the weights it evaluated): BatchNorm recalibrated, then validation and test."""
    from .steps import evaluate, recalibrate_batch_stats

    dataset, dp, sums, eval_batch_size = job.dataset, job.dp, progress.sums, job.cfg["eval_batch_size"]
    variables = progress.state.eval_variables()
    if job.recipe.bn_recalibration_images:
        variables = recalibrate_batch_stats(job.bn_statistics_step, variables, job.calibration_images, eval_batch_size, dp)
    record = {"epoch": progress.epoch + 1, "step": int(progress.state.step), "train_loss": sums["loss"] / sums["seen"],
              "train_accuracy": sums["correct"] / sums["seen"]}
    if dataset.validation is not None:
        record["val_loss"], record["val_accuracy"], _ = evaluate(job.eval_step, variables, dataset.validation, eval_batch_size, dp)
    record["test_loss"], record["test_accuracy"], probs = evaluate(job.eval_step, variables, dataset.test, eval_batch_size, dp)
    correct, clean = probs.argmax(1) == dataset.test.labels, ~job.near_copies
    record["test_accuracy_no_near_copies"] = float(correct[clean].mean()) if clean.any() else None
    record["seconds"] = time.perf_counter() - t0
    record["train_images_per_s"] = sums["seen"] / train_seconds
    return record, variables


def _end_epoch(job: _Job, progress: _Progress, t0: float, train_seconds: float) -> None:
    """Evaluate, record the metrics, checkpoint (scored by validation, else test, accuracy), report, plot."""
    from .plots import plot_curves

    record, variables = _evaluate_epoch(job, progress, t0, train_seconds)
    progress.history.append(record)
    if job.dp.is_primary:
        _append_jsonl(job.metrics_path, record)
    score = record.get("val_accuracy", record["test_accuracy"])
    progress.epoch, progress.start, progress.sums = progress.epoch + 1, 0, _no_sums()
    state = progress.state
    job.ckpts.save(int(state.step), state, job.meta(progress.epoch, 0, progress.sums), score=score, variables=variables)
    val = f"  val {record['val_loss']:.4f}/{record['val_accuracy']:.3f}" if "val_loss" in record else ""
    job.say(f"epoch {record['epoch']:3d}/{job.recipe.epochs}  train {record['train_loss']:.4f}/{record['train_accuracy']:.3f}{val}"
            f"  test {record['test_loss']:.4f}/{record['test_accuracy']:.3f}"
            f" (no near-copies {record['test_accuracy_no_near_copies']:.3f})  {record['seconds']:.1f}s", flush=True)
    if job.dp.is_primary:
        plot_curves(progress.history, job.run_dir / "curves.png")


def _write_results(job: _Job, history) -> None:
    """Result.csv: one row with the run's settings and its last epoch's results."""
    recipe, final = job.recipe, history[-1] if history else {}
    _write_result_csv(job.run_dir / "Result.csv", {
        "run": job.run_dir.name, "recipe": job.cfg["recipe_name"], "epochs": recipe.epochs, "batch_size": recipe.batch_size,
        "lr": recipe.lr, "seed": job.seed, "test_loss": final.get("test_loss"), "test_accuracy": final.get("test_accuracy"),
        "test_accuracy_no_near_copies": final.get("test_accuracy_no_near_copies"), "near_copies": int(job.near_copies.sum()),
        "val_accuracy": final.get("val_accuracy"), "train_seconds": round(sum(h["seconds"] for h in history), 1),
    })
    print(f"done: test accuracy {final.get('test_accuracy', float('nan')):.4f}; results in {job.run_dir}")


def run(args) -> int:
    """Set up (or resume) a run, train it epoch by epoch, write Result.csv; a stop request saves and returns early."""
    job = _setup(args)
    progress = _start(job)
    dataset, recipe, dp = job.dataset, job.recipe, job.dp
    job.say(f"run {job.run_dir}: {dataset.source}, {len(dataset.train.labels)} train / {len(dataset.test.labels)} test images "
            f"({int(job.near_copies.sum())} test images have a near-copy in train), {job.model.num_classes} classes, "
            f"recipe {job.cfg['recipe_name']}: {recipe.epochs} epochs x {job.steps_per_epoch} steps of {recipe.batch_size}"
            f" on {dp.num_devices} device(s) in {dp.process_count} process(es)")
    with StopRequest() as stop:
        while progress.epoch < recipe.epochs:
            t0 = time.perf_counter()
            if not _train_epoch(job, progress, stop, t0):
                return 0
            _end_epoch(job, progress, t0, train_seconds=time.perf_counter() - t0)
    job.ckpts.close()
    if dp.is_primary:
        _write_results(job, progress.history)
    return 0


def main(argv=None) -> int:
    from .errors import run_cli
    from .parallel import multi_process

    # the compilation cache serves single-process runs only
    return run_cli(build_parser, run, argv, compilation_cache=lambda args: not multi_process(args.coordinator))


if __name__ == "__main__":
    sys.exit(main())
