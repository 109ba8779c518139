"""Pictures (matplotlib, drawn off-screen): training curves, the confusion matrix, and how every PNG is saved."""

from pathlib import Path
from typing import Dict, List


def plot_curves(history: List[Dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test")):
        if any(key in h for h in history):
            ax_loss.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    for key, label in (
        ("train_accuracy", "train"),
        ("val_accuracy", "validation"),
        ("test_accuracy", "test"),
        ("test_accuracy_no_near_copies", "test, no near-copies"),
    ):
        if any(key in h for h in history):
            ax_acc.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def draw_confusion(ax, matrix, names) -> None:
    """A confusion matrix (rows: truth, columns: prediction) on `ax`, every cell labelled with its value."""
    import numpy as np

    matrix = np.asarray(matrix)
    ax.imshow(matrix, cmap="Blues")
    ax.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix",
    )
    # A NaN cell (a normalised row of a class with no examples) is labelled "nan", never an error.
    dark_above = np.nanmax(matrix) / 2 if np.isfinite(matrix).any() else np.inf
    for i in range(len(names)):
        for j in range(len(names)):
            value = float(matrix[i, j])
            ax.text(
                j,
                i,
                str(int(value)) if value.is_integer() else f"{value:.2f}",
                ha="center",
                va="center",
                color="white" if value > dark_above else "black",
            )


def save_figure(fig, path) -> Path:
    """Write `fig` to `path` atomically (an old picture stays whole until the new one is complete) and close it."""
    import matplotlib.pyplot as plt

    from .files import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return Path(path)
