"""The default recipe: AdamW 2e-3 with a cosine schedule, augmentation, label smoothing, frozen conv biases
and BatchNorm statistics re-estimated on 480 training images, 15 epochs of batch 32.

Command: python -m signs_jax.train --config default      (the same as `python -m signs_jax.train`)
Expect:  test accuracy 0.967 / 0.958 / 0.967 for seeds 0 / 1 / 2 (mean 0.964, docs/experiments.md); 250-320 s
         each on 2 free CPU cores; other people's photos (scripts/foreign_photos.py, sign_digits) 0.669 for seed 0.
"""

from signs_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(recipe_name="default")
