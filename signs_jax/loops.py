"""Host-side loops over a data set around the jitted steps of `steps.py`: evaluation and precise BatchNorm."""

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from .data import eval_batches


def evaluate(eval_step, variables, split, batch_size: int, dp=None) -> Tuple[float, float, "jax.Array"]:
    """Loss and accuracy over every example of `split`, and the probabilities (N, classes)."""
    loss, correct, probs = 0.0, 0, []
    for images, labels, mask in eval_batches(split, batch_size):
        batch = (images, labels, mask) if dp is None else dp.shard(images, labels, mask)
        batch_loss, batch_correct, p = eval_step(variables, *batch)
        loss, correct = loss + batch_loss, correct + batch_correct
        probs.append(p[: int(mask.sum())])
    n = len(split.labels)
    return float(loss) / n, int(correct) / n, np.concatenate([np.asarray(p) for p in probs])


def recalibrate_batch_stats(stats_step, variables, images, batch_size: int, dp=None) -> Dict[str, Any]:
    """'Precise BatchNorm': population statistics of the current weights on un-augmented images.

    The moving averages follow augmented batches (brightness and contrast widen the input variance)
    and weights that kept changing; inference on clean images needs the statistics of clean images
    under the final weights. Averages the statistics of every full batch of `images`.
    """
    total, count = None, 0
    for start in range(0, len(images) - batch_size + 1, batch_size):
        batch = images[start : start + batch_size]
        stats = stats_step(variables, batch if dp is None else dp.shard(batch))
        total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
        count += 1
    if total is None:
        return variables
    return {"params": variables["params"], "batch_stats": jax.tree_util.tree_map(lambda s: s / count, total)}
