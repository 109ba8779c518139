"""Which answers to mark uncertain: accuracy of the kept answers against the share kept, per score.

    python scripts/abstention.py RUN --photos /work/shared/datasets/sign_digits --non-hands DIR \
        [--png docs/abstention.png] [--save-logits FILE.npz] [--adapt] [--json]

Scores every image four ways (higher = more sure): `raw_confidence` (max softmax of the raw logits, the score
predict's `uncertain` uses), `confidence` (max softmax(logits / T), T the run's calibration temperature),
`max_logit`, and `neg_energy` (T * logsumexp(logits / T)). For each
score, two thresholds: the one that keeps the most --photos (sign_digits) answers while the kept ones are right
at least --target of the time, and the lowest one that flags --target of the --non-hands images
(scripts/non_hands.py); at each, and at predict's default rule, reports the share kept and its accuracy on
the SIGNS test set (the run's own data) and on --photos, and the share of non-hand images flagged. --png
draws accuracy of the kept answers against the share kept on both hand sets. Images are read exactly as
`python -m signs_jax.predict` reads them (photo folders) or as evaluate does (the SIGNS test split).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from foreign_photos import labelled_photos  # noqa: E402

from signs_jax.adapt import adapt_batch_norm  # noqa: E402
from signs_jax.calibration import (  # noqa: E402
    DEFAULT_THRESHOLD,
    calibration_report,
    expected_calibration_error,
    softmax,
    uncertainty_score,
)
from signs_jax.images import IMAGE_SUFFIXES  # noqa: E402
from signs_jax.predict import load_images, logits_of, predict_logits  # noqa: E402
from signs_jax.weights import load_weights  # noqa: E402

SCORES = ("raw_confidence", "confidence", "max_logit", "neg_energy")


def scores(logits, temperature: float):
    z = np.asarray(logits, np.float64) / temperature
    top = z.max(1)
    return {
        "raw_confidence": uncertainty_score(logits),
        "confidence": softmax(logits, temperature).max(1),
        "max_logit": np.asarray(logits).max(1),
        "neg_energy": temperature * (top + np.log(np.exp(z - top[:, None]).sum(1))),
    }


def kept_curve(score, correct):
    """(share kept, accuracy of the kept) when keeping the k most sure, k = 1..N, and the thresholds."""
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(correct[order])
    k = np.arange(1, len(score) + 1)
    return k / len(score), hits / k, score[order]


def pick_threshold(score, correct, target: float) -> float:
    """The lowest threshold (keep score >= it) whose kept answers are right at least `target` of the time."""
    share, accuracy, thresholds = kept_curve(score, correct)
    ok = np.flatnonzero(accuracy >= target)
    if not len(ok):
        return float("inf")
    i = ok[-1]
    while i + 1 < len(thresholds) and thresholds[i + 1] == thresholds[i]:  # ties are kept together
        i += 1
    return float(thresholds[i]) if accuracy[i] >= target else float(thresholds[ok[-1]])


def logits_of_photos(weights, files):
    return np.stack([z for _, z in predict_logits(weights, files, batch_size=32)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory (its best checkpoint and calibration.json)")
    p.add_argument("--photos", required=True, type=Path, help="labelled hand photos in class folders (sign_digits)")
    p.add_argument("--non-hands", required=True, type=Path, help="a folder of images without hands")
    p.add_argument("--target", type=float, default=0.9, help="accuracy the kept --photos answers must reach")
    p.add_argument("--png", type=Path, help="accuracy of the kept answers against the share kept")
    p.add_argument("--save-logits", type=Path, help="write every set's logits and labels to this .npz")
    p.add_argument(
        "--adapt",
        action="store_true",
        help="score --photos as `predict --adapt` on their folder would (BatchNorm re-estimated on them)",
    )
    p.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=[1.0, 0.9, 0.8, 0.7, 0.6],
        help="also report the ECE of the SIGNS test set and --photos at each of these temperatures",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from signs_jax.checkpoints import read_train_config
    from signs_jax.cli import recorded_data_dir
    from signs_jax.data import load_dataset

    weights = load_weights(args.run)
    T = weights.temperature
    test = load_dataset(
        recorded_data_dir(read_train_config(weights.run_dir), weights.run_dir), tuple(weights.model.input_shape[:2])
    ).test
    sets = {
        "signs_test": (logits_of(weights.model, weights.variables, test.images.astype(np.float32) / 255.0), test.labels)
    }
    files, labels = labelled_photos(args.photos, weights.class_names)
    if args.adapt:
        _, images = load_images(files, tuple(weights.model.input_shape[:2]))
        adapted = adapt_batch_norm(weights.model, weights.variables, images)
        sets["photos"] = (logits_of(weights.model, adapted, images), labels)
    else:
        sets["photos"] = (logits_of_photos(weights, files), labels)
    others = sorted(f for f in args.non_hands.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    sets["non_hands"] = (logits_of_photos(weights, others), None)
    if args.save_logits:
        np.savez(
            args.save_logits,
            **{f"{k}_logits": v[0] for k, v in sets.items()},
            **{f"{k}_labels": v[1] for k, v in sets.items() if v[1] is not None},
            non_hand_kinds=np.asarray(
                [f.name.split("_")[0] if f.parent.name == "textures" else f.parent.name for f in others]
            ),
        )
    result = {"weights": weights.source, "temperature": T, "target": args.target, "scores": {}}
    correct = {k: sets[k][0].argmax(1) == sets[k][1] for k in ("signs_test", "photos")}

    def at(score_name, threshold):
        s = {k: scores(v[0], T)[score_name] for k, v in sets.items()}
        row = {"threshold": threshold, "non_hands_flagged": float((s["non_hands"] < threshold).mean())}
        for k in ("signs_test", "photos"):
            kept = s[k] >= threshold
            row[f"{k}_kept"] = float(kept.mean())
            row[f"{k}_kept_accuracy"] = float(correct[k][kept].mean()) if kept.any() else None
            row[f"{k}_accuracy"] = float(correct[k].mean())
        return row

    for name in SCORES:
        s = {k: scores(v[0], T)[name] for k, v in sets.items()}
        result["scores"][name] = {
            "photos_target": at(name, pick_threshold(s["photos"], correct["photos"], args.target)),
            # the lowest threshold that flags --target of the non-hand images
            "non_hands_target": at(name, float(np.quantile(s["non_hands"], args.target, method="higher"))),
        }
    result["default"] = at("raw_confidence", DEFAULT_THRESHOLD)
    result["calibration"] = {k: calibration_report(sets[k][0], sets[k][1], T) for k in ("signs_test", "photos")}
    result["ece_by_temperature"] = {
        k: {t: expected_calibration_error(softmax(sets[k][0], t), sets[k][1]) for t in args.temperatures}
        for k in ("signs_test", "photos")
    }
    if args.png:
        plot(sets, T, args.png, result)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{weights.source}, T = {T:.3f}")
    for k, c in result["calibration"].items():
        print(
            f"  {k}: ECE {c['ece_before']:.4f} at T = 1, {c['ece_after']:.4f} at T = {T:.3g}; "
            f"NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}"
        )
        by_t = result["ece_by_temperature"][k]
        print("    ECE by temperature: " + "  ".join(f"T = {t:g}: {e:.3f}" for t, e in by_t.items()))

    def line(label, row):
        kept_accuracy = lambda k: "-" if row[k] is None else f"{row[k]:.3f}"  # noqa: E731
        print(
            f"  {label:<38s} threshold {row['threshold']:8.4g}  sign_digits kept {row['photos_kept']:.3f} "
            f"(right {kept_accuracy('photos_kept_accuracy')}; all {row['photos_accuracy']:.3f})  SIGNS test kept "
            f"{row['signs_test_kept']:.3f} (right {kept_accuracy('signs_test_kept_accuracy')})  "
            f"non-hands flagged {row['non_hands_flagged']:.3f}"
        )

    for name, rows in result["scores"].items():
        line(f"{name}, kept sign_digits right >= {args.target:.0%}", rows["photos_target"])
        line(f"{name}, flags >= {args.target:.0%} of non-hands", rows["non_hands_target"])
    line(f"raw_confidence < {DEFAULT_THRESHOLD} (predict's default)", result["default"])
    return 0


def plot(sets, T, path: Path, result) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, title in zip(axes, ("signs_test", "photos"), ("SIGNS test", "sign_digits (--photos)")):
        logits, labels = sets[key]
        correct = logits.argmax(1) == labels
        for name in SCORES:
            share, accuracy, thresholds = kept_curve(scores(logits, T)[name], correct)
            (line,) = ax.plot(share, accuracy, label=name)
            if name == "raw_confidence":
                at = np.searchsorted(-thresholds, -DEFAULT_THRESHOLD, side="right") - 1
                if at >= 0:
                    ax.plot(share[at], accuracy[at], "o", color=line.get_color())
        ax.set(
            title=f"{title}: {len(labels)} photos",
            xlabel="share of answers kept (not uncertain)",
            ylabel="accuracy of the kept answers",
            xlim=(0, 1.01),
            ylim=(0, 1.01),
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    fig.suptitle(
        f"dot: predict's default, uncertain below raw confidence {DEFAULT_THRESHOLD} ('confidence': at T = {T:.3g})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
