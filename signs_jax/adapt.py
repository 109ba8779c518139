"""Adapting BatchNorm to unlabelled photos: re-estimate every layer's statistics on them, keep the weights.

Photos from another camera, light or background shift every layer's activation statistics; the stored
BatchNorm means and variances then normalise them wrongly. Re-estimating them on the photos to be
predicted (no labels needed) is the "precise BatchNorm" step training ends each epoch with
(`loops.recalibrate_batch_stats`), run on the user's photos instead of clean training images.
How many photos it needs, and why fewer than MIN_PHOTOS are refused: docs/calibration.md.
"""

import functools
import math
from typing import Any, Dict

from .errors import UserError

MIN_PHOTOS = 16
BATCH_SIZE = 32


def adapt_batches(num_photos: int, batch_size: int = BATCH_SIZE) -> int:
    """The batch size that splits `num_photos` into the fewest batches of at most `batch_size`, as evenly as
    possible: every batch is full, so at most (batches - 1) photos are left out."""
    batches = math.ceil(num_photos / batch_size)
    return num_photos // batches


def adapt_batch_norm(
    model, variables, images, batch_size: int = BATCH_SIZE, min_photos: int = MIN_PHOTOS
) -> Dict[str, Any]:
    """`variables` with every BatchNorm layer's statistics re-estimated on `images` (no labels).

    `images`: (N, H, W, 3), uint8 in [0, 255] or float in [0, 1] (as `load_image` returns them), in a fixed
    order: the result depends only on the images and their order. N must be at least `min_photos` (lower it only
    to measure what fewer photos do).
    """
    import numpy as np

    from .loops import recalibrate_batch_stats

    images = np.asarray(images)
    if len(images) < max(2, min_photos):  # one photo has no variance
        raise UserError(
            f"--adapt needs at least {max(2, min_photos)} photos to re-estimate BatchNorm statistics, got "
            f"{len(images)} (with fewer, its answers are worse than without it: docs/calibration.md)"
        )
    if images.dtype != np.uint8:
        images = np.asarray(images, np.float32) * 255.0  # the statistics step reads pixels in [0, 255]
    return recalibrate_batch_stats(
        compiled_statistics_step(model), variables, images, adapt_batches(len(images), batch_size)
    )


@functools.lru_cache(maxsize=8)
def compiled_statistics_step(model):
    """The jitted BatchNorm-statistics step of `model`: in-process callers reuse it for an equal model."""
    from .steps import make_bn_statistics_step

    return make_bn_statistics_step(model)
