"""Calibrated confidence: a temperature fitted on held-out data, expected calibration error, reliability diagram.

A network trained with cross-entropy is usually overconfident: its softmax says 0.99 where it is right far
less often. One scalar T, fitted after training by minimising the negative log-likelihood of
softmax(logits / T) on held-out labelled images (temperature scaling), fixes most of that without changing
any prediction (argmax is unchanged). The fit is stored with the run (`calibration.json`) and used by
predict, evaluate and `load_weights`. It is never fitted on the test set: a run without a validation split
keeps T = 1 (see docs/calibration.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:
    import numpy as np

CALIBRATION_FILE = "calibration.json"
ECE_BINS = 15
# predict marks an answer uncertain below this uncalibrated confidence (measured: docs/calibration.md)
DEFAULT_THRESHOLD = 0.9
# The bracket the fit searches, as 1/T; a fit at an end means the held-out data say little (too few, all right).
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def log_softmax(logits, temperature: float = 1.0) -> np.ndarray:
    import numpy as np

    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    import numpy as np

    return np.exp(log_softmax(logits, temperature))


def uncertainty_score(logits) -> np.ndarray:
    """What `uncertain` is decided on: the max softmax probability of the raw logits (T = 1).

    Not the calibrated confidence: the temperature is fitted on held-out SIGNS images, where the default recipe
    (label smoothing) is underconfident, so T < 1 sharpens every answer, those on foreign photos and non-hands
    included, and pushes the usable thresholds against 1. Measured against max logit and energy, this score
    flags the most non-hand images at a given share of hand photos kept: docs/calibration.md.
    """
    return softmax(logits).max(-1)


def is_uncertain(logits, threshold: float = DEFAULT_THRESHOLD):
    """True where the answer should not be trusted: `uncertainty_score(logits) < threshold`."""
    return uncertainty_score(logits) < threshold


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / temperature)."""
    import numpy as np

    labels = np.asarray(labels)
    return float(-log_softmax(logits, temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits, labels, iterations: int = 80) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises `nll(logits, labels, T)`.

    The NLL is convex in 1/T, so it has one minimum along log(1/T) too: a golden-section search finds it
    without gradients or a solver dependency, to ~1e-12 relative after 80 iterations.
    """
    if len(labels) == 0:
        raise ValueError("fit_temperature needs at least one labelled example")
    objective = lambda log_inverse: nll(logits, labels, math.exp(-log_inverse))  # noqa: E731
    lo, hi = math.log(1 / MAX_TEMPERATURE), math.log(1 / MIN_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = objective(a), objective(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = objective(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = objective(b)
    return float(math.exp(-(lo + hi) / 2))


def checked_temperature(logits, labels) -> float:
    """`fit_temperature`, refused (ValueError saying why) when the examples cannot decide a temperature: with
    every answer right the NLL keeps falling as T falls, and the fit would end at MIN_TEMPERATURE, making every
    later answer look certain (a fine-tuning run's dozen held-out photos are often all right)."""
    import numpy as np

    if len(labels) and bool(np.all(np.asarray(logits).argmax(1) == np.asarray(labels))):
        raise ValueError(
            f"all {len(labels)} validation images are answered right, which says nothing about how sure to be"
        )
    return fit_temperature(logits, labels)


def reliability_bins(probs, labels, bins: int = ECE_BINS) -> Dict[str, np.ndarray]:
    """Per equal-width confidence bin: number of examples, mean confidence, accuracy (NaN when empty)."""
    import numpy as np

    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    # Bin i holds confidences in (i/bins, (i+1)/bins]; the lowest bin also takes an exact 0.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / count
        accuracy = np.bincount(index, correct.astype(float), bins) / count
    return {"count": count, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """Sum over confidence bins of (share of examples) x |accuracy - mean confidence|."""
    import numpy as np

    stats = reliability_bins(probs, labels, bins)
    filled = stats["count"] > 0
    gaps = np.abs(stats["accuracy"][filled] - stats["confidence"][filled])
    return float((stats["count"][filled] * gaps).sum() / max(1, len(labels)))


def calibration_report(logits, labels, temperature: float) -> Dict[str, float]:
    """NLL and ECE of the raw softmax (T = 1) and of the calibrated one."""
    return {
        "temperature": float(temperature),
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels),
    }


def plot_reliability(logits, labels, temperature: float, path, title: str = "reliability") -> Path:
    """Accuracy against confidence per bin, before (T = 1) and after calibration, with the ECE of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for t, name, marker in ((1.0, "T = 1", "o"), (temperature, f"T = {temperature:.3g}", "s")):
        probs = softmax(logits, t)
        stats = reliability_bins(probs, labels)
        filled = stats["count"] > 0
        ece = expected_calibration_error(probs, labels)
        ax.plot(stats["confidence"][filled], stats["accuracy"][filled], marker=marker, label=f"{name} (ECE {ece:.3f})")
    ax.set(
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        xlabel="confidence (mean per bin)",
        ylabel="accuracy",
        title=f"{title} ({len(labels)} images, {ECE_BINS} bins)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------ stored with a run


def write_calibration(run_dir, record: Dict[str, Any]) -> Path:
    from .files import write_text_atomic

    path = Path(run_dir) / CALIBRATION_FILE
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def read_calibration(run_dir) -> Optional[Dict[str, Any]]:
    """The run's calibration.json, or None when it has none; a damaged one is a UserError (one line)."""
    from .errors import UserError

    path = Path(run_dir) / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        temperature = float(record["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"{path}: not a calibration file ({type(err).__name__}: {err}); remove it to use T = 1"
        ) from None
    if not (math.isfinite(temperature) and temperature > 0):
        raise UserError(f"{path}: temperature {temperature} is not a positive number; remove it to use T = 1")
    return record
