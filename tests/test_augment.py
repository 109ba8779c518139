"""The training augmentation: shapes, range, determinism per key, and that it keeps what the label counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from signs_jax.augment import (
    BASIC_GEOMETRY,
    PHOTO_GEOMETRY,
    POLICIES,
    augment,
    generated_background,
    hand_mask,
    random_geometry,
    replace_background,
    vignette,
    warp,
)

augment_jit = jax.jit(augment, static_argnums=2)


def hand_like_batch(n=8, size=64):
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
    border = np.concatenate(
        [
            y[:, :2].reshape(64, -1),
            y[:, -2:].reshape(64, -1),
            y[:, :, :2].reshape(64, -1),
            y[:, :, -2:].reshape(64, -1),
        ],
        axis=1,
    )
    assert (border > 0.5).sum() == 0  # nothing of the hand is pushed against the frame's edge


# The photo policies compile the most: beyond the quick loop, which keeps the basic ones.
@pytest.mark.parametrize(
    "policy", [p if p.startswith("basic") else pytest.param(p, marks=pytest.mark.slow) for p in POLICIES]
)
def test_every_policy_keeps_shape_dtype_range_and_is_deterministic_per_key(policy):
    x = jax.random.uniform(jax.random.key(0), (8, 64, 64, 3))
    a, b = augment_jit(jax.random.key(1), x, policy), augment_jit(jax.random.key(1), x, policy)
    c = augment_jit(jax.random.key(2), x, policy)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).mean()) > 0.01


def test_the_basic_policy_is_the_default():
    x = jax.random.uniform(jax.random.key(0), (8, 64, 64, 3))  # the shape the tests above compiled both calls for
    np.testing.assert_array_equal(
        np.asarray(augment_jit(jax.random.key(7), x)), np.asarray(augment_jit(jax.random.key(7), x, "basic"))
    )


def skin_hand_on_wall(size=64):
    """(image, truth): a skin-coloured palm and fingers (arm to the bottom edge) on a plain cream wall."""
    wall, skin = np.array([0.93, 0.90, 0.85], np.float32), np.array([0.80, 0.58, 0.45], np.float32)
    truth = np.zeros((size, size), bool)
    truth[30:, 26:40] = True  # palm and arm, entering from the bottom
    for x in (24, 30, 36, 42):
        truth[10:30, x : x + 4] = True  # fingers
    image = np.where(truth[..., None], skin, wall)
    image = image * np.linspace(1.0, 0.9, size, dtype=np.float32)[None, :, None]  # uneven light on the wall
    return jnp.asarray(image), truth


def test_the_hand_mask_finds_a_hand_on_a_plain_background():
    image, truth = skin_hand_on_wall()
    mask = np.asarray(jax.jit(hand_mask)(image))
    assert mask.shape == truth.shape and mask.min() >= 0.0 and mask.max() <= 1.0
    found = mask > 0.5
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.8
    # Away from the outline (the mask is blurred by two pixels) it is certain.
    assert mask[truth].mean() > 0.8 and mask[~truth].mean() < 0.1


def test_a_shadow_on_the_wall_is_not_hand():
    image, _ = skin_hand_on_wall()
    shadowed = np.asarray(image).copy()
    shadowed[40:56, 44:60] *= 0.8  # grey, darker, not redder
    mask = np.asarray(jax.jit(hand_mask)(jnp.asarray(shadowed)))
    assert mask[42:54, 46:58].mean() < 0.2


def test_replace_background_keeps_the_hand_and_changes_the_wall():
    image, truth = skin_hand_on_wall()
    mask = jax.jit(hand_mask)(image)
    out = np.asarray(jax.jit(replace_background)(jax.random.key(3), image, mask))
    inner = np.zeros_like(truth)
    inner[34:, 29:37] = True  # well inside the palm and arm
    np.testing.assert_allclose(out[inner], np.asarray(image)[inner], atol=1e-3)
    assert np.abs(out[~truth] - np.asarray(image)[~truth]).mean() > 0.02


def test_generated_backgrounds_differ_by_key_and_stay_plausible():
    background = jax.jit(generated_background, static_argnums=1)
    a, b = (np.asarray(background(jax.random.key(k), (64, 64, 3))) for k in (0, 1))
    assert a.shape == (64, 64, 3) and np.abs(a - b).mean() > 0.01
    for bg in (a, b):
        assert 0.0 < bg.min() and bg.max() < 1.3  # a wall, lit: neither black nor far beyond white


def test_vignette_darkens_the_corners_more_than_the_centre():
    white = jnp.ones((64, 64, 3))
    out = np.asarray(jax.jit(vignette)(jax.random.key(0), white))
    assert out.max() <= 1.0
    corners = np.mean([out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]])
    assert corners < out[28:36, 28:36].mean()


@functools.partial(jax.jit, static_argnums=2)
def warped_batch(keys, images, limits):
    """Each image warped by its own random geometry within `limits`: compiled once per `limits`."""
    return jax.vmap(lambda key, image: warp(image, *random_geometry(tuple(jax.random.split(key, 5)), limits)))(
        keys, images
    )


@pytest.mark.parametrize("limits", [BASIC_GEOMETRY, PHOTO_GEOMETRY], ids=["basic", "photo"])
@pytest.mark.parametrize("seed", range(3))
def test_the_hand_stays_in_the_frame_under_every_policys_geometry(limits, seed):
    """Rotation, zoom (both ways), aspect change and shift at their limits never cut the hand off."""
    x = hand_like_batch(n=64)
    before = float((x[0, ..., 0] > 0.5).sum())
    y = np.asarray(warped_batch(jax.random.split(jax.random.key(seed), 64), x, limits))
    after = (y[..., 0] > 0.5).sum(axis=(1, 2))
    # Area scales with the two zooms; the aspect change never raises either above the largest zoom.
    low, high = limits.scale[0] ** 2 / (1 + limits.max_aspect), limits.scale[1] ** 2
    assert after.min() >= 0.9 * low * before and after.max() <= 1.1 * high * before
    border = np.concatenate(
        [
            y[:, :2].reshape(64, -1),
            y[:, -2:].reshape(64, -1),
            y[:, :, :2].reshape(64, -1),
            y[:, :, -2:].reshape(64, -1),
        ],
        axis=1,
    )
    assert (border > 0.5).sum() == 0


def test_the_photo_geometry_reaches_its_limits():
    """Rotations beyond 20 degrees and zooms both ways really happen (else the policy would be basic in disguise)."""
    keys = jax.random.split(jax.random.key(0), 2000)
    _, angle, zoom, _ = jax.vmap(lambda k: random_geometry(tuple(jax.random.split(k, 5)), PHOTO_GEOMETRY))(keys)
    assert np.rad2deg(np.abs(np.asarray(angle))).max() > 0.95 * PHOTO_GEOMETRY.max_rotate_deg > 20
    assert float(zoom.min()) < 0.85 and float(zoom.max()) > 1.1


def test_statistics_images_are_clean_or_one_seeded_augmented_draw():
    from signs_jax.experiment import _calibration_images
    from signs_jax.recipes import RECIPES

    images = (np.asarray(skin_hand_on_wall()[0])[None].repeat(8, 0) * 255).astype(np.uint8)
    recipe = RECIPES["photo"]
    assert _calibration_images(images, recipe, seed=0) is images
    augmented = recipe.replace(bn_recalibration_augmented=True)
    a, b = _calibration_images(images, augmented, seed=0), _calibration_images(images, augmented, seed=0)
    c = _calibration_images(images, augmented, seed=1)
    assert a.dtype == np.uint8 and a.shape == images.shape
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - images).mean() > 3 and np.abs(a.astype(int) - c).mean() > 3


@pytest.mark.slow
def test_the_colour_walls_policy_greys_about_a_quarter_and_casts_colour_on_the_rest():
    x = jax.random.uniform(jax.random.key(0), (64, 64, 64, 3))
    out = np.asarray(augment_jit(jax.random.key(3), x, "colour-walls"))
    # A grey image under a colour cast keeps one ratio between its channels at every pixel; a coloured one does not.
    unclipped = ((out > 0.02) & (out < 0.98)).all(axis=-1)
    ratio_spread = np.array([np.std(o[u][:, 0] / o[u][:, 1]) for o, u in zip(out, unclipped)])
    grey = ratio_spread < 1e-3
    assert 0.1 <= grey.mean() <= 0.45, grey.mean()
    assert ratio_spread[~grey].min() > 0.01


def test_the_shift_policy_only_moves_the_image_a_few_pixels():
    from signs_jax.augment import SHIFT_ONLY

    x = np.zeros((32, 64, 64, 3), np.float32)
    x[:, 19:22, 39:42] = 1.0  # a blob right of centre: a flip would take it to x = 23
    out = np.asarray(augment_jit(jax.random.key(0), jnp.asarray(x), "shift"))[..., 0]
    ys, xs = np.mgrid[:64, :64]
    centres = np.stack([(out * ys).sum((1, 2)), (out * xs).sum((1, 2))], 1) / out.sum((1, 2))[:, None]
    moved = centres - np.array([20.0, 40.0])
    assert np.abs(moved).max() <= SHIFT_ONLY * 64 + 0.5  # no flip, no rotation about the centre, no zoom
    assert np.abs(moved).mean() > 0.5 and np.ptp(moved, axis=0).min() > 2  # it does shift, both ways
    np.testing.assert_allclose(out.sum((1, 2)), 9.0, atol=0.05)  # the blob keeps its mass: nothing scaled
