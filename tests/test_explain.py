"""Saliency maps: they find what a model was trained to look at, depend on its weights, repeat for a seed, and
reach the user as pictures written safely (predict --explain, evaluate --gallery)."""

import numpy as np
import pytest
from PIL import Image

from helpers import KERAS_MODEL, shallow_keras_h5
from signs_jax import evaluate, explain, predict

QUADRANT = 32  # the label lives in the top-left 32x32 of a 64x64 image
MASS_BOUND = 0.5  # median share of the default map's mass in that quadrant: most of it (a uniform map: 0.25)
RANDOMISED_BOUND = 0.6  # mean Spearman correlation of trained and re-initialised maps stays below this


def quadrant_images(rng, n):
    """uint8 images of noise whose top-left quadrant holds horizontal (class 0) or vertical (class 1) stripes;
    the other quadrants are the same noise for both classes, so only the top-left one tells them apart."""
    labels = rng.integers(0, 2, n)
    images = rng.uniform(0.3, 0.7, (n, 64, 64, 3))
    period = 8
    for i, label in enumerate(labels):
        phase = rng.integers(0, period)
        line = (np.arange(QUADRANT) + phase) % period < period // 2
        stripes = np.tile(line[:, None], (1, QUADRANT)) if label == 0 else np.tile(line[None, :], (QUADRANT, 1))
        images[i, :QUADRANT, :QUADRANT] = np.where(stripes, 0.95, 0.05)[..., None]
    return (images * 255).astype(np.uint8), labels.astype(np.int32)


@pytest.fixture(scope="module")
def quadrant_model():
    """(model, trained variables, random variables, test images in [0, 1], test labels): the tiny ResNet trained
    with the project's own step on `quadrant_images`."""
    import jax

    from signs_jax.models import ResNet50, init_variables
    from signs_jax.recipes import Recipe
    from signs_jax.steps import create_state, make_optimizer, make_train_step

    # BatchNorm momentum 0.9: the moving statistics must settle within these few steps.
    model = ResNet50(2, width=0.0625, stage_sizes=(1, 1, 1, 1), bn_momentum=0.9)
    recipe = Recipe(epochs=1, batch_size=32, lr=3e-3)
    steps = 150
    tx = make_optimizer(recipe, steps)
    state = create_state(init_variables(model, jax.random.key(0)), tx, seed=0)
    train_step = make_train_step(model, tx, recipe, donate=False)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        images, labels = quadrant_images(rng, recipe.batch_size)
        state, _ = train_step(state, images, labels)
    test_images, test_labels = quadrant_images(np.random.default_rng(1), 32)
    return model, state.eval_variables(), init_variables(model, jax.random.key(1)), test_images / 255.0, test_labels


@pytest.mark.slow
def test_default_map_finds_the_quadrant_and_depends_on_the_weights(quadrant_model):
    model, variables, random_variables, images, labels = quadrant_model
    logits = predict.logits_of(model, variables, images.astype(np.float32))
    assert (logits.argmax(1) == labels).mean() >= 0.9  # the model learned the task: its maps can be judged
    # Expected gradients' baselines: photos of the task the model learned (for SIGNS models, SIGNS photos).
    references = quadrant_images(np.random.default_rng(2), 64)[0] / 255.0
    maps = explain.explain(model, variables, images, labels, references=references)
    assert maps.shape == images.shape[:3] and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    quadrants = maps.reshape(len(maps), 2, QUADRANT, 2, QUADRANT).sum(axis=(2, 4)).reshape(len(maps), 4)
    share = quadrants / quadrants.sum(axis=1, keepdims=True)  # [top-left, top-right, bottom-left, bottom-right]
    # A uniform map puts 0.25 in each quadrant; docs/explain.md has the shares measured for every method.
    assert np.median(share[:, 0]) > MASS_BOUND, share[:, 0]
    assert share.mean(axis=0).argmax() == 0, share.mean(axis=0)

    random_maps = explain.explain(model, random_variables, images, labels, references=references)
    correlation = np.nan_to_num(explain.rank_correlation(maps, random_maps), nan=0.0)
    assert correlation.mean() < RANDOMISED_BOUND, correlation


def test_blurred_baseline_is_scipys_gaussian_filter():
    """Integrated gradients' default baseline; scipy is the reference, at an image size smaller than the kernel."""
    from scipy.ndimage import gaussian_filter

    images = np.random.default_rng(5).random((2, 9, 64, 3)).astype(np.float32)
    expected = gaussian_filter(images, sigma=(0, explain.BLUR_SIGMA, explain.BLUR_SIGMA, 0))
    np.testing.assert_allclose(np.asarray(explain.gaussian_blur(images)), expected, atol=1e-5)


@pytest.mark.slow
def test_maps_repeat_for_a_seed(quadrant_model):
    model, variables, _, images, labels = quadrant_model
    x, c = images[:4], labels[:4]
    first = explain.smoothgrad(model, variables, x, c, seed=3, samples=4)
    assert np.array_equal(first, explain.smoothgrad(model, variables, x, c, seed=3, samples=4))
    assert not np.allclose(first, explain.smoothgrad(model, variables, x, c, seed=4, samples=4))
    references = quadrant_images(np.random.default_rng(2), 16)[0] / 255.0
    eg = explain.expected_gradients(model, variables, x, c, references, seed=3, samples=4)
    assert np.array_equal(eg, explain.expected_gradients(model, variables, x, c, references, seed=3, samples=4))
    assert not np.allclose(eg, explain.expected_gradients(model, variables, x, c, references, seed=4, samples=4))
    # An image's map does not depend on the other images of its batch.
    alone = explain.expected_gradients(model, variables, x[1:2], c[1:2], references, seed=3, samples=4)
    np.testing.assert_allclose(alone[0], eg[1], atol=1e-5)
    # The other two methods have no randomness: one compiled setting of each is run twice.
    assert np.array_equal(explain.grad_cam(model, variables, x, c, 5), explain.grad_cam(model, variables, x, c, 5))
    ig = explain.integrated_gradients(model, variables, x, c, steps=4)
    assert np.array_equal(ig, explain.integrated_gradients(model, variables, x, c, steps=4))


@pytest.mark.slow
def test_grad_cam_at_stage_5_is_the_classifier_weights_times_the_activation():
    """At stage 5 the class score is fc(mean of the 2x2 activation), so its gradient there is the class's fc
    column / 4 at every position: Grad-CAM = ReLU(activation . column), computed here without autodiff."""
    import jax

    from signs_jax.models import ResNet50, init_variables

    model = ResNet50(3, width=0.0625, stage_sizes=(1, 1, 1, 1))
    variables = init_variables(model, jax.random.key(4))
    images = np.random.default_rng(4).random((2, 64, 64, 3)).astype(np.float32)
    classes = np.array([1, 2])  # two classes whose maps are not all zero here
    name = explain.stage_output(model, 5)
    _, state = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=lambda m, method: m.name == name))(
        variables, images
    )
    activation = np.asarray(state["intermediates"][name]["__call__"][0])
    assert activation.shape[1:3] == (2, 2)
    column = np.asarray(variables["params"]["fc"]["kernel"])[:, classes].T  # (N, channels)
    cam = np.maximum((activation * column[:, None, None, :] / 4).sum(-1), 0)
    expected = np.asarray(jax.image.resize(cam, (2, 64, 64), "bilinear"))
    assert (expected.max(axis=(1, 2)) > 0).all()  # both maps have something to compare
    expected = expected / expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(explain.grad_cam(model, variables, images, classes, 5), expected, atol=1e-5)


# ---------------------------------------------------------------------------------- the pictures


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    """The pictures' tests are about files, not about the model's depth."""
    return str(shallow_keras_h5(tmp_path_factory.mktemp("small_h5") / "small.h5"))


@pytest.fixture(scope="module")
def phone_jpeg(tmp_path_factory, data_dir):
    """A 3000x4000 JPEG of a SIGNS test image, stored sideways with an EXIF orientation that turns it upright."""
    import h5py

    with h5py.File(data_dir / "test_signs.h5", "r") as f:
        image = np.asarray(f["test_set_x"][0])
    path = tmp_path_factory.mktemp("phone") / "IMG_0001.JPG"
    exif = Image.Exif()
    exif[0x0112] = 6  # display turned 90 degrees clockwise
    Image.fromarray(image).resize((3000, 4000)).rotate(90, expand=True).save(path, exif=exif, quality=80)
    return path


@pytest.mark.slow
def test_predict_explain_writes_one_picture_per_photo(phone_jpeg, small_h5, tmp_path, capsys):
    before = phone_jpeg.read_bytes()
    out = tmp_path / "explained"  # made by predict
    assert predict.main([str(phone_jpeg), "--weights", small_h5, "--explain", str(out)]) == 0
    picture = out / "IMG_0001.explain.png"
    assert sorted(p.name for p in out.iterdir()) == [picture.name]
    with Image.open(picture) as img:
        assert img.format == "PNG" and img.width > img.height  # photo and heatmap side by side
    assert phone_jpeg.read_bytes() == before
    # A second run replaces its own picture; a file of another kind under that name is kept, with one line.
    assert predict.main([str(phone_jpeg), "--weights", small_h5, "--explain", str(out)]) == 0
    picture.write_bytes(b"notes")
    capsys.readouterr()
    assert predict.main([str(phone_jpeg), "--weights", small_h5, "--explain", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not overwriting" in err[0]
    assert picture.read_bytes() == b"notes"


@pytest.mark.parametrize("where", ["a file", "missing parent"])
def test_bad_explain_dir_is_one_line_exit_2(phone_jpeg, tmp_path, capsys, where):
    target = tmp_path / "x.png" if where == "a file" else tmp_path / "no" / "dir"
    if where == "a file":
        target.write_bytes(b"keep")
    assert predict.main([str(phone_jpeg), "--weights", KERAS_MODEL, "--explain", str(target)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {target}: cannot write explanations"), err
    assert captured.out == ""  # refused before anything was predicted
    assert where != "a file" or target.read_bytes() == b"keep"


@pytest.mark.slow
def test_evaluate_gallery_draws_the_misclassified_images(data_dir, small_h5, tmp_path, capsys):
    gallery = tmp_path / "errors.png"
    code = evaluate.main(
        ["--weights", small_h5, "--data-dir", str(data_dir), "--confusion-png", str(tmp_path / "c.png"),
         "--gallery", str(gallery), "--json"]
    )  # fmt: skip
    assert code == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["gallery_png"] == str(gallery) and result["accuracy"] < 1  # there are errors to draw
    with Image.open(gallery) as img:
        assert img.format == "PNG"


def test_default_references_are_signs_training_photos_at_the_models_size():
    from signs_jax.data import load_signs

    native = explain.reference_images((64, 64))
    assert native.shape == (explain.REFERENCE_IMAGES, 64, 64, 3) and native.dtype == np.float32
    train = load_signs().train.images.astype(np.float32) / 255.0
    assert any(np.array_equal(native[1], t) for t in train)  # real photos, not made-up baselines
    assert explain.reference_images((48, 80)).shape == (explain.REFERENCE_IMAGES, 48, 80, 3)
