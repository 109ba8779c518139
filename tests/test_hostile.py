"""Hostile data and faults: whatever is skipped or suspicious is named in one warning line, a damaged checkpoint
step falls back to the newest good one in one line, and a full disk or an odd work directory is one error line."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from helpers import KERAS_MODEL, ROOT, TINY, error_line, metrics_of, run_train
from signs_jax.data import load_dataset
from signs_jax.errors import UserError
from signs_jax.images import ImageError, decode_image, expand_inputs


def run_module(module, *args, timeout=300):
    """`python -m signs_jax.MODULE ARGS` as a real process: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", f"signs_jax.{module}", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def photo_array(seed: int, size=(64, 64)) -> np.ndarray:
    """A smooth random picture (JPEG-friendly, nowhere flat grey)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 226, (size[0] // 8, size[1] // 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize(size[::-1], Image.Resampling.BILINEAR))


def class_folders(root: Path, layout) -> Path:
    """`layout`: {split: {class: count}} of small PNG files under `root`/split/class/."""
    seed = 0
    for split, classes in layout.items():
        for cls, count in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                Image.fromarray(photo_array(seed, (16, 16))).save(folder / f"{i}.png")
    return root


def messages(record):
    return [str(w.message) for w in record]


# ------------------------------------------------------------------------------- 1. data: named, never silent


def test_an_unreadable_class_folder_is_named_and_skipped(tmp_path, monkeypatch):
    data = class_folders(tmp_path / "data", {"train": {"a": 2, "b": 2, "c": 2}, "test": {"a": 1, "b": 1, "c": 1}})
    locked = data / "train" / "c"
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:  # what an unreadable folder does for a user who is not root
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.warns(UserWarning) as record:
        dataset = load_dataset(data)
    assert any(m.startswith(f"{locked}: ") and "permission denied" in m and "skipped" in m for m in messages(record))
    assert dataset.class_names == ("a", "b", "c") and len(dataset.train.labels) == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder anyway (see the monkeypatched test)")
def test_a_chmod_000_class_folder_is_named_and_skipped(tmp_path):
    data = class_folders(tmp_path / "data", {"train": {"a": 2, "b": 2, "c": 2}, "test": {"a": 1, "b": 1, "c": 1}})
    locked = data / "train" / "c"
    locked.chmod(0)
    try:
        with pytest.warns(UserWarning) as record:
            dataset = load_dataset(data)
    finally:
        locked.chmod(0o755)
    assert any(m.startswith(f"{locked}: ") and "skipped" in m for m in messages(record))
    assert len(dataset.train.labels) == 4


def test_an_unreadable_data_folder_is_one_error_line(tmp_path, monkeypatch):
    data = class_folders(tmp_path / "data", {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}})
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == data:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(UserError, match=f"^{data}: .*permission denied"):
        load_dataset(data)


def test_a_dangling_symlink_among_training_images_is_named(tmp_path):
    data = class_folders(tmp_path / "data", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    link = data / "train" / "a" / "moved.jpg"
    link.symlink_to(tmp_path / "elsewhere" / "moved.jpg")
    with pytest.warns(UserWarning) as record:
        dataset = load_dataset(data)
    assert any(m.startswith(f"{link}: ") and "dangling symbolic link" in m for m in messages(record))
    assert len(dataset.train.labels) == 4


def test_a_dangling_symlink_in_a_folder_to_predict_is_reported_not_dropped(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photo_array(1)).save(folder / "good.jpg")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    files, errors = expand_inputs([folder])
    assert folder / "gone.jpg" in files and not errors
    with pytest.raises(ImageError, match=f"^{folder / 'gone.jpg'}: dangling symbolic link"):
        decode_image(folder / "gone.jpg", (64, 64))


def h5_pair(root: Path, train_labels, test_labels, classes=("0", "1", "2", "3", "4", "5")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, labels in (("train", train_labels), ("test", test_labels)):
        with h5py.File(root / f"{split}_signs.h5", "w") as f:
            images = [photo_array(i) for i in range(len(labels))]
            f[f"{split}_set_x"] = np.stack(images) if images else np.zeros((0, 64, 64, 3), np.uint8)
            f[f"{split}_set_y"] = np.asarray(labels, np.int64)
            f["list_classes"] = np.asarray([int(c) for c in classes])
    return root


def test_a_class_without_test_images_is_named(tmp_path):
    data = h5_pair(tmp_path / "data", [0, 1, 2, 0, 1, 2], [0, 1, 1])
    with pytest.warns(UserWarning) as record:
        load_dataset(data)
    lines = messages(record)
    assert any("class 2" in m and "no test image" in m for m in lines), lines
    assert any("classes 3, 4, 5" in m and "no image in either split" in m for m in lines), lines


def test_a_class_only_the_test_folder_has_is_named(tmp_path):
    data = class_folders(tmp_path / "data", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1, "c": 1}})
    with pytest.warns(UserWarning) as record:
        dataset = load_dataset(data)
    assert any(
        m.startswith(f"{data / 'train'}: ") and "class c" in m and "no training image" in m for m in messages(record)
    )
    assert dataset.class_names == ("a", "b", "c")


def test_complete_data_gives_no_warning(tmp_path, recwarn):
    load_dataset(class_folders(tmp_path / "data", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}))
    load_dataset(h5_pair(tmp_path / "h5", [0, 1, 0, 1], [1, 0], classes=("0", "1")))
    assert not messages(recwarn)


def test_a_training_set_of_one_class_is_refused(tmp_path, capsys):
    data = h5_pair(tmp_path / "data", [3] * 20, [3, 4], classes=("0", "1", "2", "3", "4", "5"))
    with pytest.warns(UserWarning):
        line = error_line(capsys, "--data-dir", data, "--workdir", tmp_path / "w", "--run", "one", *TINY)
    assert line.startswith(f"error: {data}") and "only one class" in line and "3" in line
    assert not (tmp_path / "w" / "one").exists()


def test_image_folders_of_one_class_are_refused(tmp_path, capsys):
    data = class_folders(tmp_path / "data", {"train": {"a": 20}, "test": {"a": 2}})
    line = error_line(capsys, "--data-dir", data, "--workdir", tmp_path / "w", *TINY, "--image-size", 64, 64)
    assert "only one class" in line and "a" in line


def jpeg_bytes(seed=0, **save) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(photo_array(seed)).save(out, "JPEG", quality=90, **save)
    return out.getvalue()


def scan_starts(data: bytes):
    """Where each scan (SOS marker) of a JPEG begins."""
    return [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]


@pytest.mark.parametrize("scans_kept", [1, 3, 6])
def test_a_progressive_jpeg_cut_between_scans_and_closed_is_refused(tmp_path, scans_kept):
    """A progressive JPEG cut short decodes whole but blurred or colourless (the later scans refine what the
    first ones drew), with no grey to give it away: the scans that are there must cover every coefficient."""
    data = jpeg_bytes(progressive=True)
    starts = scan_starts(data)
    assert len(starts) > scans_kept
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: starts[scans_kept]] + b"\xff\xd9")
    with pytest.raises(ImageError, match=f"^{path}: a progressive JPEG cut short"):
        decode_image(path, (32, 32))


def test_a_progressive_jpeg_cut_inside_a_scan_and_closed_is_refused(tmp_path):
    data = jpeg_bytes(progressive=True)
    starts = scan_starts(data)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: (starts[2] + starts[3]) // 2] + b"\xff\xd9")
    with pytest.raises(ImageError, match=f"^{path}: a progressive JPEG cut short"):
        decode_image(path, (32, 32))


def test_whole_progressive_and_optimised_jpegs_still_decode(tmp_path):
    for name, save in {"progressive": {"progressive": True}, "optimised": {"optimize": True}}.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(jpeg_bytes(**save))
        assert decode_image(path, (32, 32)).shape == (32, 32, 3)
    grey = tmp_path / "grey.jpg"
    Image.new("L", (40, 30), 77).save(grey, "JPEG", progressive=True)
    assert decode_image(grey, (32, 32)).shape == (32, 32, 3)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2] + b"\xff\xd9", id="cut-short-then-closed"),
        pytest.param(lambda data: data[: len(data) // 2] + b"\xff\xd9" * 8 + data[len(data) // 2 + 16 :], id="marker"),
        pytest.param(lambda data: data[: len(data) // 2], id="cut-short"),
    ],
)
def test_a_damaged_jpeg_never_decodes_silently_to_grey(tmp_path, damage):
    path = tmp_path / "cut.jpg"
    path.write_bytes(damage(jpeg_bytes()))
    for draft in (False, True):
        with pytest.raises(ImageError, match=f"^{path}: .*(cut short|truncated)"):
            decode_image(path, (32, 32), draft=draft)


def test_a_whole_jpeg_and_a_grey_png_still_decode(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes())
    assert decode_image(good, (64, 64)).shape == (64, 64, 3)
    grey = tmp_path / "grey.png"  # flat mid-grey is only suspicious in a JPEG
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(grey)
    assert decode_image(grey, (64, 64)).min() == 128


@pytest.mark.slow
def test_a_cut_short_jpeg_gets_no_class_in_predict(tmp_path):
    good, cut = tmp_path / "good.jpg", tmp_path / "cut.jpg"
    good.write_bytes(jpeg_bytes(1))
    data = jpeg_bytes(2)
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    code, out, err = run_module("predict", good, cut, "--weights", KERAS_MODEL, "--json")
    assert code == 1, err
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(good)]
    assert err.splitlines() == [err.splitlines()[0]] and err.startswith(f"error: {cut}: ")
    assert "Traceback" not in err


def test_a_cli_warning_is_one_line_on_stderr():
    code = (
        "import warnings; from signs_jax.errors import cli_main\n"
        "def main(argv):\n"
        "    warnings.warn('/data/train/c: unreadable folder; skipped')\n"
        "    warnings.warn('/data/train/d: unreadable folder; skipped')\n"
        "    return 0\n"
        "raise SystemExit(cli_main(main)([]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [
        "warning: /data/train/c: unreadable folder; skipped",
        "warning: /data/train/d: unreadable folder; skipped",
    ]


# ---------------------------------------------------------------------- 2. damaged checkpoint steps, leftovers


@pytest.fixture(scope="module")
def three_steps(small_signs, tmp_path_factory):
    """A finished 3-epoch run: checkpoint steps 10, 20, 30."""
    workdir = tmp_path_factory.mktemp("three")
    assert run_train("--data-dir", small_signs, "--workdir", workdir, "--run", "r", "--epochs", 3, *TINY) == 0
    return workdir / "r"


def run_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "w" / run.name
    shutil.copytree(run, copy)
    return copy


def best_step(run: Path) -> int:
    """The step with the highest stored score (read from the files, as a user would)."""
    scores = {int(p.parent.parent.name): json.loads(p.read_text())["score"] for p in run.glob("ckpt/*/metrics/metrics")}
    return max(scores, key=scores.get)


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


STEP_FILES = ["_CHECKPOINT_METADATA", "metrics/metrics", "meta/metadata", "variables/_METADATA", "variables/d"]


def damage(step_dir: Path, name: str) -> None:
    for path in [step_dir / name] if (step_dir / name).is_file() else sorted((step_dir / name).iterdir()):
        cut_in_half(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", STEP_FILES)
def test_weights_come_from_another_step_when_any_file_of_the_best_is_damaged(three_steps, tmp_path, capfd, name):
    from signs_jax.checkpoints import restore_variables

    run = run_copy(three_steps, tmp_path)
    best = best_step(run)
    damage(run / "ckpt" / str(best), name)
    capfd.readouterr()
    with pytest.warns(UserWarning) as record:
        _, variables, step = restore_variables(run)
    assert step != best
    lines = messages(record)
    assert len(lines) == 1 and f"step {best}" in lines[0] and f"using step {step}" in lines[0], lines
    assert capfd.readouterr().err == ""  # no orbax logging, no tracebacks from its event loop


@pytest.mark.slow
def test_a_restore_that_fails_part_way_adds_no_warning_of_its_abandoned_coroutines(three_steps, tmp_path, monkeypatch):
    """A damaged array file made orbax give up with its reads' coroutines never awaited: Python's "coroutine ...
    was never awaited" came out beside the one line, when the garbage collector found them (seen in CI)."""
    import gc

    import orbax.checkpoint as ocp

    from signs_jax.checkpoints import restore_variables

    run = run_copy(three_steps, tmp_path)
    best = best_step(run)
    real_restore = ocp.CheckpointManager.restore

    async def read_array():
        return None

    def restore(manager, step, *args, **kwargs):
        if step == best:
            pending = [read_array()]  # noqa: F841 - dropped unawaited with this frame, in a reference cycle
            pending.append(pending)
            raise ValueError("damaged array file")
        return real_restore(manager, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
    with pytest.warns(UserWarning) as record:
        _, _, step = restore_variables(run)
        gc.collect()
    assert step != best
    assert len(messages(record)) == 1 and f"using step {step}" in messages(record)[0], messages(record)


@pytest.mark.slow
def test_predict_from_a_run_with_damaged_weights_says_so_in_one_line(three_steps, tmp_path):
    run = run_copy(three_steps, tmp_path)
    best = best_step(run)
    damage(run / "ckpt" / str(best), "variables/d")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes())
    code, out, err = run_module("predict", photo, "--weights", run, "--json")
    assert code == 0, err
    assert json.loads(out)["path"] == str(photo)
    assert len(err.splitlines()) == 1 and err.startswith("warning: ") and f"step {best}" in err, err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["metrics/metrics", "meta/metadata", "state/_METADATA", "state/d"])
def test_resume_falls_back_from_a_damaged_newest_step(three_steps, tmp_path, capfd, name):
    run = run_copy(three_steps, tmp_path)
    damage(run / "ckpt" / "30", name)
    capfd.readouterr()
    with pytest.warns(UserWarning) as record:
        code = run_train("--workdir", run.parent, "--resume", "--run", "r", "--epochs", 4, "--no-progress")
    assert code == 0
    lines = messages(record)
    assert len(lines) == 1 and "step 30" in lines[0] and "resuming from step 20" in lines[0], lines
    assert "Traceback" not in capfd.readouterr().err
    assert [r["epoch"] for r in metrics_of(run)] == [1, 2, 3, 4]
    assert [p.name.split("-")[0] for p in (run / "damaged").iterdir()] == ["30"]  # moved aside, not deleted
    assert sorted(int(p.name) for p in (run / "ckpt").iterdir() if p.name.isdigit())[-1] == 40


@pytest.mark.slow
def test_no_readable_step_is_one_line_and_loses_nothing(three_steps, tmp_path, capsys):
    run = run_copy(three_steps, tmp_path)
    for step in (10, 20, 30):
        damage(run / "ckpt" / str(step), "metrics/metrics")
    line = error_line(capsys, "--workdir", run.parent, "--resume", "--run", "r", "--epochs", 4, "--no-progress")
    assert "no checkpoint could be restored" in line and "step 10" in line
    assert sorted(p.name for p in (run / "ckpt").iterdir() if p.name.isdigit()) == ["10", "20", "30"]


@pytest.mark.slow
def test_an_unfinished_save_left_by_a_kill_is_no_step_and_no_obstacle(three_steps, tmp_path, capsys):
    """A process killed in the middle of saving step 40 leaves orbax's temporary directory for it."""
    from signs_jax.checkpoints import checkpoint_steps, restore_variables

    run = run_copy(three_steps, tmp_path)
    leftover = run / "ckpt" / "40.orbax-checkpoint-tmp-1234567890"
    shutil.copytree(run / "ckpt" / "30", leftover)
    shutil.rmtree(leftover / "variables")
    (leftover / "commit_success.txt").unlink()
    assert checkpoint_steps(run) == [10, 20, 30]
    assert restore_variables(run)[2] in (10, 20, 30)
    assert run_train("--workdir", run.parent, "--resume", "--run", "r", "--epochs", 4, "--no-progress") == 0
    assert "resuming" in capsys.readouterr().out
    assert checkpoint_steps(run)[-1] == 40 and restore_variables(run, step=40)[2] == 40


# ------------------------------------------------------------------------ 3. odd work directories, full disks


def test_a_work_directory_under_proc_is_one_line(small_signs, capsys):
    line = error_line(capsys, "--data-dir", small_signs, "--workdir", "/proc", "--run", "x", *TINY)
    assert line.startswith("error: /proc/x: cannot create the run directory (")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: room for one tiny checkpoint, not two (skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # the failed run may still hold a file open


@pytest.mark.slow
def test_a_full_disk_during_a_run_is_one_line_and_keeps_the_previous_checkpoint(small_signs, small_disk, capfd):
    from signs_jax.checkpoints import checkpoint_steps, restore_variables

    capfd.readouterr()
    code = run_train("--data-dir", small_signs, "--workdir", small_disk, "--run", "r", "--epochs", 3, *TINY)
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    # which file meets the full disk (a checkpoint, the metrics, the curves) depends on the file system's sizes
    assert err[0].startswith(f"error: {small_disk / 'r'}/") and "(No space left on device); " in err[0]
    run = small_disk / "r"
    kept = checkpoint_steps(run)  # how many fit depends on the files' sizes: one or two of the three
    assert kept in ([10], [10, 20]) and f"the checkpoint of step {kept[-1]} is kept" in err[0]
    assert restore_variables(run)[2] in kept
    assert not list((run / "ckpt").glob("*.orbax-checkpoint-tmp*"))  # the unfinished save is cleared away


def test_a_metrics_line_that_hits_a_full_disk_names_its_file():
    """A full disk while writing a run's files (not only its checkpoints) is one line naming the file."""
    from signs_jax.errors import MachineError
    from signs_jax.rundir import append_jsonl

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(MachineError, match=r"^/dev/full: cannot write \(No space left on device\)$"):
        append_jsonl(Path("/dev/full"), {"epoch": 1})


def test_a_whole_file_write_that_hits_a_full_disk_names_the_file_not_its_temporary(tmp_path):
    from signs_jax.errors import MachineError
    from signs_jax.files import atomic_path

    target = tmp_path / "curves.png"
    with pytest.raises(MachineError, match=rf"^{re.escape(str(target))}: cannot write \(No space left on device\)$"):
        with atomic_path(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a writer such as matplotlib raises
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_recording_an_epoch_says_which_checkpoint_is_kept(small_signs, tmp_path, monkeypatch, capfd):
    import signs_jax.experiment as experiment

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")

    calls = []

    def full_on_the_second(path, record):
        calls.append(record)
        if len(calls) == 2:  # the disk is full from the second epoch's record on
            path.unlink()
            path.symlink_to("/dev/full")
        original(path, record)

    original = experiment.append_jsonl
    monkeypatch.setattr(experiment, "append_jsonl", full_on_the_second)
    capfd.readouterr()
    code = run_train(
        "--data-dir", small_signs, "--workdir", tmp_path, "--run", "r", "--epochs", 2, *TINY, "--recipe", "original"
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    metrics = tmp_path / "r" / "metrics.jsonl"
    assert err[0] == f"error: {metrics}: cannot write (No space left on device); the checkpoint of step 10 is kept"


def test_orbax_reads_left_failing_after_a_damaged_restore_log_nothing(caplog):
    """A failed restore leaves tensorstore reads whose futures fail unobserved; when one is collected, later and
    outside the restore, asyncio logs it with its whole spec ("Future exception was never retrieved"), which
    ended up under the one warning line predict prints."""
    import asyncio
    import gc

    from signs_jax.checkpoints import quiet_orbax

    with pytest.raises(ValueError):
        with quiet_orbax():
            raise ValueError("the restore failed")

    async def async_deserialize():  # a task of orbax's deserialisation, as in the report (named by its module)
        raise ValueError("OUT_OF_RANGE: Error reading params/.zarray in OCDBT database")

    async_deserialize.__qualname__ = "orbax.checkpoint.async_deserialize"
    loop = asyncio.new_event_loop()
    for message in ("OUT_OF_RANGE: Error reading \"params/.zarray\" [tensorstore_spec='{}']", "another failure"):
        future = loop.create_future()
        future.set_exception(ValueError(message))
        del future
        gc.collect()
    task = loop.create_task(async_deserialize())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert task.done()
    del task
    gc.collect()
    loop.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(logged) == 1 and "another failure" in logged[0]  # only orbax's leftovers are dropped


# ------------------------------------------------------------- 6. found by scripts/hostile_suite.py, one line each

TOOLS = ("train", "predict", "evaluate", "keras_h5", "export", "serve", "sweep", "calibrate", "shifts")


@pytest.mark.parametrize("tool", TOOLS)
def test_a_flag_argparse_refuses_is_one_line(tool, capsys):
    import importlib

    module = importlib.import_module(f"signs_jax.{tool}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--no-such-flag", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and err[0].endswith(f"signs_jax.{tool} --help)"), err


def test_an_unknown_recipe_is_one_line_naming_the_flag(capsys):
    with pytest.raises(SystemExit):
        run_train("--recipe", "nope")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--recipe" in err[0] and "nope" in err[0], err


def test_an_h5_test_set_without_images_is_one_line_naming_the_file(tmp_path):
    pair = h5_pair(tmp_path, [0, 1, 2, 3, 4, 5], [])
    with pytest.raises(UserError, match="test_signs.h5.*no images"):
        load_dataset(pair)


def test_more_top_k_than_classes_is_one_line(tmp_path, capsys):
    from signs_jax import predict

    path = tmp_path / "p.png"
    Image.fromarray(photo_array(1)).save(path)
    assert predict.main([str(path), "--weights", KERAS_MODEL, "--top-k", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--top-k 7" in err[0] and "6 classes" in err[0], err


@pytest.mark.parametrize("flag", ["--confusion-png", "--reliability-png", "--gallery"])
def test_a_picture_name_that_is_not_png_is_one_line(flag, tmp_path, capsys):
    from signs_jax import evaluate

    assert evaluate.main(["--weights", KERAS_MODEL, flag, str(tmp_path / "x.xyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and ".png" in err[0], err
    assert not list(tmp_path.iterdir())


def test_init_from_weights_with_more_blocks_than_the_model_is_refused(small_signs, tmp_path, capsys):
    import jax

    import signs_jax

    deeper = signs_jax.ResNet50(6, width=0.0625, stage_sizes=(2, 1, 1, 1))
    source = signs_jax.save_keras_h5(tmp_path / "deeper.h5", signs_jax.init_variables(deeper, jax.random.key(0)))
    line = error_line(
        capsys, "--data-dir", small_signs, "--workdir", tmp_path / "w", "--init-from", source, "--epochs", 1, *TINY
    )
    assert str(source) in line and "stage" in line
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").iterdir())
