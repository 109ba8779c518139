"""The distribution-shift benchmark: each shift is seeded, grows with severity, and the runner and CLI report."""

import itertools
import json

import h5py
import numpy as np
import pytest
from conftest import KERAS_FILES
from PIL import Image

from signs_jax.shifts import SEVERITIES, SHIFTS, apply_shift, hand_mask, main, run_shift_benchmark


@pytest.fixture(scope="module")
def signs_images(data_dir):
    """24 real SIGNS test images and their labels."""
    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        return np.asarray(f["test_set_x"][:24]), np.asarray(f["test_set_y"][:24])


def mean_abs_difference(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def disc_image(size=64, radius=12, centre=(32, 32)):
    """A plain light-grey background with an orange (skin-like) disc."""
    y, x = np.mgrid[:size, :size]
    inside = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 < radius**2
    img = np.full((size, size, 3), (205, 197, 187), np.uint8)
    img[inside] = (190, 120, 80)
    return img, inside


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shift_is_deterministic_uint8_of_the_same_shape(name, signs_images):
    images, _ = signs_images
    first = apply_shift(name, images, 3, seed=7)
    assert first.dtype == np.uint8 and first.shape == images.shape
    np.testing.assert_array_equal(first, apply_shift(name, images, 3, seed=7))


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shift_changes_the_image_more_at_higher_severity(name, signs_images):
    images, _ = signs_images
    change = [mean_abs_difference(apply_shift(name, images, s, seed=0), images) for s in SEVERITIES]
    assert change[0] > 0.5, f"severity 1 hardly changes the images: {change}"
    assert all(b >= a for a, b in itertools.pairwise(change)), f"not monotone over severities 1..5: {change}"
    assert change[-1] > change[0] * 1.5, f"severity 5 is not clearly stronger than 1: {change}"


@pytest.mark.parametrize("name", list(SHIFTS))
def test_seeded_shifts_differ_between_seeds_and_the_others_do_not(name, signs_images):
    images, _ = signs_images
    a, b = apply_shift(name, images, 4, seed=0), apply_shift(name, images, 4, seed=1)
    if SHIFTS[name].seeded:
        assert not np.array_equal(a, b)
    else:
        np.testing.assert_array_equal(a, b)


def test_severity_zero_is_the_clean_image(signs_images):
    images, _ = signs_images
    for name in SHIFTS:
        np.testing.assert_array_equal(apply_shift(name, images, 0, seed=3), images)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: apply_shift("fog", x, 1),
        lambda x: apply_shift("rotation", x, 6),
        lambda x: apply_shift("rotation", x.astype(np.float32), 1),
        lambda x: apply_shift("rotation", x[0], 1),
    ],
)
def test_bad_arguments_raise_value_error(call, signs_images):
    with pytest.raises(ValueError):
        call(signs_images[0])


def test_hand_mask_finds_a_skin_coloured_disc_on_a_plain_background():
    img, _inside = disc_image()
    mask = hand_mask(img[None])[0]
    y, x = np.mgrid[:64, :64]
    distance = np.hypot(y - 32, x - 32)
    assert mask[distance < 10].min() > 0.95  # inside, away from the soft edge
    assert mask[distance > 15].max() < 0.05


def test_hand_mask_leaves_the_top_of_signs_photos_as_background(signs_images):
    """Every SIGNS hand enters from the bottom; the top rows are the wall in almost every photo."""
    mask = hand_mask(signs_images[0])
    assert mask[:, :3].mean() < 0.05
    assert mask.mean() > 0.1  # and some of each photo is hand


def test_skin_tone_changes_the_hand_only_and_background_the_background_only(signs_images):
    images, _ = signs_images
    mask = hand_mask(images)
    skin = apply_shift("skin_tone", images, 5, seed=0)
    background = apply_shift("background", images, 5, seed=0)
    assert np.array_equal(skin[mask == 0], images[mask == 0]) and (mask == 0).any()
    assert mean_abs_difference(skin[mask > 0.9], images[mask > 0.9]) > 20
    assert np.array_equal(background[mask == 1], images[mask == 1]) and (mask == 1).any()
    assert mean_abs_difference(background[mask < 0.1], images[mask < 0.1]) > 20


def test_translation_moves_the_hand_by_its_fraction_of_the_frame():
    img, _ = disc_image(radius=6)
    moved = apply_shift("translation", img[None], 5, seed=0)[0]
    darkness = lambda a: np.clip(185.0 - a.astype(float).mean(-1), 0, None)
    y, x = np.mgrid[:64, :64]
    d = darkness(moved)
    centre = np.array([(d * y).sum(), (d * x).sum()]) / d.sum()
    assert np.hypot(*(centre - 31.5)) == pytest.approx(SHIFTS["translation"].levels[4] * 64, abs=1.0)


def test_aspect_ratio_squashes_the_frame_along_one_side():
    img, _ = disc_image(radius=12)
    squashed = apply_shift("aspect_ratio", img[None], 5, seed=0)[0]
    dark = squashed.astype(float).mean(-1) < 160
    height, width = dark.any(1).sum(), dark.any(0).sum()
    assert sorted([height, width]) == [pytest.approx(12, abs=2), pytest.approx(24, abs=2)]


def test_benchmark_reports_every_shift_and_severity_in_0_1(signs_images):
    images, labels = signs_images

    def by_mean_colour(batch):  # a "model" that guesses from the mean colour: accuracy is anything in [0, 1]
        classes = (batch.mean((1, 2, 3)) // 10).astype(int) % 6
        return np.eye(6)[classes]

    result = run_shift_benchmark(by_mean_colour, images, labels, seed=0, shifts=["exposure", "jpeg"])
    assert set(result) == {"exposure", "jpeg", "clean", "mean_shift_accuracy"}
    for name in ("exposure", "jpeg"):
        assert list(result[name]) == list(SEVERITIES)
        assert all(0.0 <= a <= 1.0 for a in result[name].values())
    assert 0.0 <= result["clean"] <= 1.0
    table = [a for name in ("exposure", "jpeg") for a in result[name].values()]
    assert result["mean_shift_accuracy"] == pytest.approx(np.mean(table))


def test_benchmark_scores_a_perfect_model_1_and_a_wrong_one_0(signs_images):
    images, labels = signs_images
    seen = []

    def oracle(batch):
        seen.append(batch)
        return np.eye(6)[labels]

    perfect = run_shift_benchmark(oracle, images, labels, shifts=["rotation"], severities=(2, 5))
    assert perfect == {"rotation": {2: 1.0, 5: 1.0}, "clean": 1.0, "mean_shift_accuracy": 1.0}
    assert any(np.array_equal(b, images) for b in seen)  # the clean score is on the unchanged images
    wrong = run_shift_benchmark(lambda b: np.eye(6)[(labels + 1) % 6], images, labels, shifts=["rotation"])
    assert wrong["clean"] == 0.0 and wrong["mean_shift_accuracy"] == 0.0


@pytest.mark.slow  # loads and compiles a ResNet50 (about 25 s on two CPU cores)
def test_cli_prints_json_for_a_keras_model(data_dir, tmp_path, capsys):
    examples, curves = tmp_path / "examples.png", tmp_path / "curves.png"
    code = main(
        [
            "--weights",
            str(KERAS_FILES["keras2_model"]),
            "--data-dir",
            str(data_dir),
            "--only",
            "jpeg,rotation",
            "--json",
            "--examples-png",
            str(examples),
            "--curves-png",
            str(curves),
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["shifts"]) == {"jpeg", "rotation"}
    for row in result["shifts"].values():
        assert sorted(row) == ["1", "2", "3", "4", "5"] and all(0 <= a <= 1 for a in row.values())
    assert 0 <= result["clean"] <= 1 and 0 <= result["mean_shift_accuracy"] <= 1
    assert result["examples"] == 120
    with Image.open(examples) as img:  # two rows of six 128-pixel tiles
        assert img.height > 2 * 128 and img.width > 6 * 128
    with Image.open(curves) as img:
        assert img.width > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "fog"], "--only: unknown shift fog"),
        (["--seed", "-1"], "--seed must be 0 or more"),
        (["--examples-scale", "0"], "--examples-scale must be 1..16"),
    ],
)
def test_cli_reports_bad_options_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
