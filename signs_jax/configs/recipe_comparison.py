"""The README's recipe comparison: the course's recipe against the first default, over three seeds.

Command: python -m signs_jax.sweep recipe_comparison --seeds 0 1 2 --grid recipe_name=original,default-v1
Expect:  original 0.167 on every seed; default-v1 0.967 / 0.958 / 0.967 (mean 0.964, interval 0.952-0.976);
         about 25 minutes on 2 free CPU cores (three 130 s runs and three 250-320 s runs). The table goes to
         checkpoints/sweeps/recipe_comparison/results.md (docs/sweeps.md).
"""

from signs_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(recipe_name="default-v1")
