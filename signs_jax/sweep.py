"""`python -m signs_jax.sweep CONFIG --seeds 0 1 2 --grid recipe.lr=1e-3,2e-3`: every combination of a grid, over
seeds, each in its own run directory; then a results table with intervals.

Each run is a `python -m signs_jax.train` process (`--jobs` at a time) on a config file the sweep writes, so a
sweep stopped at any point and started again skips its finished runs, resumes the interrupted ones from their
checkpoints (with the same numbers, as train's resume does) and starts the rest.
"""

import argparse
import csv
import dataclasses
import itertools
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import cli
from . import config as configuration
from .config import TrainConfig
from .errors import UserError

SWEEPS_DIR = configuration.DEFAULT_WORKDIR / "sweeps"
# What the table summarises, when a run reports it.
METRICS = ("test_accuracy", "test_accuracy_no_near_copies", "test_loss", "val_accuracy", "val_loss")
# Student's t 0.975 quantiles for 1..30 degrees of freedom (standard table values; beyond 30 the normal 1.96
# is within 2 %), so that the intervals need no SciPy.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SweepRun:
    setting: Tuple[Tuple[str, Any], ...]  # the grid's (key, value) pairs of this run
    seed: int
    name: str
    config: TrainConfig


@dataclasses.dataclass(frozen=True)
class SweepResult:
    directory: Path
    runs: List[Dict[str, Any]]  # one row per run: setting, seed, run name, metrics
    table: List[Dict[str, Any]]  # one row per setting: n and each metric's mean, std and 95 % interval


def parse_grid(assignments: Sequence[str]) -> Dict[str, List[Any]]:
    """`--grid key=v1,v2`: typed values by key (a list-valued key takes `;` between its values: 1,1,1,1;2,2,2,2)."""
    grid = {}
    for text in assignments:
        key, sep, values = text.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise UserError(f"--grid {text}: expected key=value1,value2 (e.g. recipe.lr=1e-3,2e-3)")
        parts = values.split(";") if configuration.takes_list(key) else values.split(",")
        grid[key] = [configuration.parse_value(key, part) for part in parts]
    return grid


def plan(base: TrainConfig, seeds: Sequence[int], grid: Mapping[str, Sequence[Any]]) -> List[SweepRun]:
    """Every (setting, seed): its run name and config, checked before anything runs."""
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    keys = list(grid)
    runs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = tuple(zip(keys, values))
        for seed in seeds:
            config = configuration.apply_overrides(base, {**dict(setting), "run.seed": seed}).with_recipe()
            configuration.validate(config)
            runs.append(SweepRun(setting, seed, run_name(setting, seed), config))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError("--grid: two settings give the same run name; give distinct values")
    return runs


def run_name(setting, seed: int) -> str:
    """A folder name that says the setting: `recipe.lr=0.001-seed0` (characters unsafe in a file name as `_`)."""
    parts = [f"{key}={_text(value)}" for key, value in setting]
    name = "-".join(parts + [f"seed{seed}"])
    return "".join(c if c.isalnum() or c in "=.,_-+" else "_" for c in name)


def _text(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def sweep(
    base: TrainConfig,
    seeds: Sequence[int],
    grid: Mapping[str, Sequence[Any]],
    directory,
    *,
    jobs: int = 1,
    progress: bool = False,
) -> SweepResult:
    """Run (or continue) a sweep in `directory` and write its tables (results.md, results.csv, runs.csv) and
    results.png. Runs go through `python -m signs_jax.train`, `jobs` processes at a time."""
    from .files import write_text_atomic

    directory = Path(directory)
    runs = plan(base, seeds, grid)
    (directory / "configs").mkdir(parents=True, exist_ok=True)
    for r in runs:
        write_text_atomic(directory / "configs" / f"{r.name}.json", r.config.to_json())
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        failures = [f for f in pool.map(lambda r: _run(r, directory, progress), runs) if f]
    if failures:
        raise UserError(f"{len(failures)} of {len(runs)} runs failed: {'; '.join(failures[:3])}")
    rows = [_run_row(r, directory) for r in runs]
    table = summarise(rows, [k for k, _ in runs[0].setting])
    write_tables(directory, rows, table)
    return SweepResult(directory, rows, table)


def _run(r: SweepRun, directory: Path, progress: bool) -> Optional[str]:
    """Train one run to its end (resumed when it has a checkpoint, skipped when finished); an error line or None."""
    from .checkpoints import checkpointed_epochs, has_checkpoint

    run_dir = directory / r.name
    resume = has_checkpoint(run_dir)
    if resume and (checkpointed_epochs(run_dir) or 0) >= r.config.recipe.epochs and (run_dir / "Result.csv").exists():
        print(f"{r.name}: finished, skipped", flush=True)
        return None
    command = [sys.executable, "-m", "signs_jax.train", "--workdir", str(directory), "--run", r.name]
    command += ["--resume"] if resume else ["--config", str(directory / "configs" / f"{r.name}.json")]
    command += [] if progress else ["--no-progress"]
    print(f"{r.name}: {'resuming' if resume else 'starting'}", flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(directory / f"{r.name}.log", "a") as log:
        log.write(done.stdout)
    if done.returncode != 0:
        last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        return f"{r.name}: exit {done.returncode}: {last}"
    print(f"{r.name}: done", flush=True)
    return None


def _run_row(r: SweepRun, directory: Path) -> Dict[str, Any]:
    from .experiment import _stored_result

    result = _stored_result(directory / r.name)
    row = {"run": r.name, **{k: _text(v) for k, v in r.setting}, "seed": r.seed}
    row.update({m: result.test_metrics.get(m) for m in METRICS})
    return row


STATISTICS = ("mean", "std", "low", "high")


def interval(values: Sequence[float]) -> Tuple[float, float, float, float]:
    """(mean, sample standard deviation, 95 % interval low, high) by Student's t; one value: no spread known."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (T_975[n - 2] if n - 1 <= len(T_975) else 1.96) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def summarise(rows: List[Dict[str, Any]], keys: List[str]) -> List[Dict[str, Any]]:
    """One row per setting (in the grid's order): n, and each metric's mean, std and 95 % interval."""
    settings: Dict[Tuple, List[Dict[str, Any]]] = {}
    for row in rows:
        settings.setdefault(tuple(row[k] for k in keys), []).append(row)
    table = []
    for values, members in settings.items():
        entry = {**dict(zip(keys, values)), "n": len(members)}
        for metric in METRICS:
            observed = [m[metric] for m in members if m.get(metric) is not None]
            if observed:
                entry.update({f"{metric}_{s}": v for s, v in zip(STATISTICS, interval(observed))})
        table.append(entry)
    return table


def write_tables(directory: Path, rows, table) -> None:
    from .files import atomic_write, write_text_atomic

    for name, data in (("runs.csv", rows), ("results.csv", table)):
        fields = list(dict.fromkeys(k for row in data for k in row))
        with atomic_write(directory / name, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(data)
    write_text_atomic(directory / "results.md", markdown(table))
    plot_settings(table, directory / "results.png")


def _cell(entry, metric) -> str:
    if f"{metric}_mean" not in entry:
        return ""
    mean, std, low, high = (entry[f"{metric}_{s}"] for s in STATISTICS)
    if math.isnan(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]"


def _setting_keys(entry) -> List[str]:
    """The grid keys of a table row (what is neither the seed count nor a metric's statistic)."""
    return [k for k in entry if k != "n" and not any(k.startswith(m + "_") for m in METRICS)]


def markdown(table) -> str:
    """The table as Markdown: mean ± standard deviation [95 % interval] per metric, a row per setting."""
    metrics = [m for m in METRICS if any(f"{m}_mean" in e for e in table)]
    keys = _setting_keys(table[0]) if table else []
    lines = ["| " + " | ".join(keys + ["n"] + metrics) + " |", "|" + " --- |" * (len(keys) + 1 + len(metrics))]
    for e in table:
        cells = [str(e[k]) for k in keys] + [str(e["n"])] + [_cell(e, m) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± sample standard deviation [95 % interval, Student's t] over seeds\n"


def plot_settings(table, path: Path, metric: str = "test_accuracy") -> Optional[Path]:
    """Each setting's mean with its 95 % interval."""
    entries = [e for e in table if f"{metric}_mean" in e]
    if not entries:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    keys = _setting_keys(entries[0])
    labels = [", ".join(f"{k}={e[k]}" for k in keys) or "base" for e in entries]
    means = [e[f"{metric}_mean"] for e in entries]
    errors = [
        [0 if math.isnan(e[f"{metric}_low"]) else e[f"{metric}_mean"] - e[f"{metric}_low"] for e in entries],
        [0 if math.isnan(e[f"{metric}_high"]) else e[f"{metric}_high"] - e[f"{metric}_mean"] for e in entries],
    ]
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(entries)), 3.5))
    ax.errorbar(range(len(entries)), means, yerr=errors, fmt="o", capsize=4)
    ax.set_xticks(range(len(entries)), labels, rotation=20, ha="right")
    ax.set(ylabel=f"{metric} (mean, 95 % interval)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m signs_jax.sweep",
        description="Train every combination of a grid over seeds, each in its own run; started again, skip the "
        "finished runs and resume the interrupted ones; write results.md / results.csv (mean, standard deviation "
        "and 95%% interval per setting), runs.csv and results.png.",
    )
    p.add_argument("config", help="a named experiment (signs_jax/configs/), a Python config file or a config.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values (repeatable: the product is swept), e.g. recipe.lr=1e-3,2e-3",
    )
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="change the base config (as train's --set)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default: 1)")
    p.add_argument(
        "--workdir",
        help=f"the sweep's directory (default: {SWEEPS_DIR}/<config name>); running the same command again continues",
    )
    p.add_argument("--progress", action="store_true", help="progress bars of the runs (default: one line per run)")
    return p


def run(args) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    base = configuration.apply_overrides(
        configuration.load_config(args.config), configuration.parse_overrides(args.assignments)
    )
    directory = Path(args.workdir) if args.workdir else SWEEPS_DIR / Path(args.config).stem
    result = sweep(base, args.seeds, parse_grid(args.grid), directory, jobs=args.jobs, progress=args.progress)
    print(markdown(result.table))
    print(f"tables in {directory}/results.md, results.csv, runs.csv; plot in {directory}/results.png")
    return 0


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
