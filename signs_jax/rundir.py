"""The directory a training run writes: made under a name no other start gets, locked while training, removed
again when the start fails before its first checkpoint; and its metrics.jsonl.

Only the primary process of a multi-process run checks, makes, locks or removes anything.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import UserError, writing


def find_run(workdir: Path, run_name: Optional[str]) -> Path:
    """The run --resume continues: `run_name` in `workdir`, else the newest run there."""
    from .checkpoints import runs_in, written_at

    workdir = Path(workdir)
    path = workdir / run_name if run_name else max(runs_in(workdir), key=written_at, default=None)
    if path is None or not (path / "config.json").is_file():
        raise UserError(f"{path or workdir}: no run to resume")
    return path


class RunDirectory:
    def __init__(self, workdir: Path, run_name: Optional[str], primary: bool = True):
        self.workdir = Path(workdir)
        self.run_name = run_name  # None: a default name, made unique at creation
        self.primary = primary
        self.path: Optional[Path] = None
        self.created = False  # made by this process: a failed start may remove it
        self.lock = None

    def open_existing(self, path: Path) -> Path:
        """A run to resume, locked."""
        from .checkpoints import RunLock

        self.path = Path(path)
        if self.primary:
            self.lock = RunLock(self.path).acquire()
        return self.path

    def prepare_new(self, default_name: str) -> Path:
        """Check that a new run's name is free and the work directory writable; nothing is written but the
        work directory itself."""
        from .checkpoints import has_checkpoint

        if self.primary:
            try:
                self.workdir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"{self.workdir}: cannot create the work directory ({err.strerror})") from None
            if not os.access(self.workdir, os.W_OK | os.X_OK):
                raise UserError(f"{self.workdir}: work directory is not writable")
        self.path = self.workdir / (self.run_name or default_name)
        if self.primary and self.run_name:
            self._check_free(has_checkpoint)
        return self.path

    def _check_free(self, has_checkpoint) -> None:
        """A new run's directory may be missing, empty, or an incomplete start (config, no checkpoint) to start
        again."""
        path = self.path
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise UserError(f"{path}: exists and is not a run directory; choose another --run")
        if not path.exists():
            return
        if has_checkpoint(path):
            raise UserError(f"{path}: run already exists (add --resume to continue it, or choose another --run)")
        if any(path.iterdir()) and not any((path / name).exists() for name in ("config.json", "ckpt", "train.lock")):
            raise UserError(f"{path}: exists and is not a training run (not overwriting it); choose another --run")

    def create(self) -> Path:
        """Make the new run's directory (a default name gets a suffix when another start took it) and lock it."""
        from .checkpoints import RunLock, has_checkpoint

        base = self.path
        for attempt in range(2, 1000):
            try:
                self.path.mkdir()
                self.created = True
                break
            except FileExistsError:
                if self.run_name:  # an explicit name: start an incomplete run again, under its lock
                    self.lock = RunLock(self.path).acquire()
                    self._check_free(has_checkpoint)
                    return self.path
                self.path = base.with_name(f"{base.name}-{attempt}")
            except OSError as err:
                raise UserError(f"{self.path}: cannot create the run directory ({err.strerror})") from None
        else:
            raise UserError(f"{base}: every numbered variant of this run name is taken; pass --run NAME")
        try:
            self.lock = RunLock(self.path).acquire()
        except UserError:
            self.created = False  # another start took it over between mkdir and lock: it is theirs now
            raise
        return self.path

    def write_config(self, text: str) -> None:
        from .files import write_text_atomic

        write_text_atomic(self.path / "config.json", text)

    def discard_if_incomplete(self) -> None:
        """After a failed start: remove the directory this process made, unless a checkpoint made it a run."""
        from .checkpoints import has_checkpoint

        if self.primary and self.created and self.path is not None and not has_checkpoint(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
            self.created = False

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def append_jsonl(path: Path, record: Dict[str, Any]) -> None:
    """One record per line, written in one call: a crash leaves at most a cut last line, which readers skip."""
    with writing(path), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """The whole records of a metrics.jsonl (a line cut by a crash is left out)."""
    records = []
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
    return records
