"""Build the SIGNS copy shipped inside the package (signs_jax/dataset/) from a course-layout h5 pair.

    python scripts/package_signs.py ../shared/datasets/signs

Every dataset of the source files is copied with the same key, dtype and values, gzip level 9, in
chunks of 16 images (labels and class list in one chunk each), without timestamps, so that the same
source gives byte-identical files. Prints the sha256 of each written file: these belong in
signs_jax/data.py's PACKAGED_SHA256.
"""

import argparse
import hashlib
import sys
from pathlib import Path

import h5py
import numpy as np

SPLITS = {
    "train_signs.h5": ("train_set_x", "train_set_y", "list_classes"),
    "test_signs.h5": ("test_set_x", "test_set_y", "list_classes"),
}
IMAGES_PER_CHUNK = 16  # reading one image decompresses 16; larger chunks compress hardly better
OUT = Path(__file__).resolve().parent.parent / "signs_jax" / "dataset"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package(source: Path, target: Path) -> None:
    arrays = {}
    with h5py.File(source, "r") as f:
        for key in SPLITS[source.name]:
            if key not in f:
                sys.exit(f"error: {source}: no dataset {key}")
            arrays[key] = np.asarray(f[key])
    tmp = target.with_suffix(".tmp")
    with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
        for key, array in arrays.items():
            chunks = (min(IMAGES_PER_CHUNK, len(array)), *array.shape[1:]) if array.ndim == 4 else array.shape
            f.create_dataset(key, data=array, chunks=chunks, compression="gzip", compression_opts=9, track_times=False)
    with h5py.File(tmp, "r") as f:  # what was written reads back as the source, value for value
        for key, array in arrays.items():
            if f[key].dtype != array.dtype or not np.array_equal(f[key][()], array):
                sys.exit(f"error: {tmp}: {key} does not read back as written")
    tmp.replace(target)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", type=Path, help="folder holding train_signs.h5 and test_signs.h5 (course layout)")
    p.add_argument("--out", type=Path, default=OUT, help="where to write the pair (default: signs_jax/dataset)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        if not (args.source / name).is_file():
            sys.exit(f"error: {args.source / name}: missing")
        package(args.source / name, args.out / name)
        print(f"{sha256(args.out / name)}  {name}  ({(args.out / name).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
