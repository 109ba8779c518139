"""How a photo of any shape becomes the model's input: `--fit` (squash, crop, pad) and the views of `--tta`.

The model sees a fixed (height, width), square for SIGNS; a phone photo is 4:3 or 16:9. Three ways:

- squash: the whole photo resized to the input, its aspect ratio lost (what Keras `load_img` does).
- crop: the largest centred box of the input's aspect ratio, resized; what lies outside is dropped.
- pad: the photo centred on a canvas of the input's aspect ratio, resized; the bands added are one
  plain colour, the median of the photo's top, left and right borders (`pad_colour`). Why that colour:
  SIGNS backgrounds are plain light walls, so a plain band of the photo's own background colour is the
  frame the model knows best. Replicating the edge pixels would smear whatever touches the border (a
  sleeve, clutter) into streaks across the band, and a fixed SIGNS grey would put a hard edge of a
  colour foreign to the photo next to it. The bottom border is left out of the median because the arm
  enters there (as in `shifts._background_colour`).

`--tta` averages the model's probabilities over `TTA_VIEWS` of the framed photo. Every view is taken
from the decoded photo at its full resolution (one resize per view), so zooming in loses no detail.
Measurements and the choice of the defaults: docs/predict.md.
"""

from typing import NamedTuple, Optional, Sequence, Tuple

FITS = ("squash", "crop", "pad")
DEFAULT_FIT = "squash"


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


def pad_colour(pixels) -> Tuple[int, int, int]:
    """The median colour of the two outermost rows at the top and columns at the left and right."""
    import numpy as np

    rgb = np.asarray(pixels)
    border = np.concatenate([rgb[:2].reshape(-1, 3), rgb[:, :2].reshape(-1, 3), rgb[:, -2:].reshape(-1, 3)])
    return tuple(int(v) for v in np.rint(np.median(border, 0)))


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
    return img, (0.0, 0.0, float(img.width), float(img.height))


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
