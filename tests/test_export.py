"""`python -m signs_jax.export`: the exported graphs compute predict's probabilities, for any batch size, and run
without signs_jax; the tool's errors are one line and it overwrites nothing unasked."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from helpers import KERAS_MODEL, assert_bitwise_equal
from signs_jax import export
from signs_jax.predict import logits_of, probabilities
from signs_jax.weights import load_weights

BATCH_SIZES = (3, 8)  # two sizes through one exported file: its batch axis is not fixed
TEMPERATURE = 0.7  # not 1, so that dividing by the stored temperature is part of what is compared

# What docs/export.md shows: StableHLO needs JAX and numpy only. `-I` keeps this checkout off sys.path.
STABLEHLO_SNIPPET = """
import sys
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
for path in sys.argv[2:]:
    np.save(path + ".out.npy", np.asarray(exported.call(np.load(path))))
print(sorted({m.split(".")[0] for m in sys.modules} & {"flax", "signs_jax", "optax", "orbax"}))
"""


@pytest.fixture(scope="module")
def fixture_weights():
    """The width-1/8 Keras fixture, with a calibration temperature as a run could have."""
    return load_weights(KERAS_MODEL)._replace(temperature=TEMPERATURE)


@pytest.fixture(scope="module")
def test_images(data_dir):
    """Real SIGNS test images in [0, 1], one batch of each size."""
    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        images = np.asarray(f["test_set_x"][: sum(BATCH_SIZES)], np.float32) / 255.0
    return np.split(images, np.cumsum(BATCH_SIZES)[:-1])


def predict_probabilities(weights, images):
    """What predict reports for each image."""
    logits = logits_of(weights.model, weights.variables, images)
    return np.stack([probabilities(row, weights.temperature) for row in logits])


@pytest.mark.slow
def test_stablehlo_in_a_fresh_process_matches_predict(fixture_weights, test_images, tmp_path):
    path = export.export_stablehlo(fixture_weights, tmp_path / "model.stablehlo")
    inputs = []
    for i, batch in enumerate(test_images):
        inputs.append(str(tmp_path / f"batch{i}.npy"))
        np.save(inputs[-1], batch)
    done = subprocess.run(
        [sys.executable, "-I", "-c", STABLEHLO_SNIPPET, str(path), *inputs],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # none of signs_jax, flax, optax, orbax was imported
    for batch, name in zip(test_images, inputs):
        got = np.load(name + ".out.npy")
        assert got.shape == (len(batch), fixture_weights.model.num_classes)
        np.testing.assert_allclose(got, predict_probabilities(fixture_weights, batch), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_onnx_matches_predict(fixture_weights, test_images, tmp_path):
    pytest.importorskip("jax2onnx")
    ort = pytest.importorskip("onnxruntime")
    path = export.export_onnx(fixture_weights, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["class_names"]) == list(fixture_weights.class_names)
    for batch in test_images:
        (got,) = session.run([export.ONNX_OUTPUT], {export.ONNX_INPUT: batch})
        assert got.shape == (len(batch), fixture_weights.model.num_classes)
        np.testing.assert_allclose(got, predict_probabilities(fixture_weights, batch), rtol=0, atol=1e-5)


def test_keras_export_holds_the_weights(tmp_path):
    from signs_jax.keras_h5 import load_keras_h5

    out = tmp_path / "weights.h5"
    assert export.main([KERAS_MODEL, "--format", "keras", str(out)]) == 0
    _, original = load_keras_h5(KERAS_MODEL)
    _, written = load_keras_h5(out)
    assert_bitwise_equal(original, written)


def cli_error(capsys, *args) -> str:
    assert export.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_existing_out_is_kept_without_force(tmp_path, capsys):
    out = tmp_path / "model.stablehlo"
    out.write_bytes(b"mine")
    line = cli_error(capsys, KERAS_MODEL, "--format", "stablehlo", out)
    assert line == f"error: {out}: exists; not overwriting it (pass --force to replace it)"
    assert out.read_bytes() == b"mine"


def test_force_replaces_an_existing_out(tmp_path, capsys):
    out = tmp_path / "model.stablehlo"
    out.write_bytes(b"mine")
    assert export.main([KERAS_MODEL, "--format", "stablehlo", str(out), "--force"]) == 0
    assert out.read_bytes() != b"mine"
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_force_never_replaces_an_image(tmp_path, capsys):
    out = tmp_path / "photo.jpg"
    out.write_bytes(b"\xff\xd8\xff\xe0 a photo")
    line = cli_error(capsys, KERAS_MODEL, "--format", "onnx", out, "--force")
    assert line.startswith(f"error: {out}: cannot write the exported model (OUT): it exists and is not")
    assert out.read_bytes() == b"\xff\xd8\xff\xe0 a photo"


def test_unknown_weights_is_one_line(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    line = cli_error(capsys, missing, "--format", "stablehlo", tmp_path / "model.stablehlo")
    assert line.startswith(f"error: {missing}: no such file or directory")
    assert not (tmp_path / "model.stablehlo").exists()


def test_onnx_without_the_extra_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # what a missing package looks like to `import`
    line = cli_error(capsys, KERAS_MODEL, "--format", "onnx", tmp_path / "model.onnx")
    assert line == 'error: --format onnx needs the export extra: pip install -e ".[export]"'


def test_help_works():
    done = subprocess.run([sys.executable, "-m", "signs_jax.export", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--format {onnx,stablehlo,keras}" in done.stdout
