"""Run directories and orbax checkpoints.

A run lives in `<workdir>/<run>/`: `config.json` (everything needed to rebuild the model and the
run), `metrics.jsonl`, `curves.png`, `Result.csv`, and `ckpt/<step>/` written by orbax's
CheckpointManager with three items: `state` (the whole TrainState, for --resume), `variables` (the
weights to predict with) and `meta` (JSON: epoch, position in the epoch, partial metrics).
Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save still has its previous checkpoint (the temporary directory is never taken for a step). A step
any of whose files is damaged is skipped, in one line that says so: orbax's JSON files are checked before
orbax sees the step (`step_damage`), damaged arrays show when the step is restored. A save that the disk
refuses (full, read-only) is one line naming the step and the reason, and removes what it had written.

A directory is a run, one that predict and evaluate may pick, only once it holds a finished
checkpoint (`has_checkpoint`); before that it is an incomplete start, which `train --run NAME`
may start again. While a process trains a run it holds an exclusive lock on `<run>/train.lock`.
"""

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from .errors import SaveFailed, UserError
from .models import ResNet50, abstract_variables
from .steps import create_state

KEEP_LATEST = 3
CONFIG_FILE = "config.json"
LOCK_FILE = "train.lock"
# The JSON files of a step that orbax parses (the manager reads every step's metrics when it starts).
STEP_JSON_FILES = (
    "_CHECKPOINT_METADATA",
    "metrics/metrics",
    "meta/metadata",
    "state/_METADATA",
    "state/_sharding",
    "variables/_METADATA",
    "variables/_sharding",
)


def model_from_config(model_config: Dict[str, Any]):
    """Rebuild the ResNet50 variant a run trained, from the `model` part of its config.json."""
    return ResNet50(
        model_config["num_classes"],
        width=model_config["width"],
        stage_sizes=tuple(model_config["stage_sizes"]),
        input_shape=tuple(model_config["input_shape"]),
        dtype=jnp.dtype(model_config.get("dtype") or "float32"),
        # null: the user chose none, the backend's default; a config written before "conv" existed ran "xla"
        conv=model_config.get("conv", "xla"),
        bn_momentum=model_config.get("bn_momentum", 0.99),
    )


def read_config(run_dir: Path) -> Dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a training run (no {CONFIG_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: unreadable run config ({err})") from None


def read_train_config(run_dir: Path):
    """A run's config.json as the TrainConfig it serialises (earlier runs' flat layout included)."""
    from .config import TrainConfig

    return TrainConfig.from_dict(read_config(run_dir), str(Path(run_dir) / CONFIG_FILE))


class _OrbaxLeftovers(logging.Filter):
    """Drops asyncio's report of a tensorstore read that failed unobserved: a failed restore leaves such reads
    behind, and the report comes whenever their future is collected, after the caller has said what failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        unobserved = message.startswith(("Future exception was never retrieved", "Task exception was never retrieved"))
        return not (unobserved and ("tensorstore" in message or "orbax" in message))


_LEFTOVERS = _OrbaxLeftovers()


@contextlib.contextmanager
def quiet_orbax():
    """Keep orbax's logging and the tracebacks of its event loop off stderr while a checkpoint is read or written.

    A failed restore leaves tensorstore reads in flight that report to orbax's event loop after it has closed:
    each prints a traceback ("Event loop is closed") a few milliseconds later, which is waited out here. The
    caller says what failed, in one line.
    """
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels = [logger.level for logger in loggers]
    previous_hook = sys.unraisablehook
    late = []

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            late.append(unraisable)
        else:
            previous_hook(unraisable)

    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    if _LEFTOVERS not in loggers[1].filters:
        loggers[1].addFilter(_LEFTOVERS)  # for good: the reports come after this block has ended
    sys.unraisablehook = hook
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            deadline, seen = time.monotonic() + 2.0, -1
            while len(late) != seen and time.monotonic() < deadline:
                seen = len(late)
                time.sleep(0.1)
        sys.unraisablehook = previous_hook
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def step_damage(step_dir: Path) -> Optional[str]:
    """What is damaged in a finished step's JSON files (cut short, garbled, unreadable), or None."""
    for name in STEP_JSON_FILES:
        path = Path(step_dir) / name
        if not path.exists():
            continue
        try:
            json.loads(path.read_bytes())
        except (OSError, ValueError) as err:
            return f"its {name} is damaged ({type(err).__name__})"
    return None


class _StepsWithout:
    """orbax's standard step names, less the `damaged` steps: orbax never reads those."""

    def __init__(self, damaged: Dict[int, str]):
        self.standard = ocp.path.step.standard_name_format()
        self.damaged = damaged

    def build_name(self, step: int) -> str:
        return self.standard.build_name(step)

    def find_all(self, base_path):
        return (metadata for metadata in self.standard.find_all(base_path) if metadata.step not in self.damaged)

    def find_step(self, base_path, step: int):
        if step in self.damaged:
            raise ValueError(f"step {step}: {self.damaged[step]}")
        return self.standard.find_step(base_path, step)


def _errno_of(err: BaseException) -> Optional[int]:
    """The OS error behind a failed save: an OSError's, or the one tensorstore names in its message."""
    if isinstance(err, OSError) and err.errno:
        return err.errno
    found = re.search(r"os_error_code='(\d+)'", str(err))
    return int(found.group(1)) if found else None


class RunCheckpoints:
    """Save every epoch (and on interruption); keep the latest few and the best by `score`."""

    def __init__(self, run_dir: Path, keep: int = KEEP_LATEST, read_only: bool = False):
        self.directory = Path(run_dir).resolve() / "ckpt"
        # Steps whose JSON files are damaged: hidden from orbax, skipped (and, on resume, moved aside) with a note.
        self.damaged = {
            step: why for step in checkpoint_steps(run_dir) if (why := step_damage(self.directory / str(step)))
        }
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "variables": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        }
        with quiet_orbax():  # its notes (a read-only manager saves nothing, ...) are not the user's concern
            options = self._options(keep, read_only)
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def _options(self, keep: int, read_only: bool):
        policies = ocp.checkpoint_managers
        return ocp.CheckpointManagerOptions(
            best_fn=lambda metrics: metrics["score"],
            best_mode="max",
            preservation_policy=policies.AnyPreservationPolicy(
                [
                    policies.LatestN(n=keep),
                    policies.BestN(get_metric_fn=lambda m: m["score"], n=1, keep_checkpoints_without_metrics=False),
                ]
            ),
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=False,  # a save returns once the step is on disk
            step_name_format=_StepsWithout(self.damaged),
        )

    def save(self, step: int, state, meta: Dict[str, Any], score: Optional[float] = None, variables=None) -> None:
        """Save `state` for resuming and `variables` (default: the state's eval weights) for predicting."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            variables=ocp.args.StandardSave(variables if variables is not None else state.eval_variables()),
            meta=ocp.args.JsonSave(meta),
        )
        try:
            with quiet_orbax():
                self.manager.save(
                    step, args=args, metrics=None if score is None else {"score": float(score)}, force=True
                )
                self.manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001 - any failure of the file system: one line, not orbax's traceback
            code = _errno_of(err)
            if code is None:
                raise
            for unfinished in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(unfinished, ignore_errors=True)
            raise SaveFailed(
                f"{self.directory / str(step)}: cannot save the checkpoint ({os.strerror(code)}); {self.kept()}"
            ) from None

    def kept(self) -> str:
        """Which checkpoint a run stopped by a failure leaves, for its error line."""
        saved = self.manager.all_steps()
        return f"the checkpoint of step {max(saved)} is kept" if saved else "no checkpoint had been saved yet"

    def stored_shapes(self, step: int, item: str = "variables") -> Dict[str, Tuple[int, ...]]:
        """{"params/conv1/kernel": shape, ...} of an item as stored at `step`, read from orbax's metadata
        without restoring anything."""
        tree = self.manager.item_metadata(step)[item]
        return {
            "/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        }

    def steps(self):
        """Every finished step, newest first, damaged ones included (they are skipped when restoring)."""
        return sorted(set(self.manager.all_steps()) | set(self.damaged), reverse=True)

    def restore_latest(self, abstract_state) -> Tuple[Any, Dict[str, Any], int]:
        """The newest checkpoint that restores; older ones are tried when newer ones are damaged, which are then
        moved aside (to `damaged/`) with one warning line."""
        errors = {}
        for step in self.steps():
            if step in self.damaged:
                errors[step] = self.damaged[step]
                continue
            try:
                with quiet_orbax():
                    restored = self.manager.restore(
                        step,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                        ),
                    )
            except Exception as err:  # noqa: BLE001 - any damage means: try the previous checkpoint
                errors[step] = f"it does not restore ({type(err).__name__})"
                continue
            if errors:
                # Moved aside, not deleted: the run continues from `step` and will write those steps anew.
                damaged = self.directory.parent / "damaged"
                damaged.mkdir(exist_ok=True)
                for bad in errors:
                    (self.directory / str(bad)).rename(damaged / f"{bad}-{int(time.time())}")
                    self.damaged.pop(bad, None)
                self.manager.reload()
                warnings.warn(
                    f"{self.directory}: resuming from step {step}: "
                    + "; ".join(f"step {bad}: {why}" for bad, why in errors.items())
                    + f" (moved to {damaged})",
                    stacklevel=2,
                )
            return restored["state"], restored["meta"], step
        if errors:
            raise UserError(
                f"{self.directory}: no checkpoint could be restored ("
                + "; ".join(f"step {bad}: {why}" for bad, why in errors.items())
                + ")"
            )
        raise UserError(f"{self.directory}: no checkpoint to resume from")

    def close(self):
        self.manager.close()


def _placed(abstract_tree, sharding):
    """`abstract_tree`'s shapes and dtypes with an explicit sharding: a checkpoint restores onto the devices
    of this process, whichever devices (or processes) wrote it."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract_tree)


def abstract_train_state(model, tx, seed: int, ema: bool, sharding):
    """The shapes of the TrainState that `steps.create_state` builds for `model`, placed on `sharding`,
    computing nothing: the target `RunCheckpoints.restore_latest` restores a run's state into."""
    return _placed(jax.eval_shape(lambda: create_state(abstract_variables(model), tx, seed, ema)), sharding)


def restore_variables(run_dir: Path, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any], int]:
    """(model, variables, step) of a run: its best checkpoint by default, else the newest readable one."""
    run_dir = Path(run_dir)
    model = model_from_config(read_config(run_dir)["model"])
    if not (run_dir / "ckpt").is_dir():
        raise UserError(f"{run_dir}: run has no checkpoints yet")
    ckpts = RunCheckpoints(run_dir, read_only=True)
    candidates = (
        [step] if step is not None else [s for s in [ckpts.manager.best_step()] if s is not None] + ckpts.steps()
    )
    # Explicit shardings: the checkpoint may come from a run over other devices (or processes).
    abstract = _placed(abstract_variables(model), jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    # A damaged step is named whether or not it would have been chosen: its score may be what is damaged.
    skipped = [f"step {bad}: {why}" for bad, why in sorted(ckpts.damaged.items()) if step in (None, bad)]
    non_finite = []
    for candidate in dict.fromkeys(candidates):
        if candidate in ckpts.damaged:
            continue
        restored, failure = _restore_step(ckpts, candidate, abstract)
        if failure:
            skipped.append(f"step {candidate} is unreadable ({failure})")
            continue
        variables = jax.device_get(restored["variables"])
        # Training never saves a non-finite state (it stops first), so NaN here is damage; used, it would
        # answer one class for every image.
        if not all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(variables)):
            skipped.append(f"step {candidate} holds NaN or infinite weights")
            non_finite.append(candidate)
            continue
        if skipped:
            warnings.warn(f"{ckpts.directory}: {'; '.join(skipped)}; using step {candidate}", stacklevel=2)
        return model, variables, candidate
    if non_finite:
        raise UserError(f"{run_dir}: no usable checkpoint ({'; '.join(skipped)})")
    raise UserError(f"{run_dir}: no readable checkpoint")


def _restore_step(ckpts, step: int, abstract) -> Tuple[Any, Optional[str]]:
    """(restored items, None), or (None, the name of the error) when the step cannot be read.

    A restore that fails part-way leaves orbax's reads as coroutines never awaited; Python warns of each when
    the garbage collector finds it, at a moment of its choosing, beside the one line that says what failed. They
    are collected here with that warning silenced, once the exception (whose frames hold them) is gone.
    """
    import gc

    try:
        with quiet_orbax():
            args = ocp.args.Composite(variables=ocp.args.StandardRestore(abstract))
            return ckpts.manager.restore(step, args=args), None
    except Exception as err:  # noqa: BLE001
        failure = type(err).__name__
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
        gc.collect()
    return None, failure


def checkpoint_steps(run_dir: Path) -> List[int]:
    """The finished checkpoints of a run (orbax renames a step's directory to its number once it is complete)."""
    try:
        return sorted(int(p.name) for p in (Path(run_dir) / "ckpt").iterdir() if p.name.isdigit() and p.is_dir())
    except OSError:
        return []


def has_checkpoint(run_dir: Path) -> bool:
    return bool(checkpoint_steps(run_dir))


def checkpointed_epochs(run_dir: Path) -> Optional[int]:
    """Epochs finished at the newest checkpoint (from its `meta` item, without orbax); None when unknown."""
    for step in reversed(checkpoint_steps(run_dir)):
        try:
            meta = json.loads((Path(run_dir) / "ckpt" / str(step) / "meta" / "metadata").read_text())
            return int(meta["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def runs_in(workdir: Path) -> List[Path]:
    """Directories under `workdir` with a run config, complete or not."""
    workdir = Path(workdir)
    try:
        return [p for p in workdir.iterdir() if (p / CONFIG_FILE).is_file()]
    except OSError:
        return []


def written_at(run_dir: Path) -> float:
    times = [(run_dir / CONFIG_FILE).stat().st_mtime]
    for step in checkpoint_steps(run_dir)[-1:]:
        times.append((run_dir / "ckpt" / str(step)).stat().st_mtime)
    return max(times)


def newest_run(workdir: Path) -> Optional[Path]:
    """The most recently written run under `workdir` that has a checkpoint (incomplete starts are never picked)."""
    runs = [p for p in runs_in(workdir) if has_checkpoint(p)]
    return max(runs, key=written_at, default=None)


class RunLock:
    """An exclusive, non-blocking lock on a run: one training process at a time (released when the process ends)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(f"{self.path.parent}: cannot lock the run ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            by = f" (process {holder})" if holder.isdigit() else ""
            raise UserError(
                f"{self.path.parent}: another train process is running this run{by}; wait for it or "
                "choose another --run"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None
