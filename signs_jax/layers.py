"""Layers with Keras semantics, passed to the blocks as arguments so implementations can be swapped.

Every convolution implementation here takes the arguments of `flax.linen.Conv` that the model uses
(features, kernel_size, strides, padding, dtype, param_dtype, name) and owns the same two
parameters, `kernel` (kh, kw, in, out) and `bias` (out,), so the param tree never depends on which
one computes the result.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from . import config

# Keras initialises Conv2D and Dense kernels with glorot_uniform and biases with zeros.
XlaConv = functools.partial(nn.Conv, use_bias=True, kernel_init=nn.initializers.glorot_uniform())
Dense = functools.partial(nn.Dense, use_bias=True, kernel_init=nn.initializers.glorot_uniform())


class BatchNorm(nn.Module):
    """Keras `BatchNormalization(axis=-1)`, including how Keras updates its moving statistics.

    Training normalises with the biased batch variance but, like TensorFlow's fused kernel, folds
    the unbiased (n / (n - 1)) variance into `moving_variance`. Statistics are always float32.
    Under `jax.jit` with a batch-sharded input the means are global, i.e. synchronous BatchNorm.
    """

    use_running_average: bool = True
    momentum: float = config.BN_MOMENTUM
    epsilon: float = config.BN_EPSILON
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        moving_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        moving_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        stat_dtype = jnp.promote_types(jnp.float32, x.dtype)  # float32 for bfloat16 inputs
        x32 = x.astype(stat_dtype)
        if self.use_running_average:
            mean, var = moving_mean.value.astype(stat_dtype), moving_var.value.astype(stat_dtype)
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x32, axes)
            var = jnp.mean(jnp.square(x32 - mean), axes)
            if not self.is_initializing():
                n = x.size // features
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                moving_mean.value = m * moving_mean.value + (1.0 - m) * mean
                moving_var.value = m * moving_var.value + (1.0 - m) * unbiased

        multiplier = scale.astype(stat_dtype) * jax.lax.rsqrt(var + self.epsilon)
        y = x32 * multiplier + (bias.astype(stat_dtype) - mean * multiplier)
        return y.astype(self.dtype)
