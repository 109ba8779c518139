"""Image files -> pixels: EXIF orientation, any mode to RGB, resize; uint8 for training data, [0, 1] to predict.

`--interpolation nearest` with `exif=False` reproduces Keras's `load_img(path, target_size=...)`
exactly for RGB and greyscale files (Keras ignores EXIF, converts with `convert("RGB")` and resizes
with PIL's NEAREST), but keeps one source pixel in (scale x scale) and so aliases noise and fine
detail of a large photo. The default, `bilinear`, is PIL's antialiased bilinear filter (a triangle whose
support grows with the reduction); a large JPEG is first decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT
scaling) down to no less than DRAFT_FACTOR times the target, which reads a large photo several times faster
at about the same result. `scripts/compare_interpolation.py --photos` measured it the most accurate filter on
other people's photos (the softer image is closer to SIGNS's own soft 64x64 JPEGs), though lanczos comes
closer to the pixels of synthetic enlargements (docs/interpolation.md).

numpy and Pillow are imported inside the functions so that `--help` stays fast.
"""

import os
import threading
from pathlib import Path
from typing import Iterable, List, NamedTuple, Optional, Tuple

from .errors import UserError
from .framing import DEFAULT_FIT, check_fit, render_pixels
from .jpeg_scans import missing_refinement

INTERPOLATIONS = ("area", "box", "nearest", "bilinear", "bicubic", "lanczos")
DEFAULT_INTERPOLATION = "bilinear"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".heic"}
MAX_PIXELS = 100_000_000  # larger declared sizes are refused as decompression bombs (a 48 MP photo is fine)
_PROCESS_WIDE_SETTINGS = threading.Lock()
DRAFT_FACTOR = 4  # JPEG DCT-scaled decoding keeps at least 4x the target size for the final filter


class Decoding(NamedTuple):
    """How training's image folders become pixels: `decode_image`'s resize filter and JPEG draft decoding.
    The default is how predict reads a photo."""

    interpolation: str = DEFAULT_INTERPOLATION
    draft: bool = True


PREDICT_DECODING = Decoding()


class ImageError(UserError):
    """One unreadable or unusable image (the message names the file and the reason)."""


def resample_filter(name: str):
    """The Pillow filter called `name` (one of INTERPOLATIONS)."""
    from PIL import Image

    return {
        "area": Image.Resampling.BOX,
        "box": Image.Resampling.BOX,
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
    }[name]


def resized_pixels(images, size: Tuple[int, int], interpolation: str = DEFAULT_INTERPOLATION):
    """uint8 (N, H, W, 3) images at `size` = (height, width), resized one by one with the named filter; the same
    array when they are that size already."""
    import numpy as np
    from PIL import Image

    height, width = size
    if tuple(images.shape[1:3]) == (height, width):
        return images
    resample = resample_filter(interpolation)
    return np.stack([np.asarray(Image.fromarray(x).resize((width, height), resample)) for x in images])


def to_rgb(img):
    """Any Pillow mode as 8-bit RGB.

    Transparency is composited on white (a cut-out hand on white looks like the SIGNS photos' light
    backgrounds; dropping alpha would expose whatever colour the transparent pixels happen to hold).
    16-bit and 32-bit greyscale are scaled to 8 bit (Pillow's convert would clip them to 255).
    """
    import numpy as np
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "F" and values.size and values.max() <= 1.0:
            top = 1.0  # float images are usually in [0, 1]
        else:
            top = 65535.0 if values.size and values.max() > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, LAB, HSV, 1


def load_image(
    path,
    size: Tuple[int, int],
    interpolation: str = DEFAULT_INTERPOLATION,
    exif: bool = True,
    draft: bool = True,
    fit: str = DEFAULT_FIT,
    views=None,
) -> "np.ndarray":  # noqa: F821
    """`path` as float32 (H, W, 3) in [0, 1] at `size` = (height, width); ImageError if unusable.

    `draft`: let libjpeg decode a large JPEG at a reduced scale first (never for `nearest`, which
    must pick the same pixels as Keras). `fit` and `views`: as in `decode_image`.
    """
    import numpy as np

    return decode_image(path, size, interpolation, exif, draft, fit, views).astype(np.float32) / 255.0


def decode_image(
    path,
    size: Optional[Tuple[int, int]],
    interpolation: str = DEFAULT_INTERPOLATION,
    exif: bool = True,
    draft: bool = True,
    fit: str = DEFAULT_FIT,
    views=None,
) -> "np.ndarray":  # noqa: F821
    """`path` as uint8 RGB (H, W, 3) at `size` = (height, width), or as it is (after EXIF rotation) for
    `size=None`; ImageError (naming the file) if unusable.

    `fit` (squash, crop, pad) is how a photo of another aspect ratio becomes `size`; `views` (a sequence of
    `framing.View`) gives (len(views), H, W, 3), one image per view: `signs_jax.framing`.

    The one image decoder of the package: `load_image` (prediction) scales its result to [0, 1];
    training's image folders (`data.load_image_folders`) keep it as uint8. `draft` as in `load_image`.
    """
    import warnings

    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    if size is not None:
        check_fit(fit)  # a programming error, raised as such before any file is read
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory")
    if not path.exists():
        if path.is_symlink():
            raise ImageError(f"{path}: dangling symbolic link (to {os.readlink(path)}, which does not exist)")
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    target = None if size is None else (size[1], size[0])  # PIL sizes are (width, height)
    # PIL warns above MAX_IMAGE_PIXELS and raises above twice it; set for this file only, since the
    # limit is a process-wide global that other Pillow users in the process rely on too. That global and the
    # warning filters are changed under a lock: decoding threads (the web app's) take turns.
    with _PROCESS_WIDE_SETTINGS:
        pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
        try:
            with warnings.catch_warnings():
                # A DecompressionBombWarning must fail this file, not scroll past on stderr.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    if img.width * img.height > MAX_PIXELS:
                        raise ImageError(
                            f"{path}: {img.width}x{img.height} pixels exceeds the {MAX_PIXELS:,}-pixel "
                            "limit (decompression bomb?)"
                        )
                    if draft and target and interpolation != "nearest" and img.format == "JPEG":
                        # Square request: both sides stay >= the target even after an EXIF 90-degree turn.
                        side = DRAFT_FACTOR * max(target)
                        img.draft(img.mode, (side, side))
                    img.load()
                    if img.format == "JPEG" and _ends_in_missing_data(img):
                        raise ImageError(
                            f"{path}: a JPEG cut short or damaged (it ends in the flat grey libjpeg fills in for "
                            "missing data)"
                        )
                    if img.format == "JPEG" and img.info.get("progressive"):
                        unfinished = missing_refinement(path.read_bytes())
                        if unfinished:
                            raise ImageError(f"{path}: a progressive JPEG cut short or damaged ({unfinished})")
                    if exif:
                        img = ImageOps.exif_transpose(img)
                    img = to_rgb(img)
                    if target:
                        return render_pixels(img, target, fit, resample_filter(interpolation), views)
                    return np.asarray(img, dtype=np.uint8)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(f"{path}: refused as a decompression bomb ({err})") from None
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image Pillow can read") from None
        except PermissionError:
            raise ImageError(f"{path}: permission denied") from None
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            raise ImageError(f"{path}: corrupt or truncated image ({err})") from None
        except MemoryError:
            raise ImageError(f"{path}: too large to decode in memory") from None
        except Exception as err:  # noqa: BLE001 - a broken file can trip any decoder; report it, go on with the rest
            raise ImageError(f"{path}: cannot decode ({type(err).__name__}: {err})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = pil_limit


def _ends_in_missing_data(img) -> bool:
    """Whether a decoded JPEG ends in the flat grey that libjpeg fills in where its data stops early.

    A JPEG cut short and closed again, or with a marker in the middle of its data, decodes without an error:
    libjpeg only warns ("premature end of data segment"), which Pillow does not pass on, and leaves every block
    after the damage at exactly (128, 128, 128). Decoding runs in rows of blocks, so the last block (8x8 pixels,
    fewer under draft scaling) is then grey, which a whole photo's last block practically never is. An image
    that is that grey everywhere is taken as it is.
    """
    import numpy as np

    if img.mode not in ("RGB", "L"):
        return False
    scale = img.decoderconfig[0] if getattr(img, "decoderconfig", None) else 1
    block = max(1, 8 // scale)
    pixels = np.asarray(img)
    height, width = pixels.shape[:2]
    last = pixels[(height - 1) // block * block :, (width - 1) // block * block :]
    return bool((last == 128).all() and not (pixels == 128).all())


def expand_inputs(inputs: Iterable) -> Tuple[List[Path], List[str]]:
    """Files and folders -> image files (folders searched recursively) and one error line per bad input."""
    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # Dangling symbolic links stay in, to be named when read: a photo moved away is not silently left out.
            found = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink())
            )
            if not found:
                errors.append(f"{path}: directory without images")
            files += found
        else:
            files.append(path)  # missing or unreadable files are reported when read
    return files, errors
