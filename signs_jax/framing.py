"""How a photo of any shape becomes the model's input: `--fit` (squash, crop, pad, hand) and the views of `--tta`.

The model sees a fixed (height, width), square for SIGNS; a phone photo is 4:3 or 16:9. Four ways:

- squash: the whole photo resized to the input, its aspect ratio lost (what Keras `load_img` does).
- crop: the largest centred box of the input's aspect ratio, resized; what lies outside is dropped.
- pad: the photo centred on a canvas of the input's aspect ratio, resized; the bands added are one
  plain colour, the median of the photo's top, left and right borders (`pad_colour`). Why that colour:
  SIGNS backgrounds are plain light walls, so a plain band of the photo's own background colour is the
  frame the model knows best. Replicating the edge pixels would smear whatever touches the border (a
  sleeve, clutter) into streaks across the band, and a fixed SIGNS grey would put a hard edge of a
  colour foreign to the photo next to it. The bottom border is left out of the median because the arm
  enters there (as in `shifts._background_colour`).
- hand: for a hand small in a larger photo of a wall, the box that frames it as SIGNS frames its hands
  (`hand_box`): as large a share of the frame, the fingertips as far from the top, the hand as far from the
  left. SIGNS's hands are all about one size, and a hand framed 1.3x smaller costs the model about a fifth of
  its accuracy. It needs a hand that stands out against a plain wall (the same `shifts.hand_mask` the shift
  benchmark uses) and is clearly too small (`SMALL_HAND`); otherwise it is squash.

`--tta` averages the model's probabilities over `TTA_VIEWS` of the framed photo. Every view is taken
from the decoded photo at its full resolution (one resize per view), so zooming in loses no detail.
Measurements and the choice of the defaults: docs/predict.md.
"""

from typing import NamedTuple, Optional, Sequence, Tuple

FITS = ("squash", "crop", "pad", "hand")
DEFAULT_FIT = "squash"

# Where SIGNS puts the hand: medians over its 1,080 training photos of the pixels `shifts.hand_mask` counts as
# hand (above 0.5). The hand and the visible arm cover this share of the frame, the fingertips (the mask's top
# 0.5 % of rows) lie this far down, and the mask's centre this far from the left, as fractions of the side.
SIGNS_HAND_SHARE = 0.295
SIGNS_FINGERTIPS = 0.17
SIGNS_HAND_CENTRE = 0.48
# A wall: the top, left and right borders differ from their median colour by at most this many grey levels on
# average (SIGNS: 99 % of its photos below 29). A busier border means the mask cannot be trusted.
PLAIN_BORDER = 30.0
HAND_SHARE_RANGE = (0.01, 0.8)  # outside it the mask found nothing, or nothing but hand
# Re-frame only a hand clearly smaller than SIGNS frames it: the box whose height is below this share of the
# photo's. The box is sized by the hand's area, which differs between signs (a fist covers less than an open hand)
# and so scatters by about 1.5x either way over SIGNS's own photos; a photo framed about right is left alone.
SMALL_HAND = 0.6
HAND_WORKING_SIDE = 128  # the mask is computed on a copy this large: enough for a box, cheap for any photo


class View(NamedTuple):
    """One deterministic view of a framed photo."""

    zoom: float  # the centred fraction of the framed photo's width and height that is kept (1: all of it)
    flip: bool  # mirrored left to right (a finger count survives it; training flips at random too)


# The photo as framed, mirrored, and a centre zoom of 1/0.9 = 1.11x (training zooms by 0.85..1.15), each
# mirrored: four forward passes per photo.
TTA_VIEWS = (View(1.0, False), View(1.0, True), View(0.9, False), View(0.9, True))
IDENTITY = View(1.0, False)


def check_fit(fit: str) -> None:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, not {fit!r}")


def crop_box(width: int, height: int, aspect: float) -> Tuple[float, float, float, float]:
    """(left, top, right, bottom): the largest centred box of `aspect` (width / height) inside the photo."""
    if width > height * aspect:
        kept = height * aspect
        return ((width - kept) / 2, 0.0, (width + kept) / 2, float(height))
    kept = width / aspect
    return (0.0, (height - kept) / 2, float(width), (height + kept) / 2)


def pad_canvas(width: int, height: int, aspect: float) -> Tuple[int, int, int, int]:
    """(canvas width, canvas height, left, top): the smallest canvas of about `aspect` that holds the photo,
    and where the photo goes on it (centred; an odd leftover pixel goes to the right or bottom)."""
    canvas_w = max(width, round(height * aspect))
    canvas_h = max(height, round(width / aspect))
    return canvas_w, canvas_h, (canvas_w - width) // 2, (canvas_h - height) // 2


def wall_pixels(pixels):
    """(N, 3): the two outermost rows at the top and columns at the left and right (the arm enters at the bottom)."""
    import numpy as np

    rgb = np.asarray(pixels)
    return np.concatenate([rgb[:2].reshape(-1, 3), rgb[:, :2].reshape(-1, 3), rgb[:, -2:].reshape(-1, 3)])


def pad_colour(pixels) -> Tuple[int, int, int]:
    """The median colour of the wall pixels (`wall_pixels`)."""
    import numpy as np

    return tuple(int(v) for v in np.rint(np.median(wall_pixels(pixels), 0)))


def hand_box(img, aspect: float = 1.0) -> Optional[Tuple[float, float, float, float]]:
    """(left, top, right, bottom) of the PIL RGB `img` that frames its hand as SIGNS does, possibly reaching past
    the photo's edges; None when the borders are not a plain wall or no hand-sized region stands out."""
    import math

    import numpy as np

    from .shifts import hand_mask

    small = img.copy()
    small.thumbnail((HAND_WORKING_SIDE, HAND_WORKING_SIDE))
    pixels = np.asarray(small, dtype=np.float32)
    border = wall_pixels(pixels)
    if np.abs(border - np.median(border, 0)).mean() > PLAIN_BORDER:
        return None
    mask = hand_mask(pixels[None])[0] > 0.5
    if not HAND_SHARE_RANGE[0] <= mask.mean() <= HAND_SHARE_RANGE[1]:
        return None
    rows, cols = np.nonzero(mask)
    scale_x, scale_y = img.width / small.width, img.height / small.height
    fingertips = float(np.quantile(rows, 0.005))
    # Size the box by the hand's area, counting only the arm the box will show: a few rounds, each shrinking it.
    inside = np.ones(len(rows), bool)
    for _ in range(4):
        area = inside.sum() * scale_x * scale_y  # in the photo's pixels
        height = math.sqrt(area / aspect / SIGNS_HAND_SHARE)  # the box's area is aspect * height**2
        inside = rows <= fingertips + (1 - SIGNS_FINGERTIPS) * height / scale_y
    width = height * aspect
    top = fingertips * scale_y - SIGNS_FINGERTIPS * height
    top = min(top, img.height - height) if height <= img.height else top  # the arm keeps entering at the bottom
    left = float(cols[inside].mean()) * scale_x - SIGNS_HAND_CENTRE * width
    return (left, top, left + width, top + height)


def zoomed(box, zoom: float) -> Tuple[float, float, float, float]:
    """The centred `zoom` fraction of `box` (left, top, right, bottom)."""
    left, top, right, bottom = box
    cx, cy, half_w, half_h = (left + right) / 2, (top + bottom) / 2, (right - left) / 2, (bottom - top) / 2
    return (cx - zoom * half_w, cy - zoom * half_h, cx + zoom * half_w, cy + zoom * half_h)


def framed(img, aspect: float, fit: str):
    """(image, box): the PIL RGB image to resample from and the box of it that becomes the model's input."""
    from PIL import Image

    check_fit(fit)
    if fit == "crop":
        return img, crop_box(img.width, img.height, aspect)
    if fit == "pad":
        canvas_w, canvas_h, left, top = pad_canvas(img.width, img.height, aspect)
        if (canvas_w, canvas_h) != img.size:
            canvas = Image.new("RGB", (canvas_w, canvas_h), pad_colour(img))
            canvas.paste(img, (left, top))
            img = canvas
    if fit == "hand":
        box = hand_box(img, aspect)
        if box is not None and box[3] - box[1] < SMALL_HAND * min(img.height, img.width / aspect):
            return _inside(img, box)
    return img, (0.0, 0.0, float(img.width), float(img.height))


def _inside(img, box):
    """(image, box) with `box` inside the image: where it reaches past an edge, the photo is first put on a
    canvas of its wall colour (`pad_colour`) large enough to hold it."""
    import math

    from PIL import Image

    left, top, right, bottom = box
    pad_left, pad_top = max(0, math.ceil(-left)), max(0, math.ceil(-top))
    pad_right, pad_bottom = max(0, math.ceil(right - img.width)), max(0, math.ceil(bottom - img.height))
    if not (pad_left or pad_top or pad_right or pad_bottom):
        return img, box
    canvas = Image.new("RGB", (img.width + pad_left + pad_right, img.height + pad_top + pad_bottom), pad_colour(img))
    canvas.paste(img, (pad_left, pad_top))
    return canvas, (left + pad_left, top + pad_top, right + pad_left, bottom + pad_top)


def render(img, size: Tuple[int, int], fit: str = DEFAULT_FIT, resample=None, view: View = IDENTITY):
    """The PIL RGB `img` as the model's input: a PIL image of `size` = (width, height), framed by `fit`,
    then `view` (zoom, flip) applied, in one resize from the full-resolution photo."""
    from PIL import Image

    source, box = framed(img, size[0] / size[1], fit)
    box = zoomed(box, view.zoom)
    if box == (0.0, 0.0, float(source.width), float(source.height)):
        out = source if source.size == size else source.resize(size, resample)
    else:
        out = source.resize(size, resample, box=box)
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view.flip else out


def render_pixels(img, size, fit: str = DEFAULT_FIT, resample=None, views: Optional[Sequence[View]] = None):
    """uint8 (height, width, 3) of `img` rendered as the model's input, or (len(views), height, width, 3)
    with one image per view when `views` is given (`size` = (width, height) as in PIL)."""
    import numpy as np

    if views is None:
        return np.asarray(render(img, size, fit, resample), dtype=np.uint8)
    return np.stack([np.asarray(render(img, size, fit, resample, v), dtype=np.uint8) for v in views])


def view_images(images, views: Sequence[View] = TTA_VIEWS, resample=None):
    """uint8 (N, H, W, 3) model-sized images -> (N, len(views), H, W, 3): the views of each (for images
    already at the input size, such as the shift benchmark's)."""
    import numpy as np
    from PIL import Image

    h, w = images.shape[1:3]
    return np.stack([render_pixels(Image.fromarray(x), (w, h), "squash", resample, views) for x in images])
