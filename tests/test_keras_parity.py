"""Numeric parity with real Keras: fixtures made by scripts/make_keras_fixtures.py with tf-keras and Keras 3."""

import h5py
import jax
import numpy as np
import pytest

import signs_jax
from helpers import KERAS_FILES

TOLERANCE = 1e-5


@pytest.mark.parametrize("layout", ["keras2_model", "keras2_weights"])
def test_keras2_files_reproduce_keras_probabilities(layout, predict_probs, keras_images, keras_expected):
    model, variables = signs_jax.load_keras_h5(KERAS_FILES[layout])
    assert (model.num_classes, model.stem_filters, tuple(model.input_shape)) == (6, 8, (64, 64, 3))
    probs = np.asarray(predict_probs(variables, keras_images))
    np.testing.assert_allclose(probs, keras_expected["probabilities"], atol=TOLERANCE, rtol=0)


def test_keras3_legacy_file_reproduces_keras3_probabilities(predict_probs, keras_images, keras_expected):
    _, variables = signs_jax.load_keras_h5(KERAS_FILES["keras3_legacy"])
    probs = np.asarray(predict_probs(variables, keras_images))
    np.testing.assert_allclose(probs, keras_expected["probabilities_keras3"], atol=TOLERANCE, rtol=0)


def test_the_reference_probabilities_are_not_degenerate(keras_expected):
    probs = keras_expected["probabilities"]
    assert probs.min() > 1e-3 and probs.max() < 0.99  # neither saturated nor flat ...
    assert np.ptp(probs, axis=0).max() > 5e-3  # ... and they differ between images


def test_parity_would_catch_a_single_wrong_weight(keras_loaded, predict_probs, keras_images, keras_expected):
    _, variables = keras_loaded
    broken = jax.tree_util.tree_map(lambda a: a, variables)
    stats = broken["batch_stats"]["res4c"]["bn_branch2b"]
    stats["mean"] = stats["mean"].at[0].add(1.0)
    probs = np.asarray(predict_probs(broken, keras_images))
    assert np.abs(probs - keras_expected["probabilities"]).max() > 10 * TOLERANCE


def test_training_mode_matches_keras_batch_statistics_and_moving_averages(
    keras_loaded, train_forward, keras_images, keras_expected
):
    _, variables = keras_loaded
    probs, stats = train_forward(variables, keras_images)
    # Normalising by batch statistics amplifies float32 rounding (Keras itself is 1e-4 away from a
    # float64 computation here), so outputs agree to 1e-3; the moving averages agree tightly.
    np.testing.assert_allclose(np.asarray(probs), keras_expected["train_mode_probabilities"], atol=1e-3)
    table = signs_jax.keras_h5.keras_layer_table((3, 4, 6, 3), 6)
    checked = 0
    for layer in table:
        if "moving_mean" not in layer.weights:
            continue
        node = stats
        for key in layer.flax_path:
            node = node[key]
        for keras_name, leaf in (("moving_mean", "mean"), ("moving_variance", "var")):
            expected = keras_expected[f"moving/{layer.name}/{keras_name}"]
            np.testing.assert_allclose(np.asarray(node[leaf]), expected, rtol=1e-5, atol=1e-6, err_msg=layer.name)
            checked += 1
    assert checked == 2 * 53


def test_export_reimports_bit_for_bit(keras_loaded, tmp_path):
    _, variables = keras_loaded
    out = signs_jax.save_keras_h5(tmp_path / "exported.h5", variables)
    _, again = signs_jax.load_keras_h5(out)
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), variables, again)
    assert all(jax.tree_util.tree_leaves(same))


def test_export_has_the_layout_real_keras_wrote(keras_loaded, tmp_path):
    """Keras's load_weights maps layers by position: our order and names must be Keras's own."""
    _, variables = keras_loaded
    out = signs_jax.save_keras_h5(tmp_path / "exported.h5", variables)

    def layout(path):
        text = lambda values: [v.decode() if isinstance(v, bytes) else str(v) for v in values]  # noqa: E731
        with h5py.File(path, "r") as f:
            names = text(f.attrs["layer_names"])
            weights = {n: text(f[n].attrs.get("weight_names", [])) for n in names}
        return [(n, weights[n]) for n in names if weights[n]]

    assert layout(out) == layout(KERAS_FILES["keras2_weights"])


def test_export_failure_leaves_an_existing_file_untouched(keras_loaded, tmp_path):
    _, variables = keras_loaded
    target = tmp_path / "weights.h5"
    target.write_bytes(b"previous contents")
    broken = {"params": dict(variables["params"]), "batch_stats": variables["batch_stats"]}
    del broken["params"]["res3b"]
    broken["params"]["res3b"] = {}
    with pytest.raises(Exception):  # noqa: B017 - any failure will do: the point is the file it leaves
        signs_jax.save_keras_h5(target, broken)
    assert target.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.h5"]
