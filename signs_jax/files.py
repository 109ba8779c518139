"""Writing files without losing any: checked targets, atomic replacement, normal permissions.

The rule every tool follows for a path it writes (`check_write_target`), before it opens anything:

- it is not one of the tool's inputs (the same file under any spelling or through a symlink);
- it is not a directory, and its folder exists and is writable;
- an existing file there is replaced only when it is of the kind the tool writes (a text file for
  a CSV, an HDF5 file for an export, a matplotlib PNG for a picture, any file but an image for an
  ONNX or StableHLO export): a photo given where a result file was meant is never overwritten.

The file is then written to a temporary file in the same folder and renamed over the target
(`atomic_write`, `atomic_path`), so a crash leaves the old file or the new one, never half of one.
"""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional

from .errors import UserError, write_error, writing
from .images import IMAGE_SUFFIXES

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\0", b"MM\0*", b"RIFF")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SNIFF_BYTES = 4096

WRITE_RULE = (
    "An output path must not be an input, a directory or an existing file of another kind "
    "(an image where a CSV was meant, say); it is written atomically."
)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES)
    except OSError:
        return b""


def is_image_file(path: Path) -> bool:
    """An image by its name or by its first bytes."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES or _head(path).startswith(_IMAGE_MAGIC)


def _is_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start >= len(head) - 3  # a multi-byte character cut at the end of the sample
    return True


def _is_matplotlib_png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG") and b"Software\0Matplotlib" in head


KINDS = {
    # kind: (what the tool writes, what an existing file must be to be replaced, does a file's start hold one)
    "csv": ("the CSV file", "a text file", _is_text),
    "h5": ("the HDF5 file", "an HDF5 file", lambda head: head.startswith(_HDF5_MAGIC)),
    "png": ("the picture", "a picture made by matplotlib", _is_matplotlib_png),
    # ONNX and serialized StableHLO have no fixed first bytes; the export tool asks for --force besides.
    "export": ("the exported model", "a file other than an image", lambda head: True),
}


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(os.path.abspath(a)).resolve() == Path(os.path.abspath(b)).resolve()


def check_write_target(path, flag: str, kind: str, inputs: Iterable = ()) -> Path:
    """`path` checked by the module's rule for `flag`; a UserError (one line) says what is wrong."""
    path = Path(path)
    noun, replaceable, holds_kind = KINDS[kind]
    cannot = f"{path}: cannot write {noun} ({flag})"
    for item in inputs:
        if same_file(path, Path(item)):
            raise UserError(f"{cannot}: it is one of the inputs; choose another file")
    if path.is_dir():
        raise UserError(f"{cannot}: it is a directory; give a file name")
    if kind == "png" and path.suffix.lower() != ".png":
        raise UserError(f"{cannot}: the picture is a PNG; give a name ending in .png")
    if kind == "csv" and path.suffix.lower() in IMAGE_SUFFIXES:
        raise UserError(f"{cannot}: the name is an image's; give a .csv name (was the CSV file name left out?)")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise UserError(f"{cannot}: it exists and is not a regular file")
        head = _head(path)
        if head and ((kind != "png" and is_image_file(path)) or not holds_kind(head)):
            raise UserError(
                f"{cannot}: it exists and is not {replaceable}; not overwriting it (move it or choose another name)"
            )
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{cannot}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{cannot}: folder {folder} is not writable")
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, suffix: Optional[str] = None) -> Iterator[Path]:
    """A temporary path next to `path` to write to; renamed onto `path` when the block succeeds, removed if not.

    `suffix` (default: `path`'s) lets writers that choose a format by file name (matplotlib) see the right one.
    The file gets the permissions a plain `open(path, "w")` would give (0666 less the umask).
    """
    path = Path(path)
    folder = path.parent
    try:
        suffix = ".tmp" + (suffix if suffix is not None else path.suffix)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    except OSError as err:
        raise write_error(path, err) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        with writing(path):
            os.chmod(tmp, 0o666 & ~_umask())
            yield tmp
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", **open_kwargs):
    """`open(path, mode)` for writing, made atomic: the file appears whole when the block succeeds, or not at all."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)
