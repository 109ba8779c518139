"""Label-preserving augmentation for hand signs, computed on the device inside the train step.

A finger count survives a horizontal flip, small shifts, rotations and zooms, and lighting changes;
it does not survive crops that cut fingers off, so shifts and zooms stay small.

Policies:
- "basic": flip, shift, rotate, zoom, brightness and contrast (the first default recipe's).
- "shift" (the fast recipe's): whole-image shifts only, no flip, rotation or zoom. SIGNS's test photos are
  taken as its training photos are, always of the same hand: the least change that still keeps a short run
  from fitting the pixels (docs/speedrun.md).
- "photo": makes SIGNS photos look like photos taken elsewhere. The hand is cut out of its plain
  background (`hand_mask`) and put in front of a generated one (grey or tinted, with a gradient, a
  blotchy texture and the original shadows); then wider geometry (rotations up to 25 degrees, zoom both
  ways, aspect changes), vignetting, white balance, saturation, brightness, contrast and sensor noise.
Ablations of basic and photo, each an opt-in recipe measured in docs/recipes.md: "basic-walls" (basic on images whose
wall was replaced), "colour-walls" (basic-walls, then grey or desaturated and colour-cast images),
"photo-no-background", "walls-scale" (basic-walls zooming 0.75-1.35) and "walls-rc" (basic-walls, then random
convolutions).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

MAX_SHIFT = 0.1  # fraction of the image size
MAX_ROTATE_DEG = 15.0
SCALE_RANGE = (0.9, 1.1)
BRIGHTNESS = 0.1
CONTRAST = (0.8, 1.2)

POLICIES = ("basic", "shift", "basic-walls", "colour-walls", "walls-rc", "walls-scale", "photo", "photo-no-background")


class Geometry(NamedTuple):
    """Limits of the random flip-rotate-zoom-shift applied about the image centre."""

    max_shift: float  # fraction of the image size
    max_rotate_deg: float
    scale: tuple[float, float]  # zoom: above 1 magnifies
    max_aspect: float  # the width's zoom over the height's lies in [1 / (1 + a), 1 + a]


BASIC_GEOMETRY = Geometry(MAX_SHIFT, MAX_ROTATE_DEG, SCALE_RANGE, 0.0)
PHOTO_GEOMETRY = Geometry(max_shift=0.1, max_rotate_deg=25.0, scale=(0.85, 1.15), max_aspect=0.1)

SHIFT_ONLY = 0.0625  # the shift policy's largest shift, a fraction of the image size (4 px at 64)

BACKGROUND_PROBABILITY = 0.6  # the rest keep their own background (SIGNS itself stays in the mix)
BACKGROUND_LEVEL = (0.5, 0.95)  # grey level of a generated background
BACKGROUND_TINT = 0.05  # per-channel deviation from grey
BACKGROUND_GRADIENT = 0.25  # largest change of level across the frame
BACKGROUND_TEXTURE = 0.06  # amplitude of a blotchy low-frequency texture
VIGNETTE = (0.0, 0.3)  # darkening at the corners
WHITE_BALANCE = 0.12  # per-channel gain in exp([-a, a])
SATURATION = (0.6, 1.3)
NOISE = 0.02  # largest standard deviation of Gaussian sensor noise


def _luma(image):
    return image @ jnp.array([0.299, 0.587, 0.114], image.dtype)


def _box_blur(plane):
    """3x3 mean of an (H, W) plane, edges replicated."""
    padded = jnp.pad(plane, 1, mode="edge")
    h, w = plane.shape
    return sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def background_colour(image):
    """(3,): the median colour of the top, left and right borders (the arm enters at the bottom)."""
    border = jnp.concatenate([image[:2].reshape(-1, 3), image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
    return jnp.median(border, axis=0)


def hand_mask(image):
    """(H, W) in [0, 1]: how much each pixel of a [0, 1] image (H, W, 3) is hand rather than plain background.

    SIGNS backgrounds are light, plain and nearly grey; hands are redder and darker. A pixel's score is how
    much redder (red minus blue) and, at half weight, how much darker than the background colour it is;
    shadows on the wall are darker but not redder, so they mostly stay background.
    """
    background = background_colour(image)
    redder = (image[..., 0] - image[..., 2]) - (background[0] - background[2])
    darker = _luma(background) - _luma(image)
    score = _box_blur(jnp.maximum(redder, 0.0) + 0.5 * jnp.maximum(darker, 0.0))
    return _box_blur(jnp.clip((score - 0.1) / 0.08, 0.0, 1.0))


def generated_background(rng, shape):
    """A plausible plain wall (H, W, 3): grey or tinted, with a linear gradient and a blotchy texture."""
    h, w, _ = shape
    k_level, k_tint, k_dir, k_grad, k_tex = jax.random.split(rng, 5)
    level = jax.random.uniform(k_level, minval=BACKGROUND_LEVEL[0], maxval=BACKGROUND_LEVEL[1])
    tint = 1.0 + jax.random.uniform(k_tint, (3,), minval=-BACKGROUND_TINT, maxval=BACKGROUND_TINT)
    ys, xs = jnp.meshgrid(jnp.linspace(-0.5, 0.5, h), jnp.linspace(-0.5, 0.5, w), indexing="ij")
    direction = jax.random.uniform(k_dir, minval=0.0, maxval=2 * jnp.pi)
    ramp = (jnp.cos(direction) * xs + jnp.sin(direction) * ys) * jax.random.uniform(
        k_grad, minval=0.0, maxval=BACKGROUND_GRADIENT
    )
    coarse = jax.random.normal(k_tex, (4, 4))
    texture = jax.image.resize(coarse, (h, w), method="cubic") * BACKGROUND_TEXTURE
    return (level + ramp + texture)[..., None] * tint


def replace_background(rng, image, mask):
    """The hand (by `mask`) in front of a generated background that keeps the original's shadows."""
    background = background_colour(image)
    shading = jnp.clip(_luma(image) / jnp.maximum(_luma(background), 1e-3), 0.5, 1.2)[..., None]
    new = generated_background(rng, image.shape) * shading
    return mask[..., None] * image + (1.0 - mask[..., None]) * new


def random_geometry(keys, limits: Geometry):
    """(flip, angle in radians, (zoom y, zoom x), shift (dy, dx) as fractions of the size) from 5 keys."""
    k_flip, k_shift, k_rot, k_scale, k_aspect = keys
    flip = jax.random.bernoulli(k_flip)
    shift = jax.random.uniform(k_shift, (2,), minval=-limits.max_shift, maxval=limits.max_shift)
    angle = jnp.deg2rad(jax.random.uniform(k_rot, minval=-limits.max_rotate_deg, maxval=limits.max_rotate_deg))
    scale = jax.random.uniform(k_scale, minval=limits.scale[0], maxval=limits.scale[1])
    log_aspect = jax.random.uniform(k_aspect, minval=-1.0, maxval=1.0) * jnp.log1p(limits.max_aspect)
    # Split the aspect change so that the larger of the two zooms stays within the scale limit.
    aspect = jnp.exp(log_aspect)
    zoom = scale * jnp.stack([jnp.minimum(1.0, 1.0 / aspect), jnp.minimum(1.0, aspect)])
    return flip, angle, zoom, shift


def warp(image, flip, angle, zoom, shift):
    """Flip, rotate, zoom (per axis) and shift an (H, W, C) image about its centre; edges replicated."""
    h, w, _ = image.shape
    # Inverse map: output pixel -> source coordinate.
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    xs = jnp.where(flip, (w - 1) - xs, xs)
    dy, dx = ys - cy - shift[0] * h, xs - cx - shift[1] * w
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src_y = cy + (cos / zoom[0]) * dy - (sin / zoom[0]) * dx
    src_x = cx + (sin / zoom[1]) * dy + (cos / zoom[1]) * dx
    return jax.vmap(
        lambda channel: jax.scipy.ndimage.map_coordinates(channel, [src_y, src_x], order=1, mode="nearest"),
        in_axes=2,
        out_axes=2,
    )(image)


def brightness_contrast(k_bright, k_contrast, image, brightness=BRIGHTNESS, contrast=CONTRAST):
    shift = jax.random.uniform(k_bright, minval=-brightness, maxval=brightness)
    factor = jax.random.uniform(k_contrast, minval=contrast[0], maxval=contrast[1])
    mean = image.mean()
    return (image - mean) * factor + mean + shift


def vignette(rng, image):
    """Darken towards the corners, about a centre near the middle, as cheap lenses do."""
    h, w, _ = image.shape
    k_strength, k_centre = jax.random.split(rng)
    strength = jax.random.uniform(k_strength, minval=VIGNETTE[0], maxval=VIGNETTE[1])
    centre = jax.random.uniform(k_centre, (2,), minval=-0.15, maxval=0.15)
    ys, xs = jnp.meshgrid(jnp.linspace(-1.0, 1.0, h), jnp.linspace(-1.0, 1.0, w), indexing="ij")
    radius2 = ((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / 2.0  # 1 at a corner
    return image * (1.0 - strength * radius2)[..., None]


def white_balance(rng, image):
    """Per-channel gains: another camera's or another lamp's colour cast."""
    gains = jnp.exp(jax.random.uniform(rng, (3,), minval=-WHITE_BALANCE, maxval=WHITE_BALANCE))
    return image * gains


def saturation(rng, image):
    factor = jax.random.uniform(rng, minval=SATURATION[0], maxval=SATURATION[1])
    grey = _luma(image)[..., None]
    return grey + (image - grey) * factor


def sensor_noise(rng, image):
    k_sigma, k_noise = jax.random.split(rng)
    sigma = jax.random.uniform(k_sigma, minval=0.0, maxval=NOISE)
    return image + sigma * jax.random.normal(k_noise, image.shape)


def _basic_one(rng, image):
    # This key layout reproduces the first default recipe's runs bit for bit.
    k_flip, k_shift, k_rot, k_scale, k_bright, k_contrast = jax.random.split(rng, 6)
    warped = warp(image, *random_geometry((k_flip, k_shift, k_rot, k_scale, k_scale), BASIC_GEOMETRY))
    return jnp.clip(brightness_contrast(k_bright, k_contrast, warped), 0.0, 1.0)


def _shift_one(rng, image):
    shift = jax.random.uniform(rng, (2,), minval=-SHIFT_ONLY, maxval=SHIFT_ONLY)
    return warp(image, False, 0.0, jnp.ones(2), shift)


def _basic_walls_one(rng, image):
    """The basic policy on images whose wall was first replaced (as in the photo policy)."""
    k_use_bg, k_bg, k_basic = jax.random.split(rng, 3)
    replaced = replace_background(k_bg, image, hand_mask(image))
    x = jnp.where(jax.random.bernoulli(k_use_bg, BACKGROUND_PROBABILITY), replaced, image)
    return _basic_one(k_basic, x)


def _photo_one(rng, image, background_probability=BACKGROUND_PROBABILITY):
    keys = jax.random.split(rng, 13)
    k_use_bg, k_bg, k_vignette, k_balance, k_saturation, k_bright, k_contrast, k_noise = keys[:8]
    replaced = replace_background(k_bg, image, hand_mask(image))
    x = jnp.where(jax.random.bernoulli(k_use_bg, background_probability), replaced, image)
    x = warp(x, *random_geometry(tuple(keys[8:]), PHOTO_GEOMETRY))
    x = vignette(k_vignette, x)
    x = white_balance(k_balance, x)
    x = saturation(k_saturation, x)
    x = brightness_contrast(k_bright, k_contrast, x)
    return jnp.clip(sensor_noise(k_noise, x), 0.0, 1.0)


def _colour_walls_one(rng, image):
    """basic-walls, then colour the model must not rely on: grey 25 % of the time, else saturation and white balance."""
    k_walls, k_grey, k_sat, k_wb = jax.random.split(rng, 4)
    x = _basic_walls_one(k_walls, image)
    grey = _luma(x)[..., None]
    factor = jax.random.uniform(k_sat, minval=0.3, maxval=1.3)
    x = jnp.where(jax.random.bernoulli(k_grey, 0.25), jnp.broadcast_to(grey, x.shape), grey + (x - grey) * factor)
    gains = jnp.exp(jax.random.uniform(k_wb, (3,), minval=-0.15, maxval=0.15))
    return jnp.clip(x * gains, 0.0, 1.0)


RANDOM_CONV_SIZES = (1, 3, 5)
RANDOM_CONV_PROBABILITY = 0.5


def random_conv(rng, image):
    """The image through a random k x k convolution (k = 1, 3 or 5), rescaled to the image's own per-channel
    mean and spread, mixed with the image in a random proportion: random textures, edges and colours that keep
    the shapes (random convolutions, as in single-source domain generalisation)."""
    k_size, k_kernel, k_mix, k_use = jax.random.split(rng, 4)
    kmax = max(RANDOM_CONV_SIZES)
    size = jnp.asarray(RANDOM_CONV_SIZES)[jax.random.randint(k_size, (), 0, len(RANDOM_CONV_SIZES))]
    r = jnp.abs(jnp.arange(kmax) - kmax // 2)
    inside = ((r[:, None] <= size // 2) & (r[None, :] <= size // 2)).astype(image.dtype)
    kernel = jax.random.normal(k_kernel, (kmax, kmax, 3, 3)) * inside[..., None, None]
    kernel = kernel / jnp.sqrt(size * size * 3.0)
    padded = jnp.pad(image, ((kmax // 2, kmax // 2), (kmax // 2, kmax // 2), (0, 0)), mode="edge")
    out = jax.lax.conv_general_dilated(
        padded[None], kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]
    mean, std = image.mean(axis=(0, 1)), image.std(axis=(0, 1)) + 1e-3
    out = (out - out.mean(axis=(0, 1))) / (out.std(axis=(0, 1)) + 1e-6) * std + mean
    alpha = jax.random.uniform(k_mix)
    mixed = alpha * image + (1.0 - alpha) * out
    return jnp.where(jax.random.bernoulli(k_use, RANDOM_CONV_PROBABILITY), jnp.clip(mixed, 0.0, 1.0), image)


WIDE_SCALE_GEOMETRY = Geometry(MAX_SHIFT, MAX_ROTATE_DEG, (0.75, 1.35), 0.0)


def _walls_scale_one(rng, image):
    """basic-walls with zooms both ways wide enough to cover a hand framed larger or smaller than SIGNS's."""
    k_use_bg, k_bg, k_flip, k_shift, k_rot, k_scale, k_bright, k_contrast = jax.random.split(rng, 8)
    replaced = replace_background(k_bg, image, hand_mask(image))
    x = jnp.where(jax.random.bernoulli(k_use_bg, BACKGROUND_PROBABILITY), replaced, image)
    x = warp(x, *random_geometry((k_flip, k_shift, k_rot, k_scale, k_scale), WIDE_SCALE_GEOMETRY))
    return jnp.clip(brightness_contrast(k_bright, k_contrast, x), 0.0, 1.0)


def _walls_random_conv_one(rng, image):
    k_walls, k_conv = jax.random.split(rng)
    return random_conv(k_conv, _basic_walls_one(k_walls, image))


def augment(rng, images, policy: str = "basic"):
    """A randomly transformed batch of [0, 1] images (N, H, W, C), each image its own transform."""
    one = {
        "basic": _basic_one,
        "shift": _shift_one,
        "basic-walls": _basic_walls_one,
        "colour-walls": _colour_walls_one,
        "walls-rc": _walls_random_conv_one,
        "walls-scale": _walls_scale_one,
        "photo": _photo_one,
        "photo-no-background": functools.partial(_photo_one, background_probability=0.0),  # an ablation
    }[policy]
    return jax.vmap(one)(jax.random.split(rng, images.shape[0]), images)
