"""The fast recipe: the default's optimiser and schedule in bfloat16, without augmentation, for six epochs,
tested and checkpointed once at the end (docs/speedrun.md).

Command: python -m signs_jax.train --config fast      (the same as `python -m signs_jax.train --recipe fast`)
Expect:  SIGNS test accuracy 0.967 / 0.958 / 0.925 / 0.958 / 0.950 for seeds 0-4 (mean 0.952); about 100 s for the
         whole process on 2 free CPU cores with a warm compilation cache, 0.26x the default recipe's
         (python scripts/speedrun.py --seeds 5 measures both side by side; docs/speedrun.md).
"""

from signs_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(recipe_name="fast")
