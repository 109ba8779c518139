"""Fine-tuning (`train --init-from`): the recipe it picks, where the model's shape comes from, and the guard that
keeps the starting weights when fine-tuning makes the held-out photos worse.

A tiny model is trained for a few epochs on generated pictures (a dark and a bright class) and fine-tuned from.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_bitwise_equal, run_train

TINY_ARCH = ["--width", "0.0625", "--stage-sizes", "1,1,1,1"]
QUIET = ["--no-progress", "--eval-batch-size", "8"]
START_SIDE = 48


def _pictures(root: Path, labels_by_class, per_class: int, side: int, seed: int) -> None:
    """`root/<label>/`: noisy pictures, dark ones (kind 0) and bright ones (kind 1), under the labels given."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for kind, label in enumerate(labels_by_class):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = 50 if kind == 0 else 200
            pixels = np.clip(base + rng.normal(0, 25, (side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{kind}_{seed}_{i}.png")


@pytest.fixture(scope="module")
def start_workdir(tmp_path_factory):
    """A work directory holding one tiny run trained on 48x48 pictures: the weights to fine-tune from."""
    root = tmp_path_factory.mktemp("start")
    _pictures(root / "data" / "train", ("dark", "bright"), 16, START_SIDE, seed=0)
    _pictures(root / "data" / "test", ("dark", "bright"), 4, START_SIDE, seed=1)
    code = run_train(
        "--data-dir",
        root / "data",
        "--workdir",
        root / "runs",
        "--run",
        "start",
        "--epochs",
        2,
        "--batch-size",
        8,
        *TINY_ARCH,
        *QUIET,
    )
    assert code == 0
    return root / "runs"


@pytest.mark.slow
def test_init_from_a_work_directory_picks_the_finetune_recipe_and_the_starting_models_shape(
    start_workdir, tmp_path, capsys
):
    photos = tmp_path / "photos"
    _pictures(photos / "train", ("dark", "bright"), 5, 72, seed=2)  # the photos' own size is not the model's
    _pictures(photos / "test", ("dark", "bright"), 2, 72, seed=3)
    code = run_train(
        "--init-from",
        start_workdir,
        "--data-dir",
        photos,
        "--workdir",
        tmp_path / "w",
        "--run",
        "ft",
        "--epochs",
        1,
        *QUIET,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    config = json.loads((tmp_path / "w" / "ft" / "config.json").read_text())
    assert config["recipe_name"] == "finetune"
    assert config["run"]["init_from"] == str(start_workdir / "start")
    assert config["model"]["input_shape"] == [START_SIDE, START_SIDE, 3]
    assert config["model"]["width"] == 0.0625 and config["model"]["stage_sizes"] == [1, 1, 1, 1]
    assert "starting weights: val" in out and "on 2 held-out images" in out  # one photo of each class of 5


@pytest.mark.slow
def test_image_size_overrides_the_starting_models_size(start_workdir, tmp_path, capsys):
    photos = tmp_path / "photos"
    _pictures(photos / "train", ("dark", "bright"), 4, 72, seed=2)
    _pictures(photos / "test", ("dark", "bright"), 2, 72, seed=3)
    code = run_train(
        "--init-from",
        start_workdir / "start",
        "--data-dir",
        photos,
        "--workdir",
        tmp_path / "w",
        "--run",
        "ft",
        "--epochs",
        1,
        "--image-size",
        40,
        40,
        *QUIET,
    )
    assert code == 0, capsys.readouterr().out
    config = json.loads((tmp_path / "w" / "ft" / "config.json").read_text())
    assert config["model"]["input_shape"] == [40, 40, 3]


@pytest.mark.slow
def test_finetuning_that_makes_the_held_out_photos_worse_keeps_the_starting_weights(start_workdir, tmp_path, capsys):
    """The training photos carry each other's labels, the held-out ones (a val/ folder) the true ones: every step
    of fine-tuning moves away from the held-out labels, so the run must keep the weights it started from."""
    from signs_jax.checkpoints import restore_variables

    photos = tmp_path / "photos"
    _pictures(photos / "train", ("bright", "dark"), 8, START_SIDE, seed=0)  # swapped
    _pictures(photos / "val", ("dark", "bright"), 8, START_SIDE, seed=0)  # the same pictures, true labels
    _pictures(photos / "test", ("dark", "bright"), 2, START_SIDE, seed=1)
    code = run_train(
        "--init-from",
        start_workdir / "start",
        "--data-dir",
        photos,
        "--workdir",
        tmp_path / "w",
        "--run",
        "ft",
        "--epochs",
        3,
        "--lr",
        "1e-2",
        "--batch-size",
        8,
        *QUIET,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "did not beat the starting weights on the 16 held-out images" in out
    assert "the run keeps the starting weights" in out
    _, kept, step = restore_variables(tmp_path / "w" / "ft")
    _, started, _ = restore_variables(start_workdir / "start")
    assert step == 0
    assert_bitwise_equal(kept, started)
    records = [json.loads(line) for line in (tmp_path / "w" / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert max(r["val_loss"] for r in records[1:]) > records[0]["val_loss"]  # fine-tuning really did worse


def test_hold_out_at_least_one_image_of_every_class_that_has_two():
    from signs_jax.data import Dataset, Split, hold_out_validation

    labels = np.array([0] * 1 + [1] * 2 + [2] * 5, np.int32)
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    dataset = Dataset(Split(images, labels), Split(images, labels), ("a", "b", "c"), "generated")
    held = hold_out_validation(dataset, 0.2, seed=0, at_least_one=True)
    assert np.bincount(held.validation.labels, minlength=3).tolist() == [0, 1, 1]
    assert np.bincount(held.train.labels, minlength=3).tolist() == [1, 1, 4]
    assert hold_out_validation(dataset._replace(train=Split(images[:1], labels[:1])), 0.2, 0, True).validation is None


def _signs_like_folder(root: Path, per_class: int, side: int) -> Path:
    """`root/<0..5>/`: a few generated photos under SIGNS's class names, as a user's own photos would be."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for label in range(6):
        (root / str(label)).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / str(label) / f"p{i}.png")
    return root


def test_rehearsal_adds_signs_training_images_to_the_training_part_only(tmp_path):
    """Fine-tuning on one setting's photos rehearses SIGNS: real SIGNS training images of every class join the
    training part, resized to the run's size, while the held-out and test photos stay the user's own."""
    from signs_jax.config import TrainConfig
    from signs_jax.data import load_signs
    from signs_jax.experiment import load_run_data

    folder = _signs_like_folder(tmp_path / "mine", per_class=5, side=64)
    cfg = TrainConfig(recipe_name="finetune").with_recipe()
    cfg = cfg.replace(**{"data.image_size": (64, 64), "recipe.rehearsal_per_class": 3, "run.seed": 1})
    plain = load_run_data(cfg.replace(**{"recipe.rehearsal_per_class": 0}), folder)
    rehearsed = load_run_data(cfg, folder)

    signs = load_signs().train
    assert len(rehearsed.train.labels) == len(plain.train.labels) + 6 * 3
    np.testing.assert_array_equal(rehearsed.validation.images, plain.validation.images)
    np.testing.assert_array_equal(rehearsed.test.images, plain.test.images)
    added = len(plain.train.labels)
    np.testing.assert_array_equal(rehearsed.train.images[:added], plain.train.images)
    for image, label in zip(rehearsed.train.images[added:], rehearsed.train.labels[added:]):
        matches = np.flatnonzero((signs.images == image).all(axis=(1, 2, 3)))
        assert len(matches) >= 1 and signs.labels[matches[0]] == label  # a SIGNS training image, its own class
    assert np.bincount(rehearsed.train.labels[added:], minlength=6).tolist() == [3] * 6
    assert "3 SIGNS training images a class" in rehearsed.source  # in the line a run starts with
    other_seed = load_run_data(cfg.replace(**{"run.seed": 2}), folder)
    assert not np.array_equal(other_seed.train.images[added:], rehearsed.train.images[added:])
    np.testing.assert_array_equal(load_run_data(cfg, folder).train.images, rehearsed.train.images)  # resumable

    small = load_run_data(cfg.replace(**{"data.image_size": (32, 32)}), folder)
    assert small.train.images.shape[1:] == (32, 32, 3) and len(small.train.labels) == len(rehearsed.train.labels)


def test_rehearsal_leaves_other_classes_alone(tmp_path):
    """Photos of other classes than SIGNS's: SIGNS images would teach wrong labels, so none are added."""
    from signs_jax.config import TrainConfig
    from signs_jax.experiment import load_run_data

    _pictures(tmp_path / "mine", ("dark", "bright"), 6, 32, seed=0)
    cfg = TrainConfig(recipe_name="finetune").with_recipe().replace(**{"recipe.rehearsal_per_class": 3})
    dataset = load_run_data(cfg, tmp_path / "mine")
    assert len(dataset.train.labels) + len(dataset.validation.labels) + len(dataset.test.labels) == 12


@pytest.mark.slow
def test_finetuning_photos_of_the_signs_classes_rehearses_signs(start_workdir, tmp_path, capsys):
    photos = _signs_like_folder(tmp_path / "photos", per_class=3, side=72)  # 1 test, 1 held out, 1 trained on
    args = ["--init-from", start_workdir, "--data-dir", photos, "--epochs", 1, *QUIET]
    assert run_train(*args, "--workdir", tmp_path / "default") == 0
    assert "+ 10 SIGNS training images a class (rehearsal), 66 train / 6 test images" in capsys.readouterr().out
    code = run_train(*args, "--workdir", tmp_path / "w", "--set", "recipe.rehearsal_per_class=0")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(rehearsal)" not in out and ", 6 train / 6 test images" in out


def test_rehearsal_of_more_images_than_signs_has_rehearses_them_all(tmp_path):
    from signs_jax.config import TrainConfig
    from signs_jax.experiment import load_run_data

    folder = _signs_like_folder(tmp_path / "mine", per_class=3, side=64)
    cfg = TrainConfig(recipe_name="finetune").with_recipe().replace(**{"recipe.rehearsal_per_class": 1000})
    dataset = load_run_data(cfg, folder)
    assert np.bincount(dataset.train.labels, minlength=6).tolist() == [180 + 1] * 6
    assert "+ 180 SIGNS training images a class" in dataset.source  # what it rehearsed, not what was asked
