"""The SIGNS copy inside the package: its contents, its checksums, and where the tools find their data."""

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

# TINY: the run shape test_evaluate trains too (shared compiles)
from helpers import KERAS_FILES, PREDICT_BATCH, ROOT, TINY
from signs_jax import cli, data, evaluate, train
from signs_jax.config import PACKAGED_DATA, DataConfig, TrainConfig
from signs_jax.errors import UserError

PACKAGED = data.PACKAGED_SIGNS  # the real one, also while a test points data.PACKAGED_SIGNS elsewhere
SHARED_SIGNS = ROOT.parent / "shared" / "datasets" / "signs"
LAYOUT = {
    "train_signs.h5": ("train_set_x", "train_set_y", "list_classes"),
    "test_signs.h5": ("test_set_x", "test_set_y", "list_classes"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy_pair(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for name in LAYOUT:
        shutil.copy(source / name, target / name)
    return target


def stand_in_package(monkeypatch, directory: Path) -> None:
    """Make `directory` the packaged copy, with the checksums of its files as they are now."""
    monkeypatch.setattr(data, "PACKAGED_SIGNS", directory)
    monkeypatch.setattr(data, "PACKAGED_SHA256", {name: sha256(directory / name) for name in LAYOUT})


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """A current directory without ./datasets, and no $SIGNS_DATA_DIR."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(cli.DATA_DIR_ENV, raising=False)
    return cwd


# ---------------------------------------------------------------------------------- the packaged copy


def test_packaged_signs_hold_the_whole_data_set():
    dataset = data.load_signs()
    assert dataset.source.startswith(data.PACKAGED_SOURCE)
    assert dataset.train.images.shape == (1080, 64, 64, 3) and dataset.test.images.shape == (120, 64, 64, 3)
    assert dataset.train.images.dtype == dataset.test.images.dtype == np.uint8
    assert dataset.class_names == ("0", "1", "2", "3", "4", "5")
    assert np.bincount(dataset.train.labels, minlength=6).tolist() == [180] * 6
    assert np.bincount(dataset.test.labels, minlength=6).tolist() == [20] * 6


def test_packaged_files_keep_the_course_layout_compressed():
    for name, keys in LAYOUT.items():
        with h5py.File(PACKAGED / name, "r") as f:
            assert sorted(f.keys()) == sorted(keys)
            images = f[keys[0]]
            assert images.dtype == np.uint8 and images.compression == "gzip" and images.compression_opts == 9
            assert images.chunks is not None and images.chunks[0] < images.shape[0]
    assert sum((PACKAGED / name).stat().st_size for name in LAYOUT) < 9_000_000


@pytest.mark.skipif(not (SHARED_SIGNS / "test_signs.h5").exists(), reason=f"{SHARED_SIGNS} not found")
def test_packaged_pixels_are_the_originals():
    for name, keys in LAYOUT.items():
        with h5py.File(PACKAGED / name, "r") as packaged, h5py.File(SHARED_SIGNS / name, "r") as original:
            for key in keys:
                assert packaged[key].dtype == original[key].dtype, (name, key)
                assert np.array_equal(packaged[key][()], original[key][()]), (name, key)


def flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside the compressed pixels
    path.write_bytes(bytes(raw))


def set_a_pixel(path: Path) -> None:
    with h5py.File(path, "r+") as f:  # a valid file, edited
        key = [k for k in f if k.endswith("_set_x")][0]
        f[key][0, 0, 0, 0] = (int(f[key][0, 0, 0, 0]) + 1) % 256


@pytest.mark.parametrize("damage", [flip_a_byte, set_a_pixel])
@pytest.mark.parametrize("name", list(LAYOUT))
def test_a_damaged_packaged_file_is_one_line(damage, name, tmp_path, monkeypatch):
    copy = copy_pair(PACKAGED, tmp_path / "dataset")
    damage(copy / name)
    monkeypatch.setattr(data, "PACKAGED_SIGNS", copy)  # the shipped checksums stay
    with pytest.raises(UserError) as err:
        data.load_signs()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{copy / name}: ") and "damaged" in message
    assert "reinstall" in message


def test_a_missing_packaged_file_is_one_line(tmp_path, monkeypatch):
    copy = copy_pair(PACKAGED, tmp_path / "dataset")
    (copy / "test_signs.h5").unlink()
    monkeypatch.setattr(data, "PACKAGED_SIGNS", copy)
    with pytest.raises(UserError) as err:
        data.load_signs()
    assert str(err.value).startswith(f"{copy / 'test_signs.h5'}: ") and "reinstall" in str(err.value)


def test_user_directories_are_not_checksummed(tmp_path):
    copy = copy_pair(PACKAGED, tmp_path / "mine")
    set_a_pixel(copy / "train_signs.h5")
    assert data.load_dataset(copy).train.images[0, 0, 0, 0] != data.load_signs().train.images[0, 0, 0, 0]


@pytest.mark.slow
def test_the_tools_report_a_damaged_packaged_file(nowhere, tmp_path, monkeypatch, capsys):
    copy = copy_pair(PACKAGED, tmp_path / "dataset")
    flip_a_byte(copy / "train_signs.h5")
    monkeypatch.setattr(data, "PACKAGED_SIGNS", copy)
    assert train.main(["--workdir", str(tmp_path / "w"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {copy / 'train_signs.h5'}: ") and "damaged" in err[0], err


# ---------------------------------------------------------------------------------------- resolution


def test_resolution_order(nowhere, small_signs, tmp_path, monkeypatch):
    assert cli.data_dir() == PACKAGED
    (nowhere / "datasets").mkdir()
    assert cli.data_dir() == PACKAGED  # an empty ./datasets is not data
    copy_pair(small_signs, nowhere / "datasets" / "signs")
    assert cli.data_dir() == PACKAGED  # nor is one with the data a level deeper
    for name in LAYOUT:
        shutil.copy(small_signs / name, nowhere / "datasets")
    assert cli.data_dir() == Path("datasets")
    monkeypatch.setenv(cli.DATA_DIR_ENV, str(small_signs))
    assert cli.data_dir() == small_signs
    folders = tmp_path / "folders"
    (folders / "train").mkdir(parents=True)
    (folders / "test").mkdir()
    assert cli.data_dir(str(folders)) == folders


@pytest.mark.parametrize("given_by", ["--data-dir", "$SIGNS_DATA_DIR"])
def test_a_named_directory_without_data_is_an_error_not_a_fallback(given_by, nowhere, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    if given_by == "--data-dir":
        call = lambda: cli.data_dir(str(empty))  # noqa: E731
    else:
        monkeypatch.setenv(cli.DATA_DIR_ENV, str(empty))
        call = cli.data_dir
    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{given_by} {empty}: ") and "train_signs.h5" in message


def test_the_packaged_copy_is_recorded_by_name(tmp_path, small_signs, monkeypatch):
    def recorded(directory):
        return TrainConfig(data=DataConfig(dir=directory))

    record = cli.data_record(PACKAGED)
    assert record == PACKAGED_DATA and str(PACKAGED.parent) not in record  # no path a reinstall would break
    assert cli.recorded_data_dir(recorded(record), tmp_path) == PACKAGED
    monkeypatch.chdir(small_signs.parent)
    record = cli.data_record(Path(small_signs.name))
    assert record == str(small_signs)  # absolute: found again from any current directory
    monkeypatch.chdir(tmp_path)
    assert cli.recorded_data_dir(recorded(record), tmp_path) == small_signs
    with pytest.raises(UserError) as err:
        cli.recorded_data_dir(recorded(str(tmp_path / "gone")), tmp_path / "run")
    assert str(tmp_path / "gone") in str(err.value) and str(tmp_path / "run") in str(err.value)


# ------------------------------------------------------------------------------- the tools, end to end


@pytest.fixture(scope="module")
def packaged_run(small_signs, tmp_path_factory):
    """A tiny run trained with no data named: on the packaged copy (here a 160/40-image stand-in)."""
    base = tmp_path_factory.mktemp("packaged_run")
    stand_in = copy_pair(small_signs, base / "dataset")
    cwd = base / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        stand_in_package(mp, stand_in)
        mp.chdir(cwd)
        mp.delenv(cli.DATA_DIR_ENV, raising=False)
        mp.setenv("SIGNS_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "jax_cache"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = train.main(
                ["--workdir", str(base / "runs"), "--run", "p", "--epochs", "1", "--recipe", "original", *TINY]
            )
    assert code == 0
    return base / "runs" / "p", stand_in, out.getvalue()


def evaluate_json(capsys, *args):
    assert evaluate.main([*map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_train_uses_and_records_the_packaged_copy(packaged_run):
    run, _, output = packaged_run
    assert f"{data.PACKAGED_SOURCE} (h5), 160 train / 40 test images" in output
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["dir"] == PACKAGED_DATA


@pytest.mark.slow
def test_evaluate_a_run_on_the_data_it_was_trained_on(packaged_run, nowhere, monkeypatch, capsys):
    run, stand_in, _ = packaged_run
    stand_in_package(monkeypatch, stand_in)
    monkeypatch.setenv(cli.DATA_DIR_ENV, str(PACKAGED))  # 120 test images: a standing default, not this run's data
    for weights in (["--weights", run], ["--workdir", run.parent]):
        result = evaluate_json(capsys, *weights)
        assert result["examples"] == 40 and result["data"].startswith(data.PACKAGED_SOURCE)
    assert evaluate_json(capsys, "--weights", run, "--data-dir", PACKAGED)["examples"] == 120  # asked for


@pytest.mark.slow
def test_evaluate_a_run_that_recorded_a_directory(packaged_run, small_signs, nowhere, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(packaged_run[0], run)
    recorded = copy_pair(small_signs, tmp_path / "recorded")
    with h5py.File(recorded / "test_signs.h5", "r+") as f:  # 20 of the 40 test images: told apart by the count
        x, y = f["test_set_x"][:20], f["test_set_y"][:20]
        del f["test_set_x"], f["test_set_y"]
        f["test_set_x"], f["test_set_y"] = x, y
    config = json.loads((run / "config.json").read_text())
    config["data"]["dir"] = str(recorded)
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv(cli.DATA_DIR_ENV, str(small_signs))
    assert evaluate_json(capsys, "--weights", run)["examples"] == 20
    shutil.rmtree(recorded)
    assert evaluate.main(["--weights", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(recorded) in err[0] and "--data-dir" in err[0], err


def test_evaluate_a_keras_file_on_the_packaged_copy_by_default(nowhere, capsys):
    result = evaluate_json(capsys, "--weights", KERAS_FILES["keras2_model"], *PREDICT_BATCH)
    assert result["examples"] == 120 and result["data"].startswith(data.PACKAGED_SOURCE)
