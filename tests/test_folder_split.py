"""A folder of class sub-folders without a train/test split: the seeded, stratified split, its record, its check."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signs_jax import cli, data, evaluate
from signs_jax.errors import UserError
from signs_jax.images import DEFAULT_INTERPOLATION, Decoding

CLASSES = ("cat", "dog", "fox")
PER_CLASS = 7
SIZE = 16


def shade(class_index: int, image_index: int) -> int:
    """The grey level of image `image_index` of class `class_index`: every generated image has its own."""
    return 10 + 60 * class_index + 5 * image_index


def write_image(path: Path, level: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIZE, SIZE, 3), level, np.uint8)).save(path)  # PNG: the level survives exactly


@pytest.fixture
def folder(tmp_path) -> Path:
    """3 classes x 7 PNG images, each a flat grey of its own level, plus a stray text file and a hidden folder."""
    root = tmp_path / "photos"
    for c, name in enumerate(CLASSES):
        for i in range(PER_CLASS):
            write_image(root / name / f"img{i}.png", shade(c, i))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".thumbnails").mkdir()
    return root


def level_of(name: str) -> int:
    cls, file = name.split("/")
    return shade(CLASSES.index(cls), int(file[len("img") : -len(".png")]))


def assert_files_match_images(dataset, split: str) -> None:
    """The n-th file named for a split is the n-th image of it, with its class's label."""
    names, images = dataset.files[split], getattr(dataset, split)
    assert len(names) == len(images.labels)
    for name, image, label in zip(names, images.images, images.labels):
        assert image.shape == (SIZE, SIZE, 3) and np.all(image == level_of(name)), name
        assert dataset.class_names[label] == name.split("/")[0], name


def everything() -> set:
    return {f"{c}/img{i}.png" for c in CLASSES for i in range(PER_CLASS)}


def one_line_error(call) -> str:
    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------- the split


def test_holds_data_accepts_a_folder_of_class_folders(folder, tmp_path):
    assert data.holds_data(folder)
    assert cli.data_dir(str(folder)) == folder
    deeper = tmp_path / "deeper"
    (deeper / "photos").mkdir(parents=True)  # class folders one level down are not this folder's data
    (folder).rename(deeper / "photos" / "inner")
    assert not data.holds_data(deeper)


def test_the_split_is_stratified_disjoint_and_complete(folder):
    dataset = data.load_dataset(folder, test_fraction=0.3, seed=0)
    assert dataset.class_names == CLASSES and dataset.image_shape == (SIZE, SIZE, 3)
    assert set(dataset.files) == {"train", "test"} and dataset.validation is None
    assert np.bincount(dataset.test.labels, minlength=3).tolist() == [2, 2, 2]  # round(7 * 0.3)
    assert np.bincount(dataset.train.labels, minlength=3).tolist() == [5, 5, 5]
    train, test = set(dataset.files["train"]), set(dataset.files["test"])
    assert not train & test and train | test == everything()
    for split in ("train", "test"):
        assert_files_match_images(dataset, split)
    assert "class folders" in dataset.source and str(folder) in dataset.source


def test_the_split_is_the_same_for_a_seed_and_differs_across_seeds(folder):
    first = data.load_dataset(folder, seed=4).files
    assert data.load_dataset(folder, seed=4).files == first
    test_sets = {frozenset(data.load_dataset(folder, seed=seed).files["test"]) for seed in range(6)}
    assert len(test_sets) > 1


def test_the_split_does_not_depend_on_the_listing_order():
    names = [f"{c}/img{i}.png" for c in CLASSES for i in range(PER_CLASS)]
    classes = [n.split("/")[0] for n in names]
    _, test = data.split_class_folders(names, classes, 0.3, seed=2)
    shuffled = list(zip(names, classes))
    random.Random(0).shuffle(shuffled)
    _, test_shuffled = data.split_class_folders([n for n, _ in shuffled], [c for _, c in shuffled], 0.3, seed=2)
    assert {names[i] for i in test} == {shuffled[i][0] for i in test_shuffled}


def test_every_class_of_two_gives_one_test_image_and_keeps_one():
    names = ["a/1", "a/2", "b/1", "c/1", "c/2", "c/3", "c/4", "c/5", "c/6", "c/7", "c/8", "c/9", "c/10", "c/11"]
    classes = [n.split("/")[0] for n in names]
    for fraction in (0.01, 0.99):
        train, test = data.split_class_folders(names, classes, fraction, seed=0)
        test_classes = sorted(classes[i] for i in test)
        # a: 2 images -> 1 test; b: 1 image -> none; c: 11 images -> 1 (at least one) or 10 (never the last)
        assert test_classes == ["a"] + ["c"] * (1 if fraction < 0.5 else 10)
        assert sorted(train + test) == list(range(len(names)))


def test_validation_hold_out_moves_the_file_names_too(folder):
    dataset = data.hold_out_validation(data.load_dataset(folder, seed=1), 0.25, seed=1, at_least_one=True)
    assert set(dataset.files) == {"train", "validation", "test"}
    assert len(dataset.files["validation"]) == len(dataset.validation.labels) >= 3
    for split in ("train", "validation", "test"):
        assert_files_match_images(dataset, split)
    parts = [set(dataset.files[s]) for s in ("train", "validation", "test")]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 3 * PER_CLASS


def test_h5_and_split_folders_have_no_file_names(folder, small_signs):
    assert data.load_dataset(small_signs).files is None
    split = folder.parent / "split"
    for part in ("train", "test"):
        for c in CLASSES:
            write_image(split / part / c / "x.png", 50)
    assert data.load_dataset(split).files is None


# -------------------------------------------------------------------------------- layouts and errors


def test_a_folder_with_train_and_test_folders_is_read_as_split(folder):
    for part in ("train", "test"):
        for c in CLASSES[:2]:
            write_image(folder / part / c / "x.png", 50)
    dataset = data.load_dataset(folder)
    assert dataset.files is None and dataset.class_names == CLASSES[:2]
    assert len(dataset.train.labels) == len(dataset.test.labels) == 2


@pytest.mark.parametrize("half", ["train", "test_photos"])
def test_half_a_split_beside_class_folders_is_one_line(folder, half):
    write_image(folder / half / "x.png", 50)
    message = one_line_error(lambda: data.load_dataset(folder))
    assert message.startswith(f"{folder}: ") and f"{half}/" in message


def test_an_empty_class_folder_is_one_line(folder):
    (folder / "emu").mkdir()
    (folder / "emu" / "readme.txt").write_text("photos to come")
    message = one_line_error(lambda: data.load_dataset(folder))
    assert message.startswith(f"{folder / 'emu'}: ") and "no images" in message


def test_one_class_is_one_line(tmp_path):
    for i in range(3):
        write_image(tmp_path / "only" / "cat" / f"{i}.png", 9 * i)
    message = one_line_error(lambda: data.load_dataset(tmp_path / "only"))
    assert message.startswith(f"{tmp_path / 'only'}: ") and "one class" in message


def test_too_few_images_to_test_on_is_one_line(tmp_path):
    for c in CLASSES:
        write_image(tmp_path / "few" / c / "1.png", 9)
    message = one_line_error(lambda: data.load_dataset(tmp_path / "few"))
    assert message.startswith(f"{tmp_path / 'few'}: ") and "test set" in message


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_a_test_fraction_outside_zero_to_one_is_one_line(folder, fraction):
    assert "--test-fraction" in one_line_error(lambda: data.load_dataset(folder, test_fraction=fraction))


# ---------------------------------------------------------------------------------- recorded splits


def recorded(folder: Path, run: Path, seed: int = 0) -> Path:
    """A run's split record, written as a trainer does: after the validation hold-out."""
    run.mkdir(exist_ok=True)
    dataset = data.hold_out_validation(data.load_dataset(folder, seed=seed), 0.2, seed, at_least_one=True)
    path = data.write_split(dataset, run / data.SPLIT_FILE)
    assert path == run / data.SPLIT_FILE
    return path


def test_a_written_split_holds_every_split_by_relative_name(folder, tmp_path):
    dataset = data.hold_out_validation(data.load_dataset(folder), 0.2, 0, at_least_one=True)
    path = data.write_split(dataset, tmp_path / "split.json")
    files = json.loads(path.read_text())["files"]
    assert {k: tuple(v) for k, v in files.items()} == dataset.files
    assert set().union(*files.values()) == everything()  # relative, "/"-separated: found on any machine
    assert data.read_split(path) == dataset.files


def test_no_split_is_written_for_data_that_comes_split(small_signs, tmp_path):
    assert data.write_split(data.load_dataset(small_signs), tmp_path / "split.json") is None
    assert not (tmp_path / "split.json").exists()


def test_the_same_folder_and_seed_pass_the_check(folder, tmp_path):
    split = recorded(folder, tmp_path / "run", seed=3)
    data.check_split(data.load_dataset(folder, seed=3), split)
    dataset = data.load_run_test_data(folder, None, data.DEFAULT_TEST_FRACTION, 3, split)
    assert set(dataset.files["test"]) == set(data.read_split(split)["test"])


def test_another_seed_fails_the_check(folder, tmp_path):
    split = recorded(folder, tmp_path / "run", seed=0)
    other = next(
        s for s in range(1, 20) if data.load_dataset(folder, seed=s).files["test"] != data.read_split(split)["test"]
    )
    message = one_line_error(lambda: data.check_split(data.load_dataset(folder, seed=other), split))
    assert message.startswith(f"{folder}: ") and "0 image(s) added, 0 removed" in message and "trained on" in message


def test_added_images_that_change_the_test_set_fail_the_check(folder, tmp_path):
    split = recorded(folder, tmp_path / "run")
    for i in range(PER_CLASS, PER_CLASS + 2):  # 9 fox images: round(9 * 0.2) = 2 test images instead of 1
        write_image(folder / "fox" / f"img{i}.png", shade(2, i))
    message = one_line_error(lambda: data.load_run_test_data(folder, None, 0.2, 0, split))
    assert message.startswith(f"{folder}: ") and "2 image(s) added, 0 removed" in message and str(split) in message


def test_a_removed_test_image_fails_the_check(folder, tmp_path):
    split = recorded(folder, tmp_path / "run")
    (folder / data.read_split(split)["test"][0]).unlink()
    message = one_line_error(lambda: data.load_run_test_data(folder, None, 0.2, 0, split))
    assert message.startswith(f"{folder}: ") and "0 image(s) added, 1 removed" in message


def test_a_removed_training_image_leaves_the_test_set_and_passes(folder, tmp_path):
    split = recorded(folder, tmp_path / "run")
    files = data.read_split(split)
    # 6 cat images: still round(6 * 0.2) = 1 test image, and the remaining ones keep their order
    (folder / next(n for n in files["train"] if n.startswith("cat/"))).unlink()
    dataset = data.load_run_test_data(folder, None, 0.2, 0, split)
    assert set(dataset.files["test"]) == set(files["test"])


def test_no_split_record_means_no_check(folder, tmp_path):
    write_image(folder / "fox" / "new.png", 3)
    assert data.load_run_test_data(folder, None, 0.2, 0, tmp_path / "none.json").files is not None
    assert data.load_run_test_data(folder, None, 0.2, 0, None).files is not None


@pytest.mark.parametrize("text", ["{not json", '{"files": 3}', '{"files": {"train": ["a"]}}', "[]"])
def test_a_damaged_split_record_is_one_line(folder, tmp_path, text):
    path = tmp_path / "split.json"
    path.write_text(text)
    message = one_line_error(lambda: data.check_split(data.load_dataset(folder), path))
    assert message.startswith(f"{path}: ")


# ------------------------------------------------------------------------------------------ evaluate


def write_config(run: Path, cfg) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def test_evaluate_splits_with_the_runs_fraction_and_seed(folder, tmp_path):
    run = write_config(tmp_path / "old", {"seed": 3, "data_dir": str(folder)})
    # decoded as the run trained: runs recorded before the decoding was, with the bilinear filter
    bilinear_without_draft = Decoding("bilinear", draft=False)
    as_predict_reads = Decoding(DEFAULT_INTERPOLATION, draft=True)
    assert evaluate._run_split(run, folder, data_dir_given=False) == (
        0.2,
        3,
        run / data.SPLIT_FILE,
        bilinear_without_draft,
    )
    run = write_config(tmp_path / "new", {"data": {"test_fraction": 0.3, "dir": str(folder)}, "run": {"seed": 5}})
    assert evaluate._run_split(run, folder, data_dir_given=False) == (0.3, 5, run / data.SPLIT_FILE, as_predict_reads)
    assert evaluate._run_split(run, folder, data_dir_given=True)[2] == run / data.SPLIT_FILE  # the same folder
    # other data: not recorded, and decoded as predict decodes photos
    assert evaluate._run_split(run, tmp_path / "other", data_dir_given=True) == (0.3, 5, None, as_predict_reads)
    no_run = (data.DEFAULT_TEST_FRACTION, 0, None, as_predict_reads)
    assert evaluate._run_split(None, folder, data_dir_given=True) == no_run


def test_calibration_holds_validation_out_of_the_runs_own_training_part(folder, tmp_path):
    from signs_jax.calibrate import validation_split

    run = write_config(
        tmp_path / "run",
        {
            "seed": 2,
            "recipe": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "val_fraction": 0.2},
            "data_dir": str(folder),
            "image_size": None,
        },
    )
    split = data.load_dataset(folder, seed=2)
    validation = validation_split(run)
    levels = {int(image[0, 0, 0]) for image in validation.images}
    assert levels and levels <= {level_of(n) for n in split.files["train"]}
    recorded(folder, tmp_path / "run", seed=2)
    write_image(folder / "cat" / "img9.png", shade(0, 9))
    write_image(folder / "cat" / "img10.png", shade(0, 10))  # 9 cats: 2 test images instead of 1
    with pytest.raises(UserError):
        validation_split(run)


@pytest.mark.slow
def test_train_on_class_folders_records_the_split_and_evaluate_reuses_it(tmp_path, capsys):
    from helpers import TINY, run_train

    root = tmp_path / "photos"
    for c, name in enumerate(CLASSES):
        for i in range(8):  # 40x40: above the model's smallest input
            path = root / name / f"img{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((40, 40, 3), shade(c, i), np.uint8)).save(path)
    flags = ["--data-dir", root, "--workdir", tmp_path / "w", "--run", "r", "--seed", 3, "--test-fraction", 0.25]
    assert run_train(*flags, "--epochs", 1, *TINY, "--batch-size", 4) == 0
    run = tmp_path / "w" / "r"
    recorded = json.loads((run / data.SPLIT_FILE).read_text())["files"]
    assert len(recorded["test"]) == 3 * 2 and len(recorded["train"]) == 3 * 6  # a quarter of each class's 8
    assert set(recorded["test"]).isdisjoint(recorded["train"])
    capsys.readouterr()
    assert evaluate.main(["--weights", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 6  # the recorded test set, not a new split
    write_image(root / "cat" / "img8.png", 200)
    write_image(root / "cat" / "img9.png", 201)
    write_image(root / "cat" / "img10.png", 202)  # 11 cats: 3 test images where the run recorded 2
    assert evaluate.main(["--weights", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split" in err[0], err
