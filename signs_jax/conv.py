"""Convolution as patches + one matmul: XLA's CPU matmul runs far closer to peak than its conv kernels.

`MatmulConv` owns the same `kernel` (kh, kw, in, out) and `bias` (out,) as `flax.linen.Conv`, so it
swaps in without touching the param tree. A 1x1 conv is a matmul over channels (after striding); a
k x k conv concatenates the k*k shifted views of the padded input along channels (im2col) and does
one matmul with the kernel reshaped to (k*k*in, out).
"""
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


class MatmulConv(nn.Module):
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
        sh, sw = self.strides
        in_features = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, in_features, self.features), self.param_dtype)
        x = x.astype(self.dtype)
        (top, bottom), (left, right) = resolve_padding(self.padding, x.shape[1:3], (kh, kw), (sh, sw))
        if top or bottom or left or right:
            x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        out_h = (x.shape[1] - kh) // sh + 1
        out_w = (x.shape[2] - kw) // sw + 1
        views = [
            jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, in_features), (1, sh, sw, 1))
            for i in range(kh)
            for j in range(kw)
        ]
        patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
        # float32 accumulation: XLA's CPU dot runs bfloat16 inputs at twice the float32 rate this way.
        y = jnp.dot(patches, kernel.reshape(kh * kw * in_features, self.features).astype(self.dtype),
                    preferred_element_type=jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return y.astype(self.dtype)
