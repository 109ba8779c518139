"""Convolution as patches + one matmul: XLA's CPU matmul runs far closer to peak than its conv kernels.

`MatmulConv` owns the same `kernel` (kh, kw, in, out) and `bias` (out,) as `flax.linen.Conv`, so it
swaps in without touching the param tree. A 1x1 conv is a matmul over channels (after striding); a
k x k conv concatenates the k*k shifted views of the padded input along channels (im2col) and does
one matmul with the kernel reshaped to (k*k*in, out). The backward pass of that matmul is written
out by hand (`patches_matmul`): see there why. docs/performance.md has the measurements.
"""
import functools
from typing import Any, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

Padding = Union[str, Sequence[Tuple[int, int]]]


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow's 'SAME': output ceil(size / stride); the odd pixel of padding goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int]):
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return [(0, 0)] * len(spatial)
        if padding.upper() == "SAME":
            return [same_padding(n, k, s) for n, k, s in zip(spatial, kernel, strides)]
        raise ValueError(f"unsupported padding {padding!r}")
    return [tuple(p) for p in padding]


def im2col(x, kernel_size: Sequence[int], strides: Sequence[int], pads) -> jax.Array:
    """(N, H, W, C) -> (N, out_h, out_w, kh*kw*C): the kernel-position-major patches of a conv.

    Channel order (i, j, c) matches `kernel.reshape(kh*kw*C, out)`. A 1x1 kernel is just a strided view.
    """
    (kh, kw), (sh, sw), ((top, bottom), (left, right)) = kernel_size, strides, pads
    if top or bottom or left or right:
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    views = shifted_views(x, kernel_size, strides)
    return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


def window_offsets(kernel_size: Sequence[int]):
    return [(i, j) for i in range(kernel_size[0]) for j in range(kernel_size[1])]


def shifted_views(x, kernel_size: Sequence[int], strides: Sequence[int]):
    """The kh*kw strided views of (N, H, W, C) `x`, one per kernel position, each (N, out_h, out_w, C)."""
    (kh, kw), (sh, sw) = kernel_size, strides
    n, h, w, c = x.shape
    out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
    return [
        jax.lax.slice(x, (0, i, j, 0), (n, i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, c), (1, sh, sw, 1))
        for i, j in window_offsets(kernel_size)
    ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x, window: Tuple[int, int], strides: Tuple[int, int]):
    """'VALID' max-pooling of (N, H, W, C) as the maximum of the window's shifted views.

    XLA lowers the gradient of its own reduce-window max as a variadic reduce-window over index
    tensors; this backward pass masks each view's first maximum and sums plain shifts per stride
    phase (1.02x on the train step). Like TensorFlow, the gradient goes to the first maximum of a window.
    """
    return functools.reduce(jnp.maximum, shifted_views(x, window, strides))


def _max_pool_fwd(x, window, strides):
    out = max_pool(x, window, strides)
    return out, (x, out)


def _max_pool_bwd(window, strides, residuals, g):
    x, out = residuals
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
    return (dx,)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.custom_vjp
def patches_matmul(patches, kernel):
    """(..., K) @ (K, out) in the patches' dtype with float32 accumulation (XLA's CPU dot runs
    bfloat16 inputs at twice the float32 rate this way). The kernel keeps its own (parameter) dtype
    outside: its gradient comes back in float32, never rounded through bfloat16."""
    return jnp.dot(patches, kernel.astype(patches.dtype), preferred_element_type=jnp.float32)


def _patches_matmul_fwd(patches, kernel):
    return patches_matmul(patches, kernel), (patches, kernel)


def _patches_matmul_bwd(residuals, g):
    patches, kernel = residuals
    # The kernel gradient contracts over batch x pixels, the major axis of both operands, so XLA
    # lays the output gradient out transposed. Left to itself it fuses that transpose into the
    # BatchNorm-backward fusion that produces `g`, whose strided writes then cost more than the
    # matmuls (16 % of a float32 train step). The barrier keeps `g` a plain row-major array;
    # the dot then reads it transposed for free (measured 1.2x on the whole train step).
    g = jax.lax.optimization_barrier(g.astype(patches.dtype))
    d_patches = jnp.dot(g, kernel.astype(patches.dtype).T, preferred_element_type=jnp.float32).astype(patches.dtype)
    # Contracted over the 4-D arrays as they are, XLA copies one operand into a transposed layout
    # first (52 copies, about 5 % of a float32 train step); flattened to (pixels, channels), the dot
    # reads both in place.
    patches, g = patches.reshape(-1, patches.shape[-1]), g.reshape(-1, g.shape[-1])
    if patches.dtype == jnp.float32:
        d_kernel = jax.lax.dot_general(patches, g, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    else:
        # XLA's CPU dot has no bfloat16 kernel for this contraction and would convert both operands
        # to float32; a bfloat16 transposed copy of the patches costs less.
        d_kernel = jnp.dot(jax.lax.optimization_barrier(patches.T), g, preferred_element_type=jnp.float32)
    return d_patches, d_kernel.astype(kernel.dtype)


patches_matmul.defvjp(_patches_matmul_fwd, _patches_matmul_bwd)


class MatmulConv(nn.Module):
    """`flax.linen.Conv` (Keras init: glorot_uniform kernel, zero bias) computed as im2col + one matmul.

    Computes in `dtype` (the matmul accumulates in float32); params are `param_dtype`.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: Padding = "SAME"
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.glorot_uniform()
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        strides = tuple(self.strides)
        in_features = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, in_features, self.features), self.param_dtype)
        pads = resolve_padding(self.padding, x.shape[1:3], (kh, kw), strides)
        patches = im2col(x.astype(self.dtype), (kh, kw), strides, pads)
        y = patches_matmul(patches, kernel.reshape(kh * kw * in_features, self.features))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return y.astype(self.dtype)
