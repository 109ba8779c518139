"""TensorBoard event files for a run: scalars, hyper-parameters and pictures (tensorboardX, an optional extra).

The event files go into the run directory itself, next to metrics.jsonl: `tensorboard --logdir checkpoints/`
then lists every run under its own name (a `tensorboard/` sub-folder would show up as `<run>/tensorboard`),
and the hyper-parameters of a run belong to that same run, so the HParams dashboard compares runs by name.

Without tensorboardX the writer does nothing and says so once: training never depends on it.
"""

import logging
import math
import re
import sys
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

EVENT_FILE_MARK = ".out.tfevents."
# TensorBoard reads a directory's event files in name order and only forwards; a file's name carries its
# creation second, so a writer started in the same second as an earlier one needs a suffix that sorts
# after the earlier one's (and never the same name: the file is opened for writing, not appending).
_SEQUENCE_SUFFIX = re.compile(r"\.(\d{6})$")

_said_missing = False


class _NonFiniteIsIntended:
    """Drops tensorboardX's warning on a NaN or infinite value: logging one (a diverged loss) is deliberate here."""

    def filter(self, record) -> bool:
        return not record.getMessage().startswith("NaN or Inf found")


def _tensorboardx_writer_class():
    """tensorboardX.SummaryWriter, or None when the optional extra is not installed."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    x2num_log = logging.getLogger("tensorboardX.x2num")
    if not any(isinstance(f, _NonFiniteIsIntended) for f in x2num_log.filters):
        x2num_log.addFilter(_NonFiniteIsIntended())
    return SummaryWriter


def _say_missing_once() -> None:
    global _said_missing
    if not _said_missing:
        _said_missing = True
        print(
            "note: tensorboardX is not installed, so no TensorBoard event files are written "
            '(pip install -e ".[tensorboard]")',
            file=sys.stderr,
        )


def _next_sequence_suffix(logdir: Path) -> str:
    used = [int(m.group(1)) for p in logdir.glob(f"events{EVENT_FILE_MARK}*") if (m := _SEQUENCE_SUFFIX.search(p.name))]
    return f".{max(used, default=-1) + 1:06d}"


def _as_float(value) -> Optional[float]:
    """A real number, or a one-element array of one, as a float (NaN and infinities too); None for anything else."""
    if isinstance(value, (Real, np.bool_)):
        return float(value)
    if hasattr(value, "__array__") and not isinstance(value, str):
        array = np.asarray(value)
        if array.size == 1 and (
            array.dtype == bool or np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        ):
            return float(array.reshape(()))
    return None


def flatten(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """A nested mapping as one level of dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def hparam_value(value) -> Any:
    """A value of a type the HParams dashboard shows: bool, int, float or str (lists, tuples, None: their text)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    return str(value)


def image_grid(images, columns: Optional[int] = None, gap: int = 2):
    """A batch (N, H, W, C) as one uint8 picture (rows of `columns` images, `gap` black pixels between).

    uint8 images are taken as they are; any other type as [0, 1] values (clipped; NaN black). One channel is
    repeated to three.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected a non-empty batch of shape (N, H, W, 1|3|4), got {images.shape}")
    if images.dtype != np.uint8:
        images = np.round(np.clip(np.nan_to_num(images.astype(np.float32), nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, c), np.uint8)
    for k in range(n):
        r, col = divmod(k, columns)
        grid[r * (h + gap) : r * (h + gap) + h, col * (w + gap) : col * (w + gap) + w] = images[k]
    return grid


def confusion_picture(matrix, class_names: Sequence[str]):
    """The confusion matrix drawn as evaluate's picture is, as an (H, W, 3) uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plots import draw_confusion

    # A Figure with its own Agg canvas, not pyplot: no global backend switch, nothing to close.
    fig = Figure(figsize=(5, 4.5), dpi=100)
    canvas = FigureCanvasAgg(fig)
    draw_confusion(fig.add_subplot(), matrix, list(class_names))
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class MetricWriter:
    """TensorBoard event files in `run_dir`; every method does nothing when disabled or without tensorboardX.

    `purge_step`, for a resumed run: the first step it will log (the restored checkpoint's step + 1). TensorBoard
    then hides every event an earlier writer logged at that step or later, so the steps redone after the
    checkpoint are not drawn twice. `enabled=False` (e.g. every process but the first) writes nothing, silently.
    The event file is created when the writer is: create it once the run directory is the run's for good.
    """

    def __init__(self, run_dir, enabled: bool = True, purge_step: Optional[int] = None):
        self.run_dir = Path(run_dir)
        self._writer = None
        if not enabled:
            return
        summary_writer = _tensorboardx_writer_class()
        if summary_writer is None:
            _say_missing_once()
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._writer = summary_writer(
            logdir=str(self.run_dir),
            purge_step=purge_step,
            filename_suffix=_next_sequence_suffix(self.run_dir),
            flush_secs=30,
        )

    @property
    def active(self) -> bool:
        """Whether events are being written."""
        return self._writer is not None

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        """Every number of `values` as the scalar `prefix + key` at `step` (NaN and infinities too; others skipped)."""
        if self._writer is None:
            return
        for key, value in values.items():
            number = _as_float(value)
            if number is not None:
                self._writer.add_scalar(f"{prefix}{key}", number, int(step))

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, Any], step: int = 0) -> None:
        """The run's settings (a nested mapping, shown with dotted keys) and its results, for the HParams dashboard.

        Each result is also the scalar `hparams/<key>` at `step` (pass the final step: a rewind before it then
        drops these with the steps they summarise). Written into the run itself, not into a sub-run as
        tensorboardX's add_hparams does, so that the dashboard's rows are the runs.
        """
        if self._writer is None:
            return
        from tensorboardX.summary import hparams as hparams_summaries

        settings = {key: hparam_value(value) for key, value in flatten(hparams).items()}
        results = {
            f"hparams/{key}": number for key, value in metrics.items() if (number := _as_float(value)) is not None
        }
        for summary in hparams_summaries(settings, results):
            self._writer.file_writer.add_summary(summary, int(step))
        for tag, number in results.items():
            self._writer.add_scalar(tag, number, int(step))

    def image_grid(self, tag: str, step: int, images) -> None:
        """A sample of a batch, (N, H, W, C) uint8 or [0, 1] floats, as one picture (see `image_grid`)."""
        if self._writer is None:
            return
        self._writer.add_image(tag, image_grid(images), int(step), dataformats="HWC")

    def confusion_matrix(self, tag: str, step: int, matrix, class_names: Sequence[str]) -> None:
        """A confusion matrix (rows: truth, columns: prediction) as the picture `evaluate` draws."""
        if self._writer is None:
            return
        self._writer.add_image(tag, confusion_picture(matrix, class_names), int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
