"""Image files -> model input: EXIF orientation, any mode to RGB, resize, [0, 1].

`--interpolation nearest` with `exif=False` reproduces Keras's `load_img(path, target_size=...)`
exactly (Keras ignores EXIF and resizes with PIL's NEAREST). The default, `area`, averages every
source pixel that falls into a target pixel: a 3024-pixel phone photo shrunk 47x to 64 pixels then
looks like the training images instead of an aliased sample of 64x64 isolated pixels.
"""
from pathlib import Path
from typing import List, Tuple

import numpy as np

from .errors import UserError

INTERPOLATIONS = ("area", "nearest", "bilinear", "bicubic", "lanczos")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".heic"}
MAX_PIXELS = 100_000_000  # larger declared sizes are refused as decompression bombs (a 48 MP photo is fine)


class ImageError(UserError):
    """One unreadable or unusable image (the message names the file and the reason)."""


def _resample(name: str):
    from PIL import Image

    return {
        "area": Image.Resampling.BOX,
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
    }[name]


def to_rgb(img):
    """Any Pillow mode as 8-bit RGB; transparency is composited on white, 16-bit and float scaled."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        if img.mode == "F" and values.max() <= 1.0:
            top = 1.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path, size: Tuple[int, int], interpolation: str = "area", exif: bool = True) -> np.ndarray:
    """`path` as float32 (H, W, 3) in [0, 1] at `size` = (height, width)."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory")
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{path}: {img.width}x{img.height} pixels exceeds the {MAX_PIXELS:,}-pixel limit (decompression bomb?)")
                img.load()
                if exif:
                    img = ImageOps.exif_transpose(img)
                img = to_rgb(img)
                if img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), _resample(interpolation))
                return np.asarray(img, dtype=np.float32) / 255.0
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: refused as a decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{path}: corrupt or truncated image ({err})") from None


def expand_inputs(inputs) -> Tuple[List[Path], List[str]]:
    """Files and folders -> image files (folders searched recursively) and one error line per bad input."""
    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{path}: directory without images")
            files += found
        else:
            files.append(path)  # missing or unreadable files are reported when read
    return files, errors
