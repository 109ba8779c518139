"""Throughput of the ResNet50 train step and inference, side by side with tf-keras in the same run.

    python scripts/bench.py                          # float32, default conv
    python scripts/bench.py --conv xla --dtype bfloat16 --compare keras --json

Prints images/s (median of --repeats timed runs after warm-up), compile times, achieved GFLOP/s from
XLA's cost analysis, and this machine's matmul peak measured in the same run.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak_gflops(dtype, n=2048, repeats=5) -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    return 2 * n**3 / median_time(lambda: f(a, a).block_until_ready(), repeats) / 1e9


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def bench_jax(args) -> dict:
    import jax
    import jax.numpy as jnp

    import signs_jax
    from signs_jax.recipes import RECIPES
    from signs_jax.steps import create_state, make_optimizer, make_train_step

    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    model = signs_jax.ResNet50(width=args.width, dtype=dtype, conv=args.conv)
    recipe = RECIPES["original"].replace(batch_size=args.batch_size)
    tx = make_optimizer(recipe, 33)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 6, args.batch_size).astype(np.int32)
    out = {}

    state = create_state(signs_jax.init_variables(model, jax.random.key(0)), tx, 0)
    step = make_train_step(model, tx, recipe)
    t0 = time.perf_counter()
    compiled = step.lower(state, images, labels).compile()
    out["train_compile_s"] = time.perf_counter() - t0
    train_flops = flops_of(compiled)
    holder = {"state": state}

    def train_once():
        holder["state"], metrics = compiled(holder["state"], images, labels)
        metrics["loss"].block_until_ready()

    t = median_time(train_once, args.repeats)
    out["train_images_per_s"] = args.batch_size / t
    out["train_gflops_per_s"] = train_flops / t / 1e9

    variables = signs_jax.init_variables(model, jax.random.key(0))
    x = rng.uniform(size=(args.infer_batch_size, 64, 64, 3)).astype(np.float32)
    infer = jax.jit(lambda v, x: model.apply(v, x))
    t0 = time.perf_counter()
    compiled_infer = infer.lower(variables, x).compile()
    out["eval_compile_s"] = time.perf_counter() - t0
    t = median_time(lambda: compiled_infer(variables, x).block_until_ready(), args.repeats)
    out["infer_images_per_s"] = args.infer_batch_size / t
    out["infer_gflops_per_s"] = flops_of(compiled_infer) / t / 1e9
    out["matmul_peak_gflops_per_s"] = matmul_peak_gflops(dtype)
    return out


def bench_keras(args) -> dict:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import tf_keras as keras  # noqa: F401
    except ImportError:
        print("(--compare keras skipped: tf_keras is not installed; pip install -e '.[keras]')", file=sys.stderr)
        return {}
    import keras_reference

    rng = np.random.default_rng(0)
    model = keras_reference.ResNet50(width=args.width)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = rng.uniform(size=(args.batch_size, 64, 64, 3)).astype(np.float32)
    y = np.eye(6, dtype=np.float32)[rng.integers(0, 6, args.batch_size)]
    model.train_on_batch(x, y)
    t = median_time(lambda: model.train_on_batch(x, y), args.repeats)
    xi = rng.uniform(size=(args.infer_batch_size, 64, 64, 3)).astype(np.float32)
    ti = median_time(lambda: model.predict_on_batch(xi), args.repeats)
    return {"keras_train_images_per_s": args.batch_size / t, "keras_infer_images_per_s": args.infer_batch_size / ti}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conv", default="matmul", help="convolution implementation (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--infer-batch-size", type=int, default=120)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compare", choices=("keras",), help="also measure tf-keras on the same machine, in this run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()

    result = {"conv": args.conv, "dtype": args.dtype, "batch_size": args.batch_size, **bench_jax(args)}
    if args.compare == "keras":
        result.update(bench_keras(args))
        if "keras_train_images_per_s" in result:
            result["train_vs_keras"] = result["train_images_per_s"] / result["keras_train_images_per_s"]
            result["infer_vs_keras"] = result["infer_images_per_s"] / result["keras_infer_images_per_s"]
    result["train_fraction_of_peak"] = result["train_gflops_per_s"] / result["matmul_peak_gflops_per_s"]
    result["infer_fraction_of_peak"] = result["infer_gflops_per_s"] / result["matmul_peak_gflops_per_s"]
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")


if __name__ == "__main__":
    main()
