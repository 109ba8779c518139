"""Run directories and orbax checkpoints.

A run lives in `<workdir>/<run>/`: `config.json` (everything needed to rebuild the model and the
run), `metrics.jsonl`, `curves.png`, `Result.csv`, and `ckpt/<step>/` written by orbax's
CheckpointManager with three items: `state` (the whole TrainState, for --resume), `variables` (the
weights to predict with) and `meta` (JSON: epoch, position in the epoch, partial metrics).
Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save still has its previous checkpoint; a newest checkpoint that fails to restore is skipped.
"""
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .errors import UserError

KEEP_LATEST = 3
CONFIG_FILE = "config.json"


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def model_from_config(model_config: Dict[str, Any]):
    """Rebuild the ResNet50 variant a run trained, from the `model` part of its config.json."""
    import jax.numpy as jnp

    from .models import ResNet50

    return ResNet50(
        model_config["num_classes"],
        width=model_config["width"],
        stage_sizes=tuple(model_config["stage_sizes"]),
        input_shape=tuple(model_config["input_shape"]),
        dtype=jnp.dtype(model_config.get("dtype", "float32")),
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


class RunCheckpoints:
    """Save every epoch (and on interruption); keep the latest few and the best by `score`."""

    def __init__(self, run_dir: Path, keep: int = KEEP_LATEST, read_only: bool = False):
        ocp = _ocp()
        policies = ocp.checkpoint_managers
        self.directory = Path(run_dir).resolve() / "ckpt"
        options = ocp.CheckpointManagerOptions(
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
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "variables", "meta"))

    def save(self, step: int, state, meta: Dict[str, Any], score: Optional[float] = None, variables=None) -> None:
        """Save `state` for resuming and `variables` (default: the state's eval weights) for predicting."""
        ocp = _ocp()
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            variables=ocp.args.StandardSave(variables if variables is not None else state.eval_variables()),
            meta=ocp.args.JsonSave(meta),
        )
        self.manager.save(step, args=args, metrics=None if score is None else {"score": float(score)}, force=True)
        self.manager.wait_until_finished()

    def steps(self):
        return sorted(self.manager.all_steps(), reverse=True)

    def restore_latest(self, abstract_state) -> Tuple[Any, Dict[str, Any], int]:
        """The newest checkpoint that restores; older ones are tried when newer ones are damaged."""
        ocp = _ocp()
        errors = []
        for step in self.steps():
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
                )
            except Exception as err:  # noqa: BLE001 - any damage means: try the previous checkpoint
                errors.append(step)
                print(f"checkpoint {self.directory / str(step)} is unreadable ({type(err).__name__}); trying an older one", file=sys.stderr)
                continue
            if errors:
                # Moved aside, not deleted: the run continues from `step` and will write those steps anew.
                damaged = self.directory.parent / "damaged"
                damaged.mkdir(exist_ok=True)
                for bad in errors:
                    (self.directory / str(bad)).rename(damaged / f"{bad}-{int(time.time())}")
                self.manager.reload()
                print(f"resuming from step {step}: newer checkpoint(s) {errors} could not be restored (moved to {damaged})")
            return restored["state"], restored["meta"], step
        if errors:
            raise UserError(f"{self.directory}: no checkpoint could be restored (tried steps {errors})")
        raise UserError(f"{self.directory}: no checkpoint to resume from")

    def close(self):
        self.manager.close()


def _placed(abstract_tree, sharding):
    """`abstract_tree`'s shapes and dtypes with an explicit sharding: a checkpoint restores onto the devices
    of this process, whichever devices (or processes) wrote it."""
    import jax

    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract_tree)


def abstract_train_state(model, tx, seed: int, ema: bool, sharding):
    """The shapes of the TrainState that `steps.create_state` builds for `model`, placed on `sharding`,
    computing nothing: the target `RunCheckpoints.restore_latest` restores a run's state into."""
    import jax

    from .models import abstract_variables
    from .steps import create_state

    return _placed(jax.eval_shape(lambda: create_state(abstract_variables(model), tx, seed, ema)), sharding)


def restore_variables(run_dir: Path, step: Optional[int] = None) -> Tuple[Any, Dict[str, Any], int]:
    """(model, variables, step) of a run: its best checkpoint by default, else the newest readable one."""
    import jax

    from .models import abstract_variables

    ocp = _ocp()
    run_dir = Path(run_dir)
    model = model_from_config(read_config(run_dir)["model"])
    if not (run_dir / "ckpt").is_dir():
        raise UserError(f"{run_dir}: run has no checkpoints yet")
    ckpts = RunCheckpoints(run_dir, read_only=True)
    candidates = [step] if step is not None else [s for s in [ckpts.manager.best_step()] if s is not None] + ckpts.steps()
    # Explicit shardings: the checkpoint may come from a run over other devices (or processes).
    abstract = _placed(abstract_variables(model), jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    for candidate in dict.fromkeys(candidates):
        try:
            restored = ckpts.manager.restore(candidate, args=ocp.args.Composite(variables=ocp.args.StandardRestore(abstract)))
            return model, jax.device_get(restored["variables"]), candidate
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"checkpoint {ckpts.directory / str(candidate)} is unreadable ({type(err).__name__})", stacklevel=2)
    raise UserError(f"{run_dir}: no readable checkpoint")


def newest_run(workdir: Path) -> Optional[Path]:
    """The most recently written run directory under `workdir`."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        return None
    runs = [p for p in workdir.iterdir() if (p / CONFIG_FILE).exists()]
    return max(runs, key=lambda p: (p / CONFIG_FILE).stat().st_mtime, default=None)
