"""Which saliency map follows the model? Deletion and insertion curves, and the parameter-randomisation check.

    python scripts/faithfulness.py RUN [--images 120] [--fractions 32] [--deletion black blurred] [--json OUT]

For each method of `signs_jax.explain` (Grad-CAM at stages 3, 4 and 5, integrated gradients, expected gradients,
SmoothGrad)
and two random maps (independent pixels; an 8x8 grid upsampled, as coarse as Grad-CAM at stage 3), on
SIGNS test images of RUN's data, explaining the class the model predicts:

- deletion: the most salient pixels first are removed, in `--fractions` equal steps; the area under the
  predicted class's probability (lower is better: the map found what the prediction needs). `--deletion`
  says what replaces a removed pixel: "black" (zero, as in RISE) and/or "blurred" (the same pixel of the
  blurred copy insertion starts from: the image stays nearer the photos the model knows, so the curve
  measures the pixels' content more than the damage of a black hole);
- insertion: from a blurred copy of the image, the most salient pixels first are put back; the area under
  the same curve (higher is better). Both as in RISE (Petsiuk et al., 2018);
- for every map and curve, the paired difference from each random map, image by image: its mean and the
  standard error of that mean over the images (a method beats random where the difference is several
  standard errors on the right side of zero);
- parameter randomisation (Adebayo et al., 2018): maps of the same images and classes with every weight
  re-initialised ("all"), and with only stage 5 and the classifier re-initialised ("top"); the mean Spearman
  rank correlation with the trained model's maps (near 0: the map depends on what the model learned; near
  1: it shows the image, not the model).

Ties in a map (Grad-CAM's zeros) are broken at random with the seed, not in pixel order.
The table goes to docs/explain.md.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DELETIONS = ("black", "blurred")
MAP_CHOICES = (
    "gradcam3",
    "gradcam4",
    "gradcam5",
    "integrated_gradients_blurred",
    "integrated_gradients_black",
    "expected_gradients",
    "smoothgrad",
)
MAP_BATCH = 20  # images per map computation (memory: integrated gradients holds a batch's gradients per step)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a training run directory (its best checkpoint)")
    p.add_argument("--images", type=int, default=120, help="test images, a seeded random subset (default: all 120)")
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--smoothgrad-samples", type=int, default=32)
    p.add_argument("--fractions", type=int, default=16, help="steps of the deletion and insertion curves")
    p.add_argument(
        "--blur-sigma",
        type=float,
        default=None,
        help="insertion's starting image: Gaussian blur in pixels (default: integrated gradients' own, "
        "explain.BLUR_SIGMA)",
    )
    p.add_argument(
        "--deletion",
        nargs="+",
        choices=DELETIONS,
        default=list(DELETIONS),
        help="what replaces the deleted pixels: black, the blurred image, or both (default: both)",
    )
    p.add_argument(
        "--maps",
        nargs="+",
        choices=MAP_CHOICES,
        default=list(MAP_CHOICES),
        help="which maps to measure besides the random ones (default: all)",
    )
    p.add_argument("--no-randomisation", action="store_true", help="skip the parameter-randomisation check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=120)
    p.add_argument("--json", help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def ranks_descending(maps, rng):
    """Each pixel's place in its map, most salient first (0), ties broken at random."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    jitter = rng.random(flat.shape)
    order = np.lexsort((jitter, -flat), axis=-1)  # primary: -value; ties: random
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :].repeat(n, 0), axis=1)
    return ranks.reshape(maps.shape)


def curves(model, variables, images, classes, maps, fractions, blurred, rng, batch_size, deletions):
    """{curve name: probability curves (N, fractions + 1)}: one "deletion, <what replaces>" per `deletions`,
    and "insertion"."""
    from signs_jax.calibration import softmax
    from signs_jax.predict import logits_of

    ranks = ranks_descending(maps, rng)
    pixels = ranks[0].size
    fills = {"black": np.zeros_like(images), "blurred": blurred}
    stacks = {f"deletion, {d}": [] for d in deletions}
    stacks["insertion"] = []
    for k in range(fractions + 1):
        chosen = (ranks < round(k / fractions * pixels))[..., None]  # the top k/fractions of each map
        for d in deletions:
            stacks[f"deletion, {d}"].append(np.where(chosen, fills[d], images))
        stacks["insertion"].append(np.where(chosen, images, blurred))
    out = {}
    for name, stack in stacks.items():
        x = np.concatenate(stack).astype(np.float32)
        probs = softmax(logits_of(model, variables, x, batch_size), 1.0)
        picked = probs[np.arange(len(x)), np.tile(classes, fractions + 1)]
        out[name] = picked.reshape(fractions + 1, -1).T
    return out


def area(curve):
    """Area under a curve sampled at equal steps over [0, 1] (trapezoids), per image."""
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(axis=1)


def paired(aucs, baseline):
    """Mean and standard error of the per-image difference `aucs - baseline` (the same images, so the spread
    between images, which both share, drops out)."""
    diff = np.asarray(aucs) - np.asarray(baseline)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def spearman(a, b):
    """Mean Spearman rank correlation of paired maps, and how many pairs hold a constant map: those count as
    0 (a map that ranks nothing shares no order with the other)."""
    from scipy.stats import rankdata

    values = []
    for x, y in zip(a, b):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            values.append(np.nan)
            continue
        rx, ry = (rankdata(v.ravel()) for v in (x, y))  # tied pixels (Grad-CAM's zeros) share their mean rank
        values.append(np.corrcoef(rx, ry)[0, 1])
    values = np.asarray(values)
    return float(np.nan_to_num(values, nan=0.0).mean()), int(np.isnan(values).sum())


def randomised(model, variables, seed, top_only):
    """`variables` re-initialised: all of them, or only stage 5's blocks and the classifier."""
    import jax

    from signs_jax.models import init_variables

    fresh = init_variables(model, jax.random.key(seed))
    if not top_only:
        return fresh
    top = lambda name: name.startswith("res5") or name == "fc"  # noqa: E731
    return {
        kind: {name: (fresh[kind][name] if top(name) else tree) for name, tree in variables[kind].items()}
        for kind in variables
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from signs_jax._runtime import set_up

    set_up(compilation_cache=True)
    import logging

    from signs_jax import explain
    from signs_jax.data import load_run_test_data
    from signs_jax.evaluate import _data_dir, _run_split
    from signs_jax.predict import logits_of
    from signs_jax.weights import load_weights

    logging.getLogger("absl").setLevel(logging.ERROR)
    weights = load_weights(args.run)
    model, variables = weights.model, weights.variables
    data_dir = _data_dir(None, weights.run_dir)
    reading = _run_split(weights.run_dir, data_dir, False)
    test = load_run_test_data(data_dir, tuple(model.input_shape[:2]), *reading).test
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.permutation(len(test.labels))[: args.images])
    images = test.images[chosen].astype(np.float32) / 255.0
    labels = test.labels[chosen]
    classes = logits_of(model, variables, images, args.batch_size).argmax(1)
    print(f"# {weights.source}: {len(chosen)} test images, accuracy {float((classes == labels).mean()):.3f}")
    sigma = explain.BLUR_SIGMA if args.blur_sigma is None else args.blur_sigma
    blurred = np.asarray(explain.gaussian_blur(images, sigma))  # the blur integrated gradients starts from

    def maps_of(method, option, vars_):
        """Maps in padded chunks of MAP_BATCH images: one compiled shape per method. `option`: Grad-CAM's stage
        or integrated gradients' baseline."""
        stage = option if method == "gradcam" else None
        baseline = option if method == "integrated_gradients" else explain.DEFAULT_BASELINE
        steps = args.smoothgrad_samples if method == "smoothgrad" else args.ig_steps
        out = []
        for start in range(0, len(images), MAP_BATCH):
            x = np.zeros((MAP_BATCH, *images.shape[1:]), np.float32)
            c = np.zeros(MAP_BATCH, np.int32)
            n = len(images[start : start + MAP_BATCH])
            x[:n], c[:n] = images[start : start + MAP_BATCH], classes[start : start + MAP_BATCH]
            out.append(explain.explain(model, vars_, x, c, method, stage, args.seed, steps, baseline)[:n])
        return np.concatenate(out)

    rows = [("gradcam", s) for s in explain.STAGES] + [("integrated_gradients", b) for b in explain.BASELINES]
    rows += [("expected_gradients", None), ("smoothgrad", None)]
    choice = lambda method, option: (
        method + {None: "", "blurred": "_blurred", "black": "_black"}.get(option, str(option))
    )  # noqa: E731
    rows = [(m, o) for m, o in rows if choice(m, o) in args.maps]

    def name_of(method, option):
        name = explain.method_name(method, option if method == "gradcam" else None)
        return f"{name}, {option} baseline" if method == "integrated_gradients" else name

    shape = images.shape[:3]
    coarse = rng.random((len(images), 8, 8))
    random_maps = {
        "random pixels": rng.random(shape),
        "random 8x8": np.repeat(np.repeat(coarse, shape[1] // 8, 1), shape[2] // 8, 2),
    }
    random_variables = {
        "all": randomised(model, variables, args.seed + 1, top_only=False),
        "top": randomised(model, variables, args.seed + 1, top_only=True),
    }
    curve_names = [f"deletion, {d}" for d in args.deletion] + ["insertion"]

    def measured(name, maps):
        per_image = {
            k: area(v)
            for k, v in curves(
                model, variables, images, classes, maps, args.fractions, blurred, rng, args.batch_size, args.deletion
            ).items()
        }
        record = {"map": name, **{k: float(v.mean()) for k, v in per_image.items()}}
        for k, v in per_image.items():
            record[f"{k}, standard error"] = float(v.std(ddof=1) / np.sqrt(len(v)))
            for baseline, their in random_aucs.items():
                record[f"{k}, minus {baseline}"] = paired(v, their[k])
        per_image_aucs[name] = {k: v.tolist() for k, v in per_image.items()}
        return record, per_image

    results = []
    random_aucs, per_image_aucs = {}, {}
    for name, maps in random_maps.items():
        t = time.time()
        record, random_aucs[name] = measured(name, maps)
        results.append(record)
        print(record, f"{time.time() - t:.0f} s", flush=True)
    for method, stage in rows:
        t = time.time()
        maps = maps_of(method, stage, variables)
        seconds = time.time() - t
        record, _ = measured(name_of(method, stage), maps)
        record["map_seconds"] = seconds
        if not args.no_randomisation:
            for kind, vars_ in random_variables.items():
                record[f"spearman_{kind}"], record[f"constant_{kind}"] = spearman(maps, maps_of(method, stage, vars_))
        results.append(record)
        print(record, f"{time.time() - t:.0f} s", flush=True)

    print(f"\n{len(images)} images; AUC (standard error over images); lower deletion and higher insertion are better")
    print("| map | " + " | ".join(curve_names) + " | Spearman, all weights random | Spearman, stage 5 + fc random |")
    print("|---" * (len(curve_names) + 3) + "|")
    for r in results:
        cells = [f"{r[k]:.3f} ({r[k + ', standard error']:.3f})" for k in curve_names]
        cells += [f"{r[k]:.2f}" if k in r else "-" for k in ("spearman_all", "spearman_top")]
        print(f"| {r['map']} | " + " | ".join(cells) + " |")
    print("\nPaired difference from each random map, image by image: mean (standard error)")
    print("| map | " + " | ".join(f"{k}, minus {b}" for k in curve_names for b in random_maps) + " |")
    print("|---" * (len(curve_names) * len(random_maps) + 1) + "|")
    for r in results[len(random_maps) :]:
        cells = ["{:+.3f} ({:.3f})".format(*r[f"{k}, minus {b}"]) for k in curve_names for b in random_maps]
        print(f"| {r['map']} | " + " | ".join(cells) + " |")
    if args.json:
        import json

        Path(args.json).write_text(
            json.dumps({"args": vars(args), "images": chosen.tolist(), "results": results, "per_image": per_image_aucs})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
