"""The fast recipe: the default's optimiser and schedule in bfloat16, shifts of up to 4 pixels as the only
augmentation, eight epochs, a moving average of the weights, tested and checkpointed once at the end
(docs/speedrun.md).

Command: python -m signs_jax.train --config fast      (the same as `python -m signs_jax.train --recipe fast`)
Expect:  SIGNS test accuracy 0.975 / 0.967 / 0.958 / 0.975 / 0.975 for seeds 0-4 (mean 0.970); about 145 s for the
         whole process on 2 free CPU cores with a warm compilation cache, 0.32x the default recipe's
         (python scripts/speedrun.py --seeds 5 measures both side by side; docs/speedrun.md).
"""

from signs_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(recipe_name="fast")
