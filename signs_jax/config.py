"""Configuration in one place: the architecture of the original Keras ResNet50 and project defaults."""

from pathlib import Path

# The original model: (blocks, [F1, F2, F3]) for stages 2..5, stride 1 on stage 2 and 2 on the others.
RESNET50_STAGE_SIZES = (3, 4, 6, 3)
RESNET50_STAGE_FILTERS = ((64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048))
RESNET50_STEM_FILTERS = 64
FIRST_STAGE = 2  # Keras names stages 2..5 (`res2a_branch2a`)

# Keras BatchNormalization defaults, which the original model uses unchanged.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

NUM_CLASSES = 6
INPUT_SHAPE = (64, 64, 3)
CLASS_NAMES = ("0", "1", "2", "3", "4", "5")

DEFAULT_WORKDIR = Path("checkpoints")


def scaled(filters: int, width: float) -> int:
    """Filter count of a width-scaled variant (never below one filter)."""
    return max(1, int(round(filters * width)))
