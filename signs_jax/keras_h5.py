"""Keras ResNet50 `.h5` weights in and out.

One table (`keras_layer_table`) maps every Keras layer of the original model to its place in the
Flax tree, in Keras's own layer order. The importer fills each Flax leaf from exactly one Keras
weight, by name, and reports every missing, unused or misshapen weight at once; the exporter writes
the same table back as a Keras 2 weights file that `model.load_weights` accepts.

Layouts read:
- Keras 2 full model (`model.save("x.h5")`): weights under `model_weights/`, `model_config` JSON.
- Keras 2 weights only (`model.save_weights("x.h5")`): layer groups at the file root.
- Keras 3 legacy `.h5`: as Keras 2 but weight names without the `:0` suffix.
"""

import json
import re
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import cli, config
from .errors import UserError

CONV_WEIGHTS = {"kernel": ("params", "kernel"), "bias": ("params", "bias")}
DENSE_WEIGHTS = CONV_WEIGHTS
BN_WEIGHTS = {
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}
HEAD_NAME = re.compile(r"fc\d+$")


class KerasH5Error(UserError):
    """A Keras `.h5` file that cannot be read as this model (the message names the file)."""


class KerasLayer(NamedTuple):
    name: str  # Keras layer name, e.g. 'bn2a_branch2a'
    weights: Dict[str, Tuple[str, str]]  # Keras weight name -> (collection, Flax leaf name)
    flax_path: Tuple[str, ...]  # module path in the Flax tree, e.g. ('res2a', 'bn_branch2a')


def keras_layer_table(stage_sizes: Sequence[int], num_classes: int) -> List[KerasLayer]:
    """Every weight-holding Keras layer of the original model, in Keras's `model.layers` order."""
    from .models import block_name

    table = [KerasLayer("conv1", CONV_WEIGHTS, ("conv1",)), KerasLayer("bn_conv1", BN_WEIGHTS, ("bn_conv1",))]
    for stage, blocks in enumerate(stage_sizes):
        for block in range(blocks):
            name = block_name(stage, block)  # 'res2a'
            suffix = name[3:]  # '2a'

            def conv(branch, suffix=suffix, name=name):
                return KerasLayer(f"res{suffix}_branch{branch}", CONV_WEIGHTS, (name, f"branch{branch}"))

            def norm(branch, suffix=suffix, name=name):
                return KerasLayer(f"bn{suffix}_branch{branch}", BN_WEIGHTS, (name, f"bn_branch{branch}"))

            table += [conv("2a"), norm("2a"), conv("2b"), norm("2b"), conv("2c")]
            # Keras orders the projection shortcut's conv before the last BatchNorm of the main path.
            table += [conv("1"), norm("2c"), norm("1")] if block == 0 else [norm("2c")]
    table.append(KerasLayer(f"fc{num_classes}", DENSE_WEIGHTS, ("fc",)))
    return table


# ---------------------------------------------------------------------------------------------
# Reading


def _attr_strings(node, name: str) -> Optional[List[str]]:
    """A list-of-strings attribute that Keras may have split into `name0`, `name1`, ... chunks."""
    if name in node.attrs:
        values = list(node.attrs[name])
    elif f"{name}0" in node.attrs:
        values, i = [], 0
        while f"{name}{i}" in node.attrs:
            values += list(node.attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _short_weight_name(weight_name: str) -> str:
    """'conv1/kernel:0' (Keras 2) or 'conv1/kernel' (Keras 3) -> 'kernel'."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


class KerasFile(NamedTuple):
    layout: str
    weights: Dict[str, Dict[str, np.ndarray]]  # layer -> short weight name -> value
    model_config: Optional[dict]
    # Blocks per stage as our export records them (STAGE_SIZES_ATTR); Keras files carry none: the original's.
    stage_sizes: Optional[Tuple[int, ...]] = None


# Our export writes the blocks per stage of a shallower variant as a root attribute (Keras ignores it), so
# that the file loads back as that variant; the missing blocks of a damaged original stay an error.
STAGE_SIZES_ATTR = "signs_jax_stage_sizes"


def read_keras_h5(path) -> KerasFile:
    """Every weight of a Keras `.h5` file, by layer and weight name; nothing is interpreted yet."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise KerasH5Error(f"{path}: no such file")
    if path.is_dir():
        raise KerasH5Error(f"{path}: is a directory, not a Keras .h5 file")
    try:
        if not h5py.is_hdf5(path):
            raise KerasH5Error(f"{path}: not an HDF5 file (a Keras .h5 model or weights file was expected)")
        with h5py.File(path, "r") as f:
            return _read_open_file(path, f)
    except KerasH5Error:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise KerasH5Error(f"{path}: unreadable HDF5 file, truncated or corrupt ({err})") from None


def _read_open_file(path: Path, f) -> KerasFile:
    if "model_weights" in f:
        root, layout = f["model_weights"], "Keras full model"
    elif _attr_strings(f, "layer_names") is not None:
        root, layout = f, "Keras weights"
    else:
        raise KerasH5Error(f"{path}: HDF5 file but not a Keras model (no 'model_weights' group, no 'layer_names')")
    layer_names = _attr_strings(root, "layer_names")
    if layer_names is None:
        raise KerasH5Error(f"{path}: Keras 'model_weights' group has no 'layer_names' attribute")

    weights: Dict[str, Dict[str, np.ndarray]] = {}
    suffixed = False
    for layer in layer_names:  # groups not listed (e.g. 'top_level_model_weights') are not layers
        if layer not in root:
            raise KerasH5Error(f"{path}: layer '{layer}' is listed in 'layer_names' but has no group")
        group = root[layer]
        weight_names = _attr_strings(group, "weight_names") or []
        for weight_name in weight_names:
            short = _short_weight_name(weight_name)
            suffixed |= ":" in weight_name
            if short in weights.get(layer, {}):
                raise KerasH5Error(f"{path}: layer '{layer}' holds two weights named '{short}'")
            if weight_name not in group:
                raise KerasH5Error(f"{path}: weight '{weight_name}' of layer '{layer}' is listed but missing")
            weights.setdefault(layer, {})[short] = np.asarray(group[weight_name])
    layout += ", Keras 2" if suffixed else ", Keras 3 legacy"

    model_config = None
    raw = f.attrs.get("model_config")
    if raw is not None:
        try:
            model_config = json.loads(raw.decode("utf8") if isinstance(raw, bytes) else str(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise KerasH5Error(f"{path}: 'model_config' attribute is not valid JSON ({err})") from None
    if not weights:
        raise KerasH5Error(f"{path}: Keras file holds no weights")
    recorded = f.attrs.get(STAGE_SIZES_ATTR)
    stage_sizes = None
    if recorded is not None:
        stage_sizes = tuple(int(n) for n in np.asarray(recorded).ravel())
        if len(stage_sizes) != 4 or min(stage_sizes) < 1:
            raise KerasH5Error(f"{path}: attribute {STAGE_SIZES_ATTR} is {stage_sizes}, not four block counts")
    return KerasFile(layout, weights, model_config, stage_sizes)


def input_shape_from_config(model_config: Optional[dict]) -> Optional[Tuple[int, int, int]]:
    """(H, W, C) of the model's InputLayer in a stored Keras model config, if it names one."""
    if not model_config:
        return None
    for layer in model_config.get("config", {}).get("layers", []):
        if layer.get("class_name") == "InputLayer":
            cfg = layer.get("config", {})
            shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
            if shape and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
                return tuple(shape[1:])
    return None


def _describe(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def load_keras_h5(path, model=None):
    """Load a Keras ResNet50 `.h5` (full model or weights) as `(model, {"params", "batch_stats"})`.

    Without `model`, builds `ResNet50` with the class count of the `fc<N>` layer, the width of
    `conv1`, and the input size from the stored model config (64x64 when the file has none).
    Every Flax leaf must come from exactly one Keras weight of the same shape; anything else raises
    `KerasH5Error` listing every offending layer.
    """
    import jax.numpy as jnp

    from .models import abstract_variables

    path = Path(path)
    keras_file = read_keras_h5(path)
    if model is None:
        model = _model_for_file(path, keras_file)

    expected = abstract_variables(model)
    table = keras_layer_table(model.stage_sizes, model.num_classes)
    variables = {"params": {}, "batch_stats": {}}
    missing, mismatched, not_numbers, not_finite = [], [], [], []
    used = set()
    for layer in table:
        found = keras_file.weights.get(layer.name, {})
        for weight, (collection, leaf) in layer.weights.items():
            want = _lookup(expected[collection], layer.flax_path + (leaf,)).shape
            if weight not in found:
                missing.append(f"{layer.name}/{weight}")
                continue
            used.add((layer.name, weight))
            value = found[weight]
            if value.shape != tuple(want):
                mismatched.append(f"{layer.name}/{weight} expected {_describe(want)} found {_describe(value.shape)}")
                continue
            if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                not_numbers.append(f"{layer.name}/{weight} ({value.dtype})")
                continue
            value = value.astype(np.float32)
            if not np.isfinite(value).all():  # a model that predicts one class for every image, silently
                not_finite.append(f"{layer.name}/{weight}")
            _assign(variables[collection], layer.flax_path + (leaf,), value)
    unused = [f"{layer}/{w}" for layer, ws in keras_file.weights.items() for w in ws if (layer, w) not in used]
    if not_numbers:
        raise KerasH5Error(f"{path}: weights that are not numbers: " + _by_layer(not_numbers))
    if not_finite:
        raise KerasH5Error(f"{path}: weights with NaN or infinite values: " + _by_layer(not_finite))
    if missing or unused or mismatched:
        problems = []
        if mismatched:
            problems.append("shape mismatch: " + ", ".join(mismatched))
        if missing:
            problems.append("missing from file: " + _by_layer(missing))
        if unused:
            problems.append("not in the model: " + _by_layer(unused))
        raise KerasH5Error(f"{path}: does not fit {_model_summary(model)}: " + "; ".join(problems))
    return model, {c: _to_jax(tree, jnp) for c, tree in variables.items()}


def _model_for_file(path: Path, keras_file: KerasFile):
    from .models import ResNet50

    heads = [name for name, ws in keras_file.weights.items() if HEAD_NAME.match(name) and "kernel" in ws]
    if len(heads) != 1 or keras_file.weights[heads[0]]["kernel"].ndim != 2:
        raise KerasH5Error(
            f"{path}: not the course ResNet50: expected exactly one Dense layer named fc<classes>, "
            f"found {heads or 'none'} among layers {_by_layer(list(keras_file.weights))}"
        )
    num_classes = int(keras_file.weights[heads[0]]["kernel"].shape[1])
    stem = keras_file.weights.get("conv1", {}).get("kernel")
    if stem is None or stem.ndim != 4:
        raise KerasH5Error(f"{path}: not the course ResNet50: no 4-D 'conv1' kernel")
    input_shape = input_shape_from_config(keras_file.model_config) or (*config.INPUT_SHAPE[:2], int(stem.shape[2]))
    width = stem.shape[3] / config.RESNET50_STEM_FILTERS
    stage_sizes = keras_file.stage_sizes or config.RESNET50_STAGE_SIZES
    return ResNet50(num_classes, width=width, stage_sizes=stage_sizes, input_shape=input_shape)


def _model_summary(model) -> str:
    return (
        f"ResNet50(num_classes={model.num_classes}, stem_filters={model.stem_filters}, "
        f"stage_sizes={tuple(model.stage_sizes)}, input_shape={tuple(model.input_shape)})"
    )


def _by_layer(weight_paths: List[str]) -> str:
    """Group 'layer/weight' strings by layer: 'res4f_branch2a (kernel, bias), ...'."""
    grouped: Dict[str, List[str]] = {}
    for item in weight_paths:
        layer, _, weight = item.partition("/")
        grouped.setdefault(layer, [])
        if weight:
            grouped[layer].append(weight)
    return ", ".join(f"{layer} ({', '.join(ws)})" if ws else layer for layer, ws in grouped.items())


def _lookup(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _assign(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _to_jax(tree, jnp):
    if isinstance(tree, dict):
        return {k: _to_jax(v, jnp) for k, v in tree.items()}
    return jnp.asarray(tree)


# ---------------------------------------------------------------------------------------------
# Writing


def _stage_sizes_of(params) -> Tuple[int, ...]:
    """Blocks per stage of a param tree, read from its 'res<stage><letter>' module names."""
    counts: Dict[int, int] = {}
    for key in params:
        m = re.fullmatch(r"res(\d+)([a-z])", key)
        if m:
            stage = int(m.group(1)) - config.FIRST_STAGE
            counts[stage] = counts.get(stage, 0) + 1
    return tuple(counts[s] for s in sorted(counts))


def save_keras_h5(path, variables) -> Path:
    """Write `variables` as a Keras 2 weights file (the layout of `model.save_weights("x.h5")`).

    Real Keras loads it with `model.load_weights(path)` into the original ResNet50 of the same class
    count and width. The file appears atomically: a failed write leaves any existing file untouched.
    """
    import h5py

    path = Path(path)
    params, stats = variables["params"], variables["batch_stats"]
    num_classes = int(np.shape(params["fc"]["kernel"])[1])
    table = keras_layer_table(_stage_sizes_of(params), num_classes)
    from .files import atomic_path, check_write_target

    check_write_target(path, "--export", "h5")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["layer_names"] = [layer.name.encode("utf8") for layer in table]
            f.attrs["backend"] = b"tensorflow"
            f.attrs["keras_version"] = b"2.15.0"
            stage_sizes = _stage_sizes_of(params)
            if stage_sizes != config.RESNET50_STAGE_SIZES:
                f.attrs[STAGE_SIZES_ATTR] = np.asarray(stage_sizes, np.int64)
            for layer in table:
                group = f.create_group(layer.name)
                names = [f"{layer.name}/{weight}:0" for weight in layer.weights]
                group.attrs["weight_names"] = [n.encode("utf8") for n in names]
                for name, (collection, leaf) in zip(names, layer.weights.values()):
                    tree = params if collection == "params" else stats
                    group.create_dataset(name, data=np.asarray(_lookup(tree, layer.flax_path + (leaf,)), np.float32))
    return path


# ---------------------------------------------------------------------------------------------
# Command line: python -m signs_jax.keras_h5 FILE [--export OUT]


def build_parser():

    parser = cli.ArgumentParser(
        prog="python -m signs_jax.keras_h5",
        description="Check that a Keras ResNet50 .h5 file loads into signs_jax, and optionally re-export it "
        "as a Keras 2 weights file (model.load_weights reads it).",
    )
    parser.add_argument("file", help="Keras .h5: full model, weights only, or Keras 3 legacy")
    parser.add_argument(
        "--export",
        metavar="OUT.h5",
        help="write the loaded weights as a Keras 2 weights file; OUT.h5 must not be FILE, a directory "
        "or an existing file other than an HDF5 file, and is replaced atomically",
    )
    return parser


def run(args) -> int:
    from .files import check_write_target
    from .models import count_numbers

    if args.export:  # before the (slow) load: a wrong target is reported at once
        check_write_target(args.export, "--export", "h5", inputs=[args.file])

    keras_file = read_keras_h5(args.file)
    model, variables = load_keras_h5(args.file)
    print(f"{args.file}: {keras_file.layout}, {len(keras_file.weights)} layers with weights")
    print(f"  model: {_model_summary(model)}")
    print(f"  params: {count_numbers(variables['params']):,}  batch_stats: {count_numbers(variables['batch_stats']):,}")
    if args.export:
        print(f"  exported to {save_keras_h5(args.export, variables)}")
    return 0


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
