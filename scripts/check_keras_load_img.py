"""Check that `predict --interpolation nearest --ignore-exif` decodes image files exactly as Keras does.

    python scripts/check_keras_load_img.py [--keras-python /path/to/python-with-tf-keras]

Writes a few image files (odd sizes, down- and up-scaling, JPEG, greyscale, palette), reads them with
tf-keras `load_img(path, target_size=(64, 64))` + `img_to_array` in a subprocess and with
`signs_jax.images.load_image(..., "nearest", exif=False)`, and prints the largest pixel difference
(0 means identical). RGBA files are left out on purpose: Keras drops alpha, signs_jax composites it on white.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from signs_jax.images import load_image  # noqa: E402

KERAS = r"""
import os, sys, numpy as np
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as keras
np.savez(sys.argv[1], *[keras.utils.img_to_array(keras.utils.load_img(f, target_size=(64, 64))) for f in sys.argv[2:]])
"""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--keras-python",
        default=os.environ.get("KERAS_PYTHON") or sys.executable,
        help="a Python that can import tf_keras (default: $KERAS_PYTHON, then this Python)",
    )
    args = p.parse_args()
    rng = np.random.default_rng(3)
    tmp = Path(tempfile.mkdtemp(prefix="load_img_"))
    files = {
        "rgb_301x257.png": Image.fromarray(rng.integers(0, 256, (301, 257, 3), dtype=np.uint8)),
        "photo_1000x750.jpg": Image.fromarray(rng.integers(0, 256, (1000, 750, 3), dtype=np.uint8)),
        "grey_50x37.png": Image.fromarray(rng.integers(0, 256, (50, 37), dtype=np.uint8)),
        "palette_130x90.png": Image.fromarray(rng.integers(0, 256, (130, 90, 3), dtype=np.uint8)).convert("P"),
        "same_64x64.png": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
    }
    paths = []
    for name, img in files.items():
        paths.append(tmp / name)
        img.save(paths[-1])
    out = tmp / "keras.npz"
    subprocess.run([args.keras_python, "-c", KERAS, str(out), *map(str, paths)], check=True)
    with np.load(out) as keras_arrays:
        for i, path in enumerate(paths):
            ours = load_image(path, (64, 64), "nearest", exif=False) * 255.0
            print(f"{path.name:22s} max |signs_jax - keras| = {np.abs(ours - keras_arrays[f'arr_{i}']).max():g}")


if __name__ == "__main__":
    main()
