"""The typed configuration: --set and --config map onto it, config.json serialises it, the README's API snippet runs."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from signs_jax import config, train
from signs_jax.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from signs_jax.recipes import RECIPES

# config.json as runs wrote it before the configuration had sections (a run of the default recipe, seed 0).
FLAT_LAYOUT = {
    "recipe_name": "default",
    "recipe": {"epochs": 15, "batch_size": 32, "lr": 0.002, "optimizer": "adamw", "weight_decay": 0.05},
    "seed": 4,
    "val_fraction": 0.1,
    "data_dir": "/data/signs",
    "image_size": None,
    "init_from": None,
    "eval_batch_size": 60,
    "model": {
        "num_classes": 6,
        "class_names": ["0", "1", "2", "3", "4", "5"],
        "width": 1.0,
        "stage_sizes": [3, 4, 6, 3],
        "input_shape": [64, 64, 3],
        "dtype": "float32",
        "bn_momentum": 0.99,
    },
}


def test_a_config_survives_json_exactly():
    cfg = TrainConfig(
        recipe_name="walls",
        recipe=RECIPES["walls"].replace(lr=3e-3, ema_decay=0.999),
        model=ModelConfig(width=0.5, stage_sizes=(1, 2, 2, 1), num_classes=3, class_names=("a", "b", "c")),
        data=DataConfig(dir="/x", image_size=(40, 48), test_fraction=0.25),
        run=RunConfig(seed=7, eval_batch_size=64, epochs_extended_from=(10, 12)),
    )
    text = cfg.to_json()
    assert TrainConfig.from_dict(json.loads(text)) == cfg
    assert json.loads(text)["model"]["bn_momentum"] == 0.99  # what rebuilding the model reads


def test_the_flat_layout_of_earlier_runs_reads_into_sections():
    cfg = TrainConfig.from_dict(FLAT_LAYOUT)
    assert cfg.run == RunConfig(seed=4, init_from=None, eval_batch_size=60)
    assert cfg.data.dir == "/data/signs" and cfg.data.val_at_least_one is False
    assert cfg.recipe.val_fraction == 0.1 and cfg.recipe.lr == 0.002 and cfg.recipe.augment_policy == "basic"
    assert cfg.model.conv == "xla"  # configs from before "conv" was recorded ran XLA's conv
    assert TrainConfig.from_dict({**FLAT_LAYOUT, "data_dir": None}).data.dir == config.PACKAGED_DATA


def test_set_overrides_any_field_with_its_type():
    args = train.build_parser().parse_args(
        ["--set", "recipe.lr=3e-3", "--set", "model.stage_sizes=1,1,1,1", "--set", "recipe.augment=false"]
        + ["--set", "recipe.ema_decay=none", "--set", "data.image_size=48,40", "--epochs", "2", "--seed", "5"]
    )
    cfg = train.config_from_args(args)
    assert cfg.recipe.lr == 3e-3 and cfg.recipe.augment is False and cfg.recipe.ema_decay is None
    assert cfg.model.stage_sizes == (1, 1, 1, 1) and cfg.data.image_size == (48, 40)
    assert cfg.recipe.epochs == 2 and cfg.run.seed == 5 and cfg.recipe_name == "default"
    assert cfg.recipe.weight_decay == RECIPES["default"].weight_decay  # the rest stays the recipe's


def test_recipe_then_its_fields_in_any_order():
    cfg = config.apply_overrides(TrainConfig(), {"recipe.lr": 5e-4, "recipe_name": "sgd"})
    assert cfg.recipe_name == "sgd" and cfg.recipe == RECIPES["sgd"].replace(lr=5e-4)


@pytest.mark.parametrize(
    "assignment, words",
    [
        ("recipe.lr=fast", "--set recipe.lr=fast: expected a number"),
        ("recipe.lr", "--set recipe.lr: expected key=value"),
        ("recipe.learning_rate=1", "unknown config key 'recipe.learning_rate' (known in recipe: recipe.epochs,"),
        ("lr=1", "unknown config key 'lr' (known: data.dir,"),
        ("model.stage_sizes=1,x", "--set model.stage_sizes=1,x: expected a comma-separated list of whole numbers"),
        ("recipe.optimizer=adagrad", "--set recipe.optimizer adagrad: choose from adam, adamw, sgd"),
        ("recipe.label_smoothing=1.5", "--set recipe.label_smoothing 1.5: must be below 1"),
        ("recipe.rehearsal_per_class=-5", "--set recipe.rehearsal_per_class -5: must be 0 or more"),
        ("model.width=0", "--width 0.0: must be above 0"),
        ("recipe_name=fancy", "recipe 'fancy': choose from"),
    ],
)
def test_a_bad_set_is_one_line_naming_the_key_and_writes_nothing(assignment, words, tmp_path, capsys):
    assert train.main(["--set", assignment, "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err
    assert not (tmp_path / "w").exists()


def test_config_files_named_python_and_json(tmp_path):
    tiny = config.load_config("tiny")
    assert tiny.model.stage_sizes == (1, 1, 1, 1) and "tiny" in config.named_configs()
    source = tmp_path / "mine.py"
    source.write_text(
        "from signs_jax import TrainConfig, RunConfig\n\n"
        "def get_config():\n    return TrainConfig(run=RunConfig(seed=9))\n"
    )
    assert config.load_config(str(source)).run.seed == 9
    stored = tmp_path / "config.json"
    stored.write_text(tiny.with_recipe().to_json())
    assert config.load_config(str(stored)) == tiny.with_recipe()


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not a readable JSON config"),
        ('{"recipe": {"lr": "fast"}}', "recipe.lr: expected a number, found 'fast'"),
        ('{"model": {"depth": 50}}', "unknown key model.depth"),
    ],
)
def test_a_bad_config_file_is_one_line(content, words, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert train.main(["--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and words in err


def test_resume_conflicts_name_each_changed_key_and_allow_more_epochs():
    stored = TrainConfig(model=ModelConfig(width=0.5, stage_sizes=(1, 1, 1, 1)), run=RunConfig(seed=1)).with_recipe()
    same = TrainConfig(model=ModelConfig(width=0.5), run=RunConfig(seed=1))  # fields left None do not compare
    assert config.resume_conflicts(stored, same) == []
    longer = config.apply_overrides(stored, {"recipe.epochs": 30})
    assert config.resume_conflicts(stored, longer) == []
    changed = config.apply_overrides(stored, {"recipe.lr": 1e-2, "run.seed": 2, "model.dtype": "bfloat16"})
    assert sorted(config.resume_conflicts(stored, changed)) == ["model.dtype", "recipe.lr", "run.seed"]


def _readme_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api-snippet -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README.md has no API snippet"
    return match.group(1)


def test_a_recipe_names_its_compute_dtype_and_the_model_config_overrides_it():
    from types import SimpleNamespace

    from signs_jax.experiment import resolve

    signs = SimpleNamespace(num_classes=6, class_names=tuple("012345"), image_shape=(64, 64, 3))
    assert resolve(TrainConfig(recipe_name="fast"), signs).model.dtype == "bfloat16"
    assert resolve(TrainConfig(), signs).model.dtype == "bfloat16"  # the default recipe, default-v2
    assert resolve(TrainConfig(recipe_name="default-v1"), signs).model.dtype == "float32"
    given = TrainConfig(recipe_name="fast", model=ModelConfig(dtype="float32"))
    assert resolve(given, signs).model.dtype == "float32"
    assert (
        train.config_from_args(train.build_parser().parse_args(["--recipe", "fast", "--dtype", "float32"])).model.dtype
        == "float32"
    )


@pytest.mark.slow
def test_the_readme_snippet_trains_a_narrow_model_and_prints_its_test_accuracy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_snippet(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    accuracy = re.search(r"test accuracy (\d\.\d+)", printed)
    assert accuracy and 0 <= float(accuracy.group(1)) <= 1
    results = list((tmp_path / "checkpoints").glob("*/Result.csv"))
    assert len(results) == 1 and f"{float(accuracy.group(1)):.3f}" in printed


def test_runs_recorded_before_folders_decoded_as_predict_keep_their_bilinear_pixels(tmp_path):
    """A run's data must read the same when it is resumed or calibrated: config.json files written before the
    folder decoding was recorded trained on Pillow's bilinear filter without JPEG draft decoding."""
    from signs_jax.experiment import load_run_data
    from signs_jax.images import DEFAULT_INTERPOLATION, decode_image

    assert (DataConfig().interpolation, DataConfig().jpeg_draft) == (DEFAULT_INTERPOLATION, True)  # what predict does
    raw = json.loads(TrainConfig(recipe_name="finetune").with_recipe().to_json())
    del raw["data"]["interpolation"], raw["data"]["jpeg_draft"]
    recorded = TrainConfig.from_dict(raw)
    assert (recorded.data.interpolation, recorded.data.jpeg_draft) == ("bilinear", False)
    assert TrainConfig.from_dict(FLAT_LAYOUT).data.interpolation == "bilinear"

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (tmp_path / split / "0").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(tmp_path / split / "0" / "a.jpg")
    photo = tmp_path / "test" / "0" / "a.jpg"
    new = TrainConfig().with_recipe()
    for cfg, filter_name, draft in ((recorded, "bilinear", False), (new, DEFAULT_INTERPOLATION, True)):
        cfg = cfg.replace(**{"data.image_size": (64, 64), "recipe.val_fraction": 0.0})
        dataset = load_run_data(cfg, tmp_path)
        np.testing.assert_array_equal(dataset.test.images[0], decode_image(photo, (64, 64), filter_name, draft=draft))
    assert not np.array_equal(decode_image(photo, (64, 64), "bilinear", draft=False), decode_image(photo, (64, 64)))


def test_a_hand_written_json_config_decodes_folders_as_predict_does(tmp_path):
    """Only what a run recorded before the folder decoding was is read with the old decoding; a JSON config a
    user writes, however many data fields it names, trains on the pixels predict will later see."""
    path = tmp_path / "mine.json"
    data = {"dir": str(tmp_path), "image_size": [64, 64], "test_fraction": 0.3}
    path.write_text(json.dumps({"data": data, "run": {"seed": 2}}))
    cfg = config.load_config(str(path))
    assert (cfg.data.interpolation, cfg.data.jpeg_draft) == (DataConfig().interpolation, True)
