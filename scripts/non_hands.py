"""Images that are not hands, for measuring how often predict flags them uncertain (docs/calibration.md).

    python scripts/non_hands.py OUT_DIR

Writes PNG/JPEG files into OUT_DIR (which must not exist yet), in sub-folders by kind:

- `photos/`: the sample photos matplotlib ships (`mpl-data/sample_data`) and, when scikit-image is
  installed (an optional extra for this measurement only: `pip install scikit-image`; its sample images
  ship inside the wheel, nothing is downloaded), its `skimage/data` images and 60 faces of its
  Labeled-Faces-in-the-Wild subset;
- `textures/`: generated, seeded images: noise, gradients, checkerboards, stripes, random shapes and flat
  colours (skin tones and the SIGNS background colours included).

Prints how many of each kind it wrote.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIDE = 128
PER_KIND = 20


def _save(array, path: Path) -> None:
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)


def textures(out: Path, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    count = 0

    def colour():
        return rng.uniform(0, 255, 3)

    for i in range(PER_KIND):
        kind = i % 3
        if kind == 0:
            img = rng.uniform(0, 255, (SIDE, SIDE, 3))
        elif kind == 1:
            img = rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (SIDE, SIDE, 1)).repeat(3, 2)
        else:
            img = np.where(rng.uniform(size=(SIDE, SIDE, 1)) < 0.5, 0, 255).repeat(3, 2).astype(float)
        _save(img, out / f"noise_{i:02d}.png")
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
        t = (t - t.min()) / (t.max() - t.min())
        _save((1 - t) * colour() + t * colour(), out / f"gradient_{i:02d}.png")
        cell = int(rng.integers(4, 40))
        board = (((np.arange(SIDE)[:, None] // cell) + (np.arange(SIDE)[None] // cell)) % 2)[..., None]
        _save(np.where(board, colour(), colour()), out / f"checkerboard_{i:02d}.png")
        period, angle = rng.uniform(4, 40), rng.uniform(0, np.pi)
        wave = (np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) * SIDE / period) > 0)[..., None]
        _save(np.where(wave, colour(), colour()), out / f"stripes_{i:02d}.png")
        img = Image.new("RGB", (SIDE, SIDE), tuple(int(c) for c in colour()))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 8))):
            x0, y0 = rng.integers(0, SIDE, 2)
            x1, y1 = x0 + rng.integers(10, SIDE // 2), y0 + rng.integers(10, SIDE // 2)
            shape = draw.ellipse if rng.uniform() < 0.5 else draw.rectangle
            shape((int(x0), int(y0), int(x1), int(y1)), fill=tuple(int(c) for c in colour()))
        img.save(out / f"shapes_{i:02d}.png")
        count += 5
    flat = [
        (255, 255, 255),
        (0, 0, 0),
        (128, 128, 128),
        (224, 172, 105),
        (198, 134, 66),
        (141, 85, 36),
        (255, 219, 172),
        (241, 194, 125),
        (200, 180, 170),
        (230, 220, 210),
    ]
    flat += [tuple(int(c) for c in colour()) for _ in range(PER_KIND - len(flat))]
    for i, rgb in enumerate(flat):
        _save(np.ones((SIDE, SIDE, 3)) * np.asarray(rgb), out / f"flat_{i:02d}.png")
        count += 1
    return count


def sample_photos(out: Path, faces: int = 60) -> int:
    import matplotlib

    out.mkdir(parents=True)
    found = []
    sample_data = Path(matplotlib.get_data_path()) / "sample_data"
    found += [p for p in sample_data.iterdir() if p.suffix.lower() in (".png", ".jpg")]
    try:
        import skimage

        data = Path(skimage.__file__).parent / "data"
        found += sorted(p for p in data.iterdir() if p.suffix.lower() in (".png", ".jpg", ".gif"))
        lfw = np.load(data / "lfw_subset.npy")  # (200, 25, 25) grey faces in [0, 1], then 200 non-faces
        for i in range(min(faces, 100)):
            _save(lfw[i] * 255, out / f"lfw_face_{i:03d}.png")
    except ImportError:
        print("scikit-image is not installed: matplotlib's sample photos only", file=sys.stderr)
    count = len(list(out.iterdir()))
    for path in found:
        try:
            with Image.open(path) as img:
                img.load()
                img.convert("RGB").save(out / f"{path.parent.parent.name}_{path.stem}.png")
                count += 1
        except OSError:
            pass
    return count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="a folder to create")
    args = p.parse_args(argv)
    if os.path.exists(args.out):
        raise SystemExit(f"error: {args.out}: exists; give a new folder")
    photos = sample_photos(args.out / "photos")
    generated = textures(args.out / "textures")
    print(f"{photos} photos, {generated} textures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
