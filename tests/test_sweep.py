"""Sweeps: the grid and its names, the intervals, and a sweep killed midway that continues to the same table."""

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT
from signs_jax import sweep
from signs_jax.config import TrainConfig
from signs_jax.errors import UserError


def test_intervals_are_students_t_over_seeds():
    # 1, 2, 3: mean 2, sample std 1, t(0.975, 2 df) = 4.303 from the printed tables: half-width 4.303 / sqrt(3)
    mean, std, low, high = sweep.interval([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert low == pytest.approx(2 - 2.48434, abs=1e-4) and high == pytest.approx(2 + 2.48434, abs=1e-4)
    # two values 0.95 and 0.97: std 0.014142, t(1 df) = 12.706: half-width 0.127 — two seeds say little
    _, std, low, _ = sweep.interval([0.95, 0.97])
    assert std == pytest.approx(0.0141421, abs=1e-6) and 0.96 - low == pytest.approx(0.12706, abs=1e-4)
    assert all(math.isnan(v) for v in sweep.interval([0.9])[1:])  # one seed: no spread to report


def test_the_grid_is_typed_and_every_combination_gets_its_own_name():
    grid = sweep.parse_grid(["recipe.lr=1e-3,2e-3", "model.stage_sizes=1,1,1,1;2,2,2,2", "recipe.augment=true,false"])
    assert grid == {
        "recipe.lr": [1e-3, 2e-3],
        "model.stage_sizes": [(1, 1, 1, 1), (2, 2, 2, 2)],
        "recipe.augment": [True, False],
    }
    runs = sweep.plan(TrainConfig(), [0, 1], grid)
    assert len(runs) == 16 and len({r.name for r in runs}) == 16
    first = runs[0]
    assert first.name == "recipe.lr=0.001-model.stage_sizes=1,1,1,1-recipe.augment=True-seed0"
    assert first.config.recipe.lr == 1e-3 and first.config.model.stage_sizes == (1, 1, 1, 1)
    assert first.config.run.seed == 0 and runs[1].config.run.seed == 1


@pytest.mark.parametrize(
    "grid, words",
    [
        (["recipe.lr=fast"], "recipe.lr=fast: expected a number"),
        (["recipe.nonsense=1"], "unknown config key 'recipe.nonsense'"),
        (["recipe.lr"], "expected key=value1,value2"),
        (["recipe.lr=-1"], "--set recipe.lr -1.0: must be a finite number above 0"),
    ],
)
def test_a_bad_grid_is_one_line_before_anything_runs(grid, words, tmp_path, capsys):
    assert sweep.main(["tiny", "--grid", *grid, "--workdir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words.replace("--set ", "") in err
    assert not (tmp_path / "s").exists()


def test_a_grid_that_names_two_runs_alike_is_refused():
    with pytest.raises(UserError, match="same run name"):
        sweep.plan(TrainConfig(), [0], {"recipe.lr": [1e-3, 0.001]})


def _sweep_process(directory, small_signs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "signs_jax.sweep", "tiny", "--seeds", "0", "--workdir", str(directory)]
    command += ["--grid", "recipe.lr=1e-3,2e-3", "--set", "recipe.epochs=3", "--set", "recipe.batch_size=16"]
    command += ["--set", f"data.dir={small_signs}", "--set", "model.width=0.0625", "--set", "run.eval_batch_size=40"]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _epochs_done(run_dir):
    from signs_jax.checkpoints import checkpointed_epochs, has_checkpoint

    return checkpointed_epochs(run_dir) if has_checkpoint(run_dir) else 0


@pytest.mark.slow
def test_a_killed_sweep_skips_finished_runs_resumes_the_interrupted_one_and_ends_at_the_same_table(
    tmp_path, small_signs
):
    whole = _sweep_process(tmp_path / "whole", small_signs)
    assert whole.wait(timeout=600) == 0, whole.stdout.read()

    cut = tmp_path / "cut"
    first = _sweep_process(cut, small_signs)
    second_run = cut / "recipe.lr=0.002-seed0"
    deadline = time.time() + 600
    while (_epochs_done(second_run) or 0) < 1:  # the first run finished, the second one epoch in
        assert first.poll() is None and time.time() < deadline, first.stdout.read()
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and its train process, mid-run
    first.wait()
    assert _epochs_done(second_run) < 3 and not (cut / "results.csv").exists()

    again = _sweep_process(cut, small_signs)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert "recipe.lr=0.001-seed0: finished, skipped" in out and "recipe.lr=0.002-seed0: resuming" in out

    def table(directory):
        return list(csv.DictReader(open(directory / "results.csv")))

    assert table(cut) == table(tmp_path / "whole")
    assert (cut / "results.md").read_text() == (tmp_path / "whole" / "results.md").read_text()
    assert (cut / "results.png").stat().st_size > 0
