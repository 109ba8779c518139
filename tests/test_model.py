"""The Flax model has the original architecture: counts, names, shapes, variants and dtypes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import signs_jax
from signs_jax.keras_h5 import keras_layer_table
from signs_jax.models import abstract_variables, count_numbers, init_variables


def test_resnet50_holds_the_original_number_of_variables():
    variables = abstract_variables(signs_jax.ResNet50(num_classes=6))
    assert count_numbers(variables["params"]) == 23_546_886
    assert count_numbers(variables["batch_stats"]) == 53_120


def _leaf_paths(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaf_paths(value, prefix + (key,))
    else:
        yield prefix


@pytest.mark.parametrize("stage_sizes", [(3, 4, 6, 3), (1, 2, 1, 1)])
def test_every_flax_leaf_maps_to_exactly_one_keras_weight(stage_sizes):
    model = signs_jax.ResNet50(num_classes=6, stage_sizes=stage_sizes)
    variables = abstract_variables(model)
    table = keras_layer_table(stage_sizes, 6)
    mapped = [(collection, layer.flax_path + (leaf,)) for layer in table for collection, leaf in layer.weights.values()]
    actual = [(c, p) for c in ("params", "batch_stats") for p in _leaf_paths(variables[c])]
    assert len(mapped) == len(set(mapped))
    assert sorted(mapped) == sorted(actual)
    keras_names = [layer.name for layer in table]
    assert len(keras_names) == len(set(keras_names))
    assert keras_names[:4] == ["conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch2a"]
    assert keras_names[-1] == "fc6"


def test_spatial_sizes_follow_the_original_pipeline():
    model = signs_jax.ResNet50(width=0.125)
    variables = abstract_variables(model)
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]), variables, x
    )
    out = {k: v["__call__"][0].shape for k, v in state["intermediates"].items() if "__call__" in v}
    assert out["conv1"] == (2, 32, 32, 8)  # zero-pad 3, 7x7 stride 2
    assert out["res2a"] == (2, 15, 15, 32)  # after the 3x3/2 max-pool, stride 1
    assert out["res3a"] == (2, 8, 8, 64)
    assert out["res4a"] == (2, 4, 4, 128)
    assert out["res5c"] == (2, 2, 2, 256)
    assert out["fc"] == (2, 6)
    assert variables["params"]["fc"]["kernel"].shape == (256, 6)  # 2x2 avg-pool -> 1x1x256


def test_other_input_sizes_and_class_counts_change_only_the_head():
    model = signs_jax.ResNet50(num_classes=10, width=0.125, input_shape=(96, 128, 3))
    variables = abstract_variables(model)
    # 96x128 -> 3x4 after stage 5 -> 1x2 after the 2x2 average pool -> 2 * 256 features
    assert variables["params"]["fc"]["kernel"].shape == (512, 10)
    assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 3, 8)


def test_init_gives_keras_initial_values():
    model = signs_jax.ResNet50(width=0.125, stage_sizes=(1, 1, 1, 1))
    variables = init_variables(model, jax.random.key(0))
    bn = variables["params"]["bn_conv1"]
    assert np.all(bn["scale"] == 1) and np.all(bn["bias"] == 0)
    assert np.all(variables["batch_stats"]["bn_conv1"]["mean"] == 0)
    assert np.all(variables["batch_stats"]["bn_conv1"]["var"] == 1)
    assert np.all(variables["params"]["conv1"]["bias"] == 0)
    kernel = np.asarray(variables["params"]["res2a"]["branch2b"]["kernel"])  # glorot_uniform limit
    fan_in, fan_out = 3 * 3 * 8, 3 * 3 * 8
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit


@pytest.mark.slow
def test_init_variables_are_the_plainly_compiled_init_bit_for_bit():
    """init_variables compiles the initialisers with fewer optimisations (it runs once): the values must not move."""
    model = signs_jax.ResNet50(width=0.0625, stage_sizes=(1, 1, 1, 1))
    rng = jax.random.key(7)
    plain = jax.jit(functools.partial(model.init, train=False))(rng, jnp.zeros((1, *model.input_shape)))
    ours = init_variables(model, rng)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(plain)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters_and_statistics(keras_loaded, keras_images, keras_expected):
    model, variables = keras_loaded
    bf16 = model.clone(dtype=jnp.bfloat16)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a: a.dtype == jnp.float32, abstract_variables(bf16)))
    logits, updates = jax.jit(lambda v, x: bf16.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, keras_images
    )
    assert logits.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(updates))
    probs = jax.nn.softmax(jax.jit(bf16.apply)(variables, keras_images))
    # bfloat16 keeps ~3 significant digits: close to Keras's float32 numbers, not equal.
    assert np.abs(probs - keras_expected["probabilities"]).max() < 2e-2


def test_stage_sizes_are_validated():
    with pytest.raises(ValueError, match="stage_sizes"):
        signs_jax.ResNet50(stage_sizes=(3, 4, 6))
    with pytest.raises(ValueError, match="conv"):
        signs_jax.ResNet50(conv="fft")
