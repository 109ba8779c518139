"""scripts/speedrun.py end to end on a tiny model: it runs the training tool, reads what the run wrote and splits
the wall time (the speed and accuracy numbers themselves are measured by the script, not asserted here)."""

import csv
import json
import sys

import pytest

from helpers import ROOT
from signs_jax.rundir import read_jsonl

sys.path.insert(0, str(ROOT / "scripts"))
import speedrun  # noqa: E402

TINY_TRAIN = "--width 0.0625 --stage-sizes 1,1,1,1 --epochs 1 --batch-size 16 --eval-batch-size 40"


@pytest.mark.slow
def test_speedrun_times_whole_training_processes_and_reads_their_results(small_signs, tmp_path, capsys):
    args = ["--seeds", "1", "--recipes", "fast", "--no-warmup", "--workdir", str(tmp_path), "--json"]
    result = speedrun.main([*args, "--train-args", f"--data-dir {small_signs} {TINY_TRAIN}"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["runs"] == result["runs"] and result["warmup"] == []
    (run,) = result["runs"]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with open(run_dir / "Result.csv", newline="") as f:
        written = next(csv.DictReader(f))
    assert run["test_accuracy"] == float(written["test_accuracy"]) and run["epochs"] == 1
    assert json.loads((run_dir / "config.json").read_text())["model"]["dtype"] == "bfloat16"
    assert all(run[phase] > 0 for phase in ("startup", "training", "evaluation"))
    # The compile is the first step's time beyond a steady step: within what the run recorded for that step.
    (epoch,) = read_jsonl(run_dir / "metrics.jsonl")
    assert 0 < run["compile"] < epoch["first_step_seconds"] and run["training"] < epoch["train_seconds"]
    assert result["recipes"]["fast"]["wall_median"] == run["wall"]
