"""The training augmentation: shapes, range, determinism per key, and that it keeps what the label counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from signs_jax.augment import augment

augment_jit = jax.jit(augment)


def hand_like_batch(n=16, size=64):
    """A bright blob with five 'fingers' inside the central 60 % of a dark frame, as uint8-scaled floats."""
    image = np.zeros((size, size, 3), np.float32)
    lo, hi = int(size * 0.3), int(size * 0.7)
    image[size // 2 : hi, lo:hi] = 1.0  # palm
    for k in range(4):
        x = lo + k * (hi - lo) // 4
        image[lo : size // 2, x : x + 4] = 1.0  # fingers, thick enough to survive bilinear resampling
    return jnp.asarray(np.broadcast_to(image, (n, size, size, 3)).copy())


def test_shape_dtype_and_range():
    x = jax.random.uniform(jax.random.key(0), (8, 64, 64, 3))
    y = augment_jit(jax.random.key(1), x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_the_same_key_gives_the_same_batch_and_another_key_another():
    x = hand_like_batch()
    a, b = augment_jit(jax.random.key(3), x), augment_jit(jax.random.key(3), x)
    c = augment_jit(jax.random.key(4), x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).mean()) > 0.01


def test_each_image_of_a_batch_gets_its_own_transform():
    y = augment_jit(jax.random.key(5), hand_like_batch())
    per_image = np.asarray(y).reshape(len(y), -1)
    assert len({row.tobytes() for row in per_image}) == len(per_image)


@pytest.mark.parametrize("seed", range(4))
def test_the_hand_stays_in_the_frame(seed):
    """A finger count must survive: no transform may cut the hand off or blow it up (shift, zoom, rotate)."""
    x = hand_like_batch(n=64)
    before = float((x[0, ..., 0] > 0.5).sum())
    y = np.asarray(augment_jit(jax.random.key(seed), x))
    # Brightness and contrast move levels by at most ~0.3, so 0.5 still separates hand from background.
    after = (y[..., 0] > 0.5).sum(axis=(1, 2))
    assert after.min() >= 0.75 * before and after.max() <= 1.3 * before
    border = np.concatenate([y[:, :2].reshape(64, -1), y[:, -2:].reshape(64, -1),
                             y[:, :, :2].reshape(64, -1), y[:, :, -2:].reshape(64, -1)], axis=1)
    assert (border > 0.5).sum() == 0  # nothing of the hand is pushed against the frame's edge
