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

    `images`: (N, H, W, 3), uint8 in [0, 255] or float in [0, 1] (as `load_image` returns them), in any order:
    the result depends only on the images. N must be at least `min_photos` (lower it only to measure what fewer
    photos do).
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
        compiled_statistics_step(model), variables, images[mixed_order(images)], adapt_batches(len(images), batch_size)
    )


def mixed_order(images):
    """An order of `images` that depends on their pixels only: a hash of each image sorts them.

    Training mode normalises each layer's input by its own batch, so the statistics depend on which photos
    share a batch. Photos in class folders arrive sorted by class, and batches of one class each give
    statistics that describe no mix of photos the model will see (docs/calibration.md); a content hash mixes
    them, and any order of the same photos gives the same batches."""
    import hashlib

    keys = [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]
    return sorted(range(len(images)), key=keys.__getitem__)


@functools.lru_cache(maxsize=8)
def compiled_statistics_step(model):
    """The jitted BatchNorm-statistics step of `model`: in-process callers reuse it for an equal model."""
    from .steps import make_bn_statistics_step

    return make_bn_statistics_step(model)
