"""Where `ganforge eval` keeps its records: every evaluation of a run, never overwritten.

`RUN/eval/<checkpoint>-<UTC time>.json` holds each evaluation (e.g. `step_000012000-20261124T221503Z.json`),
and `RUN/eval.json` is a copy of the latest, for scripts that read one file. A run evaluated by an
older ganforge has only `eval.json`; it is moved into `eval/` before the first new record, so no
number is lost. Files are written under a unique temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from ganforge import fsutil
from ganforge.errors import ConfigError

LATEST, FOLDER = "eval.json", "eval"


def check_output(run_dir: Path, json_path: Optional[Path], *, overwrite: bool = False) -> None:
    """Every place the record will be written: `--json FILE`, or the run's eval/ folder and eval.json.
    A kept record (a file in some run's eval/) is never replaced, even with `overwrite`."""
    from ganforge.outputs.files import check_output as check_file
    from ganforge.outputs.files import check_writable_folder, is_run_folder

    if json_path is not None:
        if json_path.is_dir():
            raise ConfigError(f"--json {json_path}: is a folder; give a file name such as {json_path / 'eval.json'}")
        real = json_path.resolve()
        kept = real.parent.name == FOLDER and is_run_folder(real.parent.parent)
        if kept or (real.name == LATEST and is_run_folder(real.parent)):
            raise ConfigError(f"--json {json_path}: is where ganforge keeps the evaluation records of run "
                              f"{real.parent.parent if kept else real.parent}, never overwritten; give a new file name")
        check_file(json_path, overwrite=overwrite, what="--json")
        return
    if (run_dir / FOLDER).exists() and not (run_dir / FOLDER).is_dir():
        raise ConfigError(f"{run_dir / FOLDER}: is a file, not the folder of evaluation records; move it away")
    if (run_dir / LATEST).is_dir():
        raise ConfigError(f"{run_dir / LATEST}: is a folder, not the latest evaluation record; move it away")
    check_writable_folder(run_dir / FOLDER, "run folder")


def _stamp(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def _write_new(folder: Path, stem: str, text: str) -> Path:
    """Write `text` to folder/stem.json, or stem-2.json, ... : the name is reserved exclusively first, so
    two evaluations finishing in the same second both keep their record."""
    for i in range(1, 1000):
        path = folder / (f"{stem}.json" if i == 1 else f"{stem}-{i}.json")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        try:
            fsutil.write_text(path, text)
        except BaseException:
            path.unlink(missing_ok=True)  # the name reserved above: no empty record is left
            raise
        return path
    raise ConfigError(f"{folder}: too many evaluation records named {stem}*")


def save(run_dir: Path, record: dict, *, json_path: Optional[Path] = None) -> list[Path]:
    """Write the record; return the files written (the kept record first)."""
    text = json.dumps(record, indent=2) + "\n"
    if json_path is not None:
        fsutil.write_text(json_path, text)
        return [json_path]
    folder, latest = run_dir / FOLDER, run_dir / LATEST
    folder.mkdir(parents=True, exist_ok=True)
    # An eval.json with no eval/ records beside it was written by an older ganforge, which kept only
    # the latest: it is filed under its own checkpoint and time first, so no number is lost.
    if latest.is_file() and not any(folder.glob("*.json")):
        try:
            old = json.loads(latest.read_text())
            stem = f"{Path(str(old.get('checkpoint', 'latest'))).name}-{_stamp(latest.stat().st_mtime)}"
        except (OSError, ValueError, AttributeError):
            stem = f"previous-{_stamp(latest.stat().st_mtime)}"
        _write_new(folder, stem, latest.read_text())
    # The record's own time, in the compact form (20261124T221503Z): names sort by time, and a name
    # has no ":" (which Windows file systems refuse).
    when = str(record["evaluated_at"]).replace("-", "").replace(":", "")
    try:
        kept = _write_new(folder, f"{Path(record['checkpoint']).name}-{when}", text)
    except OSError:
        if not any(folder.iterdir()):
            folder.rmdir()  # made by check_output for this record: no empty result is left
        raise
    # eval.json last: it is a copy, and a failure here leaves the kept record, the one that counts
    fsutil.write_text(latest, text)
    return [kept, latest]
