"""Backend-aware defaults: the CPU-measured conv and no state donation on the CPU, XLA's conv and donation
elsewhere, resolved when a model or step is built; an explicit choice always wins."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import signs_jax
from signs_jax import train
from signs_jax.checkpoints import model_from_config
from signs_jax.conv import MatmulConv, MatmulInferenceConv
from signs_jax.experiment import resolve
from signs_jax.layers import XlaConv
from signs_jax.recipes import RECIPES
from signs_jax.steps import create_state, make_optimizer, make_train_step

CPU_DEFAULTS = (MatmulConv, MatmulInferenceConv)
XLA = (XlaConv, None)


@pytest.fixture
def backend(monkeypatch):
    """Set the backend JAX reports (the computations still run on this machine's CPU)."""
    return lambda name: monkeypatch.setattr(jax, "default_backend", lambda: name)


def convs(model):
    return model.conv, model.inference_conv


@pytest.mark.parametrize("name, expected", [("cpu", CPU_DEFAULTS), ("gpu", XLA), ("tpu", XLA)])
def test_the_default_conv_is_the_backends_when_the_model_is_built(backend, name, expected):
    backend(name)
    assert convs(signs_jax.ResNet50()) == expected


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_an_explicit_conv_wins_on_every_backend(backend, name):
    backend(name)
    assert convs(signs_jax.ResNet50(conv="matmul")) == CPU_DEFAULTS
    assert convs(signs_jax.ResNet50(conv="xla")) == XLA


MODEL_CONFIG = {"num_classes": 6, "width": 0.125, "stage_sizes": [1, 1, 1, 1], "input_shape": [64, 64, 3]}


@pytest.mark.parametrize(
    "recorded, name, expected",
    [
        ({"conv": None}, "cpu", CPU_DEFAULTS),  # no choice recorded: the backend's default wherever it is restored
        ({"conv": None}, "gpu", XLA),
        ({"conv": "matmul"}, "gpu", CPU_DEFAULTS),  # the user's choice (or a config from before the default moved)
        ({}, "cpu", XLA),  # a config from before "conv" was recorded ran XLA's conv
    ],
)
def test_a_restored_run_gets_the_conv_its_config_records_else_the_backends(backend, recorded, name, expected):
    backend(name)
    assert convs(model_from_config({**MODEL_CONFIG, **recorded})) == expected


@pytest.mark.parametrize("argv, recorded", [([], None), (["--conv", "matmul"], "matmul"), (["--conv", "xla"], "xla")])
def test_a_new_run_records_the_conv_only_when_the_user_chose_one(argv, recorded):
    args = train.build_parser().parse_args(argv)
    dataset = types.SimpleNamespace(num_classes=6, class_names=list("012345"), image_shape=(64, 64, 3))
    resolved = resolve(train.config_from_args(args), dataset)
    assert resolved.to_dict()["model"]["conv"] == recorded


@pytest.fixture(scope="module")
def tiny_training():
    model = signs_jax.ResNet50(width=0.0625, stage_sizes=(1, 1, 1, 1), conv="xla")
    recipe = RECIPES["original"].replace(batch_size=2, ema_decay=0.9)
    tx = make_optimizer(recipe, 1)
    batch = (np.zeros((2, 64, 64, 3), np.uint8), np.zeros(2, np.int32))
    return model, recipe, tx, batch, signs_jax.init_variables(model, jax.random.key(0))


def donated(step, training) -> bool:
    """Whether `step` took over the state it was given: that state's arrays are deleted after the call."""
    model, recipe, tx, batch, variables = training
    state = create_state(jax.tree_util.tree_map(jnp.array, variables), tx, 0, ema=True)  # fresh arrays to give away
    new_state, _ = step(state, *batch)
    leaves = jax.tree_util.tree_leaves(state)
    assert int(new_state.step) == 1 and len({id(leaf) for leaf in leaves}) == len(leaves)
    deleted = {leaf.is_deleted() for leaf in leaves}
    assert len(deleted) == 1  # all or nothing
    return deleted.pop()


def marked_donated(step, training) -> bool:
    """Whether `step`'s lowered program hands its inputs' buffers to its outputs (no compile needed)."""
    _, _, tx, batch, variables = training
    return "tf.aliasing_output" in step.lower(create_state(variables, tx, 0, ema=True), *batch).as_text()


@pytest.mark.slow
def test_the_train_step_donates_the_state_off_the_cpu_unless_told(backend, tiny_training):
    model, recipe, tx, _, _ = tiny_training
    backend("cpu")
    kept, given = make_train_step(model, tx, recipe), make_train_step(model, tx, recipe, donate=True)
    assert not donated(kept, tiny_training) and donated(given, tiny_training)
    # The two steps run above agree with their lowered programs; the other backend's are only lowered.
    assert not marked_donated(kept, tiny_training) and marked_donated(given, tiny_training)
    backend("gpu")
    assert marked_donated(make_train_step(model, tx, recipe), tiny_training)
    assert not marked_donated(make_train_step(model, tx, recipe, donate=False), tiny_training)
