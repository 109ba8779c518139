"""Label-preserving augmentation for hand signs, computed on the device inside the train step.

A finger count survives a horizontal flip, small shifts, rotations and zooms, and lighting changes;
it does not survive crops that cut fingers off, so shifts and zooms stay small.
"""
import jax
import jax.numpy as jnp

MAX_SHIFT = 0.1  # fraction of the image size
MAX_ROTATE_DEG = 15.0
SCALE_RANGE = (0.9, 1.1)
BRIGHTNESS = 0.1
CONTRAST = (0.8, 1.2)


def _augment_one(rng, image):
    h, w, _ = image.shape
    k_flip, k_shift, k_rot, k_scale, k_bright, k_contrast = jax.random.split(rng, 6)
    flip = jax.random.bernoulli(k_flip)
    shift = jax.random.uniform(k_shift, (2,), minval=-MAX_SHIFT, maxval=MAX_SHIFT) * jnp.array([h, w])
    angle = jnp.deg2rad(jax.random.uniform(k_rot, minval=-MAX_ROTATE_DEG, maxval=MAX_ROTATE_DEG))
    scale = jax.random.uniform(k_scale, minval=SCALE_RANGE[0], maxval=SCALE_RANGE[1])

    # Inverse map: output pixel -> source coordinate, rotating and zooming about the image centre.
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    xs = jnp.where(flip, (w - 1) - xs, xs)
    dy, dx = ys - cy - shift[0], xs - cx - shift[1]
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    src_y = cy + cos * dy - sin * dx
    src_x = cx + sin * dy + cos * dx
    warped = jax.vmap(
        lambda channel: jax.scipy.ndimage.map_coordinates(channel, [src_y, src_x], order=1, mode="nearest"),
        in_axes=2,
        out_axes=2,
    )(image)

    brightness = jax.random.uniform(k_bright, minval=-BRIGHTNESS, maxval=BRIGHTNESS)
    contrast = jax.random.uniform(k_contrast, minval=CONTRAST[0], maxval=CONTRAST[1])
    mean = warped.mean()
    return jnp.clip((warped - mean) * contrast + mean + brightness, 0.0, 1.0)


def augment(rng, images):
    """Randomly flip, shift, rotate, zoom and relight a batch of [0, 1] images (N, H, W, C)."""
    return jax.vmap(_augment_one)(jax.random.split(rng, images.shape[0]), images)
