"""Saliency maps: what a trained model looked at, as one (H, W) map per image at input resolution.

Three methods, each a pure function over `(model, variables, images, classes)` compiled once per model
and setting:

- `grad_cam`: the gradients of the class score at one block's output, averaged per channel, weight
  that block's channels; ReLU; bilinear upsampling to the input. `stage` picks the last block of a
  Keras stage: 3, 4 or 5 (8x8, 4x4 and 2x2 at 64x64 input; the Keras tutorial's "last conv map" is
  stage 5, four blobs at this input size).
- `integrated_gradients`: the gradients averaged along the straight path from a baseline image to the
  image, times their difference (Sundararajan et al.); the map is |sum over colour channels|. The
  baseline is a blurred copy of the image by default (Gaussian, `BLUR_SIGMA` pixels), or black. From
  black, a pixel's attribution is proportional to its own value, so dark pixels get next to nothing
  whatever the model does with them (docs/explain.md measures what that costs).
- `expected_gradients`: integrated gradients averaged over baselines drawn from reference photos (Erion et
  al.): each of `samples` steps takes one reference image and one point on the straight path from it to the
  image. The references are SIGNS training photos (the packaged copy) unless given; which ones and where on
  the path come from `seed`, the same for every image of a batch, so an image's map does not depend on the
  others. The default: nearly as faithful to the model as integrated gradients from a blurred copy, and
  far more dependent on its weights (docs/explain.md).
- `smoothgrad`: the gradients averaged over noisy copies of the image (Smilkov et al.); the map is
  |sum over colour channels|. The noise comes from `seed`: one seed, one map.

The model runs in inference mode (BatchNorm's moving statistics), as predict does, so an image's map
does not depend on the other images of the batch. The class score is the logit. Every map is scaled
to a maximum of 1 (an all-zero map stays zero). `scripts/faithfulness.py` measured which method and
layer follow the model best (docs/explain.md): that is `DEFAULT_METHOD` and `DEFAULT_STAGE`.
"""

import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from . import config
from .models import ConvBlock, IdentityBlock, block_name

METHODS = ("gradcam", "integrated_gradients", "expected_gradients", "smoothgrad")
STAGES = (3, 4, 5)  # Keras stage numbers whose last block's output Grad-CAM can use
DEFAULT_METHOD = "expected_gradients"
DEFAULT_STAGE = 4
IG_STEPS = 32  # path steps of integrated gradients, and samples of expected gradients
REFERENCE_IMAGES = 256  # SIGNS training photos expected gradients draws its baselines from
SMOOTHGRAD_SAMPLES = 32
BASELINES = ("blurred", "black")  # integrated gradients' path starts
DEFAULT_BASELINE = "blurred"
BLUR_SIGMA = 5.0  # pixels; also where the insertion curves of scripts/faithfulness.py start
SMOOTHGRAD_NOISE = 0.15  # standard deviation of the noise, images being in [0, 1]


def stage_output(model, stage: int) -> str:
    """The name of the block whose output is Keras stage `stage`'s output (stage 4 of ResNet50: 'res4f')."""
    index = stage - config.FIRST_STAGE
    if stage not in STAGES or index >= len(model.stage_sizes):
        raise ValueError(f"stage {stage}: choose one of {STAGES}")
    return block_name(index, model.stage_sizes[index] - 1)


def _class_scores(logits, classes):
    return jnp.take_along_axis(logits, classes[:, None], axis=1).sum()


def _scaled(maps):
    """Each map divided by its maximum; a map without positive values stays zero."""
    top = maps.reshape(maps.shape[0], -1).max(axis=1)
    return jnp.where(top[:, None, None] > 0, maps / jnp.where(top > 0, top, 1.0)[:, None, None], 0.0)


def _input_gradients(model, variables, images, classes):
    """d(class logit)/d(image), per image: the scores are summed, and no image affects another's score."""
    return jax.grad(lambda x: _class_scores(model.apply(variables, x), classes))(images)


@functools.lru_cache(maxsize=16)
def _compiled_grad_cam(model, stage: int):
    name = stage_output(model, stage)

    def is_target(context):
        module = context.module
        return (
            context.method_name == "__call__"
            and isinstance(module, (ConvBlock, IdentityBlock))
            and (module.name == name)
        )

    def block_shape(variables, images):
        """The activation's shape, found without computing anything."""
        found = []

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if is_target(context):
                found.append(out)
            return out

        def forward(x):
            with nn.intercept_methods(record):
                model.apply(variables, x)
            return found[0]

        return jax.eval_shape(forward, images)

    def grad_cam(variables, images, classes):
        # A zero added to the block's output: the gradient with respect to it is the gradient with
        # respect to the activation, with the model's code and parameters left as they are.
        def score(offset):
            activation = []

            def add_offset(next_fun, args, kwargs, context):
                out = next_fun(*args, **kwargs)
                if is_target(context):
                    out = out + offset.astype(out.dtype)
                    activation.append(out)
                return out

            with nn.intercept_methods(add_offset):
                logits = model.apply(variables, images)
            return _class_scores(logits, classes), activation[0]

        shape = block_shape(variables, images)
        grads, activation = jax.grad(score, has_aux=True)(jnp.zeros(shape.shape, jnp.float32))
        weights = grads.astype(jnp.float32).mean(axis=(1, 2), keepdims=True)  # one per image and channel
        cam = jax.nn.relu((weights * activation.astype(jnp.float32)).sum(axis=-1))
        cam = jax.image.resize(cam, (cam.shape[0], *images.shape[1:3]), "bilinear")
        return _scaled(cam)

    return jax.jit(grad_cam)


def gaussian_blur(images, sigma: float = BLUR_SIGMA):
    """`images` (N, H, W, C) blurred over H and W by a Gaussian of `sigma` pixels, truncated at 4 sigma, the
    edges mirrored (as scipy.ndimage.gaussian_filter does by default)."""
    radius = int(4 * sigma + 0.5)
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = images
    for axis in (1, 2):
        size = out.shape[axis]
        # Mirror indices, valid for any radius: reflect in a period of 2 * size.
        index = jnp.arange(-radius, size + radius) % (2 * size)
        index = jnp.where(index < size, index, 2 * size - 1 - index)
        padded = jnp.take(out, index, axis=axis)
        windows = jnp.stack([jax.lax.slice_in_dim(padded, k, k + size, axis=axis) for k in range(2 * radius + 1)])
        out = jnp.tensordot(kernel, windows, axes=1)
    return out


@functools.lru_cache(maxsize=16)
def _compiled_integrated_gradients(model, steps: int, baseline: str):
    def integrated_gradients(variables, images, classes):
        start = gaussian_blur(images) if baseline == "blurred" else jnp.zeros_like(images)
        difference = images - start

        # Midpoint rule along the path: alphas (k + 1/2) / steps.
        def add(total, alpha):
            return total + _input_gradients(model, variables, start + alpha * difference, classes), None

        alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
        total, _ = jax.lax.scan(add, jnp.zeros_like(images), alphas)
        attributions = difference * total / steps
        return _scaled(jnp.abs(attributions.sum(axis=-1)))

    return jax.jit(integrated_gradients)


@functools.lru_cache(maxsize=16)
def _compiled_expected_gradients(model, samples: int):
    def expected_gradients(variables, images, classes, references, key):
        k_pick, k_alpha = jax.random.split(key)
        picks = jax.random.randint(k_pick, (samples,), 0, references.shape[0])
        alphas = jax.random.uniform(k_alpha, (samples,))

        def add(total, pick_alpha):
            pick, alpha = pick_alpha
            reference = references[pick]
            difference = images - reference
            gradients = _input_gradients(model, variables, reference + alpha * difference, classes)
            return total + difference * gradients, None

        total, _ = jax.lax.scan(add, jnp.zeros_like(images), (picks, alphas))
        return _scaled(jnp.abs((total / samples).sum(axis=-1)))

    return jax.jit(expected_gradients)


@functools.lru_cache(maxsize=4)
def reference_images(size: Tuple[int, int], count: int = REFERENCE_IMAGES) -> np.ndarray:
    """(count, H, W, 3) float32 in [0, 1]: an even, fixed choice of the packaged SIGNS training photos at `size`."""
    from .data import load_signs
    from .images import resized_pixels

    train = load_signs().train.images
    chosen = train[np.linspace(0, len(train) - 1, count).round().astype(int)]
    return resized_pixels(chosen, size, "bilinear").astype(np.float32) / 255.0


@functools.lru_cache(maxsize=16)
def _compiled_smoothgrad(model, samples: int, noise: float):
    def smoothgrad(variables, images, classes, key):
        def add(total, sample_key):
            noisy = images + noise * jax.random.normal(sample_key, images.shape, images.dtype)
            return total + _input_gradients(model, variables, noisy, classes), None

        total, _ = jax.lax.scan(add, jnp.zeros_like(images), jax.random.split(key, samples))
        return _scaled(jnp.abs((total / samples).sum(axis=-1)))

    return jax.jit(smoothgrad)


def _arrays(images, classes):
    images = jnp.asarray(images, jnp.float32)
    classes = jnp.asarray(classes, jnp.int32).reshape(-1)
    if images.ndim != 4 or classes.shape[0] != images.shape[0]:
        raise ValueError(f"images (N, H, W, 3) and N classes expected; got {images.shape} and {classes.shape}")
    return images, classes


def grad_cam(model, variables, images, classes, stage: int = DEFAULT_STAGE) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of `classes` for `images` (N, H, W, 3) in [0, 1]."""
    images, classes = _arrays(images, classes)
    return np.asarray(_compiled_grad_cam(model, stage)(variables, images, classes))


def integrated_gradients(
    model, variables, images, classes, steps: int = IG_STEPS, baseline: str = DEFAULT_BASELINE
) -> np.ndarray:
    """Integrated-gradients maps (N, H, W) in [0, 1], from `baseline` (one of BASELINES) in `steps` steps."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose from {BASELINES}")
    images, classes = _arrays(images, classes)
    return np.asarray(_compiled_integrated_gradients(model, int(steps), baseline)(variables, images, classes))


def expected_gradients(
    model, variables, images, classes, references=None, seed: int = 0, samples: int = IG_STEPS
) -> np.ndarray:
    """Expected-gradients maps (N, H, W) in [0, 1] over `samples` baselines drawn from `references` ((R, H, W, 3)
    in [0, 1]; default: SIGNS training photos at the images' size); the same seed gives the same maps."""
    images, classes = _arrays(images, classes)
    if references is None:
        references = reference_images(tuple(images.shape[1:3]))
    references = jnp.asarray(references, jnp.float32)
    if references.ndim != 4 or references.shape[1:] != images.shape[1:]:
        raise ValueError(f"references of the images' shape {images.shape[1:]} expected; got {references.shape}")
    fn = _compiled_expected_gradients(model, int(samples))
    return np.asarray(fn(variables, images, classes, references, jax.random.key(seed)))


def smoothgrad(
    model, variables, images, classes, seed: int = 0, samples: int = SMOOTHGRAD_SAMPLES, noise=SMOOTHGRAD_NOISE
) -> np.ndarray:
    """SmoothGrad maps (N, H, W) in [0, 1] over `samples` noisy copies; the same seed gives the same maps."""
    images, classes = _arrays(images, classes)
    fn = _compiled_smoothgrad(model, int(samples), float(noise))
    return np.asarray(fn(variables, images, classes, jax.random.key(seed)))


def explain(
    model,
    variables,
    images,
    classes,
    method: str = DEFAULT_METHOD,
    stage: Optional[int] = None,
    seed: int = 0,
    steps: Optional[int] = None,
    baseline: str = DEFAULT_BASELINE,
    references=None,
) -> np.ndarray:
    """The maps of `method` (one of METHODS); `stage` is Grad-CAM's, `seed` that of SmoothGrad's noise and
    expected gradients' draws, `steps` the number of path steps or samples, `baseline` integrated gradients',
    `references` expected gradients' (default: SIGNS training photos)."""
    if method == "gradcam":
        return grad_cam(model, variables, images, classes, DEFAULT_STAGE if stage is None else stage)
    if method == "integrated_gradients":
        return integrated_gradients(model, variables, images, classes, steps or IG_STEPS, baseline)
    if method == "expected_gradients":
        return expected_gradients(model, variables, images, classes, references, seed, steps or IG_STEPS)
    if method == "smoothgrad":
        return smoothgrad(model, variables, images, classes, seed, steps or SMOOTHGRAD_SAMPLES)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def rank_correlation(a, b) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (N, H, W): tied pixels share their mean rank; NaN where
    either map is constant (it ranks nothing)."""
    from scipy.stats import rankdata

    out = []
    for x, y in zip(np.asarray(a), np.asarray(b)):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            out.append(np.nan)
        else:
            out.append(np.corrcoef(rankdata(x.ravel()), rankdata(y.ravel()))[0, 1])
    return np.asarray(out, np.float64)


def method_name(method: str, stage: Optional[int] = None) -> str:
    """How pictures and tables name a method (and Grad-CAM's stage)."""
    if method == "gradcam":
        return f"Grad-CAM, stage {DEFAULT_STAGE if stage is None else stage}"
    names = {
        "integrated_gradients": "integrated gradients",
        "expected_gradients": "expected gradients",
        "smoothgrad": "SmoothGrad",
    }
    return names.get(method, method)


def overlay(image, heatmap, alpha: float = 0.5) -> np.ndarray:
    """`image` (H, W, 3) in [0, 1] with `heatmap` (H, W) in [0, 1] blended over it in the 'jet' colours."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
    return np.clip((1 - alpha) * np.asarray(image)[..., :3] + alpha * colours, 0, 1)
