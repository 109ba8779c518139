"""Where predict and evaluate get their model: a run directory, a work directory, or a Keras .h5."""

from pathlib import Path
from typing import Any, NamedTuple, Optional, Tuple

from . import config
from .errors import UserError

NO_WEIGHTS = (
    "no trained model found in {where}: run `python -m signs_jax.train` first, "
    "or pass --weights (a run directory or a Keras .h5)"
)


class Weights(NamedTuple):
    model: Any
    variables: Any
    class_names: Tuple[str, ...]
    source: str
    run_dir: Optional[Path] = None  # the training run the weights come from (None for a Keras .h5)
    # Divides the logits before the softmax: fitted on the run's validation split (calibration.json), else 1.
    temperature: float = 1.0


def load_weights(spec: Optional[str], workdir: str = str(config.DEFAULT_WORKDIR), flag: str = "--weights") -> Weights:
    """`--weights` (and train's `--init-from`, named by `flag` in errors): a Keras .h5, a run directory (its best
    checkpoint), or a work directory (its newest run)."""
    from .checkpoints import CONFIG_FILE, has_checkpoint, read_config, restore_variables

    if spec is None:
        run = _newest_complete_run(Path(workdir))
    else:
        path = Path(spec)
        if not path.exists():
            raise UserError(
                f"{path}: no such file or directory ({flag} takes a run directory, a work directory or a Keras .h5)"
            )
        if path.is_file():
            from .keras_h5 import load_keras_h5

            model, variables = load_keras_h5(path)
            return Weights(model, variables, default_class_names(model.num_classes), str(path))
        run = path if (path / CONFIG_FILE).exists() else _newest_complete_run(path, flag)
    if not has_checkpoint(run):
        raise UserError(
            f"{run}: run has no checkpoint yet (let `python -m signs_jax.train` finish an epoch, "
            f"or pass another {flag})"
        )
    _check_fit(run)
    model, variables, step = restore_variables(run)
    names = read_config(run)["model"].get("class_names") or default_class_names(model.num_classes)
    return Weights(model, variables, tuple(names), f"{run} (step {step})", run, stored_temperature(run, step))


def stored_temperature(run: Path, step: int) -> float:
    """The run's fitted temperature when it was fitted to the checkpoint being loaded, else 1."""
    import warnings

    from .calibration import read_calibration

    record = read_calibration(run)
    if record is None:
        return 1.0
    if record.get("step") is not None and int(record["step"]) != int(step):
        warnings.warn(
            f"{run}: calibration.json was fitted to step {record['step']}, not {step}: using T = 1", stacklevel=2
        )
        return 1.0
    return float(record["temperature"])


def _newest_complete_run(workdir: Path, flag: str = "--weights") -> Path:
    """The newest run with a checkpoint; the error names runs that have none yet (still starting, or a failed start)."""
    from .checkpoints import newest_run, runs_in

    run = newest_run(workdir)
    if run is not None:
        return run
    incomplete = sorted(p.name for p in runs_in(workdir))
    if incomplete:
        names = ", ".join(incomplete[:3]) + (f" and {len(incomplete) - 3} more" if len(incomplete) > 3 else "")
        raise UserError(
            f"no trained model found in {workdir}: {names} has no checkpoint yet (let `python -m "
            f"signs_jax.train` finish an epoch, or pass {flag})"
        )
    raise UserError(NO_WEIGHTS.format(where=workdir).replace("--weights", flag))


def _check_fit(run: Path) -> None:
    """One clear line when config.json and the run's checkpoints disagree on shapes.

    Compares the newest checkpoint's stored shapes (orbax's item metadata) with the model config.json
    describes, before restoring: a failing orbax restore says only "unreadable" and leaves tracebacks
    from its background event loop at exit. Metadata that cannot be read skips the check and leaves the
    decision to the restore, which falls back to older checkpoints.
    """
    import jax

    from .checkpoints import RunCheckpoints, model_from_config, read_config
    from .models import abstract_variables

    ckpts = RunCheckpoints(run, read_only=True)
    try:
        stored = ckpts.stored_shapes(ckpts.steps()[0])
    except Exception:  # noqa: BLE001 - damaged or foreign metadata: the restore decides
        return
    finally:
        ckpts.close()
    try:
        model = model_from_config(read_config(run)["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{run}: config.json does not describe a model ({type(err).__name__}: {err})") from None
    expected = {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_variables(model))
    }
    problems = [f"{name} missing" for name in expected if name not in stored]
    problems += [
        f"{name} is {stored[name]}, the model expects {shape}"
        for name, shape in expected.items()
        if name in stored and stored[name] != shape
    ]
    problems += [f"{name} is not in the model" for name in stored if name not in expected]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(
            f"{run}: the checkpoint does not fit the model config.json describes: " + "; ".join(problems[:3]) + more
        )


def default_class_names(num_classes: int) -> Tuple[str, ...]:
    return config.CLASS_NAMES if num_classes == len(config.CLASS_NAMES) else tuple(str(i) for i in range(num_classes))
