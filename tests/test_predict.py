"""predict and evaluate: Keras's numbers on Keras weights, real image files of every kind, bad inputs."""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import KERAS_FILES, ROOT
from signs_jax import evaluate, predict
from signs_jax.images import ImageError, load_image

KERAS_MODEL = str(KERAS_FILES["keras2_model"])


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SIGNS_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "jax_cache"))


@pytest.fixture(scope="module")
def test_pngs(keras_expected, data_dir, tmp_path_factory):
    """The SIGNS test images Keras scored, as lossless PNG files."""
    import h5py

    out = tmp_path_factory.mktemp("pngs")
    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        images = np.asarray(f["test_set_x"])[keras_expected["test_indices"]]
    paths = []
    for i, image in enumerate(images):
        paths.append(out / f"{i:02d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def json_lines(text):
    return [json.loads(line) for line in text.strip().splitlines()]


def test_predict_reproduces_keras_probabilities(test_pngs, keras_expected, capsys):
    code = predict.main([*map(str, test_pngs), "--weights", KERAS_MODEL, "--interpolation", "nearest", "--json"])
    assert code == 0
    records = json_lines(capsys.readouterr().out)
    assert [r["path"] for r in records] == [str(p) for p in test_pngs]
    probs = np.array([r["probabilities"] for r in records])
    np.testing.assert_allclose(probs, keras_expected["probabilities"], atol=1e-5, rtol=0)
    assert [r["class"] for r in records] == [str(i) for i in keras_expected["probabilities"].argmax(1)]


def test_table_csv_and_top_k(test_pngs, tmp_path, capsys):
    out_csv = tmp_path / "Result.csv"
    assert predict.main([str(test_pngs[0].parent), "--weights", KERAS_MODEL, "--csv", str(out_csv), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[:3] == ["path", "class", "conf"]
    assert len(lines) == 2 + len(test_pngs)
    rows = out_csv.read_text().strip().splitlines()
    assert rows[0] == "path,class,confidence,p(0),p(1),p(2),p(3),p(4),p(5)" and len(rows) == 1 + len(test_pngs)
    assert abs(sum(float(v) for v in rows[1].split(",")[3:]) - 1) < 1e-5


def _png_bomb(path, width=60000, height=60000):
    """A tiny PNG that declares 3.6 gigapixels."""
    raw = zlib.compress(b"\0" * 10)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_bad_files_are_reported_one_line_each_and_the_rest_predicted(test_pngs, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    jpeg = tmp_path / "good.jpg"
    Image.open(test_pngs[0]).save(jpeg, quality=95)
    (tmp_path / "truncated.jpg").write_bytes(jpeg.read_bytes()[:300])
    _png_bomb(tmp_path / "bomb.png")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("x")
    bad = ["empty.jpg", "text.jpg", "truncated.jpg", "bomb.png", "missing.jpg", "no_images"]
    code = predict.main([str(jpeg), *[str(tmp_path / b) for b in bad], str(test_pngs[1]), "--weights", KERAS_MODEL, "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert [r["path"] for r in json_lines(captured.out)] == [str(jpeg), str(test_pngs[1])]
    errors = captured.err.strip().splitlines()
    assert len(errors) == len(bad), errors
    reasons = {"empty.jpg": "empty file", "text.jpg": "not an image", "truncated.jpg": "truncated",
               "bomb.png": "decompression bomb", "missing.jpg": "no such file", "no_images": "directory without images"}
    for name, reason in reasons.items():
        assert any(line.startswith(f"error: {tmp_path / name}:") and reason in line for line in errors), (name, errors)
    assert "Traceback" not in captured.err


def test_no_checkpoint_says_what_to_do(tmp_path, test_pngs, capsys):
    assert predict.main([str(test_pngs[0]), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python -m signs_jax.train" in err[0] and "--weights" in err[0]


def test_weights_that_do_not_fit_give_the_loaders_error(tmp_path, test_pngs, capsys):
    bad = tmp_path / "model.h5"
    bad.write_text("nope")
    assert predict.main([str(test_pngs[0]), "--weights", str(bad)]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- image decoding


def _asymmetric(h=40, w=30):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_exif_orientation_is_applied(tmp_path):
    pixels = _asymmetric()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = tmp_path / "phone.png"
    Image.fromarray(pixels).save(path, exif=exif)
    upright = load_image(path, (30, 40), "nearest")  # 90 degrees: 40x30 becomes 30x40
    np.testing.assert_array_equal(upright * 255, np.rot90(pixels, k=-1).astype(np.float32))
    raw = load_image(path, (40, 30), "nearest", exif=False)
    np.testing.assert_array_equal(raw * 255, pixels.astype(np.float32))


@pytest.mark.parametrize(
    "mode, make, expected",
    [
        ("L", lambda: Image.new("L", (8, 8), 100), (100, 100, 100)),
        ("LA", lambda: Image.new("LA", (8, 8), (100, 0)), (255, 255, 255)),  # transparent: white
        ("RGBA", lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 255)), (10, 20, 30)),
        ("RGBA", lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 0)), (255, 255, 255)),
        ("P", lambda: Image.new("RGB", (8, 8), (200, 10, 50)).convert("P", palette=Image.Palette.ADAPTIVE), (200, 10, 50)),
        ("CMYK", lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), (255, 0, 0)),
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 65535, np.uint16)), (255, 255, 255)),
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 32896, np.uint16)), (128, 128, 128)),
    ],
)
def test_image_modes_become_rgb(mode, make, expected, tmp_path):
    img = make()
    assert img.mode == mode
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    img.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode.startswith(mode[:1])  # a real file in that mode
    pixels = load_image(path, (8, 8))
    assert pixels.shape == (8, 8, 3)
    np.testing.assert_allclose(pixels[0, 0] * 255, expected, atol=1)


def test_nearest_is_keras_load_img(tmp_path):
    """Keras's load_img(target_size) is PIL's convert('RGB') + resize(NEAREST); checked once against real Keras."""
    path = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (301, 257, 3), dtype=np.uint8)).save(path)
    keras_way = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.NEAREST), np.float32)
    np.testing.assert_array_equal(load_image(path, (64, 64), "nearest", exif=False) * 255, keras_way)
    smooth = load_image(path, (64, 64))  # area: averages, so random noise flattens towards grey
    assert smooth.std() < 0.5 * (keras_way / 255).std()


def test_directory_as_image_path(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path, (64, 64))


# ---------------------------------------------------------------------------------------- evaluate


def test_evaluate_reports_everything(small_signs, tmp_path, capsys):
    png = tmp_path / "cm.png"
    code = evaluate.main(["--weights", KERAS_MODEL, "--data-dir", str(small_signs), "--json", "--confusion-png", str(png)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == result["examples"] == 40
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / 40)
    assert set(result["per_class"]) == {"0", "1", "2", "3", "4", "5"}
    assert 0 <= result["accuracy_no_near_copies"] <= 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    evaluate.main(["--weights", KERAS_MODEL, "--data-dir", str(small_signs), "--confusion-png", str(png)])
    text = capsys.readouterr().out
    assert "precision" in text and "confusion matrix" in text


def test_evaluate_without_data_is_one_line(tmp_path, capsys):
    assert evaluate.main(["--weights", KERAS_MODEL, "--data-dir", str(tmp_path / "none")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------- cold start


CACHE_PROBE = r"""
import sys, jax.monitoring
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
from signs_jax import predict
code = predict.main(sys.argv[1:])
print("CACHE_HITS", len(hits))
sys.exit(code)
"""


def test_second_process_hits_the_persistent_compilation_cache(test_pngs, tmp_path):
    env = dict(os.environ, SIGNS_JAX_CACHE=str(tmp_path / "cache"))
    args = [sys.executable, "-c", CACHE_PROBE, str(test_pngs[0]), "--weights", KERAS_MODEL, "--json"]
    first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert entries, "nothing was written to the cache"
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    hits = int(second.stdout.split("CACHE_HITS")[1])
    assert hits >= 1
    assert json.loads(second.stdout.splitlines()[0])["probabilities"] == json.loads(first.stdout.splitlines()[0])["probabilities"]


def test_help_does_not_import_jax():
    probe = "import sys; from signs_jax import predict\ntry:\n    predict.main(['--help'])\nexcept SystemExit: pass\nprint('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr
