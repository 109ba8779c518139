"""Saliency pictures: predict's `--explain DIR` (one PNG per photo) and evaluate's `--gallery PNG` (the errors).

Maps come from `signs_jax.explain` with its default method and layer. Every file is checked by the rule of
`signs_jax.files` before anything is written (never an input, never a file of another kind) and written
atomically.
"""

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .errors import UserError

EXPLAIN_SUFFIX = ".explain.png"
EXPLAIN_BATCH = 8  # images per map computation: one compiled shape whatever the number of photos
DISPLAY_SIDE = 384  # longest side of the photo as drawn
GALLERY_MAX = 48  # misclassified images drawn at most (the most confident errors first)
GALLERY_COLUMNS = 4  # (photo, heatmap) pairs per row


def check_explain_dir(directory) -> Path:
    """--explain DIR: an existing writable folder, or a new one in an existing folder (made when written)."""
    import os

    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: cannot write explanations (--explain): it exists and is not a directory")
    if not path.exists() and not path.parent.is_dir():
        raise UserError(f"{path}: cannot write explanations (--explain): folder {path.parent} does not exist")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write explanations (--explain): the directory is not writable")
    return path


def explain_targets(directory, files: Sequence) -> Dict[Path, Path]:
    """{photo: PNG to write} with one distinct name per photo (`hand.jpg` -> `hand.explain.png`, then
    `hand-2.explain.png` for a second `hand.*`), each checked by the write rule against every input."""
    from .files import check_write_target

    directory = Path(directory)
    targets, taken = {}, set()
    for photo in files:
        stem, n = Path(photo).stem, 1
        name = f"{stem}{EXPLAIN_SUFFIX}"
        while name in taken:
            n += 1
            name = f"{stem}-{n}{EXPLAIN_SUFFIX}"
        taken.add(name)
        target = directory / name
        if directory.is_dir():
            check_write_target(target, "--explain", "png", inputs=files)
        targets[Path(photo)] = target
    return targets


def write_explanations(weights, files, directory, interpolation: str, exif: bool = True) -> List[Path]:
    """One picture per readable photo in `directory`: the photo, the heatmap over it, the predicted class and
    its probability (with the weights' calibration temperature). Unreadable photos are skipped (predict has
    reported them already). Returns the pictures written."""
    from .calibration import softmax
    from .predict import _decoded_batches

    directory = check_explain_dir(directory)
    targets = explain_targets(directory, files)  # every name checked before the first is written
    directory.mkdir(exist_ok=True)
    size = tuple(weights.model.input_shape[:2])
    written = []
    for paths, images in _decoded_batches(files, size, interpolation, exif, EXPLAIN_BATCH):
        x = np.zeros((EXPLAIN_BATCH, *size, 3), np.float32)
        x[: len(images)] = np.stack(images)
        maps, logits = explanation_maps(weights, x)
        predicted = logits.argmax(1)
        for i, path in enumerate(paths):
            probs = softmax(logits[i], weights.temperature)
            title = (
                f"{Path(path).name}: class {weights.class_names[predicted[i]]}, probability {probs[predicted[i]]:.3f}"
            )
            written.append(_explanation_picture(path, maps[i], title, targets[Path(path)], exif))
    return written


def display_photo(path, exif: bool = True):
    """The photo as drawn: its own aspect ratio (the map, made on the squeezed model input, stretches back with
    it), longest side DISPLAY_SIDE."""
    from PIL import Image

    from .images import decode_image

    photo = Image.fromarray(decode_image(path, None, exif=exif))
    scale = DISPLAY_SIDE / max(photo.size)
    if scale < 1:
        photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.LANCZOS)
    return np.asarray(photo, np.float32) / 255.0


def _resized_map(heatmap, shape):
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(heatmap, np.float32), "F").resize(shape[1::-1], Image.BILINEAR))


def overlaid_photo(photo, heatmap) -> np.ndarray:
    """The heatmap (made on the model input) stretched over the photo as drawn (`display_photo`) in jet colours:
    (H, W, 3) in [0, 1], the right half of an explanation picture."""
    from .explain import overlay

    return overlay(photo, _resized_map(heatmap, photo.shape))


def explanation_maps(weights, images) -> Tuple[np.ndarray, np.ndarray]:
    """(maps (N, H, W), logits (N, classes)) of images (N, H, W, 3) in [0, 1]: the default method's map of the
    class the model predicts for each."""
    from .explain import DEFAULT_METHOD, DEFAULT_STAGE, explain
    from .predict import compiled_forward

    x = np.asarray(images, np.float32)
    logits = np.asarray(compiled_forward(weights.model)(weights.variables, x))
    return explain(weights.model, weights.variables, x, logits.argmax(1), DEFAULT_METHOD, DEFAULT_STAGE), logits


def _explanation_picture(path, heatmap, title: str, target: Path, exif: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .explain import DEFAULT_METHOD, DEFAULT_STAGE, method_name
    from .plots import save_figure

    photo = display_photo(path, exif)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4.4))
    left.imshow(photo)
    left.set_title("photo")
    right.imshow(overlaid_photo(photo, heatmap))
    right.set_title(method_name(DEFAULT_METHOD, DEFAULT_STAGE))
    for ax in (left, right):
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        return save_figure(fig, target)
    except OSError as err:
        raise UserError(f"{target}: cannot write the explanation ({err.strerror or err})") from None


def write_gallery(model, variables, images, labels, logits, class_names, temperature, target, limit=GALLERY_MAX):
    """The misclassified images (uint8 (N, H, W, 3)), most confident errors first, each as the photo and its
    heatmap (of the predicted class) titled with the true and predicted class and the confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .calibration import softmax
    from .explain import DEFAULT_METHOD, DEFAULT_STAGE, explain, method_name, overlay
    from .plots import save_figure

    probs = np.stack([softmax(row, temperature) for row in logits]) if len(logits) else np.zeros((0, 1))
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:limit]
    pictures = np.asarray(images)[wrong].astype(np.float32) / 255.0
    maps = np.zeros(pictures.shape[:3], np.float32)
    for start in range(0, len(wrong), EXPLAIN_BATCH):
        chunk = pictures[start : start + EXPLAIN_BATCH]
        x = np.zeros((EXPLAIN_BATCH, *pictures.shape[1:]), np.float32)
        x[: len(chunk)] = chunk
        classes = np.zeros(EXPLAIN_BATCH, np.int32)
        classes[: len(chunk)] = predicted[wrong[start : start + EXPLAIN_BATCH]]
        maps[start : start + len(chunk)] = explain(model, variables, x, classes, DEFAULT_METHOD, DEFAULT_STAGE)[
            : len(chunk)
        ]
    rows = max(1, -(-len(wrong) // GALLERY_COLUMNS))
    fig, axes = plt.subplots(rows, 2 * GALLERY_COLUMNS, figsize=(2 * GALLERY_COLUMNS * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, index in enumerate(wrong):
        row, col = divmod(k, GALLERY_COLUMNS)
        photo_ax, map_ax = axes[row, 2 * col], axes[row, 2 * col + 1]
        photo_ax.imshow(pictures[k], interpolation="nearest")
        map_ax.imshow(overlay(pictures[k], maps[k]), interpolation="nearest")
        p = predicted[index]
        photo_ax.set_title(f"#{index} true {class_names[labels[index]]}", fontsize=8)
        map_ax.set_title(f"pred {class_names[p]} ({probs[index, p]:.2f})", fontsize=8)
    shown = f"{len(wrong)} of {int((predicted != labels).sum())}" if len(wrong) else "none"
    heading = f"misclassified test images ({shown}); heatmap: {method_name(DEFAULT_METHOD, DEFAULT_STAGE)}"
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    try:
        return save_figure(fig, target)
    except OSError as err:
        raise UserError(f"{target}: cannot write the gallery ({err.strerror or err})") from None
