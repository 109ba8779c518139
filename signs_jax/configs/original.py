"""The course notebook: Adam 1e-3, 2 epochs of batch 32, L2 0.01 on conv1 and the Dense head.

Command: python -m signs_jax.train --config original
Expect:  test accuracy 0.167 with every seed (every test image gets one class; train accuracy 0.80), as real
         tf-keras gives; about 130 s on 2 CPU cores (docs/recipes.md).
"""

from signs_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(recipe_name="original")
