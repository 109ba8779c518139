"""Calibrated confidence, the uncertain mark in every output format, and --adapt (BatchNorm on the user's photos)."""

import csv
import json
import shutil

import numpy as np
import pytest

from helpers import KERAS_MODEL, TINY, json_lines, signs_test_files
from signs_jax import calibrate, evaluate, predict, train
from signs_jax.calibration import (
    CALIBRATION_FILE,
    checked_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
    read_calibration,
    softmax,
)
from signs_jax.errors import UserError


def _overconfident(temperature, n, seed):
    """Labels drawn from softmax(z) (so z is calibrated) and the logits of a model that says z * temperature."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, 6))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(6, p=row) for row in p])
    return z * temperature, labels


def test_fit_recovers_a_known_temperature_and_lowers_ece_and_nll_on_held_out_data():
    fit_logits, fit_labels = _overconfident(2.5, 6000, seed=0)
    held_logits, held_labels = _overconfident(2.5, 3000, seed=1)
    t = fit_temperature(fit_logits, fit_labels)
    assert t == pytest.approx(2.5, rel=0.06)
    assert nll(held_logits, held_labels, t) < nll(held_logits, held_labels) - 0.1
    before = expected_calibration_error(softmax(held_logits), held_labels)
    after = expected_calibration_error(softmax(held_logits, t), held_labels)
    assert before > 0.1 and after < 0.03


def test_an_underconfident_model_gets_a_temperature_below_one():
    logits, labels = _overconfident(0.4, 6000, seed=2)
    assert fit_temperature(logits, labels) == pytest.approx(0.4, rel=0.06)


def test_held_out_images_all_answered_right_fit_no_temperature():
    """Twelve held-out photos of a fine-tuning run, all right: the NLL falls as T falls, so the fit ran to its
    lower bound (0.05) and every later answer showed 100 % confidence."""
    logits, labels = _overconfident(1.0, 12, seed=3)
    labels = logits.argmax(1)
    with pytest.raises(ValueError, match="all 12 .* right"):
        checked_temperature(logits, labels)
    wrong_once = labels.copy()
    wrong_once[0] = (labels[0] + 1) % 6
    assert checked_temperature(logits, wrong_once) == fit_temperature(logits, wrong_once)


def test_expected_calibration_error_by_hand():
    # 4 answers at confidence 0.8 (bin 12 of 15), 2 right: |0.5 - 0.8| = 0.3, weight 4/6;
    # 2 answers at confidence 0.6 (bin 9), both right: |1 - 0.6| = 0.4, weight 2/6.
    probs = np.array([[0.8, 0.2]] * 4 + [[0.4, 0.6]] * 2)
    labels = np.array([0, 0, 1, 1, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(4 / 6 * 0.3 + 2 / 6 * 0.4)


def test_a_damaged_calibration_file_is_one_clear_error(tmp_path):
    assert read_calibration(tmp_path) is None
    for text in ("{", '{"temperature": -1}', '{"t": 2}'):
        (tmp_path / CALIBRATION_FILE).write_text(text)
        with pytest.raises(UserError, match=CALIBRATION_FILE):
            read_calibration(tmp_path)


# ------------------------------------------------------------------------------ the uncertain mark in predict


@pytest.fixture(scope="module")
def photos(data_dir, tmp_path_factory):
    """20 real SIGNS test images as PNG files."""
    return signs_test_files(data_dir, tmp_path_factory.mktemp("photos"), 20)


def _json(capsys, *args):
    assert predict.main([*map(str, args), "--json"]) == 0
    return json_lines(capsys.readouterr().out)


def test_the_uncertain_mark_is_in_the_table_json_and_csv(photos, tmp_path, capsys):
    records = _json(capsys, *photos, "--weights", KERAS_MODEL)
    confidences = np.array([r["raw_confidence"] for r in records])
    np.testing.assert_allclose(confidences, [max(r["probabilities"]) for r in records], atol=1e-6)  # T = 1
    assert all(isinstance(r["uncertain"], bool) for r in records)
    threshold = float(np.median(confidences))  # half of them below: both kinds of answer appear
    records = _json(capsys, *photos, "--weights", KERAS_MODEL, "--threshold", threshold)
    flags = [r["uncertain"] for r in records]
    assert flags == [c < threshold for c in confidences] and any(flags) and not all(flags)

    out_csv = tmp_path / "out.csv"
    assert (
        predict.main(
            [*map(str, photos), "--weights", KERAS_MODEL, "--threshold", str(threshold), "--csv", str(out_csv)]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# weights: ") and "uncertain" in lines[0]
    assert lines[1].split()[:5] == ["path", "class", "conf", "raw", "uncertain"]
    table = [line.split() for line in lines[2:]]
    assert [row[4] == "yes" for row in table] == flags
    assert [row[1].endswith("?") for row in table] == flags
    assert [row[1].rstrip("?") for row in table] == [r["class"] for r in records]
    rows = list(csv.DictReader(out_csv.open()))
    assert [row["uncertain"] == "yes" for row in rows] == flags
    assert {row["uncertain"] for row in rows} == {"yes", "no"}

    none_marked = _json(capsys, *photos, "--weights", KERAS_MODEL, "--threshold", "0")
    assert not any(r["uncertain"] for r in none_marked)


def test_uncertain_answers_end_with_one_line_of_advice_on_taking_the_photo(photos, capsys):
    records = _json(capsys, *photos, "--weights", KERAS_MODEL)
    threshold = float(np.median([r["raw_confidence"] for r in records]))
    assert predict.main([*map(str, photos), "--weights", KERAS_MODEL, "--threshold", str(threshold)]) == 0
    captured = capsys.readouterr()
    flagged = sum(line.split()[4] == "yes" for line in captured.out.strip().splitlines()[2:])
    assert 0 < flagged < len(photos)
    assert captured.err.strip().splitlines() == [predict.uncertain_advice(flagged, len(photos))]
    assert f"note: {flagged} of {len(photos)} answers are uncertain" in captured.err
    assert "frame the hand" in captured.err and "docs/predict.md#taking-a-photo" in captured.err
    # JSON is read by programs (every record carries "uncertain"); nothing to advise when nothing is unsure
    for extra in (["--json"], ["--threshold", "0"]):
        assert predict.main([*map(str, photos), "--weights", KERAS_MODEL, *extra]) == 0
        assert "note: " not in capsys.readouterr().err


def test_a_threshold_outside_zero_to_one_is_one_line(photos, capsys):
    for bad in ("1.5", "-0.1", "nan"):
        assert predict.main([str(photos[0]), "--weights", KERAS_MODEL, "--threshold", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --threshold")


# ------------------------------------------------------------------------------------------------- --adapt


@pytest.mark.slow
def test_adapt_replaces_the_batchnorm_statistics_and_nothing_else(keras_loaded, keras_images):
    from signs_jax.adapt import adapt_batch_norm

    model, variables = keras_loaded
    images = np.concatenate([keras_images, keras_images[::-1]])  # 48 images: two batches of 24
    adapted = adapt_batch_norm(model, variables, images)
    again = adapt_batch_norm(model, variables, images)
    for a, b in zip(np_leaves(adapted["params"]), np_leaves(variables["params"])):
        np.testing.assert_array_equal(a, b)
    changed = [
        not np.allclose(a, b) for a, b in zip(np_leaves(adapted["batch_stats"]), np_leaves(variables["batch_stats"]))
    ]
    assert all(changed)  # every mean and variance of every layer
    for a, b in zip(np_leaves(adapted), np_leaves(again)):
        np.testing.assert_array_equal(a, b)
    # The first BatchNorm's mean is the mean of conv1's output over the images (channels last), whatever the batching.
    import jax

    conv1_output = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]))
    _, seen = conv1_output(variables, images)
    conv1 = np.asarray(seen["intermediates"]["conv1"]["__call__"][0], np.float64)
    np.testing.assert_allclose(adapted["batch_stats"]["bn_conv1"]["mean"], conv1.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)


def test_adapt_does_not_depend_on_the_order_of_the_photos(keras_loaded, data_dir):
    """Photos in class folders arrive sorted by class; batches of one class each normalise every layer's
    input differently from mixed batches (sign_digits: 0.721 sorted, 0.76 shuffled; docs/calibration.md)."""
    import h5py

    from signs_jax.adapt import adapt_batch_norm

    model, variables = keras_loaded
    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        images, labels = np.asarray(f["test_set_x"]), np.asarray(f["test_set_y"])
    by_class = images[np.argsort(labels, kind="stable")]
    shuffled = images[np.random.default_rng(0).permutation(len(images))]
    one, other = (adapt_batch_norm(model, variables, order) for order in (by_class, shuffled))
    for a, b in zip(np_leaves(one), np_leaves(other)):
        np.testing.assert_array_equal(a, b)


def np_leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def test_predict_adapt_is_deterministic_and_uses_the_adapted_statistics(photos, keras_loaded, capsys):
    from signs_jax.adapt import adapt_batch_norm
    from signs_jax.predict import load_images, logits_of

    plain = _json(capsys, *photos, "--weights", KERAS_MODEL)
    adapted = _json(capsys, *photos, "--weights", KERAS_MODEL, "--adapt")
    assert _json(capsys, *photos, "--weights", KERAS_MODEL, "--adapt") == adapted
    assert [r["path"] for r in adapted] == [r["path"] for r in plain]
    assert not np.allclose([r["probabilities"] for r in adapted], [r["probabilities"] for r in plain], atol=1e-3)
    model, variables = keras_loaded
    _, images = load_images(photos, (64, 64))
    expected = softmax(logits_of(model, adapt_batch_norm(model, variables, images), images))
    np.testing.assert_allclose([r["probabilities"] for r in adapted], expected, atol=1e-6)


def test_adapt_with_too_few_photos_is_one_line(photos, capsys):
    assert predict.main([*map(str, photos[:3]), "--weights", KERAS_MODEL, "--adapt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least" in err[0] and "3" in err[0]


# --------------------------------------------------------------------------------- calibration stored with a run


@pytest.fixture(scope="module")
def calibrated_run(small_signs, tmp_path_factory):
    """A tiny one-epoch run with a validation split: training ends by fitting its temperature."""
    workdir = tmp_path_factory.mktemp("calibrated")
    args = [
        "--data-dir",
        small_signs,
        "--workdir",
        workdir,
        "--run",
        "tiny",
        "--epochs",
        "1",
        "--recipe",
        "original",
        "--val-fraction",
        "0.25",
    ]
    assert train.main([*map(str, args), *TINY]) == 0
    return workdir / "tiny"


@pytest.mark.slow
def test_training_with_a_validation_split_stores_a_temperature_for_its_best_checkpoint(calibrated_run):
    from signs_jax.weights import load_weights

    record = json.loads((calibrated_run / CALIBRATION_FILE).read_text())
    assert record["fitted_on"] == "validation" and record["examples"] == 40  # 25 % of 160
    assert record["temperature"] > 0 and record["nll_after"] <= record["nll_before"] + 1e-9
    weights = load_weights(str(calibrated_run))
    assert weights.source.endswith(f"(step {record['step']})") and weights.temperature == record["temperature"]


@pytest.mark.slow
def test_predict_and_evaluate_use_the_stored_temperature(calibrated_run, photos, small_signs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(calibrated_run, run)
    record = json.loads((run / CALIBRATION_FILE).read_text())
    (run / CALIBRATION_FILE).unlink()
    plain = _json(capsys, *photos[:4], "--weights", run)
    raw = np.array([r["probabilities"] for r in plain])
    (run / CALIBRATION_FILE).write_text(json.dumps({**record, "temperature": 3.0}))
    calibrated = _json(capsys, *photos[:4], "--weights", run)
    scaled = np.array([r["probabilities"] for r in calibrated])
    # the uncertain rule reads the raw logits: the temperature changes the confidence shown, not the flag
    assert [r["uncertain"] for r in calibrated] == [r["uncertain"] for r in plain]
    assert [r["raw_confidence"] for r in calibrated] == pytest.approx([max(p) for p in raw], abs=1e-6)
    assert [r["confidence"] for r in calibrated] == pytest.approx(list(scaled.max(1)), abs=1e-6)
    # softmax(logits / 3) from the uncalibrated probabilities: log p = logits - a constant per image
    expected = np.exp(np.log(raw) / 3.0)
    np.testing.assert_allclose(scaled, expected / expected.sum(1, keepdims=True), atol=1e-6)

    assert evaluate.main(["--weights", str(run), "--data-dir", str(small_signs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    c = result["calibration"]
    assert c["temperature"] == 3.0 and c["bins"] == 15 and c["ece_before"] != c["ece_after"]
    assert result["reliability_png"] == str(run / "reliability.png") and (run / "reliability.png").exists()
    assert evaluate.main(["--weights", str(run), "--data-dir", str(small_signs)]) == 0
    text = capsys.readouterr().out
    assert "expected calibration error (15 bins)" in text and "temperature 3" in text


@pytest.mark.slow
def test_calibrate_a_run_without_validation_is_one_line(calibrated_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(calibrated_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["recipe"]["val_fraction"] = 0.0
    (run / "config.json").write_text(json.dumps(cfg))
    (run / CALIBRATION_FILE).unlink()
    assert calibrate.main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no validation split" in err[0] and "never" in err[0]
    assert not (run / CALIBRATION_FILE).exists()


@pytest.mark.slow
def test_calibrate_with_every_validation_image_right_is_one_line(calibrated_run, tmp_path, capsys, monkeypatch):
    from signs_jax.checkpoints import restore_variables
    from signs_jax.predict import logits_of

    run = tmp_path / "run"
    shutil.copytree(calibrated_run, run)
    (run / CALIBRATION_FILE).unlink()
    held_out = calibrate.validation_split(run)
    model, variables, _ = restore_variables(run)
    answers = logits_of(model, variables, held_out.images.astype("float32") / 255.0).argmax(1)
    monkeypatch.setattr(calibrate, "validation_split", lambda _run: held_out._replace(labels=answers))
    assert calibrate.main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "right" in err[0] and "T = 1" in err[0]
    assert not (run / CALIBRATION_FILE).exists()
