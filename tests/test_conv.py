"""Every convolution implementation computes what lax.conv computes, values and gradients."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import signs_jax
from signs_jax import conv as conv_module
from signs_jax.conv import MatmulConv, MatmulInferenceConv, same_padding
from signs_jax.layers import XlaConv
from signs_jax.models import CONV_IMPLEMENTATIONS

FAST = sorted(set(CONV_IMPLEMENTATIONS) - {"xla"})

CASES = [  # kernel, stride, padding, input size
    (1, 1, "VALID", 15),
    (1, 2, "VALID", 15),
    (3, 1, "SAME", 8),
    (3, 2, "SAME", 9),
    (7, 2, ((3, 3), (3, 3)), 32),
    (2, 2, "SAME", 7),  # even kernels: TensorFlow puts the odd padding pixel bottom/right
    (4, 2, "SAME", 9),
    (3, 1, "VALID", 6),
    (3, 1, ((0, 2), (1, 0)), 6),  # asymmetric explicit padding
]


def quick_loop_runs(cases, quick):
    """`cases` as parameters: those in `quick` run in the quick loop, the others only in the full suite.

    One case of each kind (kernel, stride, padding) stays quick; every case still runs in the full suite."""
    assert set(quick) <= set(cases)
    return [case if case in quick else pytest.param(*case, marks=pytest.mark.slow) for case in cases]


QUICK_CASES = [(1, 2, "VALID", 15), (3, 2, "SAME", 9), (2, 2, "SAME", 7), (3, 1, ((0, 2), (1, 0)), 6)]


def random_cases(n, seed=0):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        k, s = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        padding = ["SAME", "VALID", tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (2, 2)))][rng.integers(3)]
        size = int(rng.integers(k + s, 14))
        cases.append((k, s, padding, size, int(rng.integers(1, 9)), int(rng.integers(1, 9))))
    return cases


def assert_same_as_lax_conv(conv, kernel, stride, padding, size, c_in=5, c_out=6):
    x = jax.random.normal(jax.random.key(1), (2, size, size + 1, c_in))
    ref = XlaConv(c_out, (kernel, kernel), strides=(stride, stride), padding=padding)
    fast = conv(c_out, (kernel, kernel), strides=(stride, stride), padding=padding)
    variables = jax.jit(ref.init)(jax.random.key(0), x)
    fast_variables = jax.eval_shape(fast.init, jax.random.key(0), x)
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), tree)  # noqa: E731
    assert shapes(fast_variables) == shapes(variables)  # same param tree: Keras .h5 import is unchanged
    y_fast, g_fast = output_and_gradients(fast)(variables, x)
    y_ref, g_ref = output_and_gradients(ref)(variables, x)
    np.testing.assert_allclose(y_fast, y_ref, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def output_and_gradients(module):
    """One compiled function per conv: its output, and the gradients of a loss on it (params, input).

    Jitted, as every step that uses a conv is: op by op, each of im2col's views compiles on its own, and
    that compiling took most of this module's time."""
    loss = lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))  # noqa: E731
    return jax.jit(lambda v, x: (module.apply(v, x), jax.grad(loss, argnums=(0, 1))(v, x)))


@pytest.mark.parametrize("kernel, stride, padding, size", quick_loop_runs(CASES, QUICK_CASES))
@pytest.mark.parametrize("name", FAST)
def test_values_and_gradients_equal_lax_conv(name, kernel, stride, padding, size):
    assert_same_as_lax_conv(CONV_IMPLEMENTATIONS[name], kernel, stride, padding, size)


@pytest.mark.slow  # more of what test_values_and_gradients_equal_lax_conv checks
@pytest.mark.parametrize("kernel, stride, padding, size, c_in, c_out", random_cases(6))
@pytest.mark.parametrize("name", FAST)
def test_random_shapes_equal_lax_conv(name, kernel, stride, padding, size, c_in, c_out):
    assert_same_as_lax_conv(CONV_IMPLEMENTATIONS[name], kernel, stride, padding, size, c_in, c_out)


@pytest.mark.slow
@pytest.mark.parametrize("kernel, stride, padding, size", CASES + [(3, 1, "SAME", 2), (3, 1, "SAME", 4)])
def test_inference_conv_that_skips_padding_equals_lax_conv(monkeypatch, kernel, stride, padding, size):
    monkeypatch.setattr(conv_module, "SKIP_PADDING_MIN_FRACTION", 0.0)  # take that path wherever there is padding
    assert_same_as_lax_conv(functools.partial(MatmulConv, inference=True), kernel, stride, padding, size)


WINOGRAD_CASES = [
    (3, 1, "SAME", 8),
    (3, 1, "SAME", 15),
    (3, 1, "VALID", 6),
    (3, 1, ((0, 2), (1, 0)), 6),
    (3, 1, "SAME", 2),
]


@pytest.mark.parametrize(
    "dtype, kernel, stride, padding, size",
    quick_loop_runs(
        [(dtype, *case) for dtype in (jnp.float32, jnp.bfloat16) for case in WINOGRAD_CASES],
        [(jnp.float32, 3, 1, "SAME", 8), (jnp.bfloat16, 3, 1, "SAME", 15)],
    ),
)
def test_inference_winograd_conv_equals_lax_conv(monkeypatch, dtype, kernel, stride, padding, size):
    monkeypatch.setattr(conv_module, "SKIP_PADDING_MIN_FRACTION", 1.1)  # every 3x3 stride-1 conv takes Winograd
    if dtype == jnp.float32:
        assert_same_as_lax_conv(functools.partial(MatmulConv, inference=True), kernel, stride, padding, size)
    else:  # bfloat16 matmul inputs: the transformed tiles and kernel are rounded once, like im2col's patches
        x = jax.random.normal(jax.random.key(1), (2, size, size + 1, 5))
        conv = lambda **kw: MatmulConv(6, (3, 3), padding=padding, **kw)  # noqa: E731
        variables = jax.jit(conv().init)(jax.random.key(0), x)
        exact = jax.jit(conv().apply)(variables, x)
        fast = jax.jit(conv(inference=True, dtype=jnp.bfloat16).apply)(variables, x)
        assert fast.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(fast, np.float32), exact, atol=0.05, rtol=0.02)


PATCH_CASES = [
    ((7, 7), (2, 2), ((3, 3), (3, 3)), 3),
    ((3, 5), (1, 2), ((0, 2), (1, 0)), 4),
    ((4, 4), (3, 2), ((0, 0), (0, 0)), 3),
    ((3, 3), (1, 1), ((1, 1), (1, 1)), 16),
]


def patches_view_by_view(x, kernel, stride, pads):
    """im2col by its definition: entry (n, a, b, (i * kw + j) * C + c) is padded x[n, a * sh + i, b * sw + j, c]."""
    (kh, kw), (sh, sw) = kernel, stride
    x = np.pad(np.asarray(x), ((0, 0), *pads, (0, 0)))
    n, h, w, c = x.shape
    out = np.zeros((n, (h - kh) // sh + 1, (w - kw) // sw + 1, kh * kw * c), x.dtype)
    for a in range(out.shape[1]):
        for b in range(out.shape[2]):
            out[:, a, b] = x[:, a * sh : a * sh + kh, b * sw : b * sw + kw].reshape(n, -1)
    return out


@pytest.mark.parametrize("kernel, stride, pads, channels", quick_loop_runs(PATCH_CASES, PATCH_CASES[1:3]))
def test_patches_and_their_transpose_are_im2col(kernel, stride, pads, channels):
    x = jax.random.normal(jax.random.key(0), (2, 13, 11, channels))
    expected = patches_view_by_view(x, kernel, stride, pads)
    both = lambda x: [build(x, kernel, stride, pads) for build in (conv_module.im2col, conv_module.im2col_transposed)]
    im2col, im2col_transposed = jax.jit(both)(x)
    np.testing.assert_array_equal(im2col, expected)
    np.testing.assert_array_equal(im2col_transposed, expected.reshape(-1, expected.shape[-1]).T)


@pytest.mark.perf
@pytest.mark.parametrize("build", [conv_module.im2col, conv_module.im2col_transposed])
def test_bfloat16_patches_are_written_once(build):
    """The patches come out of one XLA loop fusion: no array of their size is written before them (the
    views, their concatenation, its uint16 bits) on the way to the bfloat16 result."""
    x = jnp.ones((2, 9, 9, 16), jnp.bfloat16)
    compiled = jax.jit(lambda x: conv_module.move_bits(build, x, (3, 3), (1, 1), ((1, 1), (1, 1)))).lower(x).compile()
    hlo = compiled.as_text()
    shapes = re.findall(r"^\s*(?:ROOT )?%\S+ = \w+\[([\d,]*)\]", hlo[hlo.index("ENTRY") :], re.MULTILINE)
    sizes = [int(np.prod([int(d) for d in shape.split(",")])) for shape in shapes]
    assert sizes.count(2 * 9 * 9 * 9 * 16) == 1, hlo[hlo.index("ENTRY") :]


@pytest.mark.slow
def test_the_model_takes_the_inference_conv_paths_in_inference_only():
    model = signs_jax.ResNet50(width=0.125, conv="matmul")
    x = jnp.zeros((1, 64, 64, 3))
    variables = signs_jax.init_variables(model, jax.random.key(0))

    def jaxpr(train):
        return str(
            jax.make_jaxpr(lambda v: model.apply(v, x, train=train, mutable=["batch_stats"] if train else False))(
                variables
            )
        )

    inference, training = jaxpr(train=False), jaxpr(train=True)
    # stage 4's and 5's 3x3 convs (4x4 and 2x2 pixels) become 9 and 4 matmuls each in inference
    assert inference.count("dot_general") == training.count("dot_general") + 6 * 8 + 3 * 3
    # stage 2's and 3's (15x15 and 8x8) become one Winograd matmul batched over the 16 tile products
    winograd_matmul = "dimension_numbers=(([2], [1]), ([0], [0]))"
    assert inference.count(winograd_matmul) == 3 + 4 and training.count(winograd_matmul) == 0
    without = str(jax.make_jaxpr(lambda v: model.clone(inference_conv=None).apply(v, x))(variables))
    assert without.count("dot_general") == training.count("dot_general") and winograd_matmul not in without


def test_same_padding_is_tensorflows():
    assert same_padding(8, 3, 1) == (1, 1)
    assert same_padding(7, 2, 2) == (0, 1)  # odd pixel after
    assert same_padding(9, 4, 2) == (1, 2)
    assert same_padding(15, 1, 2) == (0, 0)


@pytest.mark.parametrize("name", FAST)
def test_bfloat16_compute_keeps_float32_params_and_gradients(name):
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
    conv = CONV_IMPLEMENTATIONS[name](3, (3, 3), dtype=jnp.bfloat16, param_dtype=jnp.float32)
    variables = jax.jit(conv.init)(jax.random.key(0), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    y = jax.jit(conv.apply)(variables, x)
    assert y.dtype == jnp.bfloat16
    ref = XlaConv(3, (3, 3))
    np.testing.assert_allclose(np.asarray(y, np.float32), jax.jit(ref.apply)(variables, x), atol=0.1)
    # jitted: XLA fuses and lays out the dots differently than op by op
    grads = jax.jit(jax.grad(lambda v: jnp.sum(conv.apply(v, x).astype(jnp.float32) ** 2)))(variables)
    ref_grads = jax.jit(jax.grad(lambda v: jnp.sum(ref.apply(v, x) ** 2)))(variables)
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(g, r, rtol=0.05, atol=0.05 * float(jnp.abs(r).max()))


@pytest.mark.parametrize(
    "conv, inference_conv",
    [
        (MatmulConv, MatmulInferenceConv),  # the CPU's default
        pytest.param(MatmulConv, None, marks=pytest.mark.slow),
        (XlaConv, None),  # the default elsewhere
        pytest.param(XlaConv, MatmulInferenceConv, marks=pytest.mark.slow),
    ],
)
def test_every_conv_pairing_matches_keras(
    keras_loaded, predict_probs, keras_images, keras_expected, conv, inference_conv
):
    """`ResNet`'s inference conv is a field of its own: whichever pair computes, Keras's probabilities."""
    loaded, variables = keras_loaded
    model = loaded.clone(conv=conv, inference_conv=inference_conv)
    # the loaded model's own pair: the function the parity tests compile
    probs_of = predict_probs if model == loaded else jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x)))
    probs = probs_of(variables, keras_images)
    np.testing.assert_allclose(np.asarray(probs), keras_expected["probabilities"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kernel, stride, padding, size", quick_loop_runs(CASES, QUICK_CASES))
def test_bfloat16_gradients_on_bfloat16_values_equal_float32_lax_conv(kernel, stride, padding, size):
    """On inputs, kernel and output gradient exactly representable in bfloat16, the bfloat16 path's only
    roundings are float32 sums and one final rounding of the input gradient to bfloat16."""
    rng = np.random.default_rng(0)
    bf16_values = lambda shape: jnp.asarray(rng.normal(size=shape), jnp.bfloat16).astype(jnp.float32)  # noqa: E731
    x = bf16_values((2, size, size + 1, 4))
    conv = MatmulConv(5, (kernel, kernel), strides=(stride, stride), padding=padding, dtype=jnp.bfloat16)
    ref = XlaConv(5, (kernel, kernel), strides=(stride, stride), padding=padding, precision="highest")
    variables = {"params": {"kernel": bf16_values((kernel, kernel, 4, 5)), "bias": jnp.zeros(5)}}
    weights = bf16_values(jax.eval_shape(ref.apply, variables, x).shape)
    loss = lambda module: lambda v, x: jnp.sum(module.apply(v, x).astype(jnp.float32) * weights)  # noqa: E731
    grads = jax.jit(jax.grad(loss(conv), argnums=(0, 1)))(variables, x)
    (ref_vars, ref_x) = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(variables, x)
    d_kernel = grads[0]["params"]["kernel"]
    assert d_kernel.dtype == jnp.float32
    # rounded to bfloat16 (as an earlier version did) the kernel gradient would be ~4e-3 off
    np.testing.assert_allclose(d_kernel, ref_vars["params"]["kernel"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[1], ref_x, rtol=2.0**-8, atol=1e-6)
