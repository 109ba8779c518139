"""signs_jax: the Keras course ResNet50 for the SIGNS hand-sign data set, in JAX/Flax.

The public API is imported lazily so that command-line tools start fast.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ResNet": "models",
    "ResNet50": "models",
    "IdentityBlock": "models",
    "ConvBlock": "models",
    "init_variables": "models",
    "abstract_variables": "models",
    "count_numbers": "models",
    "BatchNorm": "layers",
    "load_keras_h5": "keras_h5",
    "save_keras_h5": "keras_h5",
    "KerasH5Error": "keras_h5",
    "UserError": "errors",
    "load_image": "images",
    "ImageError": "images",
    "load_weights": "weights",
    "load_signs": "data",
    "load_dataset": "data",
    "adapt_batch_norm": "adapt",
    "fit_temperature": "calibration",
    "TrainConfig": "config",
    "ModelConfig": "config",
    "DataConfig": "config",
    "RunConfig": "config",
    "load_config": "config",
    "Recipe": "recipes",
    "RECIPES": "recipes",
    "train_and_evaluate": "experiment",
    "TrainResult": "experiment",
    "expected_calibration_error": "calibration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'signs_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
