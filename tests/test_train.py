"""Training: reproducibility, exact resume (in-process and after a real SIGINT), checkpoint faults, bad inputs.

Runs use a shallow, narrow variant of the same model on a small slice of the real SIGNS data, so
each compiles in seconds; in-process runs of one configuration share their compiled steps.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import ROOT, TINY, assert_bitwise_equal, error_line, final_params, metrics_of, run_train, shallow_keras_h5
from signs_jax import evaluate


@pytest.fixture(scope="module")
def reference_run(small_signs, tmp_path_factory):
    """An uninterrupted 3-epoch run: the yardstick for reproducibility and resume."""
    workdir = tmp_path_factory.mktemp("ref")
    assert run_train("--data-dir", small_signs, "--workdir", workdir, "--run", "ref", "--epochs", 3, *TINY) == 0
    return workdir / "ref"


@pytest.mark.slow
def test_a_run_writes_metrics_curves_results_and_checkpoints(reference_run):
    records = metrics_of(reference_run)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(0 <= r["test_accuracy"] <= 1 and np.isfinite(r["train_loss"]) for r in records)
    assert (reference_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, row = (reference_run / "Result.csv").read_text().splitlines()
    assert "test_accuracy_no_near_copies" in header and row.startswith("ref,default,3,16,")
    config = json.loads((reference_run / "config.json").read_text())
    assert config["model"]["stage_sizes"] == [1, 1, 1, 1]


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(reference_run, small_signs, tmp_path):
    assert run_train("--data-dir", small_signs, "--workdir", tmp_path, "--run", "again", "--epochs", 3, *TINY) == 0
    assert metrics_of(tmp_path / "again") == metrics_of(reference_run)
    assert_bitwise_equal(final_params(tmp_path / "again"), final_params(reference_run))


@pytest.mark.slow
def test_another_seed_gives_other_numbers(reference_run, small_signs, tmp_path):
    assert (
        run_train("--data-dir", small_signs, "--workdir", tmp_path, "--run", "s1", "--epochs", 1, "--seed", 1, *TINY)
        == 0
    )
    assert metrics_of(tmp_path / "s1")[0]["train_loss"] != metrics_of(reference_run)[0]["train_loss"]


@pytest.mark.slow
def test_a_recipe_that_tests_and_saves_once_reports_the_test_accuracy_of_the_weights_it_keeps(
    small_signs, tmp_path, capsys
):
    """recipe.test_each_epoch and save_each_epoch false (as in the fast recipe): no test pass and no checkpoint per
    epoch, one of each at the end; evaluate agrees. Every epoch records its timing (scripts/speedrun.py reads it)."""
    args = ["--data-dir", small_signs, "--workdir", tmp_path, "--run", "once", "--epochs", 2, *TINY]
    assert run_train(*args, "--set", "recipe.test_each_epoch=false", "--set", "recipe.save_each_epoch=false") == 0
    run = tmp_path / "once"
    assert sorted(p.name for p in (run / "ckpt").iterdir() if p.name.isdigit()) == [str(2 * (160 // 16))]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and not any("test_accuracy" in r for r in records)
    assert all(0 < r["median_step_seconds"] <= r["train_seconds"] and r["first_step_seconds"] > 0 for r in records)
    header, row = (run / "Result.csv").read_text().splitlines()
    result = dict(zip(header.split(","), row.split(",")))
    capsys.readouterr()
    assert evaluate.main(["--weights", str(run), "--data-dir", str(small_signs), "--batch-size", "40", "--json"]) == 0
    assert float(result["test_accuracy"]) == pytest.approx(json.loads(capsys.readouterr().out)["accuracy"])


@pytest.mark.slow
def test_sigint_saves_and_resume_ends_bit_for_bit_equal(reference_run, small_signs, tmp_path):
    """A real process gets SIGINT mid-run, saves, exits 0; --resume finishes with the uninterrupted result."""
    cmd = [
        sys.executable,
        "-m",
        "signs_jax.train",
        "--data-dir",
        str(small_signs),
        "--workdir",
        str(tmp_path),
        "--run",
        "cut",
        "--epochs",
        "3",
        *TINY,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:  # wait until training is really under way
        lines.append(line)
        if line.startswith("epoch   1/3"):
            proc.send_signal(signal.SIGINT)
            break
    out, _ = proc.communicate(timeout=300)
    output = "".join(lines) + out
    assert proc.returncode == 0, output
    assert "saved step" in output, output
    saved_step = max(int(p.name) for p in (tmp_path / "cut" / "ckpt").iterdir() if p.name.isdigit())
    assert saved_step < 30  # 3 epochs x 10 steps: it really stopped early
    assert "Traceback" not in output

    assert run_train("--workdir", tmp_path, "--resume", "--run", "cut", "--no-progress") == 0
    assert metrics_of(tmp_path / "cut") == metrics_of(reference_run)
    assert_bitwise_equal(final_params(tmp_path / "cut"), final_params(reference_run))


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_an_older_one(reference_run, tmp_path, capsys):
    run_dir = tmp_path / "ref"
    shutil.copytree(reference_run, run_dir)
    steps = sorted(int(p.name) for p in (run_dir / "ckpt").iterdir() if p.name.isdigit())
    newest = run_dir / "ckpt" / str(steps[-1]) / "state"
    for f in newest.rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0" * 7)
    with pytest.warns(UserWarning, match=f"resuming from step {steps[-2]}: step {steps[-1]}: .* is damaged"):
        assert run_train("--workdir", tmp_path, "--resume", "--run", "ref", "--epochs", 4, "--no-progress") == 0
    assert f"at epoch 3, step {steps[-2]}" in capsys.readouterr().out
    assert [r["epoch"] for r in metrics_of(run_dir)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message(small_signs, tmp_path, capsys):
    code = run_train(
        "--data-dir", small_signs, "--workdir", tmp_path, "--run", "nan", "--epochs", 1, "--lr", "1e30", *TINY
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "loss became" in err and "no checkpoint had been saved yet" in err  # epoch 1: none to keep


# ------------------------------------------------------------------------------------ bad inputs


def test_missing_data_says_what_and_where(tmp_path, capsys):
    line = error_line(capsys, "--data-dir", tmp_path / "nowhere", "--workdir", tmp_path / "w", *TINY)
    assert "train_signs.h5" in line and f"--data-dir {tmp_path / 'nowhere'}: " in line


def test_one_missing_h5_file_is_named(small_signs, tmp_path, capsys):
    shutil.copy(small_signs / "train_signs.h5", tmp_path)
    line = error_line(capsys, "--data-dir", tmp_path, "--workdir", tmp_path / "w", *TINY)
    assert "test_signs.h5: missing" in line
    assert list((tmp_path / "w").iterdir()) == []  # a failed start leaves no half-made run behind


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda f: f.__delitem__("train_set_y"), "no dataset train_set_y"),
        (
            lambda f: (
                f.__delitem__("train_set_x"),
                f.create_dataset("train_set_x", data=np.zeros((160, 64, 64), np.uint8)),
            ),
            "expected (N, H, W, 3)",
        ),
        (
            lambda f: (
                f.__delitem__("train_set_x"),
                f.create_dataset("train_set_x", data=np.zeros((160, 64, 64, 3), np.float32)),
            ),
            "expected uint8",
        ),
        (lambda f: f["train_set_y"].__setitem__(0, 9), "labels [9] outside 0..5"),
    ],
    ids=["missing-key", "wrong-shape", "wrong-dtype", "bad-label"],
)
def test_bad_h5_contents(mutate, expected, small_signs, tmp_path, capsys):
    for name in ("train_signs.h5", "test_signs.h5"):
        shutil.copy(small_signs / name, tmp_path)
    with h5py.File(tmp_path / "train_signs.h5", "r+") as f:
        mutate(f)
    line = error_line(capsys, "--data-dir", tmp_path, "--workdir", tmp_path / "w", *TINY)
    assert str(tmp_path / "train_signs.h5") in line and expected in line


def test_workdir_that_cannot_be_created(small_signs, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = error_line(capsys, "--data-dir", small_signs, "--workdir", blocker / "runs", *TINY)
    assert "cannot create the work directory" in line


@pytest.mark.slow
def test_existing_run_is_not_overwritten(reference_run, capsys):
    line = error_line(capsys, "--workdir", reference_run.parent, "--run", "ref", "--data-dir", "x", *TINY)
    assert "already exists" in line


def _jpeg_folders(root: Path, data_dir: Path, classes, size):
    from PIL import Image

    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        x, y = np.asarray(f["test_set_x"]), np.asarray(f["test_set_y"])
    for split, per_class in (("train", 12), ("test", 4)):
        for c in classes:
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in np.flatnonzero(y == c)[:per_class] if split == "train" else np.flatnonzero(y == c)[-per_class:]:
                Image.fromarray(x[i]).resize(size).save(folder / f"{i}.jpg")


@pytest.mark.slow
def test_image_folders_with_another_class_count_and_size_train_end_to_end(data_dir, tmp_path, capsys):
    _jpeg_folders(tmp_path / "data", data_dir, classes=(0, 2, 5), size=(80, 72))
    (tmp_path / "data" / "train" / "class_0" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        code = run_train(
            "--data-dir", tmp_path / "data", "--workdir", tmp_path / "w", "--run", "folders", "--epochs", 1, *TINY
        )
    assert code == 0
    config = json.loads((tmp_path / "w" / "folders" / "config.json").read_text())
    assert config["model"]["num_classes"] == 3
    assert config["model"]["input_shape"] == [72, 80, 3]
    assert config["model"]["class_names"] == ["class_0", "class_2", "class_5"]
    assert (tmp_path / "w" / "folders" / "Result.csv").exists()


def test_empty_image_folder(tmp_path, capsys):
    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "test").mkdir(parents=True)
    line = error_line(capsys, "--data-dir", tmp_path / "data", "--workdir", tmp_path / "w", *TINY)
    assert "no images" in line


@pytest.mark.slow
def test_init_from_keras_h5_replaces_a_head_of_another_class_count(data_dir, tmp_path, capsys):
    """A six-class Keras .h5 (a shallow one, written by save_keras_h5: reading real Keras files is tested in
    test_keras_parity) starts a two-class run: the trunk comes from the file, the Dense head starts fresh."""
    import signs_jax

    h5 = shallow_keras_h5(tmp_path / "six.h5", num_classes=6, seed=3)
    _jpeg_folders(tmp_path / "data", data_dir, classes=(1, 3), size=(64, 64))
    code = run_train(
        "--data-dir",
        tmp_path / "data",
        "--workdir",
        tmp_path / "w",
        "--run",
        "tl",
        "--epochs",
        1,
        "--init-from",
        h5,
        *TINY,
        "--lr",
        "1e-9",
    )
    assert code == 0, capsys.readouterr().err
    assert "the Dense head starts fresh" in capsys.readouterr().out
    start = signs_jax.load_keras_h5(h5)[1]["params"]
    trained = final_params(tmp_path / "w" / "tl")["params"]
    assert trained["fc"]["kernel"].shape == (start["fc"]["kernel"].shape[0], 2)
    np.testing.assert_allclose(trained["res5a"]["branch2b"]["kernel"], start["res5a"]["branch2b"]["kernel"], atol=1e-6)


@pytest.mark.slow
def test_default_recipe_keeps_conv_biases_frozen_and_original_trains_them(reference_run, small_signs, tmp_path):
    """Conv biases feed BatchNorms (zero true gradient): the default freezes them, the original (Keras) does not."""
    params = final_params(reference_run)["params"]
    assert not np.any(params["conv1"]["bias"]) and not np.any(params["res2a"]["branch2b"]["bias"])
    assert np.any(params["fc"]["bias"]) and np.any(params["res2a"]["bn_branch2b"]["bias"])
    assert (
        run_train(
            "--data-dir",
            small_signs,
            "--workdir",
            tmp_path,
            "--run",
            "orig",
            "--recipe",
            "original",
            "--epochs",
            1,
            *TINY,
        )
        == 0
    )
    assert np.any(final_params(tmp_path / "orig")["params"]["conv1"]["bias"])


def test_image_folders_take_the_size_of_the_first_readable_image_as_shown_and_convert_modes(tmp_path):
    from PIL import Image

    from signs_jax.data import load_image_folders

    a, b, test = tmp_path / "train" / "a", tmp_path / "train" / "b", tmp_path / "test"
    for folder in (a, b, test / "a", test / "b"):
        folder.mkdir(parents=True)
    (a / "00_broken.jpg").write_bytes(b"not a jpeg")  # sorts first: the size must come from the next file
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80 wide x 72 high, shown rotated: 72 wide x 80 high
    Image.new("RGB", (80, 72), (200, 10, 10)).save(a / "01_rotated.jpg", exif=exif)
    Image.new("RGBA", (72, 80), (0, 0, 0, 0)).save(a / "02_transparent.png")
    Image.fromarray(np.full((80, 72), 65535, np.uint16)).save(b / "16bit.png")
    for cls in ("a", "b"):
        Image.new("L", (72, 80), 100).save(test / cls / "grey.png")

    with pytest.warns(UserWarning, match="00_broken.jpg"):
        dataset = load_image_folders(tmp_path / "train", test)
    assert dataset.train.images.shape == (3, 80, 72, 3) and dataset.train.images.dtype == np.uint8
    assert dataset.train.images[1].min() == 255  # transparency on white, not black
    assert dataset.train.images[2].min() == 255  # 16-bit white stays white (not clipped from 65535)
    assert list(dataset.train.labels) == [0, 0, 1]


@pytest.mark.slow
def test_a_run_logs_steps_epochs_and_pictures_to_tensorboard(reference_run):
    from test_tensorboard import read_events

    events = read_events(reference_run)
    records = metrics_of(reference_run)
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, records[-1]["step"] + 1))
    rates = [e.value for e in events.Scalars("train/learning_rate")]
    assert rates[0] < max(rates) and rates[-1] < max(rates)  # the default recipe's warm-up and cosine decay
    logged = [(e.step, e.value) for e in events.Scalars("epoch/test_accuracy")]
    assert logged == [(r["step"], pytest.approx(r["test_accuracy"])) for r in records]
    assert {"images/augmented_batch", "images/confusion_matrix"} <= set(events.Tags()["images"])
