"""Configuration in one place: the original architecture's constants, and the typed configuration of a run.

`TrainConfig` is the single description of an experiment: the command-line flags, `--config FILE` and
`--set key=value` all map onto it, and a run's config.json is its serialisation. Fields left at None are
resolved when the run starts (from the data, the recipe or the starting model), and the run records the
resolved configuration, so that the same config.json trains the same run again.
"""

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .errors import UserError
from .images import DEFAULT_INTERPOLATION, INTERPOLATIONS, Decoding
from .recipes import DEFAULT_RECIPE, FINETUNE_RECIPE, RECIPES, Recipe

# The original model: (blocks, [F1, F2, F3]) for stages 2..5, stride 1 on stage 2 and 2 on the others.
RESNET50_STAGE_SIZES = (3, 4, 6, 3)
RESNET50_STAGE_FILTERS = ((64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048))
RESNET50_STEM_FILTERS = 64
FIRST_STAGE = 2  # Keras names stages 2..5 (`res2a_branch2a`)

# Keras BatchNormalization defaults, which the original model uses unchanged.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

NUM_CLASSES = 6
INPUT_SHAPE = (64, 64, 3)
CLASS_NAMES = ("0", "1", "2", "3", "4", "5")

DEFAULT_WORKDIR = Path("checkpoints")

# How a resolved configuration names the SIGNS copy inside the package: by name, not by path, so that a run
# still finds it after the package is reinstalled or moved. `--data-dir` accepts it too.
PACKAGED_DATA = "packaged:SIGNS"


def scaled(filters: int, width: float) -> int:
    """Filter count of a width-scaled variant (never below one filter)."""
    return max(1, int(round(filters * width)))


# ------------------------------------------------------------------------------------------ the typed config


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    width: Optional[float] = None  # filter-count multiplier; None: the starting model's, else 1 (the original)
    stage_sizes: Optional[Tuple[int, ...]] = None  # blocks per stage; None: the starting model's, else 3,4,6,3
    dtype: Optional[str] = None  # compute dtype (parameters stay float32); None: the recipe's, else float32
    conv: Optional[str] = None  # xla | matmul; None: the default of the backend the model runs on, wherever
    # From the data (and recorded): the classes and the input the model is built for.
    num_classes: Optional[int] = None
    class_names: Optional[Tuple[str, ...]] = None
    input_shape: Optional[Tuple[int, int, int]] = None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # A SIGNS h5 pair, image folders train/ + test/, or class folders (split here); None: $SIGNS_DATA_DIR,
    # then ./datasets if it holds data, then the packaged copy. Resolved: an absolute path or PACKAGED_DATA.
    dir: Optional[str] = None
    image_size: Optional[Tuple[int, int]] = None  # resize folder images to (height, width)
    # Class folders without a train/test split: this stratified, seeded share of each class is the test set.
    test_fraction: float = 0.2
    # Hold-outs give at least one image of each class that has two (False only in runs recorded before).
    val_at_least_one: bool = True
    # Image folders are decoded as predict decodes a photo (its resize filter and JPEG draft decoding), so that a
    # model trained on photos is later asked with the pixels it learnt from. Runs recorded before these fields
    # existed trained on RECORDED_FOLDER_DECODING and keep it.
    interpolation: str = DEFAULT_INTERPOLATION
    jpeg_draft: bool = True

    @property
    def decoding(self) -> Decoding:
        return Decoding(self.interpolation, self.jpeg_draft)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # init, batch order, augmentation and the data splits
    init_from: Optional[str] = None  # fine-tune from a Keras .h5, a run directory or a work directory
    eval_batch_size: int = 120
    # Earlier epoch targets of a run resumed with more epochs, oldest first (recorded, never compared).
    epochs_extended_from: Tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """An experiment. `recipe` None: the named recipe (`recipe_name`, default: "finetune" with
    run.init_from, else "default"), whose fields `--set recipe.lr=...` and the flags override."""

    recipe_name: Optional[str] = None
    recipe: Optional[Recipe] = None
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    run: RunConfig = RunConfig()

    def named_recipe(self) -> str:
        if self.recipe_name is not None:
            return self.recipe_name
        return FINETUNE_RECIPE if self.run.init_from else DEFAULT_RECIPE

    def with_recipe(self) -> "TrainConfig":
        """The recipe named and filled in (what every `recipe.*` override and the run start from)."""
        name = self.named_recipe()
        if name not in RECIPES:
            raise UserError(f"recipe {name!r}: choose from {', '.join(sorted(RECIPES))}")
        return dataclasses.replace(self, recipe_name=name, recipe=self.recipe or RECIPES[name])

    def replace(self, **changes) -> "TrainConfig":
        """`config.replace(**{"recipe.lr": 3e-3, "run.seed": 1})`: typed values by dotted key."""
        return apply_overrides(self, changes)

    def to_dict(self) -> Dict[str, Any]:
        """config.json's content. The model section also carries the recipe's BatchNorm momentum, which
        rebuilding the model needs."""
        out = _plain(dataclasses.asdict(self))
        if self.recipe is not None:
            out["model"]["bn_momentum"] = self.recipe.bn_momentum
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        """The inverse of to_dict; also reads the flat layout runs recorded before sections existed."""
        raw = _upgrade(dict(raw))
        try:
            return _build(cls, raw, "")
        except _BadField as bad:
            raise UserError(f"{source}: {bad}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "run": RunConfig, "recipe": Recipe}


def _plain(value):
    """Tuples as lists, as JSON has them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# How image folders were decoded before DataConfig recorded it: Pillow's bilinear filter, no JPEG draft decoding.
RECORDED_FOLDER_DECODING = {"interpolation": "bilinear", "jpeg_draft": False}
RECORDED_SECTIONS = {"recipe_name", "recipe", "model", "data", "run"}


def _upgrade(raw: Dict[str, Any]) -> Dict[str, Any]:
    """Configs of earlier runs as they read now: the flat layout (seed, data_dir, val_fraction... at the top) as
    sections, and the folder decoding they trained with where they did not record it."""
    if "run" in raw or isinstance(raw.get("data"), dict):
        data = dict(raw.get("data") or {})
        # A run records every section and every data field (to_dict); a config written by hand names what it
        # changes and gets the defaults for the rest, predict's decoding among them.
        recorded = RECORDED_SECTIONS <= raw.keys() and {"dir", "image_size", "test_fraction"} <= data.keys()
        if recorded and not data.keys() & RECORDED_FOLDER_DECODING.keys():
            raw = {**raw, "data": {**data, **RECORDED_FOLDER_DECODING}}
        return raw
    recipe = dict(raw.get("recipe") or {})
    if "val_fraction" in raw:
        recipe["val_fraction"] = raw["val_fraction"]
    model = {k: v for k, v in (raw.get("model") or {}).items() if k != "bn_momentum"}
    if "conv" not in model and model:
        model["conv"] = "xla"  # configs written before "conv" was recorded ran XLA's conv
    return {
        "recipe_name": raw.get("recipe_name"),
        "recipe": recipe or None,
        "model": model,
        "data": {
            "dir": PACKAGED_DATA if raw.get("data_dir") is None else raw["data_dir"],
            "image_size": raw.get("image_size"),
            "val_at_least_one": bool(raw.get("val_at_least_one", False)),
            **RECORDED_FOLDER_DECODING,
        },
        "run": {
            "seed": raw.get("seed", 0),
            "init_from": raw.get("init_from"),
            "eval_batch_size": raw.get("eval_batch_size", 120),
        },
    }


class _BadField(Exception):
    pass


def _build(cls, raw: Mapping[str, Any], prefix: str):
    if not isinstance(raw, Mapping):
        raise _BadField(f"{prefix.rstrip('.') or 'config'}: expected a mapping, found {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names - ({"bn_momentum"} if cls is ModelConfig else set()))
    if unknown:
        raise _BadField(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name in names & set(raw):
        key, value = prefix + name, raw[name]
        hint = hints[name]
        section = _section_type(hint)
        if section is not None and value is not None:
            values[name] = _build(section, value, key + ".")
        else:
            values[name] = _coerce(key, value, hint)
    return cls(**values)


def _section_type(hint):
    """The dataclass a field holds (Recipe, ModelConfig...), if any."""
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _coerce(key: str, value, hint):
    """A JSON or Python value as the field's type, or _BadField naming the key."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        return None if value is None else _coerce(key, value, _without_none(hint))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise _BadField(f"{key}: expected a list, found {value!r}")
        items = args[:1] * len(value) if args[-1] is Ellipsis else args
        if len(items) != len(value):
            raise _BadField(f"{key}: expected {len(items)} values, found {len(value)}")
        return tuple(_coerce(key, v, t) for v, t in zip(value, items))
    if hint is bool:
        if not isinstance(value, bool):
            raise _BadField(f"{key}: expected true or false, found {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadField(f"{key}: expected a whole number, found {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _BadField(f"{key}: expected a number, found {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _BadField(f"{key}: expected text, found {value!r}")
        return value
    raise _BadField(f"{key}: cannot set a field of type {hint}")  # no such field today


# ------------------------------------------------------------------------------------------ overrides


def field_type(key: str):
    """The type of a dotted key (`recipe.lr`, `run.seed`, `recipe_name`), or UserError naming the key."""
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if head not in fields or (head in SECTIONS) != bool(rest):
        known = sorted(
            [name for name in fields if name not in SECTIONS]
            + [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
        )
        raise UserError(f"unknown config key {key!r} (known: {', '.join(known)})")
    if not rest:
        return typing.get_type_hints(TrainConfig)[head]
    hints = typing.get_type_hints(SECTIONS[head])
    if rest not in hints:
        known = ", ".join(f"{head}.{name}" for name in hints)
        raise UserError(f"unknown config key {key!r} (known in {head}: {known})")
    return hints[rest]


def _without_none(hint):
    """X of Optional[X]; other types as they are."""
    if typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def takes_list(key: str) -> bool:
    """Whether the key holds a list (its `--set` text is comma-separated)."""
    return typing.get_origin(_without_none(field_type(key))) is tuple


def parse_value(key: str, text: str):
    """`--set key=text`: the text as the key's type (numbers, true/false, none, comma-separated lists)."""
    hint = field_type(key)
    base = _without_none(hint)
    if base is not hint and text.strip().lower() in ("none", "null", ""):
        return None
    try:
        if typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            parts = [p.strip() for p in text.split(",") if p.strip()]
            return tuple(_parse_scalar(item, p) for p in parts)
        return _parse_scalar(base, text.strip())
    except ValueError:
        raise UserError(f"--set {key}={text}: expected {_describe(hint)}") from None


def _parse_scalar(kind, text: str):
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(text)
        return text.lower() in ("true", "1", "yes")
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    return text


def _describe(hint) -> str:
    base = _without_none(hint)
    if typing.get_origin(base) is tuple:
        plural = {int: "whole numbers", float: "numbers", str: "names"}
        text = f"a comma-separated list of {plural.get(typing.get_args(base)[0], 'values')}"
    else:
        text = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(base, str(base))
    return text + (" or none" if base is not hint else "")


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """Set dotted keys (typed values, e.g. from parse_value). `recipe_name` applies first and starts the
    recipe afresh from that name; `recipe.*` keys apply last, on the recipe their name (or run.init_from,
    which picks the fine-tuning recipe) fills in."""
    order = lambda item: 0 if item[0] == "recipe_name" else 2 if item[0].startswith("recipe.") else 1  # noqa: E731
    ordered = sorted(overrides.items(), key=order)
    for key, value in ordered:
        hint = field_type(key)
        try:
            value = _coerce(key, list(value) if isinstance(value, tuple) else value, hint)
        except _BadField as bad:
            raise UserError(str(bad)) from None
        head, _, rest = key.partition(".")
        if key == "recipe_name":
            config = dataclasses.replace(config, recipe_name=value, recipe=None)
        elif head == "recipe":
            config = config.with_recipe()
            config = dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, **{rest: value}))
        elif rest:
            section = dataclasses.replace(getattr(config, head), **{rest: value})
            config = dataclasses.replace(config, **{head: section})
        else:
            config = dataclasses.replace(config, **{head: value})
    return config


def parse_overrides(assignments: Iterable[str]) -> Dict[str, Any]:
    """`--set` arguments (`key=value`) as typed values by key."""
    out = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {text}: expected key=value, e.g. recipe.lr=3e-3")
        out[key.strip()] = parse_value(key.strip(), value)
    return out


def flatten(config: TrainConfig) -> Dict[str, Any]:
    """Every field by dotted key (sections expanded; a recipe left to its name is filled in)."""
    out = {}
    for name in ("recipe_name", "recipe", "model", "data", "run"):
        value = getattr(config.with_recipe() if name in ("recipe", "recipe_name") else config, name)
        if dataclasses.is_dataclass(value):
            out.update({f"{name}.{f.name}": getattr(value, f.name) for f in dataclasses.fields(value)})
        else:
            out[name] = value
    return out


# Fields that may differ between a run and the config that resumes it.
RESUME_MAY_CHANGE = ("recipe.epochs", "run.epochs_extended_from")


def resume_conflicts(stored: TrainConfig, given: TrainConfig) -> List[str]:
    """The keys `given` sets (not None) to another value than the run being resumed has.

    Fields the run resolved at its start (width, data dir...) compare only when `given` sets them; a
    recipe left to its name compares by name.
    """
    stored_flat = flatten(stored)
    given_raw = {name: getattr(given, name) for name in ("model", "data", "run")}
    conflicts = []
    if given.recipe_name is not None and given.recipe_name != stored.recipe_name:
        conflicts.append("recipe_name")
    if given.recipe is not None:
        given_raw["recipe"] = given.recipe
    for section, value in given_raw.items():
        for f in dataclasses.fields(value):
            key = f"{section}.{f.name}"
            mine = getattr(value, f.name)
            if key in RESUME_MAY_CHANGE or mine is None:
                continue
            if stored_flat.get(key) != mine:
                conflicts.append(key)
    return conflicts


# ------------------------------------------------------------------------------------------ config files

CONFIGS_PACKAGE = "signs_jax.configs"


def load_config(spec: str) -> TrainConfig:
    """`--config`: a named experiment (signs_jax/configs/NAME.py), a Python file with `get_config()`, or a JSON
    file (a run's config.json trains that run again)."""
    import importlib
    import importlib.util

    path = Path(spec)
    if not path.suffix and not path.exists():
        try:
            module = importlib.import_module(f"{CONFIGS_PACKAGE}.{spec}")
        except ModuleNotFoundError:
            raise UserError(
                f"--config {spec}: no such file, nor a named experiment ({', '.join(named_configs())})"
            ) from None
        return _checked(module.get_config(), spec)
    if not path.is_file():
        raise UserError(f"--config {spec}: no such file")
    if path.suffix == ".py":
        loader_spec = importlib.util.spec_from_file_location(f"_signs_jax_config_{path.stem}", path)
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - a user's file: its error in one line
            raise UserError(f"{path}: cannot load ({type(err).__name__}: {err})") from None
        if not hasattr(module, "get_config"):
            raise UserError(f"{path}: defines no get_config() returning a TrainConfig")
        return _checked(module.get_config(), str(path))
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable JSON config ({err})") from None
    return TrainConfig.from_dict(raw, str(path))


def _checked(config, source: str) -> TrainConfig:
    if not isinstance(config, TrainConfig):
        raise UserError(f"{source}: get_config() returned {type(config).__name__}, not a TrainConfig")
    return config


def named_configs() -> List[str]:
    folder = Path(__file__).parent / "configs"
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


# ------------------------------------------------------------------------------------------ validation

MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_WIDTH = 16.0  # 16x the original's filters: already far beyond what any device here holds
MAX_BLOCKS = 64  # per stage (ResNet152 has 36)
MAX_IMAGE_SIDE = 4096
MAX_SEED = 2**32 - 1  # numpy's and JAX's seeds


def output_side(side: int) -> int:
    """The side of the feature map the Dense head sees for an input of `side` pixels (<= 0: nothing left).

    ZeroPad 3 + conv 7x7/2, max-pool 3x3/2 'valid', three stages whose 1x1 convs take stride 2, avg-pool 2x2/2.
    """
    side = (side + 2 * 3 - 7) // 2 + 1
    side = (side - 3) // 2 + 1 if side >= 3 else 0
    for _ in range(3):
        side = (side - 1) // 2 + 1 if side >= 1 else 0
    return side // 2


MIN_IMAGE_SIDE = next(side for side in range(1, 1024) if output_side(side) >= 1)


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def validate(config: TrainConfig, label=lambda key: key) -> None:
    """Every value that can be checked without the data, before anything is written: one line naming the key
    (`label` turns a key into what the user typed, e.g. its command-line flag)."""
    from .augment import POLICIES

    def bad(key, value, reason):
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
        raise UserError(f"{label(key)} {shown}: {reason}")

    config = config.with_recipe()
    recipe, model, data, run = config.recipe, config.model, config.data, config.run
    if not 1 <= recipe.epochs <= MAX_EPOCHS:
        bad("recipe.epochs", recipe.epochs, f"must be between 1 and {MAX_EPOCHS}")
    if recipe.dtype not in (None, "float32", "bfloat16"):
        bad("recipe.dtype", recipe.dtype, "choose from float32, bfloat16")
    if not 1 <= recipe.batch_size <= MAX_BATCH_SIZE:
        bad("recipe.batch_size", recipe.batch_size, f"must be between 1 and {MAX_BATCH_SIZE}")
    if not 1 <= run.eval_batch_size <= MAX_BATCH_SIZE:
        bad("run.eval_batch_size", run.eval_batch_size, f"must be between 1 and {MAX_BATCH_SIZE}")
    for key in ("lr", "adam_eps"):
        value = getattr(recipe, key)
        if not (_finite(value) and value > 0):
            bad(f"recipe.{key}", value, "must be a finite number above 0")
    for key in ("weight_decay", "l2", "warmup_epochs", "label_smoothing"):
        value = getattr(recipe, key)
        if not (_finite(value) and value >= 0):
            bad(f"recipe.{key}", value, "must be a finite number, 0 or above")
    if recipe.label_smoothing >= 1:
        bad("recipe.label_smoothing", recipe.label_smoothing, "must be below 1")
    for key in ("bn_momentum", "ema_decay"):
        value = getattr(recipe, key)
        if value is not None and not (_finite(value) and 0 <= value < 1):
            bad(f"recipe.{key}", value, "must be at least 0 and below 1")
    for key in ("bn_recalibration_images", "rehearsal_per_class"):
        if getattr(recipe, key) < 0:
            bad(f"recipe.{key}", getattr(recipe, key), "must be 0 or more")
    choices = {"optimizer": ("adam", "adamw", "sgd"), "schedule": ("constant", "cosine"), "augment_policy": POLICIES}
    for key, allowed in choices.items():
        if getattr(recipe, key) not in allowed:
            bad(f"recipe.{key}", getattr(recipe, key), f"choose from {', '.join(allowed)}")
    if not (_finite(recipe.val_fraction) and 0 <= recipe.val_fraction < 1):
        bad("recipe.val_fraction", recipe.val_fraction, "must be at least 0 and below 1")
    if data.interpolation not in INTERPOLATIONS:
        bad("data.interpolation", data.interpolation, f"choose from {', '.join(INTERPOLATIONS)}")
    if not (_finite(data.test_fraction) and 0 < data.test_fraction < 1):
        bad("data.test_fraction", data.test_fraction, "must be above 0 and below 1")
    if not 0 <= run.seed <= MAX_SEED:
        bad("run.seed", run.seed, f"must be between 0 and {MAX_SEED}")
    _validate_model(model, bad)
    if data.image_size is not None and (
        len(data.image_size) != 2 or not all(MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE for side in data.image_size)
    ):
        bad(
            "data.image_size",
            data.image_size,
            f"two sides, each between {MIN_IMAGE_SIDE} (the model's smallest input) and {MAX_IMAGE_SIDE}",
        )
    if run.init_from and not Path(run.init_from).exists():
        raise UserError(
            f"{run.init_from}: no such file or directory "
            f"({label('run.init_from')} takes a Keras .h5, a run directory or a work directory)"
        )


def _validate_model(model: ModelConfig, bad) -> None:
    from .models import CONV_IMPLEMENTATIONS

    if model.width is not None and (not (_finite(model.width) and model.width > 0) or model.width > MAX_WIDTH):
        bad("model.width", model.width, f"must be above 0 and at most {MAX_WIDTH:g}")
    if model.width is not None and round(RESNET50_STEM_FILTERS * model.width) < 1:
        bad(
            "model.width",
            model.width,
            f"leaves the first convolution without a filter (at least {0.5 / RESNET50_STEM_FILTERS:g})",
        )
    if model.stage_sizes is not None and (
        len(model.stage_sizes) != 4 or not all(1 <= n <= MAX_BLOCKS for n in model.stage_sizes)
    ):
        bad("model.stage_sizes", model.stage_sizes, f"expected four block counts between 1 and {MAX_BLOCKS}")
    if model.dtype not in (None, "float32", "bfloat16"):
        bad("model.dtype", model.dtype, "choose from float32, bfloat16")
    if model.conv is not None and model.conv not in CONV_IMPLEMENTATIONS:
        bad("model.conv", model.conv, f"choose from {', '.join(sorted(CONV_IMPLEMENTATIONS))}")
