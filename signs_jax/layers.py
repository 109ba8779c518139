"""Layers with Keras semantics, passed to the blocks as arguments so implementations can be swapped.

Every convolution implementation here takes the arguments of `flax.linen.Conv` that the model uses
(features, kernel_size, strides, padding, dtype, param_dtype, name) and owns the same two
parameters, `kernel` (kh, kw, in, out) and `bias` (out,), so the param tree never depends on which
one computes the result.
"""

import functools
from typing import Any, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from . import config
from .conv import shifted_views, window_offsets

# Keras initialises Conv2D and Dense kernels with glorot_uniform and biases with zeros.
XlaConv = functools.partial(nn.Conv, use_bias=True, kernel_init=nn.initializers.glorot_uniform())
Dense = functools.partial(nn.Dense, use_bias=True, kernel_init=nn.initializers.glorot_uniform())


def _batch_moments(x):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    return mean, jnp.mean(jnp.square(x - mean), axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_normalize(x, scale, bias, epsilon: float):
    """Training-mode BatchNorm over all axes but the last: `(y, batch mean, biased batch variance)`.

    The backward pass is written out because autodiff of the formula reads and writes the
    activation-sized arrays in more passes than the two this one needs (one pass of reductions, one
    elementwise pass); with the 2-D kernel-gradient dot of `conv.conv_as_matmul` the float32 train
    step is faster (docs/performance.md).
    """
    return _batch_normalize_fwd(x, scale, bias, epsilon)[0]


def normalize(x, mean, var, scale, bias, epsilon: float):
    """`(x - mean) / sqrt(var + epsilon) * scale + bias`, as one multiply-add per element."""
    multiplier = scale * jax.lax.rsqrt(var + epsilon)
    return x * multiplier + (bias - mean * multiplier)


def _batch_normalize_fwd(x, scale, bias, epsilon):
    mean, var = _batch_moments(x)
    return (normalize(x, mean, var, scale, bias, epsilon), mean, var), (x, scale, mean, jax.lax.rsqrt(var + epsilon))


def _batch_normalize_bwd(epsilon, residuals, cotangents):
    x, scale, mean, inv_std = residuals
    g, g_mean, g_var = cotangents
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    centred = x - mean
    d_bias = jnp.sum(g, axes)
    d_scale = jnp.sum(g * centred, axes) * inv_std
    multiplier = scale * inv_std
    # d/dx of x_hat * scale + bias with x_hat's own dependence on the batch mean and variance, plus
    # the (usually zero) cotangents of the returned mean and variance.
    dx = multiplier * (g - d_bias / n - centred * (inv_std * d_scale / n))
    dx = dx + g_mean / n + centred * (2.0 * g_var / n)
    return dx, d_scale, d_bias


batch_normalize.defvjp(_batch_normalize_fwd, _batch_normalize_bwd)


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
            y, mean, var = batch_normalize(x32, scale.astype(stat_dtype), bias.astype(stat_dtype), self.epsilon)
            if not self.is_initializing():
                n = x.size // features
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                moving_mean.value = m * moving_mean.value + (1.0 - m) * mean
                moving_var.value = m * moving_var.value + (1.0 - m) * unbiased
            return y.astype(self.dtype)

        return normalize(x32, mean, var, scale.astype(stat_dtype), bias.astype(stat_dtype), self.epsilon).astype(
            self.dtype
        )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x, window: Tuple[int, int], strides: Tuple[int, int]):
    """'VALID' max-pooling of (N, H, W, C) as the maximum of the window's shifted views.

    XLA lowers the gradient of its own reduce-window max as a variadic reduce-window over index
    tensors; this backward pass masks each view's first maximum and sums plain shifts per stride
    phase: a faster train step. Like TensorFlow, the gradient goes to the first maximum of a window.
    The backward pass computes in float32 whatever `x`'s dtype: XLA's CPU loops over bfloat16 pads
    and sums ran several times slower than over float32 here.
    """
    return functools.reduce(jnp.maximum, shifted_views(x, window, strides))


def _max_pool_fwd(x, window, strides):
    out = max_pool(x, window, strides)
    return out, (x, out)


def _max_pool_bwd(window, strides, residuals, g):
    x, out = residuals
    dtype, compute = x.dtype, jnp.promote_types(jnp.float32, x.dtype)
    x, out, g = x.astype(compute), out.astype(compute), g.astype(compute)
    n, h, w, c = x.shape
    (sh, sw), (out_h, out_w) = strides, out.shape[1:3]
    # Window offset (i, j) sends output pixel (p, q) to input pixel (s*p + i, s*q + j), i.e. to
    # stride block (p + i // s, q + j // s) at phase (i % s, j % s). Summing per phase needs only
    # plain shifts; the phases then interleave by a reshape. (Nine interior-padded arrays summed in
    # one fusion cost XLA far more: index arithmetic per element for each of them.)
    blocks_h, blocks_w = -(-h // sh) + (window[0] - 1) // sh, -(-w // sw) + (window[1] - 1) // sw
    phases = {}
    taken = jnp.zeros(out.shape, bool)
    for (i, j), view in zip(window_offsets(window), shifted_views(x, window, strides)):
        first = (view == out) & ~taken
        taken = taken | first
        rows, cols = (i // sh, blocks_h - out_h - i // sh), (j // sw, blocks_w - out_w - j // sw)
        shifted = jnp.pad(jnp.where(first, g, jnp.zeros((), g.dtype)), ((0, 0), rows, cols, (0, 0)))
        phase = (i % sh, j % sw)
        phases[phase] = shifted if phase not in phases else phases[phase] + shifted
    zeros = jnp.zeros((n, blocks_h, blocks_w, c), g.dtype)
    grid = jnp.stack(
        [jnp.stack([phases.get((pi, pj), zeros) for pj in range(sw)], axis=3) for pi in range(sh)], axis=2
    )  # (n, blocks_h, sh, blocks_w, sw, c)
    dx = grid.reshape(n, blocks_h * sh, blocks_w * sw, c)[:, :h, :w]
    return (dx.astype(dtype),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
