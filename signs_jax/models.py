"""The original Keras ResNet50 as Flax linen modules.

One `ResNet` module builds every variant (depth, width, class count, input size, compute dtype);
the convolution and BatchNorm layers reach the blocks as arguments, as in the Flax ImageNet example.
Submodules carry Keras's names (`conv1`, `bn_conv1`, `res2a/branch2a`, `res2a/bn_branch2a`, `fc`), so
`signs_jax.keras_h5` maps weights by name.
"""

import functools
import string
from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from . import backends, config
from .conv import MatmulConv, MatmulInferenceConv
from .layers import BatchNorm, Dense, XlaConv, max_pool

ModuleDef = Any

CONV_IMPLEMENTATIONS = {"xla": XlaConv, "matmul": MatmulConv}
# The conv a model computes with when not training, where it differs from the training one.
INFERENCE_CONVS = {"matmul": MatmulInferenceConv}


def block_name(stage_index: int, block_index: int) -> str:
    """Keras's name of a residual block: stage index 0, block 1 -> 'res2b'."""
    return f"res{stage_index + config.FIRST_STAGE}{string.ascii_lowercase[block_index]}"


class IdentityBlock(nn.Module):
    """1x1 -> f x f ('same') -> 1x1 bottleneck whose shortcut is the input itself."""

    filters: Tuple[int, int, int]
    conv: ModuleDef
    norm: ModuleDef
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x):
        f1, f2, f3 = self.filters
        k = self.kernel_size
        y = nn.relu(self.norm(name="bn_branch2a")(self.conv(f1, (1, 1), padding="VALID", name="branch2a")(x)))
        y = nn.relu(self.norm(name="bn_branch2b")(self.conv(f2, (k, k), padding="SAME", name="branch2b")(y)))
        y = self.norm(name="bn_branch2c")(self.conv(f3, (1, 1), padding="VALID", name="branch2c")(y))
        return nn.relu(y + x)


class ConvBlock(nn.Module):
    """Bottleneck with a projection shortcut; the stride sits on both 1x1 convs that take the input."""

    filters: Tuple[int, int, int]
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 2
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x):
        f1, f2, f3 = self.filters
        k, s = self.kernel_size, (self.strides, self.strides)
        y = self.conv(f1, (1, 1), strides=s, padding="VALID", name="branch2a")(x)
        y = nn.relu(self.norm(name="bn_branch2a")(y))
        y = nn.relu(self.norm(name="bn_branch2b")(self.conv(f2, (k, k), padding="SAME", name="branch2b")(y)))
        y = self.norm(name="bn_branch2c")(self.conv(f3, (1, 1), padding="VALID", name="branch2c")(y))
        shortcut = self.conv(f3, (1, 1), strides=s, padding="VALID", name="branch1")(x)
        shortcut = self.norm(name="bn_branch1")(shortcut)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """ZeroPad 3 -> conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2 -> bottleneck stages -> avg-pool 2x2 -> Dense.

    Returns float32 logits. `input_shape` is the image size the weights were made for (it fixes the
    Dense input width); callers resize images to it. `inference_conv`, when given, replaces `conv`
    when not training (it must own the same parameters); None computes with `conv` in both modes.
    """

    stage_sizes: Sequence[int]
    stage_filters: Sequence[Tuple[int, int, int]]
    stem_filters: int = config.RESNET50_STEM_FILTERS
    num_classes: int = config.NUM_CLASSES
    input_shape: Tuple[int, int, int] = config.INPUT_SHAPE
    kernel_size: int = 3
    bn_momentum: float = config.BN_MOMENTUM
    dtype: Any = jnp.float32
    conv: ModuleDef = XlaConv
    norm: ModuleDef = BatchNorm
    inference_conv: Optional[ModuleDef] = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = self.conv if train or self.inference_conv is None else self.inference_conv
        conv = functools.partial(conv, dtype=self.dtype, param_dtype=jnp.float32)
        norm = functools.partial(self.norm, use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype)

        x = jnp.asarray(x, self.dtype)
        x = conv(self.stem_filters, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), name="conv1")(x)
        x = nn.relu(norm(name="bn_conv1")(x))
        x = max_pool(x, (3, 3), (2, 2))
        for stage, (blocks, filters) in enumerate(zip(self.stage_sizes, self.stage_filters)):
            for block in range(blocks):
                name = block_name(stage, block)
                if block == 0:
                    strides = 1 if stage == 0 else 2
                    x = ConvBlock(tuple(filters), conv, norm, strides, self.kernel_size, name=name)(x)
                else:
                    x = IdentityBlock(tuple(filters), conv, norm, self.kernel_size, name=name)(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape((x.shape[0], -1))
        x = Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
        return x.astype(jnp.float32)


def ResNet50(
    num_classes: int = config.NUM_CLASSES,
    *,
    width: float = 1.0,
    stage_sizes: Sequence[int] = config.RESNET50_STAGE_SIZES,
    input_shape: Tuple[int, int, int] = config.INPUT_SHAPE,
    dtype: Any = jnp.float32,
    conv: Optional[str] = None,
    bn_momentum: float = config.BN_MOMENTUM,
) -> ResNet:
    """The original model; `width` scales every filter count and `stage_sizes` sets the depth.

    `ResNet50(num_classes=6)` is the course model. Narrow or shallow variants (for tests and quick
    experiments) use the same code: `ResNet50(width=0.125, stage_sizes=(1, 1, 1, 1))`. `conv` names
    the convolution implementation (`CONV_IMPLEMENTATIONS`); None takes the default of the backend
    JAX runs on now (`backends.default_conv`). Every implementation owns the same parameters.
    """
    if conv is None:
        conv = backends.default_conv()
    if conv not in CONV_IMPLEMENTATIONS:
        raise ValueError(f"unknown conv implementation {conv!r}; choose from {sorted(CONV_IMPLEMENTATIONS)}")
    if len(stage_sizes) != len(config.RESNET50_STAGE_FILTERS) or min(stage_sizes) < 1:
        raise ValueError(f"stage_sizes needs {len(config.RESNET50_STAGE_FILTERS)} positive block counts")
    return ResNet(
        stage_sizes=tuple(stage_sizes),
        stage_filters=tuple(tuple(config.scaled(f, width) for f in fs) for fs in config.RESNET50_STAGE_FILTERS),
        stem_filters=config.scaled(config.RESNET50_STEM_FILTERS, width),
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        dtype=dtype,
        conv=CONV_IMPLEMENTATIONS[conv],
        inference_conv=INFERENCE_CONVS.get(conv),
        bn_momentum=bn_momentum,
    )


def conv_name(model: ResNet) -> Optional[str]:
    """The `CONV_IMPLEMENTATIONS` name of the convolution `model` trains with (None for another conv)."""
    return next((name for name, conv in CONV_IMPLEMENTATIONS.items() if conv is model.conv), None)


def _dummy_input(model: ResNet, batch: int = 1):
    return jnp.zeros((batch, *model.input_shape), jnp.float32)


def init_variables(model: ResNet, rng) -> dict:
    """Random `{"params", "batch_stats"}` for `model`, computed in one compiled call (not op by op)."""
    return _compiled_init(model)(rng, _dummy_input(model))


@functools.lru_cache(maxsize=8)
def _compiled_init(model: ResNet):
    # Compiling the random initialisers (threefry code for every weight) costs more than they take to run, and
    # they run once: on the CPU, XLA's backend optimisations are skipped, which leaves the values bit for bit
    # as they were (tests/test_model.py; times in docs/cold-start.md).
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    return jax.jit(functools.partial(model.init, train=False), compiler_options=options)


def abstract_variables(model: ResNet) -> dict:
    """Shapes and dtypes of the variables without computing them (for loaders and restores)."""
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), _dummy_input(model))


def count_numbers(tree) -> int:
    """How many numbers a pytree of arrays (or shape structs) holds."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))
