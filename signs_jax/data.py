"""SIGNS data in memory: the course h5 pair or image folders, seeded batches, and a near-duplicate audit.

Images are kept as uint8 (N, H, W, 3) and scaled to [0, 1] on the device, as the original divides by 255.
A copy of SIGNS ships inside the package (`PACKAGED_SIGNS`, loaded by `load_signs()`).

A folder of class sub-folders without a train/test split (what Keras's `image_dataset_from_directory`
reads) is split here, seeded and stratified; `write_split` records the split a run used and
`check_split` tells whether the folder still gives the same test set.
"""

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import h5py
import numpy as np

from . import config
from .errors import UserError
from .images import IMAGE_SUFFIXES, PREDICT_DECODING, Decoding, ImageError, decode_image, resized_pixels

# The SIGNS h5 pair shipped inside the package (see its README.md), and the sha256 of each file as
# scripts/package_signs.py wrote it: loading the packaged copy checks them, so a damaged install is
# reported instead of training on whatever the damage left.
PACKAGED_SIGNS = Path(__file__).resolve().parent / "dataset"
PACKAGED_SHA256 = {
    "train_signs.h5": "2c6d1fe599b300eb684a388ccae5e9e3af556b59387d593e4e7b396103e0b0d1",
    "test_signs.h5": "e190d777850b5a4371c361f3fea78bb3eb443795c56c627898968c80b84e8b4b",
}
PACKAGED_SOURCE = "packaged SIGNS"

H5_FILES = {
    "train": ("train_signs.h5", "train_set_x", "train_set_y"),
    "test": ("test_signs.h5", "test_set_x", "test_set_y"),
}
FLAT_LABEL = re.compile(r"^(\d+)_")
# Test images whose RMS pixel distance (0-255 scale) to some training image is at most this are treated
# as near-copies: the same shot saved twice sits at the JPEG-noise level (3-5), a consecutive frame of
# the same shot at 6-15, and unrelated photos of the same sign start at about 16.
NEAR_COPY_RMS = 15.0

DEFAULT_TEST_FRACTION = 0.2
SPLIT_FILE = "split.json"  # a run's record of the files of each split, in its run directory


class Split(NamedTuple):
    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int32 (N,)


class Dataset(NamedTuple):
    train: Split
    test: Split
    class_names: Tuple[str, ...]
    source: str
    validation: Optional[Split] = None
    # For a folder of class sub-folders (the only data whose split is made here): the files of each split
    # ("train", "test", and "validation" once held out), relative to the folder, "/"-separated, in the order
    # of the split's images. None for data that comes split (the h5 pair, train/ and test/ folders).
    files: Optional[Dict[str, Tuple[str, ...]]] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def _listing(folder: Path, data: bool = False) -> Optional[List[Path]]:
    """The entries of `folder`, sorted. A folder that cannot be read is one UserError line when it is the data
    itself (`data`), else a warning naming it and None: its files are skipped, the rest of the data is used."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        reason = (err.strerror or str(err)).lower()
        if data:
            raise UserError(f"{folder}: cannot read the folder ({reason})") from None
        warnings.warn(f"{folder}: unreadable folder ({reason}); skipped", stacklevel=3)
        return None


def _images_of(entries: Optional[List[Path]]) -> List[Path]:
    """The image files among a folder's entries, by name; dangling symbolic links stay (they are named when read)."""
    return [p for p in entries or () if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]


def _sub_folders(directory: Path) -> List[Path]:
    """The visible sub-folders (not `.git`, `.ipynb_checkpoints` and the like), sorted."""
    return [p for p in _listing(directory, data=True) if p.is_dir() and not p.name.startswith(".")]


def _holds_images(folder: Path) -> bool:
    try:
        return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())
    except OSError:
        return False  # an unreadable folder is named when the data is loaded


def holds_data(directory) -> bool:
    """Whether `directory` looks like a data set: an h5 file of the pair, train*/ and test*/ image folders, or
    class sub-folders holding images."""
    directory = Path(directory)
    if not directory.is_dir():
        return False
    if any((directory / filename).exists() for filename, _, _ in H5_FILES.values()):
        return True
    folders = _sub_folders(directory)
    names = [p.name.lower() for p in folders]
    if any(n.startswith("train") for n in names) and any(n.startswith("test") for n in names):
        return True
    return any(_holds_images(p) for p in folders)


def missing_data_message(directory, given_by: str = "") -> str:
    """One line: `directory` (named by `given_by`, e.g. "--data-dir") holds no data set."""
    where = f"{given_by} {directory}" if given_by else str(directory)
    return (
        f"{where}: no SIGNS data there (expected train_signs.h5 and test_signs.h5, image folders train*/ and "
        "test*/, or one sub-folder of images per class)"
    )


def is_packaged(directory) -> bool:
    return Path(directory).resolve() == Path(PACKAGED_SIGNS).resolve()


def verify_packaged(directory=None, checksums=None) -> None:
    """Check the packaged h5 pair against the sha256s it was shipped with; a difference is one UserError line."""
    directory = Path(PACKAGED_SIGNS if directory is None else directory)
    for filename, expected in (PACKAGED_SHA256 if checksums is None else checksums).items():
        path = directory / filename
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            raise UserError(
                f"{path}: the packaged SIGNS file is missing or unreadable ({err.strerror or err}); reinstall signs_jax"
            ) from None
        if digest != expected:
            raise UserError(
                f"{path}: the packaged SIGNS file is damaged (its sha256 is not the one it was shipped "
                "with); reinstall signs_jax"
            )


def load_signs() -> Dataset:
    """The SIGNS copy shipped inside the package, checksum-verified: 1080 train / 120 test images, 6 classes."""
    return load_dataset(PACKAGED_SIGNS)


def load_dataset(
    directory,
    image_size: Optional[Tuple[int, int]] = None,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    decoding: Decoding = PREDICT_DECODING,
) -> Dataset:
    """The data set in `directory`, in the first of these layouts that it has:

    - the SIGNS h5 pair (`train_signs.h5`, `test_signs.h5`);
    - image folders `train*/` and `test*/` (optional `val*/`); any other sub-folder is ignored, so a folder
      that has both these and class sub-folders is read as split already;
    - class sub-folders of images and nothing else (`split_class_folders`): `test_fraction` of each class,
      chosen by `seed`, is the test set; `files` names the files of each split.

    `image_size` resizes image folders (default: the first training image's size) as `decoding` says (by
    default as predict does); h5 images stay as stored.
    The packaged copy (`PACKAGED_SIGNS`) is checksum-verified first.
    """
    directory = Path(directory)
    if is_packaged(directory):
        verify_packaged(directory)
        return load_signs_h5(directory)._replace(source=f"{PACKAGED_SOURCE} (h5)")
    if not directory.is_dir():
        raise UserError(missing_data_message(directory))
    if any((directory / filename).exists() for filename, _, _ in H5_FILES.values()):
        return load_signs_h5(directory)
    folders = {p.name.lower(): p for p in _sub_folders(directory)}
    train = [p for n, p in sorted(folders.items()) if n.startswith("train")]
    test = [p for n, p in sorted(folders.items()) if n.startswith("test")]
    val = [p for n, p in sorted(folders.items()) if n.startswith("val")]
    if train and test:
        return load_image_folders(train[0], test[0], val[0] if val else None, image_size, decoding)
    if train or test:  # half a split: not to be mistaken for a class named "train" or "test"
        raise UserError(
            f"{directory}: has a {(train or test)[0].name}/ folder but no {'test' if train else 'train'}*/ folder "
            f"beside it (to split a folder of class sub-folders, give that folder itself)"
        )
    if not folders:
        raise UserError(missing_data_message(directory))
    return load_class_folders(directory, image_size, test_fraction=test_fraction, seed=seed, decoding=decoding)


def _classes(class_names: Sequence[str], indices) -> str:
    named = [str(class_names[i]) for i in indices]
    return f"class {named[0]} has" if len(named) == 1 else f"classes {', '.join(named)} have"


def warn_missing_classes(class_names: Sequence[str], train_labels, test_labels, train_place, test_place) -> None:
    """One warning per kind of gap: classes that no split has, classes without training images (the model cannot
    learn them), classes without test images (never measured). `*_place`: the file or folder each split is from."""
    train = np.bincount(train_labels, minlength=len(class_names)) > 0
    test = np.bincount(test_labels, minlength=len(class_names)) > 0
    neither, test_only, train_only = ~train & ~test, ~train & test, train & ~test
    if neither.any():
        warnings.warn(
            f"{Path(train_place).parent if train_place != test_place else train_place}: "
            f"{_classes(class_names, np.flatnonzero(neither))} no image in either split "
            f"(of {len(class_names)} classes)",
            stacklevel=3,
        )
    if test_only.any():
        warnings.warn(
            f"{train_place}: {_classes(class_names, np.flatnonzero(test_only))} no training image (the model "
            "cannot learn it; its test images can only be misclassified)",
            stacklevel=3,
        )
    if train_only.any():
        warnings.warn(
            f"{test_place}: {_classes(class_names, np.flatnonzero(train_only))} no test image (its accuracy is "
            "never measured)",
            stacklevel=3,
        )


def check_trainable(dataset: Dataset) -> None:
    """A UserError (one line) unless the training set holds at least two classes."""
    present = np.unique(dataset.train.labels)
    if len(present) < 2:
        only = f" ({dataset.class_names[int(present[0])]})" if len(present) else ""
        raise UserError(f"{dataset.source}: only one class{only} in the training set; a classifier needs at least two")


# ---------------------------------------------------------------------------------------------- h5


def _read_h5_split(path: Path, x_key: str, y_key: str) -> Tuple[Split, Optional[List[str]]]:
    if not path.exists():
        raise UserError(
            f"{path}: missing (the SIGNS data set needs {H5_FILES['train'][0]} and {H5_FILES['test'][0]} here)"
        )
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in (x_key, y_key) if k not in f]
            if missing:
                raise UserError(
                    f"{path}: no dataset {', '.join(missing)} (has: {', '.join(sorted(f.keys())) or 'nothing'})"
                )
            x, y = f[x_key], f[y_key]
            if x.ndim != 4 or x.shape[-1] != 3:
                raise UserError(f"{path}: {x_key} has shape {x.shape}, expected (N, H, W, 3)")
            if x.dtype != np.uint8:
                raise UserError(f"{path}: {x_key} has dtype {x.dtype}, expected uint8 pixels")
            if x.shape[0] == 0:
                raise UserError(f"{path}: {x_key} holds no images")
            if y.shape not in ((x.shape[0],), (1, x.shape[0]), (x.shape[0], 1)):
                raise UserError(f"{path}: {y_key} has shape {y.shape}, expected ({x.shape[0]},) labels")
            if not np.issubdtype(y.dtype, np.integer):
                raise UserError(f"{path}: {y_key} has dtype {y.dtype}, expected integer labels")
            images, labels = np.asarray(x), np.asarray(y).reshape(-1).astype(np.int64)
            classes = None
            if "list_classes" in f:
                classes = [
                    c.decode() if isinstance(c, bytes) else str(c) for c in np.asarray(f["list_classes"]).reshape(-1)
                ]
    except UserError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"{path}: unreadable HDF5 file ({err})") from None
    return Split(images, labels), classes


def load_signs_h5(directory) -> Dataset:
    """`train_signs.h5` / `test_signs.h5` in the course layout, validated."""
    directory = Path(directory)
    splits, classes = {}, None
    for name, (filename, x_key, y_key) in H5_FILES.items():
        splits[name], found = _read_h5_split(directory / filename, x_key, y_key)
        classes = classes or found
    class_names = tuple(classes) if classes else config.CLASS_NAMES
    for name, (filename, _, y_key) in H5_FILES.items():
        labels = splits[name].labels
        bad = labels[(labels < 0) | (labels >= len(class_names))]
        if bad.size:
            raise UserError(
                f"{directory / filename}: {y_key} holds labels {sorted(set(bad.tolist()))[:5]} "
                f"outside 0..{len(class_names) - 1}"
            )
    if splits["train"].images.shape[1:] != splits["test"].images.shape[1:]:
        raise UserError(f"{directory}: train and test images differ in size")
    warn_missing_classes(
        class_names,
        splits["train"].labels,
        splits["test"].labels,
        directory / H5_FILES["train"][0],
        directory / H5_FILES["test"][0],
    )
    return Dataset(
        Split(splits["train"].images, splits["train"].labels.astype(np.int32)),
        Split(splits["test"].images, splits["test"].labels.astype(np.int32)),
        class_names,
        f"{directory} (h5)",
    )


# ------------------------------------------------------------------------------------ image folders


def list_images(folder: Path) -> List[Tuple[Path, str]]:
    """(file, class name) pairs of a folder: one sub-folder per class, or flat `{label}_*.jpg` files."""
    folder = Path(folder)
    entries = _listing(folder, data=True)
    subdirs = [p for p in entries if p.is_dir()]
    items = []
    if subdirs:
        for sub in subdirs:
            items += [(p, sub.name) for p in _images_of(_listing(sub))]
    else:
        for p in entries:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                match = FLAT_LABEL.match(p.name)
                if not match:
                    raise UserError(f"{p}: flat image folders need files named '<label>_<anything>{p.suffix}'")
                items.append((p, match.group(1)))
    if not items:
        raise UserError(f"{folder}: no images (expected one sub-folder per class, or files named '<label>_*.jpg')")
    return items


def _class_sort_key(name: str):
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def _read_listings(
    listings, image_size, decoding: Decoding = PREDICT_DECODING
) -> Tuple[Dict[str, Split], Tuple[str, ...], Dict[str, List[Path]]]:
    """Every listed (file, class) decoded: the splits, the class names, and the files each split kept.

    Unreadable files are skipped with one warning each that names the file and says why. `image_size` None:
    the size of the first readable training image, as it is shown (EXIF applied).
    """
    class_names = tuple(sorted({c for items in listings.values() for _, c in items}, key=_class_sort_key))
    index = {c: i for i, c in enumerate(class_names)}
    splits, kept, skipped = {}, {}, []
    if image_size is None:
        for path, _ in listings["train"]:
            try:
                image_size = decode_image(path, None, exif=True).shape[:2]
                break
            except ImageError:
                continue  # reported below, when the split is read
        else:
            raise UserError(f"{listings['train'][0][0].parent}: none of {len(listings['train'])} images could be read")
    for name, items in listings.items():
        images, labels, paths = [], [], []
        for path, cls in items:
            try:
                images.append(decode_image(path, image_size, decoding.interpolation, exif=True, draft=decoding.draft))
                labels.append(index[cls])
                paths.append(path)
            except ImageError as err:  # its message names the file and says why
                skipped.append(str(err))
            except Exception as err:  # noqa: BLE001 - any unreadable file is reported, not fatal
                skipped.append(f"{path}: cannot decode ({type(err).__name__}: {err})")
        if not images:
            raise UserError(f"{items[0][0].parent}: none of {len(items)} images could be read")
        splits[name] = Split(np.stack(images), np.asarray(labels, np.int32))
        kept[name] = paths
    for message in skipped:
        warnings.warn(f"{message}; skipped", stacklevel=3)
    return splits, class_names, kept


def load_image_folders(
    train_dir, test_dir, val_dir=None, image_size=None, decoding: Decoding = PREDICT_DECODING
) -> Dataset:
    """Image folders as a Dataset; unreadable files are skipped with one warning that lists them."""
    listings = {"train": list_images(train_dir), "test": list_images(test_dir)}
    if val_dir is not None:
        listings["validation"] = list_images(val_dir)
    splits, class_names, _ = _read_listings(listings, image_size, decoding)
    warn_missing_classes(class_names, splits["train"].labels, splits["test"].labels, train_dir, test_dir)
    source = f"{Path(train_dir).parent} (image folders)"
    return Dataset(splits["train"], splits["test"], class_names, source, splits.get("validation"))


def _split_rank(seed: int, name: str) -> bytes:
    # A hash of (seed, file name), not a numpy permutation: the same on every machine and numpy version,
    # and a file added to a class moves at most one other file of that class between the splits.
    return hashlib.sha256(f"{seed}/{name}".encode()).digest()


def split_class_folders(
    names: Sequence[str], classes: Sequence[str], test_fraction: float, seed: int
) -> Tuple[List[int], List[int]]:
    """Indices of the (train, test) files: per class, round(`test_fraction` of it) files go to test, at least
    one of a class with two or more and never its last one; which ones is decided by (`seed`, file name)."""
    by_class: Dict[str, List[int]] = {}
    for i, cls in enumerate(classes):
        by_class.setdefault(cls, []).append(i)
    test = []
    for members in by_class.values():
        count = int(round(len(members) * test_fraction))
        count = min(max(count, 1), len(members) - 1) if len(members) >= 2 else 0
        test += sorted(members, key=lambda i: _split_rank(seed, names[i]))[:count]
    chosen = set(test)
    return [i for i in range(len(names)) if i not in chosen], sorted(test)


def _relative_name(path: Path, directory: Path) -> str:
    return path.relative_to(directory).as_posix()


def load_class_folders(
    directory,
    image_size=None,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    decoding: Decoding = PREDICT_DECODING,
) -> Dataset:
    """A folder of class sub-folders, split into train and test by `split_class_folders`.

    Every visible sub-folder is a class and must hold images (files directly in it); at least two classes.
    The split is made on the listing, before decoding, so that an unreadable file (skipped with a warning)
    does not move others between the splits.
    """
    directory = Path(directory)
    if not 0 < test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1 (both excluded), got {test_fraction}")
    items = []
    for folder in _sub_folders(directory):
        entries = _listing(folder)
        if entries is None:
            continue  # named in a warning; its class is left out
        images = [(p, folder.name) for p in _images_of(entries)]
        if not images:
            raise UserError(
                f"{folder}: no images in this class folder (every sub-folder of {directory} is a class and "
                "needs .jpg, .png or other image files directly in it)"
            )
        items += images
    classes = sorted({c for _, c in items}, key=_class_sort_key)
    if len(classes) < 2:
        raise UserError(f"{directory}: only one class folder ({classes[0]}/); a classifier needs at least two")
    names = [_relative_name(p, directory) for p, _ in items]
    train_idx, test_idx = split_class_folders(names, [c for _, c in items], test_fraction, seed)
    if not test_idx:
        raise UserError(
            f"{directory}: too few images to split off a test set (a class needs two images to give one to it)"
        )
    listings = {"train": [items[i] for i in train_idx], "test": [items[i] for i in test_idx]}
    splits, class_names, kept = _read_listings(listings, image_size, decoding)
    warn_missing_classes(class_names, splits["train"].labels, splits["test"].labels, directory, directory)
    files = {name: tuple(_relative_name(p, directory) for p in paths) for name, paths in kept.items()}
    source = f"{directory} (class folders, test fraction {test_fraction:g}, seed {seed})"
    return Dataset(splits["train"], splits["test"], class_names, source, files=files)


# ---------------------------------------------------------------------------------- recorded splits


def write_split(dataset: Dataset, path) -> Optional[Path]:
    """Record the files of each split of `dataset` (after any validation hold-out) as JSON at `path`.

    Nothing is written for data that comes split (`files` None): its split is its folders or files.
    Returns the path written, or None.
    """
    if dataset.files is None:
        return None
    from .files import write_text_atomic

    record = {
        "source": dataset.source,
        "class_names": list(dataset.class_names),
        "files": {name: list(names) for name, names in dataset.files.items()},
    }
    path = Path(path)
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def read_split(path) -> Dict[str, Tuple[str, ...]]:
    """The files of each split recorded by `write_split`; a missing or malformed record is one UserError line."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        files = {str(name): tuple(map(str, names)) for name, names in record["files"].items()}
    except OSError as err:
        raise UserError(f"{path}: cannot read the recorded split ({err.strerror or err})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path}: not a split record written by signs_jax ({type(err).__name__}: {err})") from None
    if "test" not in files:
        raise UserError(f"{path}: not a split record written by signs_jax (it has no test files)")
    return files


def check_split(dataset: Dataset, path) -> None:
    """Raise a UserError (one line) when `dataset`'s test set is not the one recorded at `path`.

    The folder may have gained or lost images since the split was recorded; what matters is the test set:
    it must be exactly the recorded one, which also means none of its images was a training or validation
    image of the run. A change that only touches the training part is not an error. Data that comes split
    (`files` None) has nothing to check.
    """
    if dataset.files is None:
        return
    recorded = read_split(path)
    recorded_test = set(recorded["test"])
    recorded_all = set().union(*recorded.values())
    test = set(dataset.files["test"])
    if test == recorded_test:
        return
    now_all = set().union(*dataset.files.values())
    added, removed = len(now_all - recorded_all), len(recorded_all - now_all)
    trained_on = len(test & (recorded_all - recorded_test))
    folder = dataset.source.partition(" (class folders")[0]
    raise UserError(
        f"{folder}: changed since its split was recorded in {path} ({added} image(s) added, {removed} removed), "
        f"and the test set is no longer the recorded one ({len(test - recorded_test)} new test image(s), "
        f"{trained_on} of them trained on; {len(recorded_test - test)} recorded test image(s) left out); "
        "restore the folder, or pass --data-dir to evaluate on other data"
    )


def load_run_test_data(
    directory,
    image_size,
    test_fraction: float,
    seed: int,
    split_file=None,
    decoding: Decoding = PREDICT_DECODING,
) -> Dataset:
    """A run's data as `load_dataset` makes it with the run's `test_fraction`, `seed` and folder decoding, checked
    against the run's recorded split (`check_split`) when `split_file` is given and exists."""
    dataset = load_dataset(directory, image_size, test_fraction=test_fraction, seed=seed, decoding=decoding)
    if split_file is not None and Path(split_file).is_file():
        check_split(dataset, split_file)
    return dataset


# --------------------------------------------------------------------------------- splits, batches


def hold_out_validation(dataset: Dataset, fraction: float, seed: int, at_least_one: bool = False) -> Dataset:
    """Move a stratified, seeded `fraction` of the training set into `validation`.

    `at_least_one`: every class with two or more images gives at least one (and keeps at least one). When
    nothing is held out the dataset stays without validation.
    """
    if fraction <= 0:
        return dataset
    if not 0 < fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in range(dataset.num_classes):
        members = np.flatnonzero(dataset.train.labels == c)
        count = int(round(len(members) * fraction))
        if at_least_one and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        val_idx += rng.permutation(members)[:count].tolist()
    if not val_idx:
        return dataset
    mask = np.zeros(len(dataset.train.labels), bool)
    mask[val_idx] = True
    train = Split(dataset.train.images[~mask], dataset.train.labels[~mask])
    val = Split(dataset.train.images[mask], dataset.train.labels[mask])
    files = dataset.files
    if files is not None:
        names = files["train"]
        files = {
            **files,
            "train": tuple(n for n, held in zip(names, mask) if not held),
            "validation": tuple(n for n, held in zip(names, mask) if held),
        }
    return dataset._replace(train=train, validation=val, files=files)


def with_rehearsal(dataset: Dataset, per_class: int, seed: int, decoding: Decoding = PREDICT_DECODING) -> Dataset:
    """`dataset` with `per_class` packaged SIGNS training images of each class (all 180 at most) appended to its
    training part, chosen by `seed` and resized with `decoding`'s filter to the dataset's image size; unchanged when its
    classes are not SIGNS's (their images would teach wrong labels) or `per_class` is 0.

    Validation and test stay as they are, and `files` keeps naming the folder's own files: what the run is
    checked on is the user's photos only.
    """
    if per_class <= 0:
        return dataset
    signs = load_signs()
    if tuple(map(str, dataset.class_names)) != signs.class_names:
        return dataset
    rng = np.random.default_rng([seed, 11])
    members = [np.flatnonzero(signs.train.labels == c) for c in range(signs.num_classes)]
    chosen = np.concatenate([rng.choice(m, min(per_class, len(m)), replace=False) for m in members])
    images = resized_pixels(signs.train.images[chosen], dataset.image_shape[:2], decoding.interpolation)
    train = Split(
        np.concatenate([dataset.train.images, images]),
        np.concatenate([dataset.train.labels, signs.train.labels[chosen]]),
    )
    source = f"{dataset.source} + {len(chosen) // len(members)} SIGNS training images a class (rehearsal)"
    return dataset._replace(train=train, source=source)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of epoch `epoch`: a function of (seed, epoch) only, so a resumed run sees the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(
    split: Split, batch_size: int, seed: int, epoch: int, start: int = 0
) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Full batches of a seeded permutation (the incomplete last batch is left out, a different one each epoch)."""
    order = epoch_permutation(len(split.labels), seed, epoch)
    for step in range(start, len(order) // batch_size):
        idx = order[step * batch_size : (step + 1) * batch_size]
        yield split.images[idx], split.labels[idx]


def eval_batches(split: Split, batch_size: int) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every example once, in order; the last batch is padded and `mask` marks the real examples."""
    n = len(split.labels)
    for start in range(0, n, batch_size):
        images, labels = split.images[start : start + batch_size], split.labels[start : start + batch_size]
        mask = np.ones(batch_size, bool)
        if len(labels) < batch_size:
            pad = batch_size - len(labels)
            mask[len(labels) :] = False
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
        yield images, labels, mask


# ------------------------------------------------------------------------------ near-copy audit


def near_copy_distances(
    test_images: np.ndarray, train_images: np.ndarray, chunk: int = 64
) -> Tuple[np.ndarray, np.ndarray]:
    """For every test image: the RMS pixel distance to its nearest training image, and that image's index."""
    train = train_images.reshape(len(train_images), -1).astype(np.float32)
    train_sq = (train**2).sum(1)
    best, where = [], []
    for start in range(0, len(test_images), chunk):
        test = test_images[start : start + chunk].reshape(-1, train.shape[1]).astype(np.float32)
        sq = (test**2).sum(1)[:, None] + train_sq[None] - 2 * test @ train.T
        where.append(sq.argmin(1))
        best.append(np.sqrt(np.maximum(sq.min(1), 0) / train.shape[1]))
    return np.concatenate(best), np.concatenate(where)


def near_copy_mask(test_images: np.ndarray, train_images: np.ndarray, threshold: float = NEAR_COPY_RMS) -> np.ndarray:
    """True for test images that have a near-copy in the training set."""
    if test_images.shape[1:] != train_images.shape[1:]:
        return np.zeros(len(test_images), bool)
    distances, _ = near_copy_distances(test_images, train_images)
    return distances <= threshold
