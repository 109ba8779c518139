"""Convolution as patches + one matmul: XLA's CPU matmul runs far closer to peak than its conv kernels.

`MatmulConv` owns the same `kernel` (kh, kw, in, out) and `bias` (out,) as `flax.linen.Conv`, so it
swaps in without touching the param tree. A 1x1 conv is a matmul over channels (after striding); a
k x k conv concatenates the k*k shifted views of the padded input along channels (im2col) and does
one matmul with the kernel reshaped to (k*k*in, out). The backward pass is written out by hand
(`conv_as_matmul`): see there why. Inference has two more paths, chosen by the conv's geometry:
`conv_skipping_padding` where many taps fall on padding, `winograd_conv` for the other 3x3 stride-1
convs. docs/performance.md has the measurements, all on XLA's CPU backend: this is the CPU's default
conv only (`backends.default_conv`).
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
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    return concatenated_views(x, kernel_size, strides, spatial_axes=(1, 2), channel_axis=3)


def concatenated_views(x, kernel_size: Sequence[int], strides: Sequence[int], spatial_axes, channel_axis: int):
    """The `shifted_views` of an already padded `x`, concatenated along `channel_axis` in (i, j, c) order.

    Built as (.., kh, kw, C, ..): the kw views of a kernel row concatenated along a new axis, the kh
    rows along another, then merged into the channel axis by a reshape. XLA's CPU backend fuses a
    concatenate only if it has at most 8 operands and is not along the minor axis. A flat
    concatenation of kh*kw views along the channels is neither: XLA wrote out every view, copied
    them into the concatenation and, for bfloat16, copied that once more (`move_bits`). Nested, the
    patches are one loop fusion that writes them once: a faster train step, the same bits.
    """
    kh, kw = kernel_size
    views = shifted_views(x, kernel_size, strides, spatial_axes)
    if len(views) == 1:
        return views[0]
    new_axes = (channel_axis, channel_axis + 1)
    rows = [
        jnp.concatenate(
            [jnp.expand_dims(view, new_axes) for view in views[i * kw : (i + 1) * kw]], axis=channel_axis + 1
        )
        for i in range(kh)
    ]
    shape = list(views[0].shape)
    shape[channel_axis] *= kh * kw
    return jnp.concatenate(rows, axis=channel_axis).reshape(shape)


def window_offsets(kernel_size: Sequence[int]):
    return [(i, j) for i in range(kernel_size[0]) for j in range(kernel_size[1])]


def shifted_views(x, kernel_size: Sequence[int], strides: Sequence[int], spatial_axes=(1, 2)):
    """The kh*kw strided views of `x`, (N, H, W, C) unless `spatial_axes` say otherwise, one per kernel
    position, each with its spatial axes cut to (out_h, out_w)."""
    (kh, kw), (sh, sw), (rows, cols) = kernel_size, strides, spatial_axes
    out_h, out_w = (x.shape[rows] - kh) // sh + 1, (x.shape[cols] - kw) // sw + 1

    def view(i, j):
        start, limit, step = [0] * x.ndim, list(x.shape), [1] * x.ndim
        start[rows], limit[rows], step[rows] = i, i + sh * (out_h - 1) + 1, sh
        start[cols], limit[cols], step[cols] = j, j + sw * (out_w - 1) + 1, sw
        return jax.lax.slice(x, start, limit, step)

    return [view(i, j) for i, j in window_offsets(kernel_size)]


def move_bits(f, x, *args):
    """Run `f`, which only moves elements (slices, pads, transposes, concatenations), on the bits of a
    bfloat16 `x`: XLA's CPU backend concatenates bfloat16 arrays in float32 (convert, concatenate,
    convert back), three passes at twice the bytes."""
    if x.dtype != jnp.bfloat16:
        return f(x, *args)
    return jax.lax.bitcast_convert_type(f(jax.lax.bitcast_convert_type(x, jnp.uint16), *args), jnp.bfloat16)


def im2col_transposed(x, kernel_size: Sequence[int], strides: Sequence[int], pads) -> jax.Array:
    """(N, H, W, C) -> (kh*kw*C, N*out_h*out_w): the transpose of `im2col`, built from a transposed `x`."""
    (kh, kw), ((top, bottom), (left, right)) = kernel_size, pads
    xt = jnp.transpose(x, (3, 0, 1, 2))
    if top or bottom or left or right:
        xt = jnp.pad(xt, ((0, 0), (0, 0), (top, bottom), (left, right)))
    columns = concatenated_views(xt, kernel_size, strides, spatial_axes=(2, 3), channel_axis=0)
    return columns.reshape(kh * kw * x.shape[-1], -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_as_matmul(x, kernel, kernel_size: Tuple[int, int], strides: Tuple[int, int], pads):
    """The convolution of (N, H, W, C) `x` with a (kh, kw, C, out) `kernel` as `im2col(x) @ kernel`.

    Computes in `x`'s dtype with float32 accumulation (XLA's CPU dot runs bfloat16 inputs at twice
    the float32 rate) and returns float32. The kernel keeps its own (parameter) dtype outside: its
    gradient comes back in float32, never rounded through bfloat16.
    """
    return _conv_as_matmul_fwd(x, kernel, kernel_size, strides, pads)[0]


def _conv_as_matmul_fwd(x, kernel, kernel_size, strides, pads):
    patches = move_bits(im2col, x, kernel_size, strides, pads)
    y = jnp.dot(patches, kernel.reshape(-1, kernel.shape[-1]).astype(x.dtype), preferred_element_type=jnp.float32)
    # The kernel gradient needs the patches again. float32 keeps them and contracts over their major
    # axis. For bfloat16 XLA's CPU dot has no kernel for that contraction: it would convert both
    # operands to float32 (and folds any explicit transpose back into the dot), so the backward
    # pass rebuilds the patches transposed from `x` instead.
    return y, (x, patches if x.dtype == jnp.float32 else None, kernel)


def _conv_as_matmul_bwd(kernel_size, strides, pads, residuals, g):
    x, patches, kernel = residuals
    kernel_2d = kernel.reshape(-1, kernel.shape[-1]).astype(x.dtype)
    # The kernel gradient contracts over batch x pixels, the major axis of both operands, so XLA
    # lays the output gradient out transposed. Left to itself it fuses that transpose into the
    # BatchNorm-backward fusion that produces `g`, whose strided writes then cost more than the
    # matmuls. The barrier keeps `g` a plain row-major array; the dot then reads it transposed for free.
    g = jax.lax.optimization_barrier(g.astype(x.dtype))
    d_patches = jnp.dot(g, kernel_2d.T, preferred_element_type=jnp.float32)
    # col2im (the transpose of im2col) sums up to kh*kw patch entries per pixel: in float32.
    _, col2im = jax.vjp(lambda x32: im2col(x32, kernel_size, strides, pads), x.astype(jnp.float32))
    d_x = col2im(d_patches)[0].astype(x.dtype)
    # Flattened to (pixels, channels), the dot reads both operands in place; contracted over the 4-D
    # arrays, XLA copied one into a transposed layout first.
    g = g.reshape(-1, g.shape[-1])
    if patches is not None:
        patches = patches.reshape(-1, patches.shape[-1])
        d_kernel = jax.lax.dot_general(patches, g, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    else:
        columns = move_bits(im2col_transposed, x, kernel_size, strides, pads)
        d_kernel = jnp.dot(columns, g, preferred_element_type=jnp.float32)
    return d_x, d_kernel.reshape(kernel.shape).astype(kernel.dtype)


conv_as_matmul.defvjp(_conv_as_matmul_fwd, _conv_as_matmul_bwd)


# Inference only: skip the kernel taps that fall on zero padding where at least this fraction of a
# conv's taps does (ResNet50's 3x3 convs at 4x4 and 2x2 pixels). Faster inference in float32 and
# bfloat16; in training the gradients' extra pads ate the saved flops.
# Below it, 3x3 stride-1 convs (15x15 and 8x8 pixels) compute as Winograd F(2x2, 3x3) instead.
SKIP_PADDING_MIN_FRACTION = 0.25


def tap_runs(size: int, kernel: int, stride: int, pads: Tuple[int, int]):
    """Runs of consecutive output positions that see the same in-bounds kernel taps along one axis:
    [(first output, last output + 1, first tap, last tap + 1)]."""
    runs = []
    for o in range((size + sum(pads) - kernel) // stride + 1):
        taps = [t for t in range(kernel) if 0 <= o * stride + t - pads[0] < size]
        if runs and runs[-1][2:] == [taps[0], taps[-1] + 1]:
            runs[-1][1] = o + 1
        else:
            runs.append([o, o + 1, taps[0], taps[-1] + 1])
    return [tuple(run) for run in runs]


def padding_fraction(spatial: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int], pads) -> float:
    """The fraction of a conv's (output pixel, kernel tap) pairs whose tap falls on padding."""
    used, total = 1, 1
    for size, kernel, stride, pad in zip(spatial, kernel_size, strides, pads):
        runs = tap_runs(size, kernel, stride, pad)
        used *= sum((stop - start) * (last_tap - first_tap) for start, stop, first_tap, last_tap in runs)
        total *= runs[-1][1] * kernel
    return 1.0 - used / total


def conv_skipping_padding(x, kernel, strides, pads):
    """The conv as one matmul per block of output pixels that see the same in-bounds taps (corners,
    edges, interior), each over only those taps: no multiplications by padding. A block's patches
    are the unpadded im2col of the input rows and columns its taps reach."""
    (sh, sw), ((top, _), (left, _)) = strides, pads
    n, h, w, c = x.shape
    out_rows = []
    for r0, r1, i0, i1 in tap_runs(h, kernel.shape[0], sh, pads[0]):
        pieces = []
        for c0, c1, j0, j1 in tap_runs(w, kernel.shape[1], sw, pads[1]):
            a, b = r0 * sh + i0 - top, c0 * sw + j0 - left
            reach = jax.lax.slice(
                x, (0, a, b, 0), (n, a + sh * (r1 - r0 - 1) + i1 - i0, b + sw * (c1 - c0 - 1) + j1 - j0, c)
            )
            patches = move_bits(im2col, reach, (i1 - i0, j1 - j0), strides, ((0, 0), (0, 0)))
            taps = kernel[i0:i1, j0:j1].reshape(-1, kernel.shape[-1]).astype(x.dtype)
            pieces.append(jnp.dot(patches, taps, preferred_element_type=jnp.float32))
        out_rows.append(jnp.concatenate(pieces, axis=2) if len(pieces) > 1 else pieces[0])
    return jnp.concatenate(out_rows, axis=1) if len(out_rows) > 1 else out_rows[0]


# Winograd F(2x2, 3x3) (Lavin & Gray 2015): a 2x2 output tile from a 4x4 input tile in 16 products
# instead of 36. Row k of a matrix lists the coefficients of the k-th transformed value.
WINOGRAD_INPUT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))  # B^T
WINOGRAD_KERNEL = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))  # G
WINOGRAD_OUTPUT = ((1, 1, 1, 0), (0, 1, -1, -1))  # A^T


def combine(matrix, terms):
    """[sum_k matrix[i][k] * terms[k] for each row i], written as adds: the transforms are tiny."""
    rows = []
    for coefficients in matrix:
        row = None
        for c, term in zip(coefficients, terms):
            if c:
                term = term if c == 1 else -term if c == -1 else c * term
                row = term if row is None else row + term
        rows.append(row)
    return rows


def winograd_conv(x, kernel, pads):
    """A 3x3 stride-1 conv of (N, H, W, C) `x` as Winograd F(2x2, 3x3); returns float32.

    Each 4x4 input tile (stride 2) and the kernel are transformed to 16 values, the 16 products over
    channels are one batched matmul of (tiles, C) by (C, out), and the output transform turns them
    into 2x2 output pixels. The transforms only add and subtract (the kernel's also halve), in
    float32; the matmul runs in `x`'s dtype. The result differs from im2col's by a few float32
    roundings. Faster than im2col for ResNet50's 15x15 and 8x8 convs, slower at 4x4 and 2x2.
    """
    (top, bottom), (left, right) = pads
    n, h, w, c = x.shape
    dtype = x.dtype
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    x = jnp.pad(
        x.astype(jnp.float32), ((0, 0), (top, 2 * tiles_h + 2 - h - top), (left, 2 * tiles_w + 2 - w - left), (0, 0))
    )
    # the 4 rows (then columns) of every tile: the shifted views of a 4x1 (1x4) window at stride 2
    transformed = [
        v
        for u in combine(WINOGRAD_INPUT, shifted_views(x, (4, 1), (2, 1)))
        for v in combine(WINOGRAD_INPUT, shifted_views(u, (1, 4), (1, 2)))
    ]
    transformed = jnp.stack(transformed).reshape(16, n * tiles_h * tiles_w, c).astype(dtype)
    kernel = jnp.stack(
        [
            v
            for u in combine(WINOGRAD_KERNEL, list(kernel.astype(jnp.float32)))
            for v in combine(WINOGRAD_KERNEL, list(u))
        ]
    )  # (16, C, out)
    products = jax.lax.dot_general(
        transformed, kernel.astype(dtype), (((2,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32
    )
    products = list(products.reshape(4, 4, n, tiles_h, tiles_w, -1))
    rows = combine(WINOGRAD_OUTPUT, products)  # 2 x (4, N, th, tw, out): output row within the tile
    tiles = jnp.stack([jnp.stack(combine(WINOGRAD_OUTPUT, list(r))) for r in rows])  # (2, 2, N, th, tw, out)
    y = tiles.transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * tiles_h, 2 * tiles_w, -1)
    return y[:, :out_h, :out_w]


class MatmulConv(nn.Module):
    """`flax.linen.Conv` (Keras init: glorot_uniform kernel, zero bias) computed as im2col + one matmul.

    Computes in `dtype` (the matmul accumulates in float32); params are `param_dtype`. With
    `inference` (`MatmulInferenceConv`, the model's conv when not training) a conv whose taps fall on padding often
    enough computes as `conv_skipping_padding`, and other 3x3 stride-1 convs as `winograd_conv`.
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
    inference: bool = False  # inference-only paths: see SKIP_PADDING_MIN_FRACTION

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        strides = tuple(self.strides)
        in_features = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, in_features, self.features), self.param_dtype)
        pads = tuple(map(tuple, resolve_padding(self.padding, x.shape[1:3], (kh, kw), strides)))
        x = x.astype(self.dtype)
        if self.inference and padding_fraction(x.shape[1:3], (kh, kw), strides, pads) >= SKIP_PADDING_MIN_FRACTION:
            y = conv_skipping_padding(x, kernel, strides, pads)
        elif self.inference and (kh, kw) == (3, 3) and strides == (1, 1):
            y = winograd_conv(x, kernel, pads)
        else:
            y = conv_as_matmul(x, kernel, (kh, kw), strides, pads)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return y.astype(self.dtype)


# What `ResNet` computes with when not training, for a model that trains with `MatmulConv`: one
# module-level object, so that equal models stay equal (and share their compiled steps).
MatmulInferenceConv = functools.partial(MatmulConv, inference=True)
