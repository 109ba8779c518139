"""scripts/bench.py --processes: one measurement per fresh process, medians over them, every process listed."""

import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import bench  # noqa: E402

pytestmark = pytest.mark.perf  # the benchmark harness


def process_result(train, keras_train, compile_s):
    return {
        "dtype": "bfloat16",
        "batch_size": 32,
        "repeats": 7,
        "train_images_per_s": train,
        "keras_train_images_per_s": keras_train,
        "train_vs_keras": train / keras_train,
        "train_compile_s": compile_s,
    }


def test_medians_are_over_processes_and_each_process_is_listed():
    results = [process_result(90.0, 63.0, 8.5), process_result(108.0, 60.0, 9.5), process_result(100.0, 70.0, 9.0)]
    merged = bench.median_over_processes(results)
    assert merged["train_images_per_s"] == 100.0
    # the median of the per-process ratios (each measured side by side), not a ratio of medians
    assert merged["train_vs_keras"] == pytest.approx(90.0 / 63.0)
    assert 100.0 / 63.0 != pytest.approx(merged["train_vs_keras"])
    assert merged["train_compile_s"] == 9.0
    assert (merged["dtype"], merged["batch_size"], merged["processes"]) == ("bfloat16", 32, 3)
    assert [p["train_vs_keras"] for p in merged["per_process"]] == [r["train_vs_keras"] for r in results]
    assert set(merged["per_process"][0]) == {
        "train_vs_keras",
        "train_images_per_s",
        "keras_train_images_per_s",
        "train_compile_s",
    }


def test_each_process_runs_the_same_measurement(monkeypatch, capsys):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(
            command, 0, stdout='warming up\n{"train_images_per_s": %d}\n' % len(commands)
        )

    monkeypatch.setattr(subprocess, "run", fake_run)
    result = bench.main(["--dtype", "bfloat16", "--compare", "keras", "--repeats", "5", "--processes", "3", "--json"])
    assert len(commands) == 3 and all(c == commands[0] for c in commands)
    assert "--processes" not in commands[0] and commands[0][-1] == "--json" and commands[0].count("--json") == 1
    assert commands[0][commands[0].index("--dtype") + 1] == "bfloat16"
    assert commands[0][commands[0].index("--compare") + 1] == "keras"
    assert result["train_images_per_s"] == 2 and result["processes"] == 3
    assert capsys.readouterr().out.strip().startswith("{")


def test_every_measurement_option_reaches_each_process(monkeypatch):
    commands = []
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda command, **kwargs: (
            commands.append(command) or subprocess.CompletedProcess(command, 0, stdout='{"train_images_per_s": 1}\n')
        ),
    )
    given = {
        "--conv": "xla",
        "--dtype": "bfloat16",
        "--width": "0.5",
        "--batch-size": "8",
        "--infer-batch-size": "16",
        "--repeats": "6",
        "--compare": "keras",
    }
    bench.main([word for pair in given.items() for word in pair] + ["--proc", "2"])  # argparse takes a prefix
    assert len(commands) == 2
    assert {word: commands[0][commands[0].index(word) + 1] for word in given} == given


@pytest.mark.parametrize("status, stdout", [(1, ""), (0, "no JSON here\n")])
def test_a_failed_process_is_one_line_naming_it(monkeypatch, status, stdout):
    monkeypatch.setattr(
        subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, status, stdout=stdout)
    )
    with pytest.raises(SystemExit) as failure:
        bench.main(["--processes", "2"])
    message = str(failure.value)
    assert message.startswith(f"bench.py: process 1 of 2 failed (exit status {status})") and "\n" not in message


def test_processes_must_be_positive(capsys):
    with pytest.raises(SystemExit) as failure:
        bench.main(["--processes", "0"])
    assert failure.value.code == 2 and "--processes must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "faults_per_round, warmup", [([90_000, 60_000, 30_000, 0], 4), ([0, 0], 2), ([50_000] * 20, 8)]
)
def test_warm_up_lasts_until_a_round_costs_no_page_faults(monkeypatch, faults_per_round, warmup):
    counter = {"faults": 0, "round": 0}

    def call():  # the only runner: each call is one round
        round_index = counter["round"]
        counter["faults"] += faults_per_round[round_index] if round_index < len(faults_per_round) else 0
        counter["round"] += 1

    monkeypatch.setattr(bench, "PAUSE_S", 0.0)
    monkeypatch.setattr(bench, "minor_faults", lambda: counter["faults"])
    out = {}
    bench.measure({"train": (call, (32, 0.0))}, repeats=5, out=out)
    assert out["warmup_rounds"] == warmup and counter["round"] == warmup + 5


def test_the_timed_calls_run_with_the_set_up_objects_frozen(monkeypatch):
    import gc

    frozen_during_calls = []
    monkeypatch.setattr(bench, "PAUSE_S", 0.0)
    monkeypatch.setattr(bench, "minor_faults", lambda: 0)
    bench.measure({"train": (lambda: frozen_during_calls.append(gc.get_freeze_count()), (32, 0.0))}, repeats=5, out={})
    assert len(frozen_during_calls) == 7 and min(frozen_during_calls) > 0  # 2 warm-up rounds, 5 timed
    assert gc.get_freeze_count() == 0  # and nothing stays frozen afterwards
