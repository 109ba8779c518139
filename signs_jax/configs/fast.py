"""The fast recipe: the default's optimiser and schedule in bfloat16, without augmentation, for six epochs,
tested once at the end (docs/speedrun.md).

Command: python -m signs_jax.train --config fast      (the same as `python -m signs_jax.train --recipe fast`)
Expect:  SIGNS test accuracy TBD; TBD s for the whole process on 2 free CPU cores with a warm compilation cache
         (python scripts/speedrun.py --seeds 5 measures it beside the default recipe).
"""

from signs_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(recipe_name="fast")
