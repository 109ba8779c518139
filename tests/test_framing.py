"""predict --fit (squash, crop, pad) and --tta on generated photos of odd sizes.

The photos: green side regions along the long side, a white square in the middle with a red marker at its
centre, and a 2-pixel grey frame all round (so the pad colour, the median of the top, left and right
borders, is that grey). Expected values come from PIL and numpy directly, never from signs_jax.framing.
"""

import json

import numpy as np
import pytest
from PIL import Image

from helpers import json_lines
from signs_jax import framing, load_image, predict
from signs_jax.weights import Weights

DEFAULT_FILTER = Image.Resampling.BILINEAR  # predict's default resize filter (docs/interpolation.md)

GREY = (128, 128, 128)
GREEN = (0, 200, 0)
RED = (220, 0, 0)
WHITE = (255, 255, 255)


def marked_photo(width: int, height: int) -> np.ndarray:
    x = np.zeros((height, width, 3), np.uint8)
    x[:] = GREEN
    short = min(width, height)
    top, left = (height - short) // 2, (width - short) // 2
    x[top : top + short, left : left + short] = WHITE
    m = max(3, short // 4)
    cy, cx = height // 2, width // 2
    x[cy - m // 2 : cy - m // 2 + m, cx - m // 2 : cx - m // 2 + m] = RED
    x[:2], x[-2:], x[:, :2], x[:, -2:] = GREY, GREY, GREY, GREY
    return x


def is_red(x):
    return (x[..., 0] > 150) & (x[..., 1] < 100) & (x[..., 2] < 100)


def is_green(x):
    return (x[..., 1] > 120) & (x[..., 0] < 100)


def extents(mask):
    """(height, width) of the True pixels' bounding box."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


@pytest.fixture(params=[(91, 37), (50, 200)], ids=["landscape-91x37", "portrait-50x200"])
def photo(request, tmp_path):
    width, height = request.param
    path = tmp_path / f"photo-{width}x{height}.png"
    Image.fromarray(marked_photo(width, height)).save(path)
    return path, width, height


def test_squash_keeps_everything_stretched(photo):
    path, width, height = photo
    x = np.rint(load_image(path, (32, 32), "box", fit="squash") * 255)
    assert is_red(x[16, 16])
    long_axis = 1 if width > height else 0
    side = x[16, 5] if long_axis == 1 else x[5, 16]
    assert is_green(side)  # the side regions are still there
    h, w = extents(is_red(x))
    stretch = max(width, height) / min(width, height)  # the marker is squeezed along the long axis
    along, across = (w, h) if long_axis == 1 else (h, w)
    assert across / along == pytest.approx(stretch, rel=0.35)


def test_crop_keeps_the_centre_and_drops_the_sides(photo):
    path, width, height = photo
    x = np.rint(load_image(path, (32, 32), "box", fit="crop") * 255)
    assert is_red(x[16, 16])
    assert not is_green(x).any()
    h, w = extents(is_red(x))
    assert abs(h - w) <= 1  # the marker stays square
    assert h == pytest.approx(32 * max(3, min(width, height) // 4) / min(width, height), abs=1.5)


def test_pad_keeps_everything_and_adds_the_border_median(photo):
    path, width, height = photo
    x = np.rint(load_image(path, (32, 32), "box", fit="pad") * 255)
    long_side, short_side = max(width, height), min(width, height)
    band = int(32 * (long_side - short_side) / 2 / long_side) - 1  # whole output pixels of pad on each side
    bands = (x[:band], x[-band:]) if width > height else (x[:, :band], x[:, -band:])
    for b in bands:
        np.testing.assert_allclose(b, np.broadcast_to(GREY, b.shape), atol=2)
    assert is_red(x[16, 16])
    side = x[16, 4] if width > height else x[4, 16]
    assert is_green(side)
    h, w = extents(is_red(x))
    assert abs(h - w) <= 1
    assert is_green(x).any()


def test_square_photos_are_the_same_under_every_fit(tmp_path):
    path = tmp_path / "square.png"
    Image.fromarray(marked_photo(45, 45)).save(path)
    squash = load_image(path, (32, 32), fit="squash")
    for fit in ("crop", "pad"):
        np.testing.assert_array_equal(load_image(path, (32, 32), fit=fit), squash)


# ------------------------------------------------------------------------------ --fit hand

WALL = (200, 190, 175)  # a light, warm, plain wall
SKIN = (190, 120, 90)


def hand_on_wall(width: int, height: int, hand_side: int, centre_x: int, fingertips: int) -> np.ndarray:
    """A plain wall and a skin-coloured hand: a palm disc, four finger bars above it, an arm down to the bottom
    edge; `hand_side` is about the palm-to-fingertip height."""
    x = np.empty((height, width, 3), np.uint8)
    x[:] = WALL
    ys, xs = np.mgrid[:height, :width]
    palm_y = fingertips + 0.65 * hand_side
    skin = (ys - palm_y) ** 2 + (xs - centre_x) ** 2 <= (0.3 * hand_side) ** 2
    for k in range(4):
        finger_x = centre_x + (k - 1.5) * 0.14 * hand_side
        skin |= (np.abs(xs - finger_x) <= 0.05 * hand_side) & (ys >= fingertips) & (ys <= palm_y)
    skin |= (np.abs(xs - centre_x) <= 0.18 * hand_side) & (ys >= palm_y)
    x[skin] = SKIN
    return x


def skin_rows_and_share(x):
    skin = (np.abs(x.astype(int) - SKIN).sum(-1) < 60) & (np.abs(x.astype(int) - WALL).sum(-1) > 60)
    rows = np.flatnonzero(skin.any(1))
    return rows[0] / x.shape[0], skin.mean()


@pytest.mark.parametrize("size", [(301, 173), (97, 211), (640, 480)], ids=["landscape", "portrait", "4:3"])
def test_hand_fit_frames_a_small_hand_as_signs_does(tmp_path, size):
    width, height = size
    hand = min(width, height) // 3  # a hand far smaller than SIGNS frames it
    photo = hand_on_wall(width, height, hand, centre_x=int(width * 0.7), fingertips=height - int(1.6 * hand))
    path = tmp_path / "hand.png"
    Image.fromarray(photo).save(path)
    x = (load_image(path, (64, 64), fit="hand") * 255).round().astype(np.uint8)
    top, share = skin_rows_and_share(x)
    _, squashed_share = skin_rows_and_share((load_image(path, (64, 64)) * 255).round().astype(np.uint8))
    # the skin covers about SIGNS's share of the frame (the box is sized from the mask's area), the fingertips lie
    # about SIGNS's distance below the top, and the hand is no longer the small part of the squashed photo
    assert share == pytest.approx(framing.SIGNS_HAND_SHARE, rel=0.25)
    assert top == pytest.approx(framing.SIGNS_FINGERTIPS, abs=0.06)
    assert share > 2 * squashed_share


def test_hand_fit_is_squash_without_a_plain_wall_or_a_hand(tmp_path):
    rng = np.random.default_rng(0)
    clutter = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)  # busy borders: the mask cannot be trusted
    wall = np.full((120, 160, 3), WALL, np.uint8)  # nothing stands out
    for name, photo in (("clutter", clutter), ("wall", wall)):
        path = tmp_path / f"{name}.png"
        Image.fromarray(photo).save(path)
        assert framing.hand_box(Image.fromarray(photo)) is None
        np.testing.assert_array_equal(load_image(path, (64, 64), fit="hand"), load_image(path, (64, 64)))


def test_hand_fit_puts_the_wall_where_the_box_leaves_the_photo():
    # the hand at the left edge: the box reaches past it, and that part of the input is the wall's colour
    photo = hand_on_wall(200, 150, 50, centre_x=12, fingertips=60)
    x = np.asarray(framing.render(Image.fromarray(photo), (64, 64), "hand"))
    left, top, right, bottom = framing.hand_box(Image.fromarray(photo))
    assert left < 0 < right <= 200 and bottom <= 150
    np.testing.assert_array_equal(x[20:40, 0], np.tile(WALL, (20, 1)))


def test_pad_colour_leaves_out_the_bottom_border():
    x = np.zeros((4, 50, 3), np.uint8)
    x[:] = (10, 20, 30)
    x[-2:] = (250, 0, 0)  # the arm enters at the bottom, here across most of the border: it must not count
    assert framing.pad_colour(x) == (10, 20, 30)


def test_crop_box_and_pad_canvas_for_a_wide_input():
    # aspect 2 (e.g. a 64x32 input): hand-computed boxes
    assert framing.crop_box(100, 100, 2.0) == (0.0, 25.0, 100.0, 75.0)
    assert framing.crop_box(300, 100, 2.0) == (50.0, 0.0, 250.0, 100.0)
    assert framing.pad_canvas(100, 100, 2.0) == (200, 100, 50, 0)
    assert framing.pad_canvas(300, 100, 2.0) == (300, 150, 0, 25)


def test_unknown_fit_is_a_programming_error(photo):
    with pytest.raises(ValueError, match="fit must be one of"):
        load_image(photo[0], (32, 32), fit="stretch")


# ------------------------------------------------------------------------------------------------- --tta


def expected_views(path, width, height, fit, size=8):
    """The --tta views built with PIL alone: the framed box, mirrored, its centred 90 %, mirrored."""
    img = Image.open(path).convert("RGB")
    if fit == "squash":
        box = (0, 0, width, height)
    else:  # crop to square
        s = min(width, height)
        box = ((width - s) / 2, (height - s) / 2, (width + s) / 2, (height + s) / 2)
    cx, cy, hw, hh = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    inner = (cx - 0.9 * hw, cy - 0.9 * hh, cx + 0.9 * hw, cy + 0.9 * hh)
    whole = np.asarray(img.resize((size, size), DEFAULT_FILTER, box=box), np.float32)
    zoom = np.asarray(img.resize((size, size), DEFAULT_FILTER, box=inner), np.float32)
    return np.stack([whole, whole[:, ::-1], zoom, zoom[:, ::-1]]) / 255


@pytest.mark.parametrize("fit", ["squash", "crop"])
def test_tta_views_are_the_documented_ones_and_deterministic(photo, fit):
    path, width, height = photo
    views = load_image(path, (8, 8), fit=fit, views=framing.TTA_VIEWS)
    assert views.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(views, load_image(path, (8, 8), fit=fit, views=framing.TTA_VIEWS))
    np.testing.assert_allclose(views, expected_views(path, width, height, fit), atol=1.01 / 255)
    np.testing.assert_array_equal(views[0], load_image(path, (8, 8), fit=fit))  # the first view: no --tta


class _Halves:
    """A stand-in model: logits are the mean colour of the left and of the right half, times `variables`."""

    input_shape = (8, 8, 3)
    num_classes = 6

    def apply(self, variables, x):
        import jax.numpy as jnp

        return jnp.concatenate([x[:, :, :4].mean((1, 2)), x[:, :, 4:].mean((1, 2))], -1) * variables


def halves_logits(images, scale):
    return np.concatenate([images[:, :, :4].mean((1, 2)), images[:, :, 4:].mean((1, 2))], -1) * scale


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_tta_probabilities_are_the_mean_over_the_views(tmp_path):
    paths, expected = [], []
    for i, (w, h) in enumerate([(91, 37), (50, 200), (13, 29)]):
        rng = np.random.default_rng(i)
        x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(x).save(paths[-1])
        views = expected_views(paths[-1], w, h, "squash")
        expected.append(softmax(halves_logits(views, 6.0) / 2.0).mean(0))
    weights = Weights(_Halves(), 6.0, tuple("abcdef"), "fake", None, 2.0)
    got = list(predict.predict_files(weights, paths, batch_size=2, views=framing.TTA_VIEWS))
    assert [p for p, _ in got] == paths
    np.testing.assert_allclose(np.stack([p for _, p in got]), np.stack(expected), atol=2e-5)
    logits = [z for _, z in predict.predict_logits(weights, paths, views=framing.TTA_VIEWS)]
    assert [z.shape for z in logits] == [(4, 6)] * 3
    assert [z.shape for _, z in predict.predict_logits(weights, paths)] == [(6,)] * 3


def test_cli_tta_json_and_table_threshold_on_the_averaged_raw_probabilities(tmp_path, monkeypatch, capsys):
    import signs_jax.weights

    path = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (37, 91, 3), dtype=np.uint8)).save(path)
    weights = Weights(_Halves(), 40.0, tuple("abcdef"), "fake", None, 2.0)
    monkeypatch.setattr(signs_jax.weights, "load_weights", lambda *a, **k: weights)
    views = expected_views(path, 91, 37, "crop")
    raw = softmax(halves_logits(views, 40.0)).mean(0).max()
    calibrated = softmax(halves_logits(views, 40.0) / 2.0).mean(0)

    threshold = f"{raw + 0.01:.4f}"  # just above the averaged raw confidence: uncertain
    assert predict.main([str(path), "--fit", "crop", "--tta", "--json", "--threshold", threshold]) == 0
    (record,) = json_lines(capsys.readouterr().out)
    assert set(record) == {"path", "class", "confidence", "uncertain", "raw_confidence", "probabilities"}
    np.testing.assert_allclose(record["probabilities"], calibrated, atol=2e-5)
    assert record["raw_confidence"] == pytest.approx(raw, abs=2e-5)
    assert record["uncertain"] is True
    assert predict.main([str(path), "--fit", "crop", "--tta", "--threshold", f"{raw - 0.01:.4f}"]) == 0
    header, columns, row = capsys.readouterr().out.strip().splitlines()
    assert "fit crop; mean of 4 views (--tta)" in header
    assert row.split()[4] == "no"  # just below: certain


def test_cli_default_is_squash_without_tta(tmp_path, monkeypatch, capsys):
    import signs_jax.weights

    path = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (200, 50, 3), dtype=np.uint8)).save(path)
    weights = Weights(_Halves(), 5.0, tuple("abcdef"), "fake", None, 1.0)
    monkeypatch.setattr(signs_jax.weights, "load_weights", lambda *a, **k: weights)
    assert predict.main([str(path), "--json"]) == 0
    (record,) = json_lines(capsys.readouterr().out)
    image = np.asarray(Image.open(path).resize((8, 8), DEFAULT_FILTER), np.float32)[None] / 255
    np.testing.assert_allclose(record["probabilities"], softmax(halves_logits(image, 5.0))[0], atol=2e-5)


@pytest.mark.parametrize("flag", [["--fit", "stretch"], ["--fit", ""]])
def test_bad_fit_is_one_line_exit_2(tmp_path, capsys, flag):
    path = tmp_path / "x.png"
    Image.new("RGB", (5, 7)).save(path)
    assert predict.main([str(path), *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --fit {flag[1]}: must be one of squash, crop, pad, hand"]


def test_help_names_the_modes_and_the_views(capsys):
    with pytest.raises(SystemExit):
        predict.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "squash" in text and "crop" in text and "pad" in text and "hand" in text and "--tta" in text
    assert json.dumps(len(framing.TTA_VIEWS)) + " views" in text


@pytest.mark.slow
def test_cli_adapt_with_tta_and_pad(tmp_path, capsys):
    from helpers import KERAS_MODEL

    rng = np.random.default_rng(5)
    for i in range(16):
        size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    args = [str(tmp_path), "--weights", KERAS_MODEL, "--adapt", "--fit", "pad", "--json"]
    assert predict.main([*args, "--tta"]) == 0
    records = json_lines(capsys.readouterr().out)
    assert len(records) == 16
    np.testing.assert_allclose([sum(r["probabilities"]) for r in records], 1, atol=1e-5)
    assert predict.main(args) == 0  # without the views, on the same adapted statistics: other numbers
    plain = json_lines(capsys.readouterr().out)
    assert [r["path"] for r in plain] == [r["path"] for r in records]
    assert not np.allclose([r["probabilities"] for r in plain], [r["probabilities"] for r in records], atol=1e-4)
