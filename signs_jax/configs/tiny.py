"""A narrow, shallow ResNet (1/8 of the filters, one block per stage) for a few epochs: for trying the tools,
the Python API and sweeps in seconds, not for results.

Command: python -m signs_jax.train --config tiny
Expect:  test accuracy 0.725 / 0.675 for seeds 0 / 1; about 45 s on 2 busy CPU cores, most of it compiling
         (18 s for the next run, which finds the steps in the compilation cache).
"""

from signs_jax.config import ModelConfig, TrainConfig
from signs_jax.recipes import RECIPES


def get_config() -> TrainConfig:
    return TrainConfig(
        recipe_name="default-v1",
        recipe=RECIPES["default-v1"].replace(epochs=4, bn_recalibration_images=240),
        model=ModelConfig(width=0.125, stage_sizes=(1, 1, 1, 1)),
    )
