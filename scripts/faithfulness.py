"""Which saliency map follows the model? Deletion and insertion curves, and the parameter-randomisation check.

    python scripts/faithfulness.py RUN [--images 60] [--ig-steps 16] [--smoothgrad-samples 16] [--json OUT]

For each method of `signs_jax.explain` (Grad-CAM at stages 3, 4 and 5, integrated gradients, SmoothGrad)
and two random maps (independent pixels; an 8x8 grid upsampled, as coarse as Grad-CAM at stage 3), on
SIGNS test images of RUN's data, explaining the class the model predicts:

- deletion: the most salient pixels first are set to black, in `--fractions` equal steps; the area under
  the predicted class's probability (lower is better: the map found what the prediction needs);
- insertion: from a blurred copy of the image, the most salient pixels first are put back; the area under
  the same curve (higher is better). Both as in RISE (Petsiuk et al., 2018);
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

MAP_BATCH = 20  # images per map computation (memory: integrated gradients holds a batch's gradients per step)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a training run directory (its best checkpoint)")
    p.add_argument("--images", type=int, default=120, help="test images, a seeded random subset (default: all 120)")
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--smoothgrad-samples", type=int, default=32)
    p.add_argument("--fractions", type=int, default=16, help="steps of the deletion and insertion curves")
    p.add_argument("--blur-sigma", type=float, default=5.0, help="insertion's starting image: Gaussian blur (pixels)")
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


def curves(model, variables, images, classes, maps, fractions, blurred, rng, batch_size):
    """(deletion, insertion) probability curves, (N, fractions + 1) each."""
    from signs_jax.calibration import softmax
    from signs_jax.predict import logits_of

    ranks = ranks_descending(maps, rng)
    pixels = ranks[0].size
    deleted, inserted = [], []
    for k in range(fractions + 1):
        chosen = (ranks < round(k / fractions * pixels))[..., None]  # the top k/fractions of each map
        deleted.append(np.where(chosen, 0.0, images))
        inserted.append(np.where(chosen, images, blurred))
    out = []
    for stack in (deleted, inserted):
        x = np.concatenate(stack).astype(np.float32)
        probs = softmax(logits_of(model, variables, x, batch_size), 1.0)
        picked = probs[np.arange(len(x)), np.tile(classes, fractions + 1)]
        out.append(picked.reshape(fractions + 1, -1).T)
    return out


def area(curve):
    """Area under a curve sampled at equal steps over [0, 1] (trapezoids), per image."""
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(axis=1)


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

    from scipy.ndimage import gaussian_filter

    from signs_jax import explain
    from signs_jax.data import load_run_test_data
    from signs_jax.evaluate import _data_dir, _run_split
    from signs_jax.predict import logits_of
    from signs_jax.weights import load_weights

    logging.getLogger("absl").setLevel(logging.ERROR)
    weights = load_weights(args.run)
    model, variables = weights.model, weights.variables
    data_dir = _data_dir(None, weights.run_dir)
    test_fraction, seed, split_file = _run_split(weights.run_dir, data_dir, False)
    test = load_run_test_data(data_dir, tuple(model.input_shape[:2]), test_fraction, seed, split_file).test
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.permutation(len(test.labels))[: args.images])
    images = test.images[chosen].astype(np.float32) / 255.0
    labels = test.labels[chosen]
    classes = logits_of(model, variables, images, args.batch_size).argmax(1)
    print(f"# {weights.source}: {len(chosen)} test images, accuracy {float((classes == labels).mean()):.3f}")
    blurred = gaussian_filter(images, sigma=(0, args.blur_sigma, args.blur_sigma, 0))

    def maps_of(method, stage, vars_):
        """Maps in padded chunks of MAP_BATCH images: one compiled shape per method."""
        steps = args.ig_steps if method == "integrated_gradients" else args.smoothgrad_samples
        out = []
        for start in range(0, len(images), MAP_BATCH):
            x = np.zeros((MAP_BATCH, *images.shape[1:]), np.float32)
            c = np.zeros(MAP_BATCH, np.int32)
            n = len(images[start : start + MAP_BATCH])
            x[:n], c[:n] = images[start : start + MAP_BATCH], classes[start : start + MAP_BATCH]
            out.append(explain.explain(model, vars_, x, c, method, stage, seed=args.seed, steps=steps)[:n])
        return np.concatenate(out)

    rows = [("gradcam", s) for s in explain.STAGES] + [("integrated_gradients", None), ("smoothgrad", None)]
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
    results = []
    for name, maps in random_maps.items():
        t = time.time()
        deletion, insertion = curves(
            model, variables, images, classes, maps, args.fractions, blurred, rng, args.batch_size
        )
        results.append(
            {"map": name, "deletion": float(area(deletion).mean()), "insertion": float(area(insertion).mean())}
        )
        print(results[-1], f"{time.time() - t:.0f} s", flush=True)
    for method, stage in rows:
        t = time.time()
        maps = maps_of(method, stage, variables)
        seconds = time.time() - t
        deletion, insertion = curves(
            model, variables, images, classes, maps, args.fractions, blurred, rng, args.batch_size
        )
        record = {
            "map": explain.method_name(method, stage),
            "deletion": float(area(deletion).mean()),
            "insertion": float(area(insertion).mean()),
            "map_seconds": seconds,
        }
        for kind, vars_ in random_variables.items():
            record[f"spearman_{kind}"], record[f"constant_{kind}"] = spearman(maps, maps_of(method, stage, vars_))
        results.append(record)
        print(record, f"{time.time() - t:.0f} s", flush=True)

    print(
        "\n| map | deletion AUC (lower better) | insertion AUC (higher better) | insertion - deletion "
        "| Spearman, all weights random | Spearman, stage 5 + fc random |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        cells = [f"{r['deletion']:.3f}", f"{r['insertion']:.3f}", f"{r['insertion'] - r['deletion']:+.3f}"]
        cells += [f"{r[k]:.2f}" if k in r else "-" for k in ("spearman_all", "spearman_top")]
        print(f"| {r['map']} | " + " | ".join(cells) + " |")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"args": vars(args), "images": chosen.tolist(), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
