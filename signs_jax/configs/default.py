"""The default recipe (default-v2): the first default's AdamW 2e-3, cosine schedule, label smoothing, frozen conv
biases and BatchNorm statistics re-estimated on 480 clean training images, with generated walls behind 60 % of the
training hands, for 30 epochs of batch 32 in bfloat16.

Command: python -m signs_jax.train --config default      (the same as `python -m signs_jax.train`)
Expect:  SIGNS test accuracy 0.975 / 0.992 / 0.992 for seeds 0 / 1 / 2; other people's photos
         (scripts/foreign_photos.py, sign_digits) 0.903 / 0.866 / 0.825; 470-600 s of training on 2 free CPU
         cores (docs/recipes.md).
"""

from signs_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(recipe_name="default")
