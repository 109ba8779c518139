"""Bad Keras files: one clear error naming the file and what is wrong; valid variants still load."""

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

import signs_jax
from helpers import KERAS_FILES, ROOT
from signs_jax import KerasH5Error


def copy_of(layout, tmp_path):
    dst = tmp_path / f"{layout}.h5"
    shutil.copy(KERAS_FILES[layout], dst)
    return dst


def weights_root(f):
    return f["model_weights"] if "model_weights" in f else f


def set_layer_names(root, names):
    root.attrs["layer_names"] = [n.encode() for n in names]


def layer_names(root):
    return [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs["layer_names"]]


def error_of(path, **kwargs) -> str:
    with pytest.raises(KerasH5Error) as info:
        signs_jax.load_keras_h5(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


def test_missing_file_and_directory(tmp_path):
    assert "no such file" in error_of(tmp_path / "absent.h5")
    assert "is a directory" in error_of(tmp_path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "ResNet50.h5"
    path.write_text("this is not a model\n")
    assert "not an HDF5 file" in error_of(path)


def test_hdf5_but_not_keras(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["train_set_x"] = np.zeros((2, 4), np.uint8)
    assert "not a Keras model" in error_of(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95])
def test_truncated_file(keep, tmp_path):
    data = KERAS_FILES["keras2_model"].read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(data[: int(len(data) * keep)])
    assert "truncated or corrupt" in error_of(path)


def test_missing_block_lists_its_layers(tmp_path):
    path = copy_of("keras2_weights", tmp_path)
    with h5py.File(path, "r+") as f:
        gone = [n for n in layer_names(f) if n.startswith(("res4f_", "bn4f_"))]
        assert len(gone) == 6
        for name in gone:
            del f[name]
        set_layer_names(f, [n for n in layer_names(f) if n not in gone])
    message = error_of(path)
    assert "missing from file" in message
    for name in ("res4f_branch2a", "bn4f_branch2a", "res4f_branch2b", "bn4f_branch2c"):
        assert name in message


def test_another_filter_count_lists_expected_and_found_shapes(tmp_path):
    path = copy_of("keras2_model", tmp_path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights"]["res3b_branch2b"]
        name = [n for n in group.attrs["weight_names"] if "kernel" in str(n)][0]
        del group[name]
        group[name] = np.zeros((3, 3, 16, 12), np.float32)
    message = error_of(path)
    assert "shape mismatch: res3b_branch2b/kernel expected (3, 3, 16, 16) found (3, 3, 16, 12)" in message


def test_another_layer_naming_lists_unmapped_layers(tmp_path):
    path = copy_of("keras2_weights", tmp_path)
    with h5py.File(path, "r+") as f:
        names = layer_names(f)
        f.move("res2a_branch2a", "conv2_block1_1_conv")
        set_layer_names(f, ["conv2_block1_1_conv" if n == "res2a_branch2a" else n for n in names])
    message = error_of(path)
    assert "missing from file: res2a_branch2a (kernel, bias)" in message
    assert "not in the model: conv2_block1_1_conv (kernel, bias)" in message


def test_a_model_without_the_course_head(tmp_path):
    path = copy_of("keras2_weights", tmp_path)
    with h5py.File(path, "r+") as f:
        f.move("fc6", "predictions")
        set_layer_names(f, ["predictions" if n == "fc6" else n for n in layer_names(f)])
    assert "Dense layer named fc<classes>" in error_of(path)


def test_a_model_passed_in_is_checked_against_the_file(tmp_path):
    shallower = signs_jax.ResNet50(num_classes=6, width=0.125, stage_sizes=(3, 4, 5, 3))
    message = error_of(KERAS_FILES["keras2_model"], model=shallower)
    assert "not in the model: res4f_branch2a" in message


def test_model_config_is_json_and_gives_the_input_size(tmp_path):
    path = copy_of("keras2_model", tmp_path)
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "InputLayer":
                layer["config"]["batch_input_shape"] = [None, 128, 128, 3]
        f.attrs["model_config"] = json.dumps(cfg)
    # a 128x128 input makes a 4x wider Dense input than the file holds
    assert "fc6/kernel expected (1024, 6) found (256, 6)" in error_of(path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = "__import__('os').system('echo pwned')"
    assert "not valid JSON" in error_of(path)


def test_layer_names_split_in_chunks_and_top_level_group_are_read(tmp_path, keras_loaded):
    """Keras splits long attributes into layer_names0, layer_names1, ...; tf-keras adds top_level_model_weights."""
    path = copy_of("keras2_model", tmp_path)
    with h5py.File(path, "r+") as f:
        root = f["model_weights"]
        names = layer_names(root)
        del root.attrs["layer_names"]
        for i, start in enumerate(range(0, len(names), 50)):
            root.attrs[f"layer_names{i}"] = [n.encode() for n in names[start : start + 50]]
        assert "top_level_model_weights" in root  # written by the real tf-keras that made the fixture
    _, variables = signs_jax.load_keras_h5(path)
    _, reference = keras_loaded
    assert np.array_equal(variables["params"]["fc"]["kernel"], reference["params"]["fc"]["kernel"])


@pytest.mark.slow
def test_cli_reports_one_line_and_exits_nonzero(tmp_path):
    bad = tmp_path / "ResNet50.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    run = subprocess.run(
        [sys.executable, "-m", "signs_jax.keras_h5", str(bad)], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:"), run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_cli_checks_and_exports_a_good_file(tmp_path):
    out = tmp_path / "exported.h5"
    run = subprocess.run(
        [sys.executable, "-m", "signs_jax.keras_h5", str(KERAS_FILES["keras3_legacy"]), "--export", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "num_classes=6" in run.stdout and "379,014" in run.stdout
    assert signs_jax.load_keras_h5(out)[0].num_classes == 6


def _replace_conv1_kernel(path, make):
    with h5py.File(path, "r+") as f:
        group = weights_root(f)["conv1"]["conv1"]
        value = group["kernel:0"][...]
        del group["kernel:0"]
        group["kernel:0"] = make(value)


def test_non_finite_weights_are_refused(tmp_path):
    """NaN weights would give one class for every image and exit 0: refused on load instead."""
    path = copy_of("keras2_weights", tmp_path)

    def with_nan(value):
        value[0, 0, 0, 0] = np.nan
        return value

    _replace_conv1_kernel(path, with_nan)
    message = error_of(path)
    assert "NaN or infinite" in message and "conv1 (kernel)" in message


def test_weights_stored_as_strings_are_one_line(tmp_path):
    path = copy_of("keras2_weights", tmp_path)
    _replace_conv1_kernel(path, lambda value: np.full(value.shape, b"0.5", dtype="S4"))
    message = error_of(path)
    assert "not numbers" in message and "conv1" in message


def test_an_exported_shallow_variant_loads_back_with_its_own_depth(tmp_path):
    import jax

    model = signs_jax.ResNet50(3, width=0.125, stage_sizes=(1, 2, 1, 1))
    variables = signs_jax.init_variables(model, jax.random.key(0))
    path = signs_jax.save_keras_h5(tmp_path / "shallow.h5", variables)
    loaded, restored = signs_jax.load_keras_h5(path)
    assert tuple(loaded.stage_sizes) == (1, 2, 1, 1) and loaded.num_classes == 3
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
