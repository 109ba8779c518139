"""Throughput of the ResNet50 train step and inference, side by side with tf-keras in the same run.

    python scripts/bench.py                                   # float32, default conv
    python scripts/bench.py --conv xla --dtype bfloat16 --compare keras --json

Every timed function (JAX train step, JAX inference, the 2048^3 matmuls that give this machine's
peak, and tf-keras's train_on_batch / predict_on_batch with --compare keras) is warmed up until a
round costs no more page faults (the heap is steady), then run round-robin, one call each per
round, and reported as the median over --repeats rounds. The machine may be shared: interleaving
keeps a burst of outside load from landing on one side only, so the ratios are the numbers to
trust. On this project's machines a whole process can also run fast or slow (both tf-keras and
the JAX step; docs/performance.md has the spreads measured), so one process is one sample:
--processes N repeats the whole measurement in N fresh processes, one after another, lists every
process's numbers and reports their medians. The timed calls run with Python's cyclic garbage
collector blind to the set-up's objects (see `measure`). Compile times are given as wall and as CPU
seconds (the XLA compiler is mostly single-threaded, so its CPU time is what it takes on an idle
machine). The run first applies the command-line tools' process set-up (`signs_jax._runtime`,
docs/runtime.md) without the compilation cache, which would hide the compile times: glibc's malloc
settings (tf-keras shares the process and them) and XLA's CPU flags. SIGNS_JAX_MALLOC=default
measures with glibc's defaults, and a flag set in XLA_FLAGS beforehand keeps its value.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# Runtimes such as TensorFlow's spin their worker threads for a while after each call; a short
# pause between the timed calls keeps one side's spinning threads out of the other side's timing.
PAUSE_S = 0.1
# Minor page faults a warm-up round may still cost for the heap to count as steady (a train call
# that grows it costs tens of thousands).
FAULTS_AT_STEADY_STATE = 10_000

try:
    import resource
except ImportError:  # Unix only; elsewhere the warm-up is min_warmup rounds
    resource = None


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - c0


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def jax_runners(args, out: dict) -> dict:
    """name -> (call, work): `call()` runs once and blocks; `work` is (images, flops) per call."""
    import jax
    import jax.numpy as jnp

    import signs_jax
    from signs_jax.models import conv_name
    from signs_jax.recipes import RECIPES
    from signs_jax.steps import create_state, make_optimizer, make_train_step

    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    model = signs_jax.ResNet50(width=args.width, dtype=dtype, conv=args.conv)
    out["conv"] = conv_name(model)
    recipe = RECIPES["original"].replace(batch_size=args.batch_size)  # Adam, as the course trains
    tx = make_optimizer(recipe, 33)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 6, args.batch_size).astype(np.int32)
    runners = {}

    holder = {"state": create_state(signs_jax.init_variables(model, jax.random.key(0)), tx, 0)}
    step = make_train_step(model, tx, recipe)  # jitted, BatchNorm in train mode
    compiled, out["train_compile_s"], out["train_compile_cpu_s"] = timed(
        lambda: step.lower(holder["state"], images, labels).compile()
    )

    def train_once():
        holder["state"], metrics = compiled(holder["state"], images, labels)
        metrics["loss"].block_until_ready()

    runners["train"] = (train_once, (args.batch_size, flops_of(compiled)))

    variables = signs_jax.init_variables(model, jax.random.key(0))
    x = rng.uniform(size=(args.infer_batch_size, 64, 64, 3)).astype(np.float32)
    infer = jax.jit(lambda v, x: model.apply(v, x))
    compiled_infer, out["eval_compile_s"], out["eval_compile_cpu_s"] = timed(
        lambda: infer.lower(variables, x).compile()
    )
    runners["infer"] = (
        lambda: compiled_infer(variables, x).block_until_ready(),
        (args.infer_batch_size, flops_of(compiled_infer)),
    )

    n = 2048
    for name, dt in (("peak_float32", jnp.float32), ("peak_bfloat16", jnp.bfloat16)):
        a = jnp.asarray(rng.uniform(size=(n, n)), dt)
        mm = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32)).lower(a, a).compile()
        runners[name] = (lambda mm=mm, a=a: mm(a, a).block_until_ready(), (0, 2.0 * n**3))
    return runners


def keras_runners(args, out: dict) -> dict:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import tf_keras  # noqa: F401
    except ImportError:
        print("--compare keras skipped: tf_keras is not importable here (pip install -e '.[keras]')", file=sys.stderr)
        return {}
    import keras_reference

    rng = np.random.default_rng(0)
    model = keras_reference.ResNet50((64, 64, 3), 6, args.width)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = rng.uniform(size=(args.batch_size, 64, 64, 3)).astype(np.float32)
    y = np.eye(6, dtype=np.float32)[rng.integers(0, 6, args.batch_size)]
    _, out["keras_train_first_call_s"], _ = timed(lambda: model.train_on_batch(x, y))
    xi = rng.uniform(size=(args.infer_batch_size, 64, 64, 3)).astype(np.float32)
    _, out["keras_infer_first_call_s"], _ = timed(lambda: model.predict_on_batch(xi))
    return {
        "keras_train": (lambda: model.train_on_batch(x, y), (args.batch_size, 0.0)),
        "keras_infer": (lambda: model.predict_on_batch(xi), (args.infer_batch_size, 0.0)),
    }


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def measure(runners: dict, repeats: int, out: dict, min_warmup: int = 2, max_warmup: int = 8) -> dict:
    """Median seconds per call of each runner over `repeats` round-robin rounds after warm-up.

    Warm-up runs in the same round-robin as the timed rounds until a whole round has no more than
    FAULTS_AT_STEADY_STATE page faults: only then has the heap reached its steady state. The JAX
    train step allocates its temporaries afresh on every call, and with tf-keras in the process
    the heap kept growing for 3-5 rounds (60,000-80,000 faults in a train call in the third and
    fourth rounds, 1.5-3x its steady time), which two fixed warm-up rounds left in the timed ones.

    The calls run with the objects that exist beforehand frozen out of Python's cyclic collector:
    a full collection rescans every long-lived object, and with tf-keras loaded (~600,000 objects)
    one took 430 ms of the main thread inside whichever call triggered it, mostly the JAX train
    step (its state pytree allocates the most Python objects). The collector still runs.
    """
    gc.collect()
    gc.freeze()
    try:
        return _measure(runners, repeats, out, min_warmup, max_warmup)
    finally:
        gc.unfreeze()


def _measure(runners: dict, repeats: int, out: dict, min_warmup: int, max_warmup: int) -> dict:
    times = {name: [] for name in runners}
    warmup, timed_rounds, faults = 0, 0, []
    while timed_rounds < repeats:
        timed_round = warmup >= max_warmup or (warmup >= min_warmup and faults[-1] <= FAULTS_AT_STEADY_STATE)
        before = minor_faults()
        for name, (call, _) in runners.items():
            time.sleep(PAUSE_S)
            t0 = time.perf_counter()
            call()
            if timed_round:
                times[name].append(time.perf_counter() - t0)
        faults.append(minor_faults() - before)
        if timed_round:
            timed_rounds += 1
        else:
            warmup += 1
    out["warmup_rounds"] = warmup
    out["page_faults_per_timed_round"] = statistics.median(faults[warmup:])
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from signs_jax.models import CONV_IMPLEMENTATIONS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    measurement = [  # the options that define one measurement: --processes passes them all to each process
        p.add_argument(
            "--conv",
            choices=sorted(CONV_IMPLEMENTATIONS),
            help="convolution implementation (default: ResNet50's for the backend JAX runs on)",
        ),
        p.add_argument(
            "--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype (params stay float32)"
        ),
        p.add_argument("--width", type=float, default=1.0, help="filter-count multiplier (1.0 = the full ResNet50)"),
        p.add_argument("--batch-size", type=int, default=32, help="train batch (default: %(default)s)"),
        p.add_argument("--infer-batch-size", type=int, default=120, help="inference batch (default: %(default)s)"),
        p.add_argument(
            "--repeats", type=int, default=7, help="timed rounds after warm-up, >= 5 (default: %(default)s)"
        ),
        p.add_argument(
            "--compare", choices=("keras",), help="also time tf-keras on the same model, interleaved in this run"
        ),
    ]
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="repeat the measurement in this many fresh processes and report the medians (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    if args.repeats < 5:
        p.error("--repeats must be at least 5")
    if args.processes < 1:
        p.error("--processes must be at least 1")
    if args.processes > 1:
        command = measurement_command(args, measurement)
        result = median_over_processes(
            [run_in_fresh_process(command, i, args.processes) for i in range(args.processes)]
        )
        return report(result, args.json)

    from signs_jax._runtime import set_up

    setup = set_up(compilation_cache=False)
    result = {
        "conv": args.conv,
        "dtype": args.dtype,
        "width": args.width,
        "batch_size": args.batch_size,
        "infer_batch_size": args.infer_batch_size,
        "repeats": args.repeats,
        "malloc": "reuse_freed_memory" if setup.malloc else "default",
        "xla_flags": setup.xla_flags,
    }
    runners = jax_runners(args, result)
    if args.compare == "keras":
        runners.update(keras_runners(args, result))
    medians = measure(runners, args.repeats, result)
    for name, seconds in medians.items():
        images, flops = runners[name][1]
        if name.startswith("peak_"):
            result[f"matmul_{name}_gflops_per_s"] = flops / seconds / 1e9
            continue
        result[f"{name}_images_per_s"] = images / seconds
        if flops:
            result[f"{name}_gflops_per_s"] = flops / seconds / 1e9
    peak = result[f"matmul_peak_{args.dtype}_gflops_per_s"]
    for name in ("train", "infer"):
        result[f"{name}_fraction_of_peak"] = result[f"{name}_gflops_per_s"] / peak
        if f"keras_{name}_images_per_s" in result:
            result[f"{name}_vs_keras"] = result[f"{name}_images_per_s"] / result[f"keras_{name}_images_per_s"]
    return report(result, args.json)


def report(result: dict, as_json: bool) -> dict:
    if as_json:
        print(json.dumps(result))
        return result
    for key, value in result.items():
        if key == "per_process":
            for index, numbers in enumerate(value, 1):
                print(f"{'process ' + str(index):34s} " + "  ".join(f"{k} {v:.3f}" for k, v in numbers.items()))
            continue
        print(f"{key:34s} {value:.3f}" if isinstance(value, float) else f"{key:34s} {value}")
    return result


# Listed per process by --processes, so that the spread behind each median is visible.
PER_PROCESS_KEYS = (
    "train_vs_keras",
    "infer_vs_keras",
    "train_images_per_s",
    "infer_images_per_s",
    "keras_train_images_per_s",
    "keras_infer_images_per_s",
    "train_compile_s",
    "eval_compile_s",
)


def measurement_command(args, options) -> list:
    """The command line of one measurement (`--processes 1 --json`) with `args`' values of `options`."""
    command = [sys.executable, str(Path(__file__).resolve())]
    for option in options:
        value = getattr(args, option.dest)
        if value is not None:
            command += [option.option_strings[0], str(value)]
    return command + ["--json"]


def run_in_fresh_process(command: list, index: int, count: int) -> dict:
    """One whole measurement in a new Python process; its JSON result."""
    import subprocess

    print(f"bench.py: process {index + 1} of {count}", file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    raise SystemExit(
        f"bench.py: process {index + 1} of {count} failed (exit status {done.returncode}); "
        f"run it alone to see why: {' '.join(command)}"
    )


def median_over_processes(results: list) -> dict:
    """Each number's median over the processes (a ratio's median is over the per-process ratios,
    each measured side by side), with every process's main numbers under "per_process"."""
    merged = {}
    for key, value in results[0].items():
        values = [r[key] for r in results if key in r]
        varies = any(v != value for v in values) and all(isinstance(v, (int, float)) for v in values)
        merged[key] = statistics.median(values) if varies else value  # settings stay as they were
    merged["processes"] = len(results)
    merged["per_process"] = [{k: r[k] for k in PER_PROCESS_KEYS if k in r} for r in results]
    return merged


if __name__ == "__main__":
    main()
