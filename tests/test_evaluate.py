"""evaluate (and predict) on a Keras .h5 and on a run written by train: metrics, near-copies, outputs, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import KERAS_MODEL, PREDICT_BATCH, ROOT, TINY
from signs_jax import evaluate, predict, train


@pytest.fixture(scope="module")
def trained_workdir(small_signs, tmp_path_factory):
    """A work directory holding one tiny one-epoch run."""
    workdir = tmp_path_factory.mktemp("runs")
    args = [
        "--data-dir",
        str(small_signs),
        "--workdir",
        str(workdir),
        "--run",
        "tiny",
        "--epochs",
        "1",
        "--recipe",
        "original",
    ]
    assert train.main([*args, *TINY]) == 0  # the original recipe: the quickest to compile
    return workdir


@pytest.fixture(scope="module")
def jpeg_folders(tmp_path_factory):
    """The real SIGNS JPEG folders (train, val, test), linked, not copied."""
    source = ROOT.parent / "shared" / "datasets" / "signs_jpg"
    if not (source / "test_signs").is_dir():
        pytest.skip(f"{source} not found")
    out = tmp_path_factory.mktemp("signs_jpg")
    for name in ("train_signs", "val_signs", "test_signs"):
        (out / name).symlink_to(source / name)
    return out


def test_evaluate_reports_everything(small_signs, tmp_path, capsys):
    png = tmp_path / "cm.png"
    args = ["--weights", KERAS_MODEL, "--data-dir", small_signs, "--json", "--confusion-png", png, *PREDICT_BATCH]
    code = evaluate.main([str(a) for a in args])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (6, 6) and matrix.sum() == result["examples"] == 40
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / 40)
    assert np.isfinite(result["loss"]) and result["loss"] > 0
    assert set(result["per_class"]) == {"0", "1", "2", "3", "4", "5"}
    for i, scores in enumerate(result["per_class"].values()):
        assert scores["support"] == matrix[i].sum()
        if matrix[i].sum():
            assert scores["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum())
        if matrix[:, i].sum():
            assert scores["precision"] == pytest.approx(matrix[i, i] / matrix[:, i].sum())
        else:
            assert scores["precision"] is None  # never predicted: undefined, not zero
    assert 0 <= result["accuracy_no_near_copies"] <= 1
    assert result["confusion_png"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_on_image_folders_counts_near_copies(jpeg_folders, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a Keras .h5 has no run directory: the picture goes to the current directory
    assert evaluate.main(["--weights", KERAS_MODEL, "--data-dir", str(jpeg_folders), *PREDICT_BATCH]) == 0
    text = capsys.readouterr().out
    assert "(120 test images)" in text and "precision" in text and "recall" in text
    assert "confusion matrix (rows: true, columns: predicted)" in text
    matrix_rows = [
        line.split() for line in text.splitlines() if line[:5].strip() in "012345" and len(line.split()) == 7
    ]
    assert sum(int(v) for row in matrix_rows for v in row[1:]) == 120
    near = int(text.split(" have one)")[0].rsplit("(", 1)[1])
    assert near > 0  # the data set's known near-duplicates between the training and test photos
    assert (tmp_path / "confusion.png").exists()


@pytest.mark.slow
def test_evaluate_and_predict_a_run_written_by_train(trained_workdir, small_signs, test_image, capsys):
    run = trained_workdir / "tiny"
    # the work directory: its newest run, its best checkpoint; the picture goes into the run directory
    assert evaluate.main(["--workdir", str(trained_workdir), "--data-dir", str(small_signs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["weights"].startswith(str(run)) and result["examples"] == 40
    assert result["confusion_png"] == str(run / "confusion.png") and (run / "confusion.png").exists()
    names = json.loads((run / "config.json").read_text())["model"]["class_names"]
    for weights in (["--workdir", str(trained_workdir)], ["--weights", str(run)], ["--weights", str(trained_workdir)]):
        assert predict.main([str(test_image), *weights, "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["class"] in names and len(record["probabilities"]) == len(names)


@pytest.fixture
def test_image(data_dir, tmp_path):
    import h5py
    from PIL import Image

    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        image = np.asarray(f["test_set_x"][0])
    Image.fromarray(image).save(tmp_path / "hand.png")
    return tmp_path / "hand.png"


@pytest.mark.slow
def test_evaluate_errors_are_one_line(tmp_path, small_signs, capsys):
    assert evaluate.main(["--weights", KERAS_MODEL, "--data-dir", str(tmp_path / "none")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert evaluate.main(["--workdir", str(tmp_path), "--data-dir", str(small_signs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python -m signs_jax.train" in err[0] and "--weights" in err[0]


def test_confusion_matrix_and_scores():
    matrix = evaluate.confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    precision, recall = evaluate.per_class_scores(matrix)
    np.testing.assert_allclose(precision[:3], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(recall[:3], [0.5, 1.0, 0.5])
    assert np.isnan(precision[3]) and np.isnan(recall[3])


@pytest.mark.slow
def test_evaluate_help_does_not_import_jax():
    probe = (
        "import sys; from signs_jax import evaluate\n"
        "try:\n    evaluate.main(['--help'])\nexcept SystemExit: pass\n"
        "print('jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_its_config_is_one_line(trained_workdir, test_image, tmp_path, capsys):
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(trained_workdir / "tiny", run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["width"] *= 2
    (run / "config.json").write_text(json.dumps(config))
    assert predict.main([str(test_image), "--weights", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the model config.json describes" in err[0], err


@pytest.mark.slow
def test_a_checkpoint_with_nan_weights_is_refused(trained_workdir, test_image, tmp_path, capsys):
    """NaN weights answer one class for every image with exit 0 (and evaluate reports chance accuracy)."""
    import shutil

    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from signs_jax.checkpoints import RunCheckpoints, restore_variables

    run = tmp_path / "nan"
    shutil.copytree(trained_workdir / "tiny", run)
    _, variables, step = restore_variables(run)
    poisoned = jax.tree_util.tree_map(lambda leaf: np.full_like(leaf, np.nan), variables)
    ckpts = RunCheckpoints(run)
    ckpts.manager.save(step + 1, args=ocp.args.Composite(variables=ocp.args.StandardSave(poisoned)), force=True)
    ckpts.manager.wait_until_finished()
    ckpts.close()
    shutil.rmtree(run / "ckpt" / str(step))
    assert predict.main([str(test_image), "--weights", str(run), "--json"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1 and "NaN or infinite" in err[0], captured.err
