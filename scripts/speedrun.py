"""Time to accuracy: whole training processes of the fast recipe and the first default (default-v1), side by side.

    python scripts/speedrun.py --seeds 5                  # fast and default-v1, seeds 0-4
    python scripts/speedrun.py --seeds 3 --recipes fast --json

Each run is `python -m signs_jax.train --recipe R --seed S` in a fresh process, from its start to its exit
(Result.csv written, temperature step done): what a user waits for. The runs alternate between the recipes
seed by seed, so that a slower stretch of a shared machine lands on both. A first run of each recipe is a
warm-up, reported apart and left out of the statistics, as the speed-run papers do: it fills JAX's
compilation cache (the tools' default, docs/runtime.md), which every later run reads.

Each run's wall time is split into:
- start-up: from the process start to the run's first line (imports, data, model, initial weights);
- compile: the first train step's time beyond the median step (XLA compiles the step there, or finds it in
  the cache);
- training: every epoch's train steps, less that compile;
- evaluation: everything else (BatchNorm statistics, validation and test passes, checkpoints, curves,
  Result.csv, the temperature, the exit).

Per recipe: mean and minimum SIGNS test accuracy (and on the test images with no near-copy in train), the
median wall time with its range, and the median of each part; then the ratio of the medians.
"""

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from signs_jax.rundir import read_jsonl  # noqa: E402 - the checkout's package, as bench.py finds it

PHASES = ("startup", "compile", "training", "evaluation")


def train_command(recipe: str, seed: int, workdir: Path, run: str, extra=()) -> list:
    return [
        sys.executable,
        "-m",
        "signs_jax.train",
        "--recipe",
        recipe,
        "--seed",
        str(seed),
        "--workdir",
        str(workdir),
        "--run",
        run,
        "--no-progress",
        *extra,
    ]


def run_once(recipe: str, seed: int, workdir: Path, run: str, log, extra=()) -> dict:
    """One training process, timed from outside; its results and its wall time split into PHASES."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = train_command(recipe, seed, workdir, run, extra)
    print(f"speedrun.py: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    first_line = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            log.write(line)
            if first_line is None and line.startswith("run "):
                first_line = time.perf_counter()
        status = proc.wait()
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"speedrun.py: {' '.join(command)} failed (exit status {status}); see {log.name}")
    run_dir = workdir / run
    with open(run_dir / "Result.csv", newline="") as f:
        result = next(csv.DictReader(f))
    # A fine-tuning run's epoch 0 only scores its start.
    epochs = [e for e in read_jsonl(run_dir / "metrics.jsonl") if "train_seconds" in e]
    train_seconds = sum(e["train_seconds"] for e in epochs)
    first = epochs[0]
    compile_seconds = max(0.0, first["first_step_seconds"] - first["median_step_seconds"])
    startup = (first_line if first_line is not None else started) - started
    training = train_seconds - compile_seconds
    return {
        "recipe": recipe,
        "seed": seed,
        "test_accuracy": float(result["test_accuracy"]),
        "test_accuracy_no_near_copies": _float(result["test_accuracy_no_near_copies"]),
        "epochs": len(epochs),
        "wall": wall,
        "startup": startup,
        "compile": compile_seconds,
        "training": training,
        "evaluation": wall - startup - compile_seconds - training,
    }


def _float(text):
    return float(text) if text not in ("", None) else None


def summarise(runs: list) -> dict:
    accuracy = [r["test_accuracy"] for r in runs]
    clean = [r["test_accuracy_no_near_copies"] for r in runs if r["test_accuracy_no_near_copies"] is not None]
    walls = [r["wall"] for r in runs]
    out = {
        "runs": len(runs),
        "test_accuracy_mean": statistics.mean(accuracy),
        "test_accuracy_min": min(accuracy),
        "no_near_copies_mean": statistics.mean(clean) if clean else None,
        "no_near_copies_min": min(clean) if clean else None,
        "wall_median": statistics.median(walls),
        "wall_min": min(walls),
        "wall_max": max(walls),
    }
    for phase in PHASES:
        out[f"{phase}_median"] = statistics.median(r[phase] for r in runs)
    return out


def report(result: dict) -> None:
    print("warm-up (left out):")
    for r in result["warmup"]:
        print(f"  {r['recipe']:10s} seed {r['seed']}  test {r['test_accuracy']:.3f}  {_parts(r)}")
    print("runs:")
    for r in result["runs"]:
        print(f"  {r['recipe']:10s} seed {r['seed']}  test {r['test_accuracy']:.3f}  {_parts(r)}")
    print()
    print(
        "| recipe | runs | test accuracy mean / min | no near-copies mean / min | wall median (range) | "
        "start-up | compile | training | evaluation |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in result["recipes"].items():
        clean = (
            f"{s['no_near_copies_mean']:.3f} / {s['no_near_copies_min']:.3f}"
            if s["no_near_copies_mean"] is not None
            else "-"
        )
        print(
            f"| {name} | {s['runs']} | {s['test_accuracy_mean']:.3f} / {s['test_accuracy_min']:.3f} | {clean} | "
            f"{s['wall_median']:.1f} s ({s['wall_min']:.1f}-{s['wall_max']:.1f}) | "
            + " | ".join(f"{s[p + '_median']:.1f} s" for p in PHASES)
            + " |"
        )
    for key, value in result.get("ratios", {}).items():
        print(f"{key}: {value:.3f}")


def _parts(r: dict) -> str:
    return f"wall {r['wall']:.1f} s = " + " + ".join(f"{p} {r[p]:.1f}" for p in PHASES)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per recipe (default: %(default)s)")
    p.add_argument("--recipes", nargs="+", default=["fast", "default-v1"], help="recipes to run (default: %(default)s)")
    p.add_argument("--no-warmup", action="store_true", help="count every run (the compilation cache is warm)")
    p.add_argument("--workdir", help="where the runs go (default: a new temporary directory, kept)")
    p.add_argument(
        "--train-args", default="", help="more options for every training run, e.g. '--data-dir DIR --epochs 3'"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    extra = shlex.split(args.train_args)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="speedrun-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {"seeds": args.seeds, "train_args": extra, "workdir": str(workdir), "warmup": [], "runs": []}
    with open(workdir / f"speedrun-{stamp}.log", "a") as log:
        if not args.no_warmup:
            for recipe in args.recipes:
                result["warmup"].append(run_once(recipe, 0, workdir, f"warmup-{recipe}-{stamp}", log, extra))
        for seed in range(args.seeds):
            for recipe in args.recipes:
                result["runs"].append(run_once(recipe, seed, workdir, f"{recipe}-seed{seed}-{stamp}", log, extra))
    result["recipes"] = {r: summarise([x for x in result["runs"] if x["recipe"] == r]) for r in args.recipes}
    names = args.recipes
    if len(names) > 1:
        base = result["recipes"][names[-1]]["wall_median"]
        result["ratios"] = {
            f"{n}/{names[-1]} wall median": result["recipes"][n]["wall_median"] / base for n in names[:-1]
        }
    if args.json:
        print(json.dumps(result))
    else:
        report(result)
    return result


if __name__ == "__main__":
    main()
