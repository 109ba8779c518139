"""The command-line tools as installed: console entry points and --help for each."""

import importlib
from importlib.metadata import entry_points

import pytest

TOOLS = {
    "signs-train": "signs_jax.train",
    "signs-predict": "signs_jax.predict",
    "signs-evaluate": "signs_jax.evaluate",
    "signs-keras-h5": "signs_jax.keras_h5",
    "signs-export": "signs_jax.export",
    "signs-serve": "signs_jax.serve",
}


def test_console_entry_points_are_the_modules_mains():
    installed = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in TOOLS}
    assert set(installed) == set(TOOLS), "pip install -e . registers the console scripts"
    for name, module in TOOLS.items():
        assert installed[name].load() is importlib.import_module(module).main


@pytest.mark.parametrize("module", [*TOOLS.values(), "signs_jax.shifts", "signs_jax.calibrate"])
def test_help_exits_0_and_names_the_tool(module, capsys):
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(["--help"])
    assert stop.value.code == 0
    assert module.split(".")[-1] in capsys.readouterr().out
