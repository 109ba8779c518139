"""docs/tutorial.ipynb runs from top to bottom, and what it shows holds: the Keras round trip gives the same
logits, the sweep's table has one row per setting, and nothing is left behind."""

import json
import os
import re
import sys
from pathlib import Path

import pytest

from helpers import ROOT

NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def test_tutorial_is_stored_without_outputs():
    """Outputs would make every re-run a large diff; the test below produces them afresh."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the tutorial has no code cells"
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def _kernel_of_this_python(directory: Path) -> Path:
    """A `python3` kernel spec that runs this interpreter, whatever kernels the machine has registered."""
    spec = directory / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    return directory


def _text(cell) -> str:
    """A code cell's printed text and its displayed Markdown, in order."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream" and output.name == "stdout":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/markdown", ""))
    return "".join(parts)


def _cell_with(nb, snippet: str):
    found = [cell for cell in nb.cells if cell.cell_type == "code" and snippet in cell.source]
    assert len(found) == 1, f"expected one code cell with {snippet!r}, found {len(found)}"
    return found[0]


@pytest.mark.slow
def test_tutorial_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # The kernel, and the sweep's training processes it starts, import this checkout's signs_jax; the kernel's
    # files (spec, connection file, IPython profile) stay in tmp_path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_of_this_python(tmp_path / "jupyter")))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, startup_timeout=120, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # CellExecutionError, with the cell and its traceback, if any cell raises

    assert any("image/png" in output.get("data", {}) for output in _cell_with(nb, "plt.show()").outputs), (
        "the sample images were not shown"
    )

    trained = _text(_cell_with(nb, "train_and_evaluate(config"))
    evaluated = _text(_cell_with(nb, "load_weights(str(result.run_dir))"))
    during_training = float(re.search(r"^test accuracy: (\S+)$", trained, re.M).group(1))
    from_loaded_weights = float(re.search(r"^test accuracy: (\S+)$", evaluated, re.M).group(1))
    # The kept checkpoint, loaded again, classifies the 120 test images as training reported (one image may
    # flip between two compiled functions' last bits).
    assert abs(from_loaded_weights - during_training) <= 1 / 120 + 1e-9

    round_trip = _text(_cell_with(nb, "load_keras_h5("))
    difference = float(re.search(r"largest logit difference after the round trip: (\S+)", round_trip).group(1))
    assert difference <= 1e-6

    table = _text(_cell_with(nb, "sweep("))
    header = next(line for line in table.splitlines() if line.startswith("| recipe.lr |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:3] == ["recipe.lr", "n", "test_accuracy"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if re.match(r"\| \d", line)]
    assert [(float(row[0]), row[1]) for row in rows] == [(1e-3, "2"), (3e-3, "2")]  # two settings, two seeds each
    for row in rows:
        accuracy = float(row[2].split()[0])
        assert 0.0 <= accuracy <= 1.0

    files = _text(_cell_with(nb, "sweep_result.directory.iterdir()"))
    for name in ("results.md", "results.csv", "runs.csv", "results.png"):
        assert name in files

    workspace = re.search(r"^writing to (.+)$", _text(_cell_with(nb, "tempfile.mkdtemp(")), re.M).group(1)
    assert not Path(workspace).exists(), "the last cell should remove the tutorial's folder"
    assert not any(cwd.iterdir()), f"the tutorial wrote into its working directory: {sorted(cwd.iterdir())}"
