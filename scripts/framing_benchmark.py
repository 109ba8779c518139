"""Which `predict --fit`, and whether `--tta`: accuracy on non-square photos made from square ones, and under shifts.

    python scripts/framing_benchmark.py RUN --signs DIR [--photos DIR] [--every K] [--tta] [--shifts A,B] [--json]

Non-square photos: every square photo (the SIGNS test set in `--signs`; other people's photos in class
folders with `--photos`, every K-th) becomes a landscape and a portrait frame of each `--ratios`, two ways:

- wider: the photo is the middle of a wider (or taller) frame whose extra area is the photo's edge
  extended, fading into its plain background colour (the median of its top, left and right borders) over
  6/64 of its side; below the bottom edge only the sideways distance counts, so the arm runs on out of
  the frame. This is the frame `shifts.aspect_ratio` squashes: the same scene seen by a wider camera.
- tighter: the centred box of that ratio inside the photo (fingertips near the edge may be lost): the
  same scene framed closer in one direction.

Every frame is written as a PNG and read back through predict's own path (`predict_files`) with each `--fit`,
so the numbers are what a user gets. `--shifts`: the SIGNS test set under those shifts of `signs_jax.shifts`,
plain, with the `--tta` views and through `--fit hand` (rendered from the 64x64 images there).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from signs_jax.framing import FITS, TTA_VIEWS, render_pixels, view_images  # noqa: E402
from signs_jax.images import IMAGE_SUFFIXES, decode_image  # noqa: E402
from signs_jax.predict import logits_of, predict_files  # noqa: E402
from signs_jax.weights import load_weights  # noqa: E402

RATIOS = {"4:3": 4 / 3, "16:9": 16 / 9}


def background_colour(x: np.ndarray) -> np.ndarray:
    border = np.concatenate([x[:2].reshape(-1, 3), x[:, :2].reshape(-1, 3), x[:, -2:].reshape(-1, 3)])
    return np.median(border, 0)


def wider(x: np.ndarray, ratio: float, landscape: bool) -> np.ndarray:
    h, w = x.shape[:2]
    extra_w, extra_h = (round(w * ratio) - w, 0) if landscape else (0, round(h * ratio) - h)
    left, top = extra_w // 2, extra_h // 2
    extended = np.pad(x, ((top, extra_h - top), (left, extra_w - left), (0, 0)), mode="edge").astype(np.float32)
    yy, xx = np.mgrid[: h + extra_h, : w + extra_w]
    sideways = np.maximum(np.maximum(left - xx, xx - (left + w - 1)), 0)
    above = np.maximum(top - yy, 0)
    fade = np.exp(-np.hypot(sideways, above) / (6 / 64 * h))[..., None]
    fill = background_colour(x)
    return np.clip(np.rint(fill + (extended - fill) * fade), 0, 255).astype(np.uint8)


def tighter(x: np.ndarray, ratio: float, landscape: bool) -> np.ndarray:
    h, w = x.shape[:2]
    if landscape:
        kept = round(h / ratio)
        return x[(h - kept) // 2 : (h - kept) // 2 + kept]
    kept = round(w / ratio)
    return x[:, (w - kept) // 2 : (w - kept) // 2 + kept]


def signs_test(folder: Path):
    import h5py

    with h5py.File(folder / "test_signs.h5", "r") as f:
        return list(np.asarray(f["test_set_x"])), np.asarray(f["test_set_y"]).reshape(-1)


def photos_in(folder: Path, class_names, every: int):
    files, labels = [], []
    for index, name in enumerate(class_names):
        found = sorted(p for p in (folder / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        files += found[::every]
        labels += [index] * len(found[::every])
    return [decode_image(p, None) for p in files], np.asarray(labels)


def accuracy_of_files(weights, files, labels, fit, views):
    probs = np.stack([p for _, p in predict_files(weights, files, batch_size=32, fit=fit, views=views)])
    return float((probs.argmax(1) == labels).mean())


def frames_benchmark(weights, images, labels, ratios, fits, views, workdir: Path) -> dict:
    """{construction: {ratio: {orientation: {fit: accuracy}}}} plus the square photos as they are."""
    result = {}
    variants = [("square", None, None)] + [
        (kind, r, o) for kind in ("wider", "tighter") for r in ratios for o in ("landscape", "portrait")
    ]
    for kind, ratio_name, orientation in variants:
        folder = workdir / f"{kind}-{ratio_name}-{orientation}".replace(":", "x")
        folder.mkdir()
        files = []
        for i, x in enumerate(images):
            if kind != "square":
                x = {"wider": wider, "tighter": tighter}[kind](x, RATIOS[ratio_name], orientation == "landscape")
            files.append(folder / f"{i:05d}.png")
            Image.fromarray(x).save(files[-1])
        # squash, crop and pad leave a square photo as it is; hand may re-frame it
        for fit in fits if kind != "square" else fits[:1] + [f for f in fits[1:] if f == "hand"]:
            accuracy = accuracy_of_files(weights, files, labels, fit, views)
            if kind == "square":
                result["square" if fit == fits[0] else f"square_{fit}"] = accuracy
            else:
                result.setdefault(kind, {}).setdefault(ratio_name, {}).setdefault(orientation, {})[fit] = accuracy
            print(f"  {kind:8s} {ratio_name or '':5s} {orientation or '':9s} {fit:6s} {accuracy:.3f}", file=sys.stderr)
    return result


def shifts_benchmark(weights, signs_dir: Path, names) -> dict:
    from signs_jax.shifts import run_shift_benchmark

    images, labels = signs_test(signs_dir)
    images = np.stack(images)
    model, variables = weights.model, weights.variables

    def plain(batch):
        return _softmax(logits_of(model, variables, batch / np.float32(255), 120))

    def tta(batch):
        views = view_images(batch, TTA_VIEWS, Image.Resampling.LANCZOS)
        n, v = views.shape[:2]
        logits = logits_of(model, variables, views.reshape(n * v, *views.shape[2:]) / np.float32(255), 120)
        return _softmax(logits).reshape(n, v, -1).mean(1)

    def hand(batch):  # each shifted image through --fit hand
        framed = np.stack(
            [render_pixels(Image.fromarray(x), x.shape[1::-1], "hand", Image.Resampling.LANCZOS) for x in batch]
        )
        return plain(framed.astype(np.float32))

    out = {}
    for label, fn in (("plain", plain), ("tta", tta), ("hand", hand)):
        start = time.perf_counter()
        out[label] = run_shift_benchmark(fn, images, labels, 0, names)
        out[label]["seconds"] = time.perf_counter() - start
        print(f"  shifts {label}: {json.dumps(out[label])}", file=sys.stderr)
    return out


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", help="a run directory or a Keras .h5")
    p.add_argument("--signs", type=Path, required=True, help="the folder of test_signs.h5")
    p.add_argument("--photos", type=Path, help="also other people's square photos, in class sub-folders")
    p.add_argument("--every", type=int, default=1, metavar="K", help="only every K-th photo of each --photos class")
    p.add_argument("--ratios", default="4:3,16:9", help=f"frame ratios, of {', '.join(RATIOS)} (default: %(default)s)")
    p.add_argument("--fits", default=",".join(FITS), help="the --fit modes compared (default: %(default)s)")
    p.add_argument("--photos-only", action="store_true", help="frames of the --photos only, not of SIGNS")
    p.add_argument("--tta", action="store_true", help="predict the frames with the --tta views")
    p.add_argument("--no-frames", action="store_true", help="skip the non-square frames")
    p.add_argument("--shifts", help="also the shift benchmark on these shifts (comma-separated), plain and --tta")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    weights = load_weights(args.weights)
    ratios, fits = args.ratios.split(","), args.fits.split(",")
    views = TTA_VIEWS if args.tta else None
    summary = {"weights": weights.source, "tta": args.tta}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_frames:
            sources = {} if args.photos_only else {"signs_test": signs_test(args.signs)}
            if args.photos:
                sources["photos"] = photos_in(args.photos, weights.class_names, args.every)
            for name, (images, labels) in sources.items():
                (Path(tmp) / name).mkdir()
                print(f"{name}: {len(labels)} photos", file=sys.stderr)
                summary[name] = frames_benchmark(weights, images, labels, ratios, fits, views, Path(tmp) / name)
                summary[name]["photos"] = len(labels)
    if args.shifts:
        summary["shifts"] = shifts_benchmark(weights, args.signs, args.shifts.split(","))
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
