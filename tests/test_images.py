"""Image decoding (signs_jax.images): EXIF orientation, every image mode to RGB, resize filters, bombs."""

import numpy as np
import pytest
from PIL import Image

from signs_jax import images
from signs_jax.images import ImageError, load_image


def test_exif_orientation_of_a_jpeg_is_applied(tmp_path):
    # 16-pixel blocks of distinct colours survive JPEG (quality 100, no chroma subsampling) nearly unchanged
    blocks = np.random.default_rng(1).integers(0, 256, (3, 2, 3), dtype=np.uint8)
    pixels = blocks.repeat(16, 0).repeat(16, 1)  # 48 high, 32 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, quality=100, subsampling=0, exif=exif)
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.getexif()[0x0112] == 6
    upright = load_image(path, (32, 48), "nearest")  # turned: 48x32 becomes 32x48
    np.testing.assert_allclose(upright * 255, np.rot90(pixels, k=-1), atol=6)
    raw = load_image(path, (48, 32), "nearest", exif=False)
    np.testing.assert_allclose(raw * 255, pixels, atol=6)
    # a large one through the default path (JPEG draft decoding, then the default filter): rotating and resizing
    # commute, up to PIL's rounding at a few block edges
    big = tmp_path / "big.jpg"
    Image.fromarray(blocks.repeat(200, 0).repeat(200, 1)).save(big, quality=95, exif=exif)
    difference = np.abs(load_image(big, (64, 64)) - np.rot90(load_image(big, (64, 64), exif=False), k=-1))
    assert difference.mean() < 0.1 / 255 and difference.max() < 16 / 255


def _transparent_palette():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([10, 20, 30, 200, 200, 200])
    img.info["transparency"] = 0
    return img


@pytest.mark.parametrize(
    "mode, make, expected",
    [
        ("L", lambda: Image.new("L", (8, 8), 100), (100, 100, 100)),
        ("LA", lambda: Image.new("LA", (8, 8), (100, 0)), (255, 255, 255)),  # transparent: white
        ("RGBA", lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 255)), (10, 20, 30)),
        ("RGBA", lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 0)), (255, 255, 255)),
        (
            "P",
            lambda: Image.new("RGB", (8, 8), (200, 10, 50)).convert("P", palette=Image.Palette.ADAPTIVE),
            (200, 10, 50),
        ),
        ("P", lambda: _transparent_palette(), (255, 255, 255)),  # transparent palette entry: white
        ("1", lambda: Image.new("1", (8, 8), 1), (255, 255, 255)),
        ("CMYK", lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0)),
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 65535, np.uint16)), (255, 255, 255)),
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 32896, np.uint16)), (128, 128, 128)),
    ],
)
def test_image_modes_become_rgb(mode, make, expected, tmp_path):
    img = make()
    assert img.mode == mode
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    img.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode.startswith(mode[:1])  # a real file in that mode
    pixels = load_image(path, (8, 8))
    assert pixels.shape == (8, 8, 3)
    np.testing.assert_allclose(pixels[0, 0] * 255, expected, atol=1)


def _pil_nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel in PIL's NEAREST resize: pixel centres, stepped by repeated addition."""
    step, position, out = n_in / n_out, 0.5 * n_in / n_out, []
    for _ in range(n_out):
        out.append(int(position))
        position += step
    return np.array(out)


@pytest.mark.parametrize("height, width", [(301, 257), (1000, 750), (50, 37), (64, 64), (4032, 3)])
def test_nearest_picks_the_pixels_keras_load_img_picks(height, width, tmp_path):
    """Keras load_img(target_size=(64, 64)) = PIL convert("RGB") + NEAREST resize (checked once against tf-keras
    2.21 with scripts/check_keras_load_img.py); here against a numpy reimplementation of PIL's NEAREST."""
    pixels = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    rows, cols = _pil_nearest_indices(height, 64), _pil_nearest_indices(width, 64)
    expected = pixels[rows][:, cols].astype(np.float32) / 255.0
    np.testing.assert_array_equal(load_image(path, (64, 64), "nearest", exif=False), expected)


def test_default_filter_averages_where_nearest_aliases(tmp_path):
    path = tmp_path / "noise.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)).save(path, quality=95)
    nearest = load_image(path, (64, 64), "nearest")
    for interpolation in ("lanczos", "area", "box", "bilinear", "bicubic"):
        smooth = load_image(path, (64, 64), interpolation)  # 10x10 pixels averaged: noise flattens to grey
        assert smooth.std() < 0.3 * nearest.std(), interpolation
    assert images.DEFAULT_INTERPOLATION == "bilinear"  # measured most accurate on real photos: docs/interpolation.md
    # JPEG draft decoding (1/2..1/8 scale in libjpeg) changes the result only a little
    full = load_image(path, (64, 64), draft=False)
    assert np.abs(load_image(path, (64, 64)) - full).max() < 8 / 255


def test_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # 1600 pixels: PIL warns (over the limit, under twice it)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path, (64, 64))
    monkeypatch.setattr(images, "MAX_PIXELS", 500)  # over twice the limit: PIL raises DecompressionBombError
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path, (64, 64))


def test_directory_as_image_path(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path, (64, 64))


def test_the_bomb_limit_does_not_leak_into_pil(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    before = PILImage.MAX_IMAGE_PIXELS
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 500)
    with pytest.raises(ImageError):
        load_image(path, (64, 64))
    assert PILImage.MAX_IMAGE_PIXELS == before  # other readers in the process keep PIL's own limit


def test_decoding_threads_leave_pils_limit_as_they_found_it(tmp_path):
    """Each decode swaps Pillow's process-wide pixel limit for its own and back: threads decoding at once (the
    web app's) must not restore one another's value."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: images.decode_image(path, (16, 16)), range(400)))
    assert Image.MAX_IMAGE_PIXELS == before


def _large_photo(path, seed=0):
    """A 600x450 JPEG with edges and noise: every resize filter (and JPEG draft decoding) gives other pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (450, 600, 3), dtype=np.uint8)
    pixels[100:300, 200:260] = 255
    Image.fromarray(pixels).save(path, quality=90)
    return path


def test_training_folders_decode_a_large_photo_as_predict_does(tmp_path):
    """A model fine-tuned on a folder of photos is later asked about such photos through predict: both must see
    the same pixels, or the run's own test accuracy is not what predict gives (it was 0.06 apart)."""
    from signs_jax.data import load_dataset

    for split in ("train", "test"):
        (tmp_path / split / "0").mkdir(parents=True)
        _large_photo(tmp_path / split / "0" / "a.jpg", seed=len(split))
    dataset = load_dataset(tmp_path, (64, 64))
    for split, images_of_split in (("train", dataset.train.images), ("test", dataset.test.images)):
        predicted = load_image(tmp_path / split / "0" / "a.jpg", (64, 64))
        np.testing.assert_array_equal(images_of_split[0], np.round(predicted * 255).astype(np.uint8))
