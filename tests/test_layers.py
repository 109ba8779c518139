"""Hand-written backward passes (BatchNorm in training mode, max-pooling) equal what autodiff gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from signs_jax.layers import batch_normalize, max_pool


def batch_normalize_by_autodiff(x, scale, bias, epsilon):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    multiplier = scale * jax.lax.rsqrt(var + epsilon)
    return x * multiplier + (bias - mean * multiplier), mean, var


def test_batch_normalize_values_and_gradients_equal_autodiff():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(2.0, 3.0, (4, 5, 6, 7)), jnp.float32)
    scale, bias = jnp.asarray(rng.normal(1, 0.3, 7), jnp.float32), jnp.asarray(rng.normal(0, 1, 7), jnp.float32)
    # weights on all three outputs, so the cotangents of the returned mean and variance are exercised too
    weights = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in (x.shape, (7,), (7,))]

    def loss(fn):
        return lambda x, s, b: sum(jnp.sum(out * w) for out, w in zip(fn(x, s, b, 1e-3), weights))

    for a, b in zip(batch_normalize(x, scale, bias, 1e-3), batch_normalize_by_autodiff(x, scale, bias, 1e-3)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    ours = jax.jit(jax.grad(loss(batch_normalize), (0, 1, 2)))(x, scale, bias)
    ref = jax.jit(jax.grad(loss(batch_normalize_by_autodiff), (0, 1, 2)))(x, scale, bias)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("window, stride, size", [(3, 2, (32, 31)), (2, 2, (9, 8)), (3, 1, (7, 6)), (3, 3, (10, 11))])
def test_max_pool_equals_flax_max_pool(window, stride, size):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))
    pool = lambda fn: jax.jit(jax.value_and_grad(lambda x: jnp.sum(jnp.sin(fn(x)))))  # noqa: E731
    value, grad = pool(lambda x: max_pool(x, (window, window), (stride, stride)))(x)
    ref_value, ref_grad = pool(lambda x: nn.max_pool(x, (window, window), (stride, stride), "VALID"))(x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-6)


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_tied_window():
    rng = np.random.default_rng(1)
    x = jnp.maximum(jnp.asarray(rng.normal(size=(2, 32, 31, 5)), jnp.float32), 0.0)  # zeros tie, as after ReLU
    x = x.at[0, 0:3, 0:3, 0].set(1.0)  # a window whose maximum appears nine times
    w = jnp.asarray(rng.normal(size=(2, 15, 15, 5)), jnp.float32)
    ours = jax.jit(jax.value_and_grad(lambda x: jnp.sum(max_pool(x, (3, 3), (2, 2)) * w)))
    ref = jax.jit(jax.value_and_grad(lambda x: jnp.sum(nn.max_pool(x, (3, 3), (2, 2), "VALID") * w)))
    (value, grad), (ref_value, ref_grad) = ours(x), ref(x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    # the gradient of a tied window goes to its first maximum only, as in TensorFlow and XLA
    np.testing.assert_allclose(grad, ref_grad, atol=1e-6)
    assert int(jnp.count_nonzero(grad[0, 0:3, 0:3, 0])) == 1


def test_max_pool_in_bfloat16_routes_gradients_like_float32():
    rng = np.random.default_rng(2)
    x = jnp.maximum(jnp.asarray(rng.normal(size=(2, 32, 31, 5)), jnp.bfloat16), 0)  # ties at zero, as after ReLU
    w = jnp.asarray(
        rng.normal(size=(2, 15, 15, 5)), jnp.bfloat16
    )  # bfloat16 weights: sums of up to 4 of them are exact in float32
    ours = jax.jit(jax.value_and_grad(lambda x: jnp.sum((max_pool(x, (3, 3), (2, 2)) * w).astype(jnp.float32))))
    ref = jax.jit(
        jax.value_and_grad(lambda x: jnp.sum(nn.max_pool(x, (3, 3), (2, 2), "VALID") * w.astype(jnp.float32)))
    )
    (value, grad), (ref_value, ref_grad) = ours(x), ref(x.astype(jnp.float32))
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(value, ref_value, rtol=1e-2)
    np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(ref_grad.astype(jnp.bfloat16), np.float32))
