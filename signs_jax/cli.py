"""Command-line helpers: the flags that choose a model, which data set a tool reads, and how a run records it."""

import argparse
import os
from pathlib import Path
from typing import Optional

from .errors import UserError

DATA_DIR_ENV = "SIGNS_DATA_DIR"
LOCAL_DATA_DIR = Path("datasets")
DATA_DIR_DEFAULTS = f"${DATA_DIR_ENV}, then ./{LOCAL_DATA_DIR} if it holds data, then the SIGNS copy inside the package"
DATA_DIR_HELP = f"SIGNS h5 pair or image folders (default: {DATA_DIR_DEFAULTS})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose refusal of a flag is one line (argparse's own prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_weights_arguments(parser) -> None:
    """--weights and --workdir, as every tool that reads a model takes them (`weights.load_weights`)."""
    from . import config

    parser.add_argument("--weights", help="a run directory, a work directory (its newest run) or a Keras .h5")
    parser.add_argument(
        "--workdir", default=str(config.DEFAULT_WORKDIR), help="where to look for runs (default: %(default)s)"
    )


def data_dir(cli_value: Optional[str] = None) -> Path:
    """--data-dir, then $SIGNS_DATA_DIR, then ./datasets if it holds data, else the packaged SIGNS copy.

    A directory the user named (flag or variable) must hold data: falling back to the packaged copy
    would train or evaluate on data other than the one asked for. `packaged:SIGNS` names the packaged copy.
    """
    from .config import PACKAGED_DATA
    from .data import PACKAGED_SIGNS, holds_data, missing_data_message

    for value, given_by in ((cli_value, "--data-dir"), (os.environ.get(DATA_DIR_ENV), f"${DATA_DIR_ENV}")):
        if value == PACKAGED_DATA:
            return Path(PACKAGED_SIGNS)
        if value:
            if not holds_data(value):
                raise UserError(missing_data_message(value, given_by))
            return Path(value)
    return LOCAL_DATA_DIR if holds_data(LOCAL_DATA_DIR) else Path(PACKAGED_SIGNS)


def data_record(directory: Path) -> str:
    """How a run records its data (`data.dir` of its config): a directory's absolute path, or the packaged copy
    by name, so that a run still finds it after the package is reinstalled or moved."""
    from .config import PACKAGED_DATA
    from .data import is_packaged

    return PACKAGED_DATA if is_packaged(directory) else str(Path(directory).absolute())


def recorded_data_dir(config, run_dir: Path, hint: str = "") -> Path:
    """The data a run was trained on, from its TrainConfig (`data.dir`, as `data_record` wrote it)."""
    from .config import PACKAGED_DATA
    from .data import PACKAGED_SIGNS, holds_data, missing_data_message

    if config.data.dir in (None, PACKAGED_DATA):
        return Path(PACKAGED_SIGNS)
    directory = Path(config.data.dir)
    if not holds_data(directory):
        raise UserError(f"{missing_data_message(directory)}; {run_dir} was trained on it{hint}")
    return directory
