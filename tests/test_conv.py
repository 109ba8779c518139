"""Every convolution implementation computes what lax.conv computes, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from signs_jax.conv import MatmulConv, same_padding
from signs_jax.layers import XlaConv
from signs_jax.models import CONV_IMPLEMENTATIONS

CASES = [  # kernel, stride, padding, input size
    (1, 1, "VALID", 15),
    (1, 2, "VALID", 15),
    (3, 1, "SAME", 8),
    (3, 2, "SAME", 9),
    (7, 2, ((3, 3), (3, 3)), 32),
    (2, 2, "SAME", 7),  # even kernels: TensorFlow puts the odd padding pixel bottom/right
    (4, 2, "SAME", 9),
    (3, 1, "VALID", 6),
]


@pytest.mark.parametrize("kernel, stride, padding, size", CASES)
@pytest.mark.parametrize("name", sorted(set(CONV_IMPLEMENTATIONS) - {"xla"}))
def test_values_and_gradients_equal_lax_conv(name, kernel, stride, padding, size):
    conv = CONV_IMPLEMENTATIONS[name]
    x = jax.random.normal(jax.random.key(1), (2, size, size + 1, 5))
    ref = XlaConv(6, (kernel, kernel), strides=(stride, stride), padding=padding)
    fast = conv(6, (kernel, kernel), strides=(stride, stride), padding=padding)
    variables = ref.init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(fast.init(jax.random.key(0), x)) == jax.tree_util.tree_structure(variables)
    np.testing.assert_allclose(fast.apply(variables, x), ref.apply(variables, x), atol=1e-5)

    def loss(module):
        return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))

    g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
    g_fast = jax.grad(loss(fast), argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_same_padding_is_tensorflows():
    assert same_padding(8, 3, 1) == (1, 1)
    assert same_padding(7, 2, 2) == (0, 1)  # odd pixel after
    assert same_padding(9, 4, 2) == (1, 2)
    assert same_padding(15, 1, 2) == (0, 0)


def test_bfloat16_compute_keeps_float32_params():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 4))
    conv = MatmulConv(3, (3, 3), dtype=jnp.bfloat16)
    variables = conv.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    y = conv.apply(variables, x)
    assert y.dtype == jnp.bfloat16
    ref = XlaConv(3, (3, 3)).apply(variables, x)
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, atol=0.1)


def test_xla_conv_path_also_matches_keras(keras_loaded, keras_images, keras_expected):
    model, variables = keras_loaded
    xla_model = model.clone(conv=XlaConv)
    probs = jax.jit(lambda v, x: jax.nn.softmax(xla_model.apply(v, x)))(variables, keras_images)
    np.testing.assert_allclose(np.asarray(probs), keras_expected["probabilities"], atol=1e-5, rtol=0)
