"""predict: Keras's numbers on Keras weights, real image files of every kind, bad inputs, cold start.

Every predict call here uses the width-1/8 Keras fixture, so the suite compiles it once per batch shape."""

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import KERAS_MODEL, ROOT, json_lines
from signs_jax import predict


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


def test_predict_reproduces_keras_probabilities(test_pngs, keras_expected, capsys):
    code = predict.main([*map(str, test_pngs), "--weights", KERAS_MODEL, "--interpolation", "nearest", "--json"])
    assert code == 0
    records = json_lines(capsys.readouterr().out)
    assert [r["path"] for r in records] == [str(p) for p in test_pngs]
    assert all(
        set(r) == {"path", "class", "confidence", "uncertain", "raw_confidence", "probabilities"} for r in records
    )
    probs = np.array([r["probabilities"] for r in records])
    np.testing.assert_allclose(probs, keras_expected["probabilities"], atol=1e-5, rtol=0)
    assert [r["class"] for r in records] == [str(i) for i in keras_expected["probabilities"].argmax(1)]


def test_table_csv_and_top_k(test_pngs, tmp_path, capsys):
    out_csv = tmp_path / "Result.csv"
    assert (
        predict.main([str(test_pngs[0].parent), "--weights", KERAS_MODEL, "--csv", str(out_csv), "--top-k", "3"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# weights: ") and KERAS_MODEL in lines[0]
    assert lines[1].split() == ["path", "class", "conf", "raw", "uncertain", *[f"p({i})" for i in range(6)], "top-k"]
    assert len(lines) == 2 + len(test_pngs)
    first = lines[2].split()
    # path class conf raw uncertain p(0..5) + 3 top-k cells
    assert first[0] == str(test_pngs[0]) and len(first) == 5 + 6 + 3
    rows = out_csv.read_text().strip().splitlines()
    assert rows[0] == "path,class,confidence,p(0),p(1),p(2),p(3),p(4),p(5),uncertain,raw_confidence"
    assert len(rows) == 1 + len(test_pngs)
    cells = rows[1].split(",")
    assert cells[0] == str(test_pngs[0]) and float(cells[2]) == max(map(float, cells[3:9]))
    assert abs(sum(float(v) for v in cells[3:9]) - 1) < 1e-5 and cells[9] in ("yes", "no")
    # --json --top-k adds the K best (class, probability) pairs, best first
    assert predict.main([str(test_pngs[0].parent), "--weights", KERAS_MODEL, "--json", "--top-k", "2"]) == 0
    record = json_lines(capsys.readouterr().out)[0]
    assert [c for c, _ in record["top_k"]][0] == record["class"] and len(record["top_k"]) == 2


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
    code = predict.main(
        [str(jpeg), *[str(tmp_path / b) for b in bad], str(test_pngs[1]), "--weights", KERAS_MODEL, "--json"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert [r["path"] for r in json_lines(captured.out)] == [str(jpeg), str(test_pngs[1])]
    errors = captured.err.strip().splitlines()
    assert len(errors) == len(bad), errors
    reasons = {
        "empty.jpg": "empty file",
        "text.jpg": "not an image",
        "truncated.jpg": "truncated",
        "bomb.png": "decompression bomb",
        "missing.jpg": "no such file",
        "no_images": "directory without images",
    }
    for name, reason in reasons.items():
        assert any(line.startswith(f"error: {tmp_path / name}:") and reason in line for line in errors), (name, errors)
    assert "Traceback" not in captured.err


@pytest.mark.slow
def test_no_checkpoint_says_what_to_do(tmp_path, test_pngs, capsys):
    assert predict.main([str(test_pngs[0]), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python -m signs_jax.train" in err[0] and "--weights" in err[0]
    # a run that has not saved a checkpoint yet (training just started) is no better
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "config.json").write_text("{}")
    assert predict.main([str(test_pngs[0]), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint yet" in err[0] and "--weights" in err[0]
    assert predict.main([str(test_pngs[0]), "--weights", str(tmp_path / "nothing_here")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_weights_that_do_not_fit_give_the_loaders_error(tmp_path, test_pngs, capsys):
    bad = tmp_path / "model.h5"
    bad.write_text("nope")
    assert predict.main([str(test_pngs[0]), "--weights", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not an HDF5 file" in err[0]


def test_exif_rotated_photo_predicts_like_the_upright_one(test_pngs, tmp_path, capsys):
    upright = np.asarray(Image.open(test_pngs[0]))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned clockwise: display rotated 90 degrees counter-clockwise
    sideways = tmp_path / "sideways.png"
    Image.fromarray(np.rot90(upright, k=-1)).save(sideways, exif=exif)  # lossless, unlike a JPEG
    assert predict.main([str(test_pngs[0]), str(sideways), "--weights", KERAS_MODEL, "--json"]) == 0
    a, b = json_lines(capsys.readouterr().out)
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)
    assert predict.main([str(sideways), str(test_pngs[0]), "--weights", KERAS_MODEL, "--json", "--ignore-exif"]) == 0
    assert not np.allclose(json_lines(capsys.readouterr().out)[0]["probabilities"], a["probabilities"], atol=1e-4)


def test_bad_flags_exit_2(test_pngs, capsys):
    assert predict.main([str(test_pngs[0]), "--weights", KERAS_MODEL, "--top-k", "0"]) == 2
    assert (
        predict.main([str(test_pngs[0]), "--weights", KERAS_MODEL, "--csv", str(test_pngs[0].parent / "no" / "x.csv")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cannot write the CSV file" in err[1]


# ---------------------------------------------------------------------------------- batching, streaming


class _Mean:
    """A stand-in model (mean colour as logits): compiles in milliseconds, counts its traces."""

    input_shape = (8, 8, 3)

    def __init__(self):
        self.traced_shapes = []

    def apply(self, variables, x):
        self.traced_shapes.append(x.shape)
        return x.mean(axis=(1, 2)) * variables


def test_one_batch_shape_and_decoding_stays_one_batch_ahead(tmp_path):
    from signs_jax.weights import Weights

    colours = np.random.default_rng(0).integers(0, 256, (21, 3), dtype=np.uint8)
    paths = []
    for i, colour in enumerate(colours):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.new("RGB", (13, 11), tuple(int(c) for c in colour)).save(paths[-1])
    pulled = []

    def lazily():
        for path in paths:
            pulled.append(path)
            yield path

    model = _Mean()
    results = predict.predict_files(Weights(model, 1.0, ("r", "g", "b"), "fake"), lazily(), batch_size=8)
    first = next(results)
    assert len(pulled) <= 2 * 8  # streaming: the first answer needs at most two decoded batches
    rest = list(results)
    assert [p for p, _ in [first, *rest]] == paths
    assert model.traced_shapes == [(8, 8, 8, 3)]  # 21 images = 8 + 8 + 5 padded: one compile
    expected = np.exp(colours / 255.0) / np.exp(colours / 255.0).sum(1, keepdims=True)
    np.testing.assert_allclose(np.stack([p for _, p in [first, *rest]]), expected, atol=1e-5)


@pytest.mark.parametrize(
    "files, batch, expected", [(1, 32, 1), (5, 32, 8), (24, 32, 32), (10000, 32, 32), (3, 4, 4), (9, 4, 4)]
)
def test_fixed_batch_size(files, batch, expected):
    assert predict.fixed_batch_size(files, batch) == expected


# ---------------------------------------------------------------------------------------- cold start


CACHE_PROBE = r"""
import sys, jax.monitoring
events = {}
jax.monitoring.register_event_listener(lambda event, **kw: events.__setitem__(event, events.get(event, 0) + 1))
from signs_jax import predict
code = predict.main(sys.argv[1:])
print("CACHE", events.get("/jax/compilation_cache/cache_hits", 0), events.get("/jax/compilation_cache/cache_misses", 0))
sys.exit(code)
"""


@pytest.mark.slow
def test_second_process_hits_the_persistent_compilation_cache(test_pngs, tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, SIGNS_JAX_CACHE=str(cache))
    args = [sys.executable, "-c", CACHE_PROBE, str(test_pngs[0]), "--weights", KERAS_MODEL, "--json"]

    def run():
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        hits, misses = map(int, done.stdout.split("CACHE")[1].split())
        return json.loads(done.stdout.splitlines()[0])["probabilities"], hits, misses

    first, hits, misses = run()
    entries = sorted(p.name for p in cache.iterdir())
    assert hits == 0 and misses >= 1 and len(entries) >= 1, (hits, misses, entries)
    second, hits2, misses2 = run()
    # everything the first process compiled (the model and the small eager ops) now comes from disk
    assert (hits2, misses2) == (misses, 0)
    assert sorted(p.name for p in cache.iterdir()) == entries
    assert second == first


@pytest.mark.slow
def test_help_does_not_import_jax():
    probe = (
        "import sys; from signs_jax import predict\n"
        "try:\n    predict.main(['--help'])\nexcept SystemExit: pass\n"
        "print('jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr
