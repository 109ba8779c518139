"""Hostile inputs and faults against the command-line tools, each case a real process, judged by rule.

    python scripts/hostile_suite.py [--jobs 2] [--only SUBSTRING] [--keep DIR] [--json]

Every case runs `python -m signs_jax.<tool> ...` in a fresh folder holding a few photos, a small SIGNS h5
pair, a shallow Keras .h5 and a small trained run, and is judged by the same rules:
- no Python traceback on stdout or stderr, whatever happened;
- a case that must fail exits non-zero and says why in one `error:` line (argparse's usage line may come
  before it); stderr holds at most three lines in all, warnings included;
- a case that must succeed exits 0, and every `--json` line it prints is valid, strict JSON (no NaN);
- no file that existed before the case changed or vanished, except the outputs the case names;
- a train case that fails leaves no run behind (`predict` and `evaluate` must not pick it up).
Prints one line per mishandled case with the rule it broke, then the count per class of fault.
"""

import argparse
import copy
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY = ["--width", "0.0625", "--stage-sizes", "1,1,1,1", "--batch-size", "8", "--no-progress"]
MAX_STDERR_LINES = 3
TIMEOUT = 240  # seconds a case may take
UMASK = os.umask(0o022)
os.umask(UMASK)


@dataclass
class Case:
    name: str
    kind: str  # the class of fault, for the summary
    tool: str
    args: Sequence[str]
    fails: bool  # must the tool refuse?
    setup: Optional[Callable[[Path], None]] = None
    outputs: Sequence[str] = ()  # files the case may create or replace
    no_run_left: bool = False  # a failed train must leave no run under work/
    extra_check: Optional[Callable[[Path, str, str], Optional[str]]] = field(default=None, repr=False)


# --- the material every case starts from -------------------------------------------------------------------


def build_material(base: Path) -> None:
    """photos/ (JPEG, PNG), signs/ (a small h5 pair), tiny.h5, nan.h5, run/ (a 2-epoch trained run)."""
    import h5py
    import jax
    from PIL import Image

    import signs_jax
    from signs_jax.data import load_signs

    data = load_signs()
    train, test = data.train, data.test
    (base / "photos").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(test.images[i * 20]).save(base / "photos" / f"hand{i}.jpg", quality=92)
    Image.fromarray(test.images[5]).save(base / "photos" / "hand_png.png")
    signs = base / "signs"
    signs.mkdir()
    pick = np.concatenate([np.flatnonzero(train.labels == c)[:8] for c in range(6)])
    with h5py.File(signs / "train_signs.h5", "w") as f:
        f["train_set_x"] = train.images[pick]
        f["train_set_y"] = train.labels[pick]
        f["list_classes"] = np.arange(6)
    with h5py.File(signs / "test_signs.h5", "w") as f:
        f["test_set_x"] = test.images[::10]
        f["test_set_y"] = test.labels[::10]
        f["list_classes"] = np.arange(6)
    model = signs_jax.ResNet50(6, width=0.0625, stage_sizes=(1, 1, 1, 1))
    variables = signs_jax.init_variables(model, jax.random.key(0))
    signs_jax.save_keras_h5(base / "tiny.h5", variables)
    poisoned = copy.deepcopy(variables)
    poisoned["params"]["conv1"]["kernel"] = poisoned["params"]["conv1"]["kernel"].at[0, 0, 0, 0].set(np.nan)
    signs_jax.save_keras_h5(base / "nan.h5", poisoned)
    rc, _, err = run_tool(
        base, "train", [*TINY, "--data-dir", "signs", "--epochs", "2", "--workdir", "work", "--run", "r"]
    )
    if rc != 0:
        raise SystemExit(f"error: could not train the material's run: {err.strip().splitlines()[-1:]}")
    shutil.move(str(base / "work" / "r"), base / "run")
    shutil.rmtree(base / "work")


def run_tool(cwd: Path, tool: str, args: Sequence[str]):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", f"signs_jax.{tool}", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return proc.returncode, proc.stdout, proc.stderr


# --- set-ups ----------------------------------------------------------------------------------------------


def write(name: str, data: bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)

    return setup


def chain(*setups) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for s in setups:
            s(d)

    return setup


def jpeg_bytes(size=(640, 480), quality=90, progressive=False) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, progressive=progressive)
    return out.getvalue()


def png_bomb() -> bytes:
    """A PNG whose header claims 30,000 x 30,000 pixels (900 megapixels), in a few hundred kilobytes."""
    import io
    import struct
    import zlib

    width = height = 30000
    raw = zlib.compress(b"\x00" * (width + 1) * 64, 9)  # far fewer rows than claimed: the decode fails late

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
    out.write(chunk(b"IDAT", raw))
    out.write(chunk(b"IEND", b""))
    return out.getvalue()


def lied_header_jpeg() -> bytes:
    """A JPEG whose SOF says 4000 x 3000 but whose data is a 64 x 48 picture."""
    data = bytearray(jpeg_bytes((64, 48)))
    i = data.find(b"\xff\xc0")
    data[i + 5 : i + 9] = (3000).to_bytes(2, "big") + (4000).to_bytes(2, "big")
    return bytes(data)


def truncated_jpeg(keep: float) -> bytes:
    data = jpeg_bytes()
    return data[: int(len(data) * keep)]


def text_h5(d: Path) -> None:
    (d / "fake.h5").write_text("this is not an HDF5 file\n")


def empty_h5(d: Path) -> None:
    import h5py

    with h5py.File(d / "empty.h5", "w") as f:
        f.attrs["note"] = "no weights"


def string_weight_h5(d: Path) -> None:
    import h5py

    shutil.copy(d / "tiny.h5", d / "strings.h5")
    with h5py.File(d / "strings.h5", "r+") as f:
        name = None

        def first_kernel(path, obj):
            nonlocal name
            if name is None and isinstance(obj, h5py.Dataset) and "kernel" in path:
                name = path

        f.visititems(first_kernel)
        shape = f[name].shape
        del f[name]
        f[name] = np.full(shape, "x", dtype=object).astype("S1")


def other_stage_sizes_h5(d: Path) -> None:
    import jax

    import signs_jax

    model = signs_jax.ResNet50(6, width=0.0625, stage_sizes=(2, 1, 1, 1))
    signs_jax.save_keras_h5(d / "deeper.h5", signs_jax.init_variables(model, jax.random.key(1)))


def signs_with_zero_test(d: Path) -> None:
    import h5py

    (d / "zero").mkdir()
    shutil.copy(d / "signs" / "train_signs.h5", d / "zero" / "train_signs.h5")
    with h5py.File(d / "zero" / "test_signs.h5", "w") as f:
        f["test_set_x"] = np.zeros((0, 64, 64, 3), np.uint8)
        f["test_set_y"] = np.zeros((0,), np.int64)
        f["list_classes"] = np.arange(6)


def one_class_folders(d: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        (d / "one" / split / "0").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(d / "one" / split / "0" / f"{i}.png")


def labels_out_of_range(d: Path) -> None:
    import h5py

    (d / "badlabels").mkdir()
    shutil.copy(d / "signs" / "test_signs.h5", d / "badlabels" / "test_signs.h5")
    with h5py.File(d / "signs" / "train_signs.h5") as src, h5py.File(d / "badlabels" / "train_signs.h5", "w") as f:
        f["train_set_x"] = src["train_set_x"][:]
        y = src["train_set_y"][:].copy()
        y[0] = 9
        f["train_set_y"] = y
        f["list_classes"] = np.arange(6)


def lopsided_folders(d: Path) -> None:
    from PIL import Image

    for split, classes in (("train", "012"), ("test", "01")):
        for c in classes:
            (d / "lopsided" / split / c).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(np.full((64, 64, 3), 30 * i + 10 * int(c), np.uint8)).save(
                    d / "lopsided" / split / c / f"{i}.png"
                )


def damage_run_file(pattern: str, data: bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        steps = sorted((p for p in (d / "run" / "ckpt").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        for target in sorted(steps[-1].glob(pattern)):
            if target.is_file():
                target.write_bytes(data)
                return
        raise SystemExit(f"error: set-up found no {pattern} in {steps[-1]}")

    return setup


def read_only_dir(d: Path) -> None:
    (d / "ro").mkdir()
    os.chmod(d / "ro", 0o555)


def dangling_link(d: Path) -> None:
    os.symlink(d / "nowhere.jpg", d / "photos" / "dangling.jpg")


def finished_run_in_work(d: Path) -> None:
    (d / "work").mkdir(exist_ok=True)
    shutil.copytree(d / "run", d / "work" / "done")


def incomplete_run_in_work(d: Path) -> None:
    (d / "work" / "broken").mkdir(parents=True)
    (d / "work" / "broken" / "config.json").write_text("{}")


# --- extra checks -----------------------------------------------------------------------------------------


def predicted(out: str) -> list:
    """The `--json` records that got a class."""
    records = [json.loads(line) for line in out.splitlines() if line.lstrip().startswith("{")]
    return [r for r in records if r.get("class") is not None]


def only_the_bad_photo_refused(name: str, good: int):
    """`name` gets no class and stderr names it; the `good` photos given beside it are still predicted."""

    def check(d: Path, out: str, err: str) -> Optional[str]:
        if any(name in r.get("path", "") for r in predicted(out)):
            return f"{name} got a class"
        if name not in err:
            return f"stderr does not name {name}"
        return others_still_predicted(good)(d, out, err)

    return check


def others_still_predicted(count: int):
    def check(d: Path, out: str, err: str) -> Optional[str]:
        answered = len(predicted(out))
        return f"{answered} of the {count} good photos were predicted" if answered < count else None

    return check


# --- the catalogue ----------------------------------------------------------------------------------------

W = ["--weights", "tiny.h5"]
WRUN = ["--weights", "run"]
TRAIN = [*TINY, "--data-dir", "signs", "--epochs", "1", "--workdir", "work"]


def catalogue() -> list:
    cases = []

    def add(*a, **k):
        cases.append(Case(*a, **k))

    # Data loss: what a tool writes must never be what it reads, or anything else the user has.
    p0, p1, ev = "photos/hand0.jpg", "photos/hand1.jpg", [*W, "--data-dir", "signs"]
    for name, tool, args in (
        ("csv onto the photo it reads", "predict", [*W, p0, "--csv", p0]),
        ("csv name forgotten (shell glob)", "predict", [*W, "--csv", p0, p1]),
        ("csv onto the photo by another spelling", "predict", [*W, p0, "--csv", "photos/../photos/hand0.jpg"]),
        ("csv onto the weights", "predict", [*W, p0, "--csv", "tiny.h5"]),
        ("csv onto a folder", "predict", [*W, p0, "--csv", "photos"]),
        ("csv into a missing folder", "predict", [*W, p0, "--csv", "nope/out.csv"]),
        ("csv onto a png photo not given", "predict", [*W, p0, "--csv", "photos/hand_png.png"]),
        ("explain dir is a photo", "predict", [*W, p0, "--explain", p1]),
        ("confusion png onto a photo", "evaluate", [*ev, "--confusion-png", p0]),
        ("confusion png onto the weights", "evaluate", [*ev, "--confusion-png", "tiny.h5"]),
        ("confusion png onto data", "evaluate", [*ev, "--confusion-png", "signs/test_signs.h5"]),
        ("gallery onto a photo", "evaluate", [*ev, "--gallery", p0]),
        ("reliability png onto the weights", "evaluate", [*ev, "--reliability-png", "tiny.h5"]),
        ("confusion png x.xyz", "evaluate", [*ev, "--confusion-png", "x.xyz"]),
        ("export onto its input", "keras_h5", ["tiny.h5", "--export", "tiny.h5"]),
        ("export onto a photo", "keras_h5", ["tiny.h5", "--export", p0]),
        ("export onto a folder", "keras_h5", ["tiny.h5", "--export", "photos"]),
        ("export --format keras onto its input", "export", ["tiny.h5", "--format", "keras", "tiny.h5"]),
        ("export --format stablehlo to a folder", "export", ["tiny.h5", "--format", "stablehlo", "photos"]),
        ("export --format onnx onto a photo", "export", ["tiny.h5", "--format", "onnx", p0]),
        ("train workdir is a file", "train", [*TINY, "--data-dir", "signs", "--workdir", "tiny.h5"]),
        (
            "train workdir is the photo folder",
            "train",
            [*TINY, "--data-dir", "signs", "--workdir", "photos", "--run", "hand0.jpg"],
        ),
    ):
        add(name, "data loss", tool, args, True)
    add(
        "csv onto a symlink to the photo",
        "data loss",
        "predict",
        [*W, p0, "--csv", "link.csv"],
        True,
        setup=lambda d: os.symlink(d / "photos" / "hand0.jpg", d / "link.csv"),
    )
    add(
        "csv replaces an old csv",
        "data loss",
        "predict",
        [*W, p0, "--csv", "old.csv"],
        False,
        setup=write("old.csv", b"path,class\nx,1\n"),
        outputs=["old.csv"],
    )
    add(
        "explain pictures into the input folder (added, nothing replaced)",
        "data loss",
        "predict",
        [*W, p0, "--explain", "photos"],
        False,
    )
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        add(
            "export to a read-only folder",
            "data loss",
            "keras_h5",
            ["tiny.h5", "--export", "ro/out.h5"],
            True,
            setup=read_only_dir,
        )
    add(
        "export to a new file, normal permissions",
        "data loss",
        "keras_h5",
        ["tiny.h5", "--export", "out.h5"],
        False,
        outputs=["out.h5"],
        extra_check=lambda d, o, e: None if (d / "out.h5").stat().st_mode & 0o777 == 0o666 & ~UMASK else "mode",
    )
    add(
        "train run named like a file in workdir",
        "data loss",
        "train",
        [*TRAIN, "--run", "x.txt"],
        True,
        setup=write("work/x.txt", b"keep me\n"),
    )
    add(
        "resume fewer epochs on a finished run",
        "data loss",
        "train",
        [*TINY, "--workdir", "work", "--run", "done", "--resume", "--epochs", "1"],
        True,
        setup=finished_run_in_work,
    )
    add(
        "resume of a finished run, nothing to do",
        "data loss",
        "train",
        [*TINY, "--workdir", "work", "--run", "done", "--resume"],
        False,
        setup=finished_run_in_work,
    )
    add(
        "resume with another data dir",
        "data loss",
        "train",
        [*TINY, "--workdir", "work", "--run", "done", "--resume", "--data-dir", "photos"],
        True,
        setup=finished_run_in_work,
    )

    # Flags: each checked before anything is written, one line naming the flag.
    for flags in (
        ["--lr", "-1"],
        ["--lr", "nan"],
        ["--lr", "inf"],
        ["--lr", "0"],
        ["--epochs", "0"],
        ["--epochs", "-2"],
        ["--batch-size", "0"],
        ["--batch-size", "100000"],
        ["--width", "0"],
        ["--width", "-1"],
        ["--width", "nan"],
        ["--image-size", "0", "0"],
        ["--image-size", "-64", "64"],
        ["--val-fraction", "1.5"],
        ["--val-fraction", "-0.1"],
        ["--val-fraction", "nan"],
        ["--test-fraction", "1"],
        ["--stage-sizes", "0,0,0,0"],
        ["--stage-sizes", "a,b"],
        ["--stage-sizes", "1,1"],
        ["--eval-batch-size", "0"],
        ["--seed", "-1"],
        ["--seed", "99999999999999999999999"],
        ["--set", "recipe.lr=nan"],
        ["--set", "nonsense=1"],
        ["--set", "recipe.epochs=abc"],
        ["--config", "missing_config"],
        ["--recipe", "nope"],
        ["--dtype", "float8"],
        ["--conv", "gpu"],
        ["--init-from", "missing.h5"],
        ["--init-from", "photos/hand0.jpg"],
        ["--init-from", "nan.h5"],
        ["--data-dir", "missing"],
        ["--data-dir", "photos"],
        ["--data-dir", "tiny.h5"],
    ):
        add(f"train {' '.join(flags)}", "flags", "train", [*TRAIN, *flags], True, no_run_left=True)
    add(
        "train --init-from a text .h5",
        "flags",
        "train",
        [*TRAIN, "--init-from", "fake.h5"],
        True,
        setup=text_h5,
        no_run_left=True,
    )
    add(
        "train --init-from other stage sizes",
        "silent nonsense",
        "train",
        [*TRAIN, "--init-from", "deeper.h5", "--stage-sizes", "1,1,1,1"],
        True,
        setup=other_stage_sizes_h5,
        no_run_left=True,
    )
    add(
        "train on one class",
        "silent nonsense",
        "train",
        [*TINY, "--data-dir", "one", "--workdir", "work"],
        True,
        setup=one_class_folders,
        no_run_left=True,
    )
    add(
        "train on labels out of range",
        "silent nonsense",
        "train",
        [*TINY, "--data-dir", "badlabels", "--workdir", "work"],
        True,
        setup=labels_out_of_range,
        no_run_left=True,
    )
    for flags in (
        ["--batch-size", "0"],
        ["--batch-size", "-3"],
        ["--batch-size", "1000000000000"],
        ["--top-k", "0"],
        ["--top-k", "7"],
        ["--threshold", "2"],
        ["--threshold", "nan"],
        ["--interpolation", "cubicle"],
        ["--fit", "stretch"],
        ["--weights", "missing.h5"],
        ["--weights", "photos"],
        ["--weights", "photos/hand0.jpg"],
        ["--weights", "nan.h5"],
    ):
        add(f"predict {' '.join(flags)}", "flags", "predict", [*W, "photos/hand0.jpg", *flags], True)
    add(
        "predict --weights a text .h5",
        "flags",
        "predict",
        ["--weights", "fake.h5", "photos/hand0.jpg"],
        True,
        setup=text_h5,
    )
    add(
        "predict --weights an .h5 without weights",
        "flags",
        "predict",
        ["--weights", "empty.h5", "photos/hand0.jpg"],
        True,
        setup=empty_h5,
    )
    add(
        "predict --weights a weight stored as strings",
        "tracebacks",
        "predict",
        ["--weights", "strings.h5", "photos/hand0.jpg"],
        True,
        setup=string_weight_h5,
    )
    add("predict with no checkpoints anywhere", "flags", "predict", ["photos/hand0.jpg"], True)
    add(
        "predict picks no incomplete run",
        "broken runs",
        "predict",
        ["--workdir", "work", "photos/hand0.jpg"],
        True,
        setup=incomplete_run_in_work,
    )
    add(
        "predict --adapt on 2 photos", "flags", "predict", [*W, "--adapt", "photos/hand0.jpg", "photos/hand1.jpg"], True
    )
    for flags in (
        ["--batch-size", "0"],
        ["--weights", "nan.h5"],
        ["--data-dir", "missing"],
        ["--data-dir", "zero"],
        ["--data-dir", "tiny.h5"],
        ["--weights", "missing"],
    ):
        setup = signs_with_zero_test if "zero" in flags else None
        add(f"evaluate {' '.join(flags)}", "flags", "evaluate", [*W, "--data-dir", "signs", *flags], True, setup=setup)
    add(
        "evaluate --json is strict JSON",
        "silent nonsense",
        "evaluate",
        [*W, "--data-dir", "signs", "--json"],
        False,
        outputs=["confusion.png", "reliability.png"],
    )
    for part, pattern in (
        ("metrics", "metrics/metrics"),
        ("variables metadata", "variables/_METADATA"),
        ("variables data", "variables/ocdbt.process_0/d/*"),
        ("meta", "meta/metadata"),
        ("checkpoint metadata", "_CHECKPOINT_METADATA"),
    ):
        add(
            f"evaluate a run whose newest step has damaged {part}",
            "damaged checkpoints",
            "evaluate",
            [*WRUN, "--data-dir", "signs", "--json"],
            False,
            setup=damage_run_file(pattern, b"\x00garbage{"),
            outputs=["confusion.png", "reliability.png"],
        )
        add(
            f"predict from a run whose newest step has damaged {part}",
            "damaged checkpoints",
            "predict",
            [*WRUN, "--json", "photos/hand0.jpg"],
            False,
            setup=damage_run_file(pattern, b"\x00garbage{"),
        )
        add(
            f"resume a run whose newest step has damaged {part}",
            "damaged checkpoints",
            "train",
            [*TINY, "--workdir", ".", "--run", "run", "--resume", "--epochs", "3"],
            False,
            setup=damage_run_file(pattern, b"\x00garbage{"),
            outputs=["run/*"],
        )
    for flags in ([], ["--export", "x.h5", "--export", "y.h5"]):
        add(f"keras_h5 {' '.join(flags) or 'no file'}", "flags", "keras_h5", flags, True)
    for name, setup in (
        ("missing.h5", None),
        ("fake.h5", text_h5),
        ("empty.h5", empty_h5),
        ("nan.h5", None),
        ("strings.h5", string_weight_h5),
        ("photos/hand0.jpg", None),
        ("photos", None),
    ):
        add(f"keras_h5 {name}", "flags", "keras_h5", [name], True, setup=setup)

    # Hostile images: one line each, the other photos still predicted.
    good = ["photos/hand0.jpg", "photos/hand1.jpg"]
    for name, data in (
        ("empty.jpg", b""),
        ("text.jpg", b"hello\n"),
        ("cut10.jpg", truncated_jpeg(0.1)),
        ("cut60.jpg", truncated_jpeg(0.6)),
        ("cut95.jpg", truncated_jpeg(0.95)),
        ("cutprog.jpg", jpeg_bytes(progressive=True)[:4000]),
        ("bomb.png", png_bomb()),
        ("lies.jpg", lied_header_jpeg()),
        ("header.jpg", jpeg_bytes()[:200]),
        ("zeros.png", b"\x00" * 4096),
        ("random.bin", np.random.default_rng(1).bytes(5000)),
    ):
        add(
            f"predict {name} among good photos",
            "hostile images",
            "predict",
            [*W, "--json", name, *good],
            True,
            setup=write(name, data),
            extra_check=only_the_bad_photo_refused(name, len(good)),
        )
    add(
        "predict a dangling link in a folder",
        "hostile images",
        "predict",
        [*W, "--json", "photos"],
        True,
        setup=dangling_link,
        extra_check=others_still_predicted(7),
    )
    add(
        "predict a missing file among good photos",
        "hostile images",
        "predict",
        [*W, "--json", "missing.jpg", *good],
        True,
        extra_check=others_still_predicted(2),
    )
    add(
        "predict a folder with no images",
        "hostile images",
        "predict",
        [*W, "empty_dir"],
        True,
        setup=lambda d: (d / "empty_dir").mkdir(),
    )
    add(
        "predict a phone-sized JPEG",
        "hostile images",
        "predict",
        [*W, "--json", "big.jpg"],
        False,
        setup=write("big.jpg", jpeg_bytes((4032, 3024))),
    )
    add(
        "predict a 1x1 PNG",
        "hostile images",
        "predict",
        [*W, "--json", "dot.png"],
        False,
        setup=lambda d: (
            __import__("PIL.Image", fromlist=["Image"]).new("RGB", (1, 1), (200, 150, 120)).save(d / "dot.png")
        ),
    )
    add(
        "predict a file name with a newline",
        "silent nonsense",
        "predict",
        [*W, "--json", "a\nb.jpg"],
        False,
        setup=write("a\nb.jpg", jpeg_bytes((64, 64))),
    )
    add(
        "train --workdir under /proc",
        "tracebacks",
        "train",
        [*TINY, "--data-dir", "signs", "--workdir", "/proc/hostile"],
        True,
    )
    add("predict --workdir /proc", "tracebacks", "predict", ["--workdir", "/proc", "photos/hand0.jpg"], True)
    add(
        "evaluate --weights a weight stored as strings",
        "tracebacks",
        "evaluate",
        ["--weights", "strings.h5", "--data-dir", "signs"],
        True,
        setup=string_weight_h5,
    )
    add(
        "train --init-from a weight stored as strings",
        "tracebacks",
        "train",
        [*TRAIN, "--init-from", "strings.h5"],
        True,
        setup=string_weight_h5,
        no_run_left=True,
    )
    add(
        "train on folders where one class has no test photos (warned, trained)",
        "silent nonsense",
        "train",
        [*TINY, "--data-dir", "lopsided", "--workdir", "work", "--epochs", "1"],
        False,
        setup=lopsided_folders,
        outputs=["work/*"],
        extra_check=lambda d, o, e: None if "warning:" in e else "no warning",
    )
    return cases


# --- judging ----------------------------------------------------------------------------------------------


def snapshot(d: Path) -> dict:
    state = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            state[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            try:
                state[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                state[rel] = "unreadable"
    return state


def judge(case: Case, rc: int, out: str, err: str, before: dict, after: dict, runs_left: list, case_dir: Path) -> list:
    """The rules a case broke (empty: handled well)."""
    broken = []
    if "Traceback (most recent call last)" in out + err:
        broken.append("traceback")
    lines = [line for line in err.splitlines() if line.strip()]
    if case.fails:
        if rc == 0:
            broken.append("exit status 0 on a refusal")
        if not any(line.startswith("error:") or ": error:" in line for line in lines):
            broken.append("no error: line")
    elif rc != 0:
        broken.append(f"exit status {rc}: {lines[-1] if lines else ''}")
    if len(lines) > MAX_STDERR_LINES:
        broken.append(f"{len(lines)} lines on stderr")
    for line in out.splitlines():
        if line.strip().startswith("{"):
            try:
                json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            except ValueError as e:
                broken.append(f"invalid JSON: {e}")
                break
    changed = [
        p for p, h in before.items() if not any(fnmatch.fnmatch(p, o) for o in case.outputs) and after.get(p) != h
    ]
    if changed:
        broken.append("changed or lost: " + ", ".join(changed[:4]))
    if case.no_run_left and runs_left:
        broken.append("left a run: " + ", ".join(runs_left))
    if case.extra_check:
        try:
            problem = case.extra_check(case_dir, out, err)
        except Exception as e:  # a check that cannot read the output counts against the tool
            problem = f"unreadable output ({type(e).__name__}: {e})"
        if problem:
            broken.append(problem)
    return broken


def run_case(case: Case, material: Path, scratch: Path) -> dict:
    d = scratch / case.name.replace("/", "_").replace(" ", "_").replace("\n", "_")
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(material, d, symlinks=True)
    if case.setup:
        case.setup(d)
    before = snapshot(d)
    start = time.perf_counter()
    try:
        rc, out, err = run_tool(d, case.tool, case.args)
    except subprocess.TimeoutExpired:
        rc, out, err = -1, "", f"timed out after {TIMEOUT} s"
    seconds = time.perf_counter() - start
    after = snapshot(d)
    work = d / "work"
    runs_left = sorted(p.name for p in work.iterdir() if p.is_dir()) if work.is_dir() else []
    broken = judge(case, rc, out, err, before, after, runs_left, d)
    for p in d.rglob("*"):  # read-only folders made by a set-up must not stop the clean-up
        if p.is_dir() and not p.is_symlink():
            os.chmod(p, 0o755)
    return {
        "name": case.name,
        "kind": case.kind,
        "tool": case.tool,
        "args": list(case.args),
        "rc": rc,
        "seconds": round(seconds, 1),
        "broken": broken,
        "stderr_tail": err.strip().splitlines()[-3:],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default: 2)")
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--keep", help="keep each case's folder under this directory")
    parser.add_argument("--json", action="store_true", help="print every result as one JSON object per line")
    args = parser.parse_args(argv)
    cases = [c for c in catalogue() if not args.only or args.only in c.name]
    if not cases:
        parser.error(f"--only {args.only!r}: no case matches")
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hostile-"))
    scratch.mkdir(parents=True, exist_ok=True)
    material = scratch / "_material"
    if not material.exists():
        build_material(material)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: run_case(c, material, scratch / "cases"), cases))
    bad = [r for r in results if r["broken"]]
    for r in results:
        if args.json:
            print(json.dumps(r))
        elif r["broken"]:
            print(f"MISHANDLED [{r['kind']}] {r['tool']} {r['name']}: {'; '.join(r['broken'])}")
    kinds = sorted({r["kind"] for r in results})
    summary = ", ".join(
        f"{k} {sum(1 for r in bad if r['kind'] == k)}/{sum(1 for r in results if r['kind'] == k)}" for k in kinds
    )
    print(f"# {len(bad)} of {len(results)} cases mishandled ({summary})", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
