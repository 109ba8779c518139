"""`train_and_evaluate(config, workdir)`: one training run, from a TrainConfig to a run directory and its results.

The loop is plain Python around one jit-compiled train step; batches come from a permutation that depends
only on (seed, epoch), and the step's randomness only on (seed, step), so a run resumed from any checkpoint,
mid-epoch included, continues with exactly the batches and numbers it would have had.

Nothing here changes the process: no signal handlers (unless asked), no XLA flags, no allocator; the
command-line tool (`python -m signs_jax.train`) adds those around this function.
"""

import contextlib
import dataclasses
import functools
import gc
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import cli
from . import config as configuration
from .config import TrainConfig
from .errors import ENVIRONMENT_ERRNOS, MachineError, SaveFailed, UserError, write_error
from .recipes import Recipe
from .rundir import RunDirectory, append_jsonl, find_run, read_jsonl

METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a run produced. `test_metrics` holds the kept weights' test results (`test_accuracy`, `test_loss`,
    `test_accuracy_no_near_copies`, and `val_accuracy` when images were held out)."""

    run_dir: Path
    config: TrainConfig  # as resolved and recorded in config.json
    history: List[Dict[str, Any]]  # one record per epoch, as metrics.jsonl has them
    test_metrics: Dict[str, Any]
    finished: bool = True  # False: stopped by a signal; the state is saved, resume to continue

    @property
    def test_accuracy(self) -> Optional[float]:
        return self.test_metrics.get("test_accuracy")


class NothingToDo(Exception):
    """A resumed run that has nothing left to do."""


def train_and_evaluate(
    config: Optional[TrainConfig] = None,
    workdir=configuration.DEFAULT_WORKDIR,
    *,
    resume: bool = False,
    run_name: Optional[str] = None,
    progress: bool = True,
    handle_signals: bool = False,
    tensorboard: bool = True,
) -> TrainResult:
    """Train `config` in a new run directory under `workdir` (`run_name`, default <recipe>-seed<seed>-<time>)
    and evaluate it on the test set after every epoch.

    resume: continue `run_name` (default: the newest run in `workdir`) from its newest checkpoint. `config`
    may be None (the run's own) or must equal the run's config, except for more `recipe.epochs`; a resumed
    run that has trained every epoch returns its results without training.
    progress: a progress bar per epoch. tensorboard: event files in the run directory (with the optional
    tensorboardX). handle_signals: SIGINT/SIGTERM finish the current step, save a
    checkpoint and return (`finished` False); a process-wide change, which the command-line tool makes.
    A start that fails before its first checkpoint removes the run directory it made.
    """
    from .parallel import DataParallel

    dp = DataParallel.over_all_devices()
    if dp.process_count > 1 and not (run_name or resume):
        raise UserError("multi-process training needs --run NAME so that every process writes the same run")
    place = RunDirectory(Path(workdir), run_name, primary=dp.is_primary)
    try:
        # Installed before the set-up too: a Ctrl-C raised as KeyboardInterrupt at an arbitrary point can land in
        # a callback that swallows it (JAX's garbage-collection hook); as a request it is acted on for sure.
        with StopRequest(handle_signals) as stop:
            job = dataclasses.replace(_setup(config, place, dp, resume), tensorboard=tensorboard)
            try:
                return _train(job, progress, stop)
            except SaveFailed:
                raise
            except MachineError as err:  # a full disk while writing metrics, plots or results
                raise MachineError(f"{err}; {job.ckpts.kept()}") from None
            except OSError as err:
                if err.errno not in ENVIRONMENT_ERRNOS:
                    raise
                raise MachineError(f"{write_error(err.filename or place.path, err)}; {job.ckpts.kept()}") from None
    except NothingToDo as done:
        print(done)
        return _stored_result(place.path)
    except BaseException:
        place.discard_if_incomplete()
        raise
    finally:
        place.release()


def resumed_config(stored: TrainConfig, given: Optional[TrainConfig], run_dir: Path, label=lambda key: key):
    """The config a resumed run continues with: the stored one, with more epochs when `given` asks for them.

    Any other difference is one line naming each key (`label`: what the user typed for it).
    """
    from .checkpoints import checkpointed_epochs

    stored = stored.with_recipe()
    conflicts = configuration.resume_conflicts(stored, given) if given is not None else []
    if conflicts:
        mine, theirs = configuration.flatten(stored), configuration.flatten(given)
        names = ", ".join(
            f"{label(key)} ({_shown(mine[key])} in the run, {_shown(theirs[key])} given)" for key in conflicts
        )
        raise UserError(
            f"{run_dir}: resuming keeps the run's config, and {names} differ from it "
            "(leave them out, or start a new run; only the epoch count may grow)"
        )
    epochs = given.recipe.epochs if given is not None and given.recipe is not None else stored.recipe.epochs
    done = checkpointed_epochs(run_dir) or 0
    if epochs < done:
        raise UserError(
            f"{label('recipe.epochs')} {epochs}: run {run_dir} has already trained {done} epochs; give at least {done}"
        )
    if done >= epochs:
        raise NothingToDo(
            f"run {run_dir} has finished its {done} epochs: nothing to do "
            f"(add --epochs N with N above {done} to train longer)"
        )
    if epochs == stored.recipe.epochs:
        return stored
    run = dataclasses.replace(
        stored.run, epochs_extended_from=stored.run.epochs_extended_from + (stored.recipe.epochs,)
    )
    return dataclasses.replace(stored, recipe=dataclasses.replace(stored.recipe, epochs=epochs), run=run)


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def resolve(config: TrainConfig, dataset, start=None) -> TrainConfig:
    """Fill in what a run takes from its data and starting model: recorded, so that it trains again the same."""
    config = config.with_recipe()
    model, recipe = config.model, config.recipe
    stage_sizes = model.stage_sizes
    if stage_sizes is None:  # fine-tuning keeps the starting model's architecture
        stage_sizes = tuple(start.model.stage_sizes) if start else configuration.RESNET50_STAGE_SIZES
    width = model.width
    if width is None:
        width = start.model.stem_filters / configuration.RESNET50_STEM_FILTERS if start else 1.0
    model = dataclasses.replace(
        model,
        dtype=model.dtype or recipe.dtype or "float32",
        width=width,
        stage_sizes=tuple(stage_sizes),
        num_classes=dataset.num_classes,
        class_names=tuple(dataset.class_names),
        input_shape=tuple(dataset.image_shape),
    )
    run = config.run
    if start is not None:  # a work directory names the run it held then: a run started again starts the same
        run = dataclasses.replace(run, init_from=str(start.run_dir or run.init_from))
    if config.run.init_from and recipe.batch_size > len(dataset.train.labels):
        recipe = recipe.replace(batch_size=len(dataset.train.labels))  # a few photos: one batch holds them all
    return dataclasses.replace(config, model=model, recipe=recipe, run=run)


def load_run_data(config: TrainConfig, directory: Optional[Path] = None, split_file: Optional[Path] = None):
    """The data of a run as it trains on it: its directory (default: as recorded), image size and splits (class
    folders split into train and test by data.test_fraction and the seed, checked against `split_file` when
    it exists; then the validation hold-out, and the recipe's rehearsal of SIGNS added to the training part)."""
    from .data import hold_out_validation, load_run_test_data, with_rehearsal

    directory = Path(directory) if directory is not None else cli.data_dir(config.data.dir)
    data = config.data
    dataset = load_run_test_data(
        directory, data.image_size, data.test_fraction, config.run.seed, split_file, data.decoding
    )
    if not (data.val_at_least_one and dataset.validation is not None):  # else image folders with a val/ folder
        dataset = hold_out_validation(
            dataset, config.recipe.val_fraction, config.run.seed, at_least_one=config.data.val_at_least_one
        )
    return with_rehearsal(dataset, config.recipe.rehearsal_per_class, config.run.seed, data.decoding)


def _check_against_data(config: TrainConfig, dataset) -> None:
    """Values that depend on the data: one line naming the key."""
    import numpy as np

    from .data import check_trainable

    check_trainable(dataset)
    height, width = dataset.image_shape[:2]
    if min(height, width) < configuration.MIN_IMAGE_SIDE:
        side = configuration.MIN_IMAGE_SIDE
        raise UserError(
            f"{dataset.source}: images of {height}x{width} are smaller than the model's smallest input "
            f"({side}x{side}); pass --image-size"
        )
    per_class = np.bincount(dataset.train.labels, minlength=dataset.num_classes)
    if config.recipe.val_fraction > 0 and per_class.min() == 0:
        empty = dataset.class_names[int(per_class.argmin())]
        raise UserError(f"--val-fraction {config.recipe.val_fraction}: leaves class {empty} without a training image")
    if config.recipe.batch_size > len(dataset.train.labels):
        raise UserError(
            f"--batch-size {config.recipe.batch_size}: larger than the training set "
            f"({len(dataset.train.labels)} images)"
        )


def _starting_weights(source: str):
    """run.init_from, resolved as predict resolves --weights (`weights.load_weights`)."""
    from .weights import load_weights

    return load_weights(source, flag="--init-from")


def _initial_variables(model, config: TrainConfig, start=None):
    """Fresh variables for the run's model; with run.init_from, every weight of the starting model that fits."""
    import jax

    from .models import init_variables

    variables = init_variables(model, jax.random.key(config.run.seed))
    if not config.run.init_from:
        return variables
    start = start or _starting_weights(config.run.init_from)
    return transfer(variables, start.variables, config.run.init_from)


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
    extra = ["/".join(k.key for k in path) for path in flat_source if path not in flat_target]
    if extra:  # a deeper or differently built model: its blocks would be dropped without a word
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        bad.append(f"{extra[0]}{more} {'have' if more else 'has'} no place in the model (other stage sizes?)")
    if bad:
        raise UserError(f"{name}: weights do not fit the model: " + ", ".join(bad))
    if kept_head:
        print(f"--init-from {name}: class count differs, the Dense head starts fresh")
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf if np.shape(flat_source[path]) != leaf.shape else jax.numpy.asarray(flat_source[path]),
        target,
    )


# ------------------------------------------------------------------------------------------ setup


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


def _no_sums() -> Dict[str, Any]:
    return {"loss": 0.0, "correct": 0, "seen": 0}


@dataclasses.dataclass(frozen=True)
class _Job:
    """A training run, set up: its directory, config, data, model, optimizer, checkpoints and compiled steps."""

    run_dir: Path
    config: TrainConfig  # resolved
    resumed: bool
    dataset: Any  # data.Dataset, validation held out
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
    start: Any = None  # weights.Weights of run.init_from, loaded by a new run's setup
    tensorboard: bool = True  # write TensorBoard event files (when tensorboardX is installed)

    @property
    def recipe(self) -> Recipe:
        return self.config.recipe

    @property
    def seed(self) -> int:
        return self.config.run.seed

    @property
    def eval_batch_size(self) -> int:
        return self.config.run.eval_batch_size

    @functools.cached_property
    def learning_rate(self):
        from .steps import learning_rate_schedule

        schedule = learning_rate_schedule(self.recipe, self.steps_per_epoch)
        return schedule if callable(schedule) else (lambda step: schedule)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

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
    writer: Any  # tensorboard.MetricWriter
    epoch: int = 0  # the epoch under way, from 0
    start: int = 0  # steps of it already done (a run resumed mid-epoch)
    sums: Dict[str, Any] = dataclasses.field(default_factory=_no_sums)
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    step_seconds: List[float] = dataclasses.field(default_factory=list)  # this epoch's steps, as timed


def _setup(given: Optional[TrainConfig], place: RunDirectory, dp, resume: bool) -> _Job:
    """The run directory and its config, the data, the model and the optimizer."""
    import numpy as np

    from .checkpoints import RunCheckpoints, model_from_config, read_train_config
    from .data import SPLIT_FILE, near_copy_mask, write_split

    start = None
    if resume:
        run_dir = place.open_existing(find_run(place.workdir, place.run_name))
        stored = read_train_config(run_dir)
        config = resumed_config(stored, given, run_dir)
        dataset = load_run_data(config, cli.recorded_data_dir(config, run_dir), run_dir / SPLIT_FILE)
        config_changed = config != stored
    else:
        config = (given or TrainConfig()).with_recipe()
        configuration.validate(config)
        place.prepare_new(f"{config.recipe_name}-seed{config.run.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        start = _starting_weights(config.run.init_from) if config.run.init_from else None
        directory = cli.data_dir(config.data.dir)
        data = dataclasses.replace(config.data, dir=cli.data_record(directory))
        if data.image_size is None and start is not None:  # fine-tuning sees images at the starting model's size
            data = dataclasses.replace(data, image_size=tuple(start.model.input_shape[:2]))
        config = dataclasses.replace(config, data=data)
        dataset = load_run_data(config, directory)
        config = resolve(config, dataset, start)
        config_changed = True
    model = model_from_config(config.to_dict()["model"])
    if model.num_classes != dataset.num_classes or tuple(model.input_shape) != dataset.image_shape:
        raise UserError(
            f"{dataset.source}: data ({dataset.num_classes} classes, {dataset.image_shape}) does not fit the "
            "run's model"
        )
    recipe = config.recipe
    _check_against_data(config, dataset)
    steps_per_epoch = len(dataset.train.labels) // recipe.batch_size
    dp.check_batch_size(recipe.batch_size)
    dp.check_batch_size(config.run.eval_batch_size, "--eval-batch-size")
    run_dir = place.path
    if dp.is_primary:
        if not resume:
            run_dir = place.create()
        if config_changed:
            place.write_config(config.to_json())
        if not resume:
            write_split(dataset, run_dir / SPLIT_FILE)
    seed = config.run.seed
    calibration = np.random.default_rng([seed, 7]).permutation(len(dataset.train.labels))[
        : recipe.bn_recalibration_images
    ]
    train_step, eval_step, bn_statistics_step = compiled_steps(model, recipe, steps_per_epoch, dp)
    return _Job(
        run_dir=run_dir,
        config=config,
        resumed=resume,
        dataset=dataset,
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


@functools.lru_cache(maxsize=1)
def compiled_augment():
    """The training augmentation as one compiled function, for the images augmented outside the train step."""
    import jax

    from .augment import augment

    return jax.jit(augment, static_argnums=2)


def _calibration_images(images, recipe: Recipe, seed: int):
    """The images BatchNorm statistics are re-estimated on: as they are, or one seeded augmented draw of them."""
    if not recipe.bn_recalibration_augmented or not len(images):
        return images
    import jax
    import numpy as np

    key = jax.random.fold_in(jax.random.key(seed), 7)
    images = jax.numpy.asarray(images, jax.numpy.float32) / 255.0
    augmented = compiled_augment()(key, images, recipe.augment_policy)
    return np.asarray(jax.numpy.round(augmented * 255.0)).astype(np.uint8)


def _start(job: _Job) -> _Progress:
    """A fresh state (with a fresh metrics.jsonl), or for a resumed run the newest checkpoint that restores."""
    from .checkpoints import abstract_train_state
    from .steps import create_state
    from .tensorboard import MetricWriter

    recipe, dp, metrics_path = job.recipe, job.dp, job.metrics_path
    enabled = job.tensorboard and dp.is_primary
    if not job.resumed or not job.ckpts.steps():
        if job.resumed:
            print(f"{job.run_dir} has no checkpoint yet: starting it from the beginning")
        variables = _initial_variables(job.model, job.config, job.start)
        state = dp.replicate(create_state(variables, job.tx, job.seed, bool(recipe.ema_decay)))
        if dp.is_primary:
            metrics_path.unlink(missing_ok=True)
        writer = MetricWriter(job.run_dir, enabled, purge_step=0)  # events of an earlier failed start go
        _log_augmented_sample(job, writer)
        return _Progress(state, writer)
    abstract = abstract_train_state(job.model, job.tx, job.seed, bool(recipe.ema_decay), dp.replicated)
    state, meta, restored_step = job.ckpts.restore_latest(abstract)
    epoch = meta["epoch"]
    history = [h for h in read_jsonl(metrics_path) if h["epoch"] <= epoch]  # drop epochs after the restored state
    if dp.is_primary:
        from .files import write_text_atomic

        write_text_atomic(metrics_path, "".join(_json_line(h) for h in history))
    print(f"resuming {job.run_dir} at epoch {epoch + 1}, step {restored_step}")
    writer = MetricWriter(job.run_dir, enabled, purge_step=int(restored_step) + 1)
    return _Progress(state, writer, epoch, meta["step_in_epoch"], meta["epoch_sums"], history)


def _log_augmented_sample(job: _Job, writer, count: int = 16) -> None:
    """A few training images as the augmentation shows them to the model (one seeded draw): for TensorBoard."""
    if not writer.active or not job.recipe.augment:
        return
    import jax

    images = jax.numpy.asarray(job.dataset.train.images[:count], jax.numpy.float32) / 255.0
    key = jax.random.fold_in(jax.random.key(job.seed), 11)
    writer.image_grid("images/augmented_batch", 0, compiled_augment()(key, images, job.recipe.augment_policy))


def _json_line(record: Dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


# ------------------------------------------------------------------------------------------ loop


class StopRequest:
    """SIGINT/SIGTERM: finish the current step, save, return. Installed only when asked (the command line)."""

    def __init__(self, install: bool):
        self.install = install
        self.signal: Optional[int] = None

    def __enter__(self):
        if self.install:
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
        if self.install:
            for s, handler in self._old.items():
                signal.signal(s, handler)
        return False


@contextlib.contextmanager
def _heap_frozen():
    """Python's cyclic garbage collector blind to the objects alive before training (JAX's, Flax's, the data's:
    millions): its full collections, which a step's allocations set off every few steps, otherwise walk them
    all inside the step that triggered them. Nothing made during training is exempt."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _train_epoch(job: _Job, progress: _Progress, stop: StopRequest, t0: float, show_bar: bool) -> bool:
    """The remaining steps of `progress.epoch`. False when a stop request ended the run: the state is saved."""
    from tqdm import tqdm

    from .data import train_batches

    recipe, dp, epoch, start = job.recipe, job.dp, progress.epoch, progress.start
    bar = tqdm(
        total=job.steps_per_epoch,
        initial=start,
        desc=f"epoch {epoch + 1}/{recipe.epochs}",
        unit="step",
        disable=True if not show_bar or not dp.is_primary else None,
        leave=False,
        dynamic_ncols=True,
    )
    progress.step_seconds = []
    for k, (images, labels) in enumerate(
        train_batches(job.dataset.train, recipe.batch_size, job.seed, epoch, start), start
    ):
        t_step = time.perf_counter()
        progress.state, m = job.train_step(progress.state, *dp.shard(images, labels))
        loss, correct, finite = float(m["loss"]), int(m["correct"]), bool(m["finite"])
        progress.step_seconds.append(time.perf_counter() - t_step)
        if progress.writer.active:
            step = epoch * job.steps_per_epoch + k + 1
            rate = float(job.learning_rate(step - 1))
            progress.writer.scalars(step, {"loss": loss, "learning_rate": rate}, prefix="train/")
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
            progress.writer.close()
            print(
                f"saved step {step} to {job.ckpts.directory}; continue with: python -m signs_jax.train --resume "
                f"--workdir {job.run_dir.parent} --run {job.run_dir.name}"
            )
            return False
    bar.close()
    return True


def _evaluate_epoch(job: _Job, progress: _Progress, t0: float, train_seconds: float):
    """(the epoch's metrics record, the weights it evaluated): BatchNorm recalibrated, then validation and test."""
    from .loops import evaluate, recalibrate_batch_stats

    dataset, dp, sums, recipe = job.dataset, job.dp, progress.sums, job.recipe
    variables = progress.state.eval_variables()
    # Statistics re-estimated only for weights that are evaluated or saved (a fast recipe's epochs in between
    # are neither).
    used = _saves_epoch(job, progress.epoch + 1) or dataset.validation is not None or recipe.test_each_epoch
    if recipe.bn_recalibration_images and used:
        variables = recalibrate_batch_stats(
            job.bn_statistics_step, variables, job.calibration_images, job.eval_batch_size, dp
        )
    record = {
        "epoch": progress.epoch + 1,
        "step": int(progress.state.step),
        "train_loss": sums["loss"] / sums["seen"],
        "train_accuracy": sums["correct"] / sums["seen"],
    }
    if dataset.validation is not None:
        record["val_loss"], record["val_accuracy"], _ = evaluate(
            job.eval_step, variables, dataset.validation, job.eval_batch_size, dp
        )
    if recipe.test_each_epoch:
        record.update(_test_record(job, variables, progress.writer, record["step"]))
    record["seconds"] = time.perf_counter() - t0
    record["train_seconds"] = train_seconds
    record["train_images_per_s"] = sums["seen"] / train_seconds
    if progress.step_seconds:  # the first step of a process compiles; the median is the steady step
        record["first_step_seconds"] = progress.step_seconds[0]
        record["median_step_seconds"] = statistics.median(progress.step_seconds)
    return record, variables


def _test_record(job: _Job, variables, writer, step: int) -> Dict[str, Any]:
    """Test loss and accuracy, and the accuracy on the test images without a near-copy in train; the confusion
    matrix to TensorBoard."""
    from .evaluate import confusion_matrix
    from .loops import evaluate

    dataset = job.dataset
    loss, accuracy, probs = evaluate(job.eval_step, variables, dataset.test, job.eval_batch_size, job.dp)
    correct, clean = probs.argmax(1) == dataset.test.labels, ~job.near_copies
    if writer.active:
        matrix = confusion_matrix(dataset.test.labels, probs.argmax(1), dataset.num_classes)
        writer.confusion_matrix("images/confusion_matrix", step, matrix, dataset.class_names)
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
        tie_break = min(record["val_loss"], 1e3) * 1e-9 if job.config.run.init_from else 0.0
        return record["val_accuracy"] - tie_break
    return record.get("test_accuracy")


def _saves_epoch(job: _Job, epoch: int) -> bool:
    """Whether the end of `epoch` (counted from 1) is checkpointed: every epoch's, or the last one's only."""
    return job.recipe.save_each_epoch or epoch == job.recipe.epochs


def _end_epoch(job: _Job, progress: _Progress, t0: float, train_seconds: float) -> None:
    """Evaluate, record the metrics, checkpoint (scored by validation, else test, accuracy), report, plot."""
    from .plots import plot_curves

    record, variables = _evaluate_epoch(job, progress, t0, train_seconds)
    progress.history.append(record)
    if job.dp.is_primary:
        append_jsonl(job.metrics_path, record)
    progress.writer.scalars(record["step"], record, prefix="epoch/")
    score = _score(job, record)
    progress.epoch, progress.start, progress.sums = progress.epoch + 1, 0, _no_sums()
    state = progress.state
    if _saves_epoch(job, progress.epoch):
        meta = job.meta(progress.epoch, 0, progress.sums)
        job.ckpts.save(int(state.step), state, meta, score=score, variables=variables)
    val = f"  val {record['val_loss']:.4f}/{record['val_accuracy']:.3f}" if "val_loss" in record else ""
    clean = record.get("test_accuracy_no_near_copies")  # None: every test image has a near-copy in train
    test = (
        f"  test {record['test_loss']:.4f}/{record['test_accuracy']:.3f}"
        f" (no near-copies {'none left' if clean is None else f'{clean:.3f}'})"
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


RESULT_FILE = "Result.csv"


def _write_results(job: _Job, history, final) -> None:
    """Result.csv: one row with the run's settings and results."""
    import csv

    from .files import atomic_write

    recipe = job.recipe
    row = {
        "run": job.run_dir.name,
        "recipe": job.config.recipe_name,
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
    }
    with atomic_write(job.run_dir / RESULT_FILE, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    print(f"done: test accuracy {final.get('test_accuracy', float('nan')):.4f}; results in {job.run_dir}")


TEST_KEYS = ("test_loss", "test_accuracy", "test_accuracy_no_near_copies", "val_loss", "val_accuracy")


def _final_metrics(record: Dict[str, Any]) -> Dict[str, Any]:
    return {key: record[key] for key in TEST_KEYS if key in record}


def _train(job: _Job, show_bar: bool, stop: "StopRequest") -> TrainResult:
    progress = _start(job)
    if stop.signal is not None:  # stopped during the set-up: nothing trained, nothing to save
        raise KeyboardInterrupt
    dataset, recipe, dp = job.dataset, job.recipe, job.dp
    job.say(
        f"run {job.run_dir}: {dataset.source}, {len(dataset.train.labels)} train / "
        f"{len(dataset.test.labels)} test images "
        f"({int(job.near_copies.sum())} test images have a near-copy in train), {job.model.num_classes} classes, "
        f"recipe {job.config.recipe_name}: {recipe.epochs} epochs x {job.steps_per_epoch} steps of "
        f"{recipe.batch_size} on {dp.num_devices} device(s) in {dp.process_count} process(es)"
    )
    if job.config.run.init_from and not job.ckpts.steps():
        _score_start(job, progress)
    with _heap_frozen():
        while progress.epoch < recipe.epochs:
            t0 = time.perf_counter()
            if not _train_epoch(job, progress, stop, t0, show_bar):
                last = progress.history[-1] if progress.history else {}
                return TrainResult(job.run_dir, job.config, progress.history, _final_metrics(last), finished=False)
            _end_epoch(job, progress, t0, train_seconds=time.perf_counter() - t0)
    kept_step = job.ckpts.manager.best_step()
    job.ckpts.close()
    final = _final_record(job, progress, kept_step)
    progress.writer.hparams(job.config.to_dict(), _final_metrics(final), step=int(progress.state.step))
    progress.writer.close()
    if dp.is_primary:
        _write_results(job, progress.history, final)
        _calibrate(job)
    return TrainResult(job.run_dir, job.config, progress.history, _final_metrics(final))


def _stored_result(run_dir: Path) -> TrainResult:
    """The results a finished run recorded (Result.csv, metrics.jsonl)."""
    import csv

    from .checkpoints import read_train_config

    path = run_dir / RESULT_FILE
    rows = list(csv.DictReader(path.read_text().splitlines())) if path.exists() else []
    final = {k: float(v) for k, v in (rows[0] if rows else {}).items() if k in TEST_KEYS and v not in ("", None)}
    return TrainResult(run_dir, read_train_config(run_dir), read_jsonl(run_dir / METRICS_FILE), final)


def _calibrate(job: _Job) -> None:
    """The best checkpoint's confidence temperature, fitted on the validation split (docs/calibration.md)."""
    from .calibrate import describe, fit_run

    try:
        print(f"calibration: {describe(fit_run(job.run_dir, job.eval_batch_size))}")
    except UserError as e:
        print(f"calibration: {e}")


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
        job.eval_step, variables, job.dataset.validation, job.eval_batch_size, job.dp
    )
    record["seconds"] = time.perf_counter() - t0
    progress.history.append(record)
    if job.dp.is_primary:
        append_jsonl(job.metrics_path, record)
    job.ckpts.save(0, progress.state, job.meta(0, 0, _no_sums()), score=_score(job, record), variables=variables)
    job.say(
        f"starting weights: val {record['val_loss']:.4f}/{record['val_accuracy']:.3f} "
        f"on {len(job.dataset.validation.labels)} held-out images",
        flush=True,
    )


def _final_record(job: _Job, progress: _Progress, kept_step) -> Dict[str, Any]:
    """The results Result.csv reports: a fine-tuning run's kept weights (it says when they are the starting ones),
    else the last epoch's; with a recipe that does not test every epoch, the test results of the kept weights."""
    from .checkpoints import restore_variables

    history = progress.history
    if job.config.run.init_from:
        _say_if_start_kept(job, history, kept_step)
        kept = next((h for h in history if h["step"] == kept_step), None)
    else:
        kept = history[-1] if history else None
    if kept is not None and "test_accuracy" in kept:
        return kept
    _, variables, step = restore_variables(job.run_dir)
    record = _test_record(job, job.dp.replicate(variables), progress.writer, int(progress.state.step))
    restored = next((h for h in history if h["step"] == step), None)
    epoch = "" if restored is None else f", epoch {restored['epoch']}"
    job.say(
        f"kept weights (step {step}{epoch}): test {record['test_loss']:.4f}/{record['test_accuracy']:.3f}",
        flush=True,
    )
    # The validation numbers of the weights tested, not of another epoch.
    return {**(restored or kept or (history[-1] if history else {})), **record}


def _say_if_start_kept(job: _Job, history, kept_step) -> None:
    """A fine-tuning run that keeps its starting weights says so."""
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
