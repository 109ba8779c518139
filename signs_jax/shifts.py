"""Distribution-shift benchmark: the SIGNS test set under the changes other people's photos bring.

SIGNS photos share one light plain background, one lighting and one framing; a model can score
near 1.0 on its test set and far less on anyone else's photos. Each shift here is one named change
(exposure, colour cast, blur, framing, background, ...) at severities 1 (mild) to 5 (strong), seeded and
vectorised over the batch: `apply_shift(name, images, severity, seed)`. `run_shift_benchmark` measures a
model's accuracy under every shift; `python -m signs_jax.shifts` does it for a trained model or a Keras .h5.

Random choices (a direction, an angle, a texture) are drawn per image from (seed, shift name) and do not
depend on the severity, so a higher severity is the same change made stronger.
"""

import argparse
import io
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import cli

SEVERITIES = (1, 2, 3, 4, 5)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
GAMMA = 2.2  # sRGB is close to a 2.2 power law; light adds up in linear values, not in pixel values


class Shift(NamedTuple):
    apply: Callable  # (images float32 (N, H, W, 3) in [0, 255], level, rng) -> float array of the same shape
    levels: tuple[float, ...]  # the strength at severities 1..5
    seeded: bool  # whether the result depends on the seed
    summary: str


# ------------------------------------------------------------------------------------------------ helpers


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    """-1 or +1 per image."""
    return np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)


def _to_linear(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 255) / 255.0) ** GAMMA


def _from_linear(lin: np.ndarray) -> np.ndarray:
    return np.clip(lin, 0, 1) ** (1 / GAMMA) * 255.0


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ LUMA


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]."""
    y, x = np.meshgrid((np.arange(h) + 0.5) / h * 2 - 1, (np.arange(w) + 0.5) / w * 2 - 1, indexing="ij")
    return y.astype(np.float32), x.astype(np.float32)


def _box_blur(a: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window along axes 1 and 2, edges replicated."""
    k = 2 * radius + 1
    pad = [(0, 0), (radius, radius), (radius, radius)] + [(0, 0)] * (a.ndim - 3)
    p = np.pad(a, pad, mode="edge")
    c = np.cumsum(np.cumsum(p, 1, dtype=np.float64), 2)
    c = np.pad(c, [(0, 0), (1, 0), (1, 0)] + [(0, 0)] * (a.ndim - 3))
    s = c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]
    return (s / (k * k)).astype(np.float32)


def _convolve(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Blur each image with its own kernel (N, k, k) (or one (k, k) for all), edges replicated."""
    n, h, w, _ = x.shape
    kernels = np.broadcast_to(kernels, (n, *kernels.shape[-2:]))
    k = kernels.shape[-1]
    r = k // 2
    padded = np.pad(x, [(0, 0), (r, r), (r, r), (0, 0)], mode="edge")
    out = np.zeros_like(x)
    for dy in range(k):
        for dx in range(k):
            weight = kernels[:, dy, dx]
            if np.any(weight):
                out += weight[:, None, None, None] * padded[:, dy : dy + h, dx : dx + w]
    return out


def _warp(x: np.ndarray, matrices: np.ndarray, fill: np.ndarray, fade: float = 6.0) -> np.ndarray:
    """Resample every image through its own affine map, output pixel -> source pixel.

    `matrices` (N, 2, 3) map output coordinates (x, y, 1), in pixels from the image centre, to source
    coordinates likewise. Where a map reaches outside the photo, the photo's edge is extended and fades
    into `fill` (N, 3), the plain background, over about `fade` pixels; below the bottom edge only the
    sideways distance counts, because the arm enters there and continues out of the frame. Each output
    pixel averages enough bilinear samples that shrinking maps do not alias.
    """
    n, h, w, c = x.shape
    out = np.empty_like(x)
    for i in range(n):  # one image at a time: a supersampled grid of the whole batch would be hundreds of MB
        m = matrices[i]
        supersample = max(2, int(np.ceil(np.abs(m[:, :2]).sum(1).max())))
        v, u = np.meshgrid(
            (np.arange(h * supersample) + 0.5) / supersample - h / 2,
            (np.arange(w * supersample) + 0.5) / supersample - w / 2,
            indexing="ij",
        )
        sx = m[0, 0] * u + m[0, 1] * v + m[0, 2] + w / 2 - 0.5
        sy = m[1, 0] * u + m[1, 1] * v + m[1, 2] + h / 2 - 0.5
        beyond = np.hypot(np.maximum(np.maximum(-sx, sx - (w - 1)), 0), np.maximum(-sy, 0))
        sx, sy = np.clip(sx, 0, w - 1), np.clip(sy, 0, h - 1)
        x0, y0 = np.minimum(sx.astype(np.int32), w - 2), np.minimum(sy.astype(np.int32), h - 2)
        fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
        img = x[i]
        top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
        bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
        sampled = top * (1 - fy) + bottom * fy
        sampled = fill[i] + (sampled - fill[i]) * np.exp(-beyond / fade)[..., None]
        out[i] = sampled.reshape(h, supersample, w, supersample, c).mean((1, 3))
    return out


def _per_image_pil(x: np.ndarray, fn) -> np.ndarray:
    from PIL import Image

    q = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.stack([np.asarray(fn(Image.fromarray(img)), np.float32) for img in q])


def _background_colour(x: np.ndarray) -> np.ndarray:
    """(N, 3): the median colour of the top, left and right borders (the arm enters at the bottom)."""
    n = len(x)
    border = np.concatenate(
        [x[:, :2].reshape(n, -1, 3), x[:, :, :2].reshape(n, -1, 3), x[:, :, -2:].reshape(n, -1, 3)], 1
    )
    return np.median(border, 1)


def hand_mask(images: np.ndarray) -> np.ndarray:
    """How much each pixel is hand (1) rather than background (0): float32 (N, H, W), soft-edged.

    SIGNS backgrounds are light, plain and nearly grey; hands are darker and redder. A pixel's score is
    how much redder (red minus blue) and, at half weight, how much darker it is than the background's colour.
    Shadows on the wall are darker but not redder, so they mostly stay background.
    """
    x = np.asarray(images, np.float32)
    background = _background_colour(x)[:, None, None, :]
    redder = (x[..., 0] - x[..., 2]) - (background[..., 0] - background[..., 2])
    darker = _luma(background) - _luma(x)
    score = _box_blur(np.maximum(redder, 0) + 0.5 * np.maximum(darker, 0), 1)
    return _box_blur(np.clip((score - 25.0) / 20.0, 0, 1), 1)


def _hue_rotation(degrees: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations of RGB about the grey axis: a hue change that keeps grey grey."""
    t = np.radians(degrees)[:, None, None]
    k = np.full(3, 1 / np.sqrt(3), np.float32)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], np.float32)
    return np.cos(t) * np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * np.outer(k, k)


# ------------------------------------------------------------------------------------------------- shifts


def exposure(x, stops, rng):
    gain = 2.0 ** (_signs(rng, len(x)) * stops)
    return _from_linear(_to_linear(x) * gain[:, None, None, None])


def uneven_light(x, strength, rng):
    n, h, w, _ = x.shape
    y, xx = _grid(h, w)
    angle = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    slope = np.cos(angle) * xx + np.sin(angle) * y  # a light from one side
    vignette = 1 - 0.6 * strength * (xx**2 + y**2) / 2  # and darker corners, as cheap lenses have
    gain = np.maximum((1 + 0.7 * strength * slope) * vignette, 0.05)
    return _from_linear(_to_linear(x) * gain[..., None])


def white_balance(x, strength, rng):
    warm = np.array([1, 0, -1], np.float32) / np.sqrt(2)  # colour temperature: orange <-> blue
    tint = np.array([-1, 2, -1], np.float32) / np.sqrt(6)  # and green <-> magenta
    angle = rng.uniform(0, 2 * np.pi, len(x))[:, None]
    gains = np.exp(strength * (np.cos(angle) * warm + np.sin(angle) * tint))
    gains /= (gains @ LUMA)[:, None]  # a cast, not a brightness change
    return _from_linear(_to_linear(x) * gains[:, None, None, :])


def saturation(x, strength, rng):
    boost = _signs(rng, len(x)) > 0
    factor = np.where(boost, 1 + 1.5 * strength, 1 - 0.7 * strength)[:, None, None, None]
    grey = _luma(x)[..., None]
    return grey + (x - grey) * factor


def skin_tone(x, strength, rng):
    n = len(x)
    mask = hand_mask(x)[..., None]
    darker = _signs(rng, n)[:, None, None, None] < 0
    toned = np.where(darker, x * (1 - 0.6 * strength), x + (255 - x) * 0.35 * strength)
    rotation = _hue_rotation(_signs(rng, n) * 8 * strength)
    toned = np.einsum("nhwc,ndc->nhwd", toned, rotation)
    return x + mask * (toned - x)


def sensor_noise(x, sigma, rng):
    # Photon noise grows with the signal, read noise does not: brighter pixels get somewhat more.
    scale = sigma * (0.6 + 0.4 * np.sqrt(np.clip(x, 0, 255) / 255))
    return x + scale * rng.standard_normal(x.shape, np.float32)


def jpeg(x, quality, rng):
    def recompress(img):
        from PIL import Image

        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=int(quality))
        return Image.open(buffer).convert("RGB")

    return _per_image_pil(x, recompress)


def defocus_blur(x, radius, rng):
    r = int(np.ceil(radius + 0.5))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = np.clip(radius + 0.5 - np.hypot(yy, xx), 0, 1).astype(np.float32)
    return _convolve(x, disk / disk.sum())


def motion_blur(x, length, rng):
    n = len(x)
    r = int(np.ceil(length / 2)) + 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    angle = rng.uniform(0, np.pi, n)[:, None, None]
    along = xx * np.cos(angle) + yy * np.sin(angle)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    # Distance to a segment of `length` pixels through the centre, turned into antialiased weights.
    distance = np.hypot(np.maximum(np.abs(along) - (length - 1) / 2, 0), across)
    kernels = np.clip(1 - distance, 0, 1)
    return _convolve(x, (kernels / kernels.sum((1, 2), keepdims=True)).astype(np.float32))


def _affine(n, scale_x=1.0, scale_y=1.0, angle=0.0, shift_x=0.0, shift_y=0.0) -> np.ndarray:
    """(N, 2, 3) maps output -> source: rotate by `angle`, scale, then shift (source pixels)."""
    cos, sin = np.cos(angle), np.sin(angle)
    m = np.zeros((n, 2, 3), np.float32)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = scale_x * cos, -scale_x * sin, shift_x
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = scale_y * sin, scale_y * cos, shift_y
    return m


def scale_in(x, fraction, rng):
    """Crop `fraction` of the side around the hand's centre and enlarge it to the full frame."""
    n, h, w, _ = x.shape
    mask = hand_mask(x)
    y, xx = _grid(h, w)
    weight = mask.sum((1, 2)) + 1e-6
    centre_x = (mask * xx).sum((1, 2)) / weight * w / 2
    centre_y = (mask * y).sum((1, 2)) / weight * h / 2
    room_x, room_y = (1 - fraction) * w / 2, (1 - fraction) * h / 2  # the crop stays inside the photo
    return _warp(
        x,
        _affine(n, fraction, fraction, 0, np.clip(centre_x, -room_x, room_x), np.clip(centre_y, -room_y, room_y)),
        _background_colour(x),
    )


def scale_out(x, size, rng):
    """Shrink the photo to `size` of the side, somewhere in the frame, its edges extended around it."""
    n, h, w, _ = x.shape
    offset = rng.uniform(-1, 1, (2, n)) * (1 - size) / 2 * np.array([[w], [h]])
    return _warp(x, _affine(n, 1 / size, 1 / size, 0, -offset[0] / size, -offset[1] / size), _background_colour(x))


def translation(x, fraction, rng):
    n, h, w, _ = x.shape
    angle = rng.uniform(0, 2 * np.pi, n)
    shift_x, shift_y = -fraction * w * np.cos(angle), -fraction * h * np.sin(angle)
    return _warp(x, _affine(n, shift_x=shift_x, shift_y=shift_y), _background_colour(x))


def rotation(x, degrees, rng):
    return _warp(x, _affine(len(x), angle=np.radians(degrees) * _signs(rng, len(x))), _background_colour(x))


def aspect_ratio(x, ratio, rng):
    """A landscape or portrait photo of `ratio`, squashed to a square as Keras `load_img` does.

    The square photo is the middle of that wider (taller) frame, whose extra area is extended background.
    """
    n = len(x)
    landscape = _signs(rng, n) > 0
    return _warp(x, _affine(n, np.where(landscape, ratio, 1.0), np.where(landscape, 1.0, ratio)), _background_colour(x))


def low_resolution(x, pixels, rng):
    from PIL import Image

    h, w = x.shape[1:3]
    return _per_image_pil(
        x, lambda img: img.resize((int(pixels), int(pixels)), Image.BOX).resize((w, h), Image.BILINEAR)
    )


def background(x, opacity, rng):
    """Replace the plain background with a random texture (at `opacity`), keeping the hand's shadows."""
    from .textures import random_texture

    n, h, w, _ = x.shape
    mask = hand_mask(x)[..., None]
    textures = np.stack([random_texture(rng, (h, w)) for _ in range(n)])
    plain = _luma(_background_colour(x))[:, None, None, None]
    shade = np.clip(_luma(x)[..., None] / np.maximum(plain, 1), 0.4, 1.1)
    replaced = x + opacity * (textures * shade - x)
    return mask * x + (1 - mask) * replaced


def greyscale(x, amount, rng):
    grey = _luma(x)[..., None]
    return x + amount * (grey - x)


SHIFTS: dict[str, Shift] = {
    "exposure": Shift(exposure, (0.3, 0.6, 1.0, 1.5, 2.0), True, "brighter or darker (per image) by 0.3 .. 2 stops"),
    "uneven_light": Shift(
        uneven_light, (0.2, 0.4, 0.6, 0.8, 1.0), True, "light from one side (random direction) and darker corners"
    ),
    "white_balance": Shift(
        white_balance, (0.1, 0.2, 0.35, 0.5, 0.7), True, "colour cast: warm, cool, green or magenta (random mix)"
    ),
    "saturation": Shift(
        saturation,
        (0.2, 0.4, 0.6, 0.8, 1.0),
        True,
        "colours stronger (x1.3 .. x2.5) or weaker (x0.86 .. x0.3), per image",
    ),
    "skin_tone": Shift(
        skin_tone,
        (0.2, 0.4, 0.6, 0.8, 1.0),
        True,
        "the hand only: darker (x0.88 .. x0.4) or lighter skin, hue turned by 1.6 .. 8 degrees",
    ),
    "sensor_noise": Shift(
        sensor_noise, (3, 6, 10, 16, 24), True, "Gaussian noise per pixel and channel, sigma 3 .. 24 (of 255)"
    ),
    "jpeg": Shift(jpeg, (75, 50, 30, 18, 10), False, "JPEG recompression at quality 75 .. 10"),
    "defocus_blur": Shift(defocus_blur, (0.75, 1.25, 1.75, 2.5, 3.5), False, "disk blur, radius 0.75 .. 3.5 px"),
    "motion_blur": Shift(motion_blur, (3, 5, 7, 10, 14), True, "a 3 .. 14 px streak at a random angle"),
    "scale_in": Shift(
        scale_in, (0.88, 0.76, 0.65, 0.55, 0.45), False, "zoomed in on the hand: the crop keeps 88% .. 45% of the side"
    ),
    "scale_out": Shift(
        scale_out,
        (0.85, 0.72, 0.6, 0.5, 0.4),
        True,
        "the photo shrunk to 85% .. 40% of the side, edges extended around it",
    ),
    "translation": Shift(
        translation, (0.05, 0.1, 0.16, 0.23, 0.3), True, "moved 5% .. 30% of the side in a random direction"
    ),
    "rotation": Shift(rotation, (6, 12, 20, 30, 45), True, "tilted by 6 .. 45 degrees, either way"),
    "aspect_ratio": Shift(
        aspect_ratio,
        (1.15, 4 / 3, 1.5, 16 / 9, 2.0),
        True,
        "a 1.15:1 .. 2:1 (4:3, 16:9) landscape or portrait frame squashed to a square",
    ),
    "low_resolution": Shift(low_resolution, (40, 32, 24, 16, 12), False, "taken at 40 .. 12 px and enlarged back"),
    "background": Shift(
        background,
        (0.25, 0.45, 0.65, 0.85, 1.0),
        True,
        "the plain background blended 25% .. 100% into a random texture or clutter",
    ),
    "greyscale": Shift(greyscale, (0.2, 0.4, 0.6, 0.8, 1.0), False, "colour removed, 20% .. 100%"),
}


def apply_shift(name: str, images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """`images` (uint8 (N, H, W, 3)) under shift `name` at `severity` (0 = unchanged, 1..5), as uint8."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; known: {', '.join(SHIFTS)}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be 0..{SEVERITIES[-1]}, not {severity!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), not {images.dtype} {images.shape}")
    if severity == 0:
        return images.copy()
    shift = SHIFTS[name]
    out = shift.apply(images.astype(np.float32), shift.levels[severity - 1], _rng(name, seed))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def run_shift_benchmark(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    shifts: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
) -> dict:
    """Accuracy of `predict_fn` (uint8 images -> class probabilities) on `images`, clean and under each shift.

    Returns {shift: {severity: accuracy}, "clean": accuracy, "mean_shift_accuracy": the mean over every
    shift and severity}.
    """
    labels = np.asarray(labels)

    def accuracy(batch):
        return float((np.asarray(predict_fn(batch)).argmax(-1) == labels).mean())

    names = list(SHIFTS) if shifts is None else list(shifts)
    result = {name: {int(s): accuracy(apply_shift(name, images, int(s), seed)) for s in severities} for name in names}
    scores = [a for name in names for a in result[name].values()]
    result["clean"] = accuracy(images)
    result["mean_shift_accuracy"] = float(np.mean(scores)) if scores else None
    return result


# ----------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m signs_jax.shifts",
        description="Accuracy on the SIGNS test set under the changes other people's photos bring (lighting, "
        "colour, blur, framing, background, ...), each at severities 1 (mild) to 5 (strong). Shifts: "
        + ", ".join(SHIFTS)
        + ".",
    )
    cli.add_weights_arguments(p)
    p.add_argument("--data-dir", help=cli.DATA_DIR_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the random choices in the shifts (default: 0)")
    p.add_argument("--only", metavar="A,B", help="only these shifts, comma-separated")
    p.add_argument(
        "--example-index",
        type=int,
        default=0,
        metavar="I",
        help="the test image shown in the examples picture (default: 0)",
    )
    p.add_argument(
        "--examples-png",
        metavar="PATH",
        help="one test image under every shift at severities 0..5 (default: shift_examples.png in the "
        "run directory, or in the current directory for a Keras .h5)",
    )
    p.add_argument(
        "--examples-scale",
        type=int,
        default=2,
        metavar="K",
        help="enlarge the example tiles K times, nearest neighbour (default: %(default)s)",
    )
    p.add_argument(
        "--curves-png",
        metavar="PATH",
        help="accuracy against severity (default: shift_curves.png next to the examples)",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    return p


def parse_only(value: str | None) -> list:
    from .errors import UserError

    if value is None:
        return list(SHIFTS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in SHIFTS]
    if unknown or not names:
        raise UserError(f"--only: unknown shift {', '.join(unknown) or repr(value)}; known: {', '.join(SHIFTS)}")
    return list(dict.fromkeys(names))


def make_predict_fn(model, variables, batch_size: int):
    """uint8 images -> probabilities, in batches of `batch_size` (the last one padded: one compile)."""
    from .predict import logits_of

    def predict(images):
        logits = logits_of(model, variables, images / np.float32(255), batch_size)
        exp = np.exp(logits - logits.max(1, keepdims=True))
        return exp / exp.sum(1, keepdims=True)

    return predict


def plot_examples(image: np.ndarray, names: Sequence[str], seed: int, path: Path, scale: int = 2) -> Path:
    """One row per shift: `image` (uint8 (H, W, 3)) at severities 0..5, the shift's name on the left."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    label, gap = 110, 2
    sheet = Image.new("RGB", (label + 6 * (w * scale + gap), 16 + len(names) * (h * scale + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for s in range(6):
        draw.text((label + s * (w * scale + gap) + w * scale // 2 - 3, 2), str(s), fill="black")
    for row, name in enumerate(names):
        top = 16 + row * (h * scale + gap)
        draw.text((4, top + h * scale // 2 - 6), name, fill="black")
        for s in range(6):
            shifted = apply_shift(name, image[None], s, seed)[0]
            tile = Image.fromarray(shifted).resize((w * scale, h * scale), Image.NEAREST)
            sheet.paste(tile, (label + s * (w * scale + gap), top))
    sheet.save(path, optimize=True)
    return Path(path)


def plot_curves(result: dict, names: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        severities = [0, *result[name]]
        ax.plot(
            severities,
            [result["clean"], *result[name].values()],
            marker="os^D"[i % 4],
            linestyle="-" if i < 10 else "--",
            color=colours(i % 20),
            label=name,
        )
    ax.set(
        xlabel="severity (0 = clean)",
        ylabel="accuracy",
        ylim=(0, 1.02),
        xticks=range(6),
        title=f"accuracy under shifts (mean over shifts and severities {result['mean_shift_accuracy']:.3f})",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def format_table(result: dict, names: Sequence[str]) -> str:
    lines = [f"{'shift':<16s}" + "".join(f"{s:>7d}" for s in SEVERITIES) + f"{'mean':>8s}"]
    for name in names:
        row = result[name]
        cells = "".join(f"{row[s]:7.3f}" if s in row else f"{'-':>7s}" for s in SEVERITIES)
        lines.append(f"{name:<16s}{cells}{np.mean(list(row.values())):8.3f}")
    return "\n".join(lines)


def _write_picture(path: Path, draw) -> None:
    from .errors import UserError

    try:
        draw(path)
    except (OSError, ValueError) as err:  # ValueError: a file name ending neither PIL nor matplotlib can write
        raise UserError(f"{path}: cannot write the picture ({getattr(err, 'strerror', None) or err})") from None


def run(args) -> int:
    import json
    import logging

    from .data import load_dataset
    from .errors import UserError
    from .weights import load_weights

    logging.getLogger("absl").setLevel(logging.ERROR)
    names = parse_only(args.only)
    if args.seed < 0:
        raise UserError("--seed must be 0 or more")
    if not 1 <= args.examples_scale <= 16:
        raise UserError("--examples-scale must be 1..16")
    weights = load_weights(args.weights, args.workdir)
    model = weights.model
    data_dir = cli.data_dir(args.data_dir)
    dataset = load_dataset(data_dir, tuple(model.input_shape[:2]))
    test = dataset.test
    if dataset.num_classes != model.num_classes:
        raise UserError(f"{data_dir}: {dataset.num_classes} classes, but the model has {model.num_classes}")
    if tuple(test.images.shape[1:]) != tuple(model.input_shape):
        raise UserError(
            f"{data_dir}: images are {tuple(test.images.shape[1:])}, the model expects {tuple(model.input_shape)}"
        )
    if not 0 <= args.example_index < len(test.labels):
        raise UserError(f"--example-index must be 0..{len(test.labels) - 1}")
    predict = make_predict_fn(model, weights.variables, min(120, len(test.labels)))
    result = run_shift_benchmark(predict, test.images, test.labels, args.seed, names)
    out_dir = weights.run_dir or Path(".")
    examples_png = Path(args.examples_png) if args.examples_png else out_dir / "shift_examples.png"
    curves_png = Path(args.curves_png) if args.curves_png else examples_png.with_name("shift_curves.png")
    example = test.images[args.example_index]
    _write_picture(examples_png, lambda p: plot_examples(example, names, args.seed, p, args.examples_scale))
    _write_picture(curves_png, lambda p: plot_curves(result, names, p))
    if args.json:
        print(
            json.dumps(
                {
                    "weights": weights.source,
                    "data": dataset.source,
                    "examples": len(test.labels),
                    "seed": args.seed,
                    "clean": result["clean"],
                    "mean_shift_accuracy": result["mean_shift_accuracy"],
                    "shifts": {name: result[name] for name in names},
                    "examples_png": str(examples_png),
                    "curves_png": str(curves_png),
                }
            )
        )
        return 0
    print(f"weights: {weights.source}\ndata:    {dataset.source} ({len(test.labels)} test images), seed {args.seed}\n")
    print(format_table(result, names))
    print(f"\nclean accuracy {result['clean']:.3f}  mean shift accuracy {result['mean_shift_accuracy']:.3f}")
    print(f"examples: {examples_png}\ncurves:   {curves_png}")
    return 0


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
