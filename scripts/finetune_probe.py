"""Which weights can a fine-tune on one setting's photos move without costing other settings? (docs/finetune.md)

    python scripts/finetune_probe.py RUN --data D [--params all|stage5|head] [--optimizer adam|sgd-clip]
        [--lr 1e-5] [--steps 45] [--same-below 2000]

D holds `train/<class>/` and `test/<class>/` (the fine-tuning folder layout). Starting from RUN, trains the chosen
parameters on `train/` as the `finetune` recipe does (BatchNorm in inference mode, batches of 16 with the basic
augmentation, label smoothing 0.1; no held-out part, no guard) and reports test accuracy after 1, 3, 9, 15, 30,
45, 90 and 150 steps, split by file number: photos numbered below --same-below are the training photos' own
photo shoot, the others other people's shoots (sign_digits's first files are one shoot). Photos are read as
predict reads them (`predict.load_images`), and listed by `foreign_photos.labelled_photos`.
"""

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from foreign_photos import labelled_photos  # noqa: E402

from signs_jax._runtime import set_up  # noqa: E402

REPORT_AT = (1, 3, 9, 15, 30, 45, 90, 150)
STAGE5 = ("res5", "fc")  # the last stage and the head, by the Keras layer names


def trainable(params, which: str):
    """A pytree of booleans: True for the parameters --params trains."""
    import jax

    def keep(path, _):
        name = jax.tree_util.keystr(path)
        return which == "all" or ("'fc'" in name if which == "head" else any(f"'{p}" in name for p in STAGE5))

    return jax.tree_util.tree_map_with_path(keep, params)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--params", choices=("all", "stage5", "head"), default="all")
    p.add_argument("--optimizer", choices=("adam", "sgd-clip"), default="adam")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--steps", type=int, default=45)
    p.add_argument("--same-below", type=int, default=2000, help="file numbers of the training photos' shoot")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    set_up(compilation_cache=True)
    import jax
    import jax.numpy as jnp
    import optax

    from signs_jax.augment import augment
    from signs_jax.predict import load_images, logits_of
    from signs_jax.weights import load_weights

    weights = load_weights(args.run)
    size = tuple(weights.model.input_shape[:2])
    test_files, test_y = labelled_photos(args.data / "test", weights.class_names)
    _, test_x = load_images(test_files, size)
    train_files, train_y = labelled_photos(args.data / "train", weights.class_names)
    _, train_x = load_images(train_files, size)
    same = np.array([int(re.search(r"(\d+)", f.name).group(1)) < args.same_below for f in test_files])
    params = weights.variables["params"]
    rest = {k: v for k, v in weights.variables.items() if k != "params"}

    def report(params, label):
        right = logits_of(weights.model, {**rest, "params": params}, test_x, 128).argmax(1) == test_y
        print(
            f"{label:>10s}: all {right.mean():.3f}  same shoot {right[same].mean():.3f} ({same.sum()})  "
            f"other shoots {right[~same].mean():.3f} ({(~same).sum()})",
            flush=True,
        )

    mask = trainable(params, args.params)
    if args.optimizer == "adam":
        base = optax.adamw(args.lr, eps=1e-7, weight_decay=0.0)
    else:
        base = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(args.lr, momentum=0.9))
    frozen = jax.tree_util.tree_map(lambda m: not m, mask)
    tx = optax.chain(optax.masked(base, mask), optax.masked(optax.set_to_zero(), frozen))
    state = tx.init(params)

    def loss_fn(p, x, y):
        logits = weights.model.apply({**rest, "params": p}, x).astype(jnp.float32)
        return optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), 0.1)).mean()

    @jax.jit
    def step(p, s, x, y):
        grads = jax.grad(loss_fn)(p, x, y)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    print(f"{args.run} on {args.data}: {args.params} parameters, {args.optimizer} lr {args.lr:g}")
    report(params, "start")
    rng, key = np.random.default_rng(args.seed), jax.random.PRNGKey(args.seed)
    for n in range(1, args.steps + 1):
        batch = rng.choice(len(train_y), min(16, len(train_y)), replace=False)
        key, k = jax.random.split(key)
        params, state = step(params, state, augment(k, jnp.asarray(train_x[batch])), jnp.asarray(train_y[batch]))
        if n in REPORT_AT:
            report(params, f"step {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
