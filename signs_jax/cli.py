"""Command-line helpers: which data set a tool reads, and how a run records it in its config.json."""

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .errors import UserError

DATA_DIR_ENV = "SIGNS_DATA_DIR"
LOCAL_DATA_DIR = Path("datasets")
DATA_DIR_DEFAULTS = f"${DATA_DIR_ENV}, then ./{LOCAL_DATA_DIR} if it holds data, then the SIGNS copy inside the package"
DATA_DIR_HELP = f"SIGNS h5 pair or image folders (default: {DATA_DIR_DEFAULTS})"


def data_dir(cli_value: Optional[str] = None) -> Path:
    """--data-dir, then $SIGNS_DATA_DIR, then ./datasets if it holds data, else the packaged SIGNS copy.

    A directory the user named (flag or variable) must hold data: falling back to the packaged copy
    would train or evaluate on data other than the one asked for.
    """
    from .data import PACKAGED_SIGNS, holds_data, missing_data_message

    for value, given_by in ((cli_value, "--data-dir"), (os.environ.get(DATA_DIR_ENV), f"${DATA_DIR_ENV}")):
        if value:
            if not holds_data(value):
                raise UserError(missing_data_message(value, given_by))
            return Path(value)
    return LOCAL_DATA_DIR if holds_data(LOCAL_DATA_DIR) else Path(PACKAGED_SIGNS)


def data_record(directory: Path) -> Dict[str, Any]:
    """The config.json entries that name a run's data: a directory's absolute path, or the packaged copy.

    The packaged copy is recorded by name, not by path, so that a run still finds it after the package
    is reinstalled or moved (another virtual environment, another Python version).
    """
    from .data import PACKAGED_SOURCE, is_packaged

    if is_packaged(directory):
        return {"data_dir": None, "data": PACKAGED_SOURCE}
    return {"data_dir": str(Path(directory).absolute())}


def recorded_data_dir(cfg: Dict[str, Any], run_dir: Path, hint: str = "") -> Path:
    """The data a run was trained on, from its config.json (as `data_record` wrote it, or an older path)."""
    from .data import PACKAGED_SIGNS, holds_data, missing_data_message

    if cfg.get("data_dir") is None:
        return Path(PACKAGED_SIGNS)
    directory = Path(cfg["data_dir"])
    if not holds_data(directory):
        raise UserError(f"{missing_data_message(directory)}; {run_dir} was trained on it{hint}")
    return directory


def recorded_split(cfg: Dict[str, Any]) -> Tuple[float, int]:
    """(test fraction, seed) with which a run split a folder of class sub-folders, from its config.json."""
    from .data import DEFAULT_TEST_FRACTION

    data_section = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    run_section = cfg.get("run") if isinstance(cfg.get("run"), dict) else {}
    return data_section.get("test_fraction", DEFAULT_TEST_FRACTION), run_section.get("seed", cfg.get("seed", 0))
