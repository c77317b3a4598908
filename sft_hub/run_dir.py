"""The run directory: where a run writes, and the rules that keep earlier work safe.

- An existing non-empty run directory is refused unless the user asks to overwrite or resume.
- The final model is written to a hidden staging folder first and moved into place; the marker
  ``run_info.json`` (with ``"complete": true``) is written last, so a crash never leaves a final
  model that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

from .errors import RunDirError

if TYPE_CHECKING:  # pragma: no cover
    from .recipe.load import LoadedRecipe

CHECKPOINTS = "checkpoints"
STAGING = ".staging"
RUN_INFO = "run_info.json"


def run_directory(loaded: "LoadedRecipe") -> Path:
    """``output.dir`` (relative to the current directory), default ``runs/<recipe name>``."""
    return Path(loaded.recipe.output.dir or Path("runs") / loaded.name)


def is_complete(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / RUN_INFO).read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def check_run_dir(run_dir: Path, *, overwrite: bool, resume: bool) -> None:
    if resume:
        return
    if run_dir.is_file():
        raise RunDirError("the run directory path is a file", field="output.dir",
                          hint="choose another output.dir")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        state = "a finished run" if is_complete(run_dir) else "an unfinished run"
        raise RunDirError(
            f"run directory {run_dir} already holds {state}; refusing to overwrite it",
            field="output.dir",
            hint="pass --overwrite (or output.overwrite=true) to replace it, --resume to continue "
                 "it, or set output.dir=<another directory>")


def reset_run_dir(run_dir: Path) -> None:
    """Empty the run directory for a fresh run (the caller has checked the user allowed it)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


def is_checkpoint(path: Path) -> bool:
    """A checkpoint the Trainer finished writing: its ``trainer_state.json``, written after the
    weights, optimizer and RNG states, is there and parses (a crash can cut a checkpoint short)."""
    try:
        return "global_step" in json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False


def find_checkpoint(run_dir: Path, resume: Union[bool, str]) -> Path:
    """The checkpoint ``--resume`` continues from: the one given, or the run's latest complete one."""
    if isinstance(resume, str) and resume not in ("", "latest"):
        path = Path(resume)
        if not is_checkpoint(path):
            raise RunDirError(f"{path} is not a complete Trainer checkpoint (no readable "
                              "trainer_state.json)", field="--resume",
                              hint="pass a checkpoint-<step> directory")
        return path
    steps = sorted((int(p.name.split("-")[-1]), p)
                   for p in (run_dir / CHECKPOINTS).glob("checkpoint-*")
                   if p.name.split("-")[-1].isdigit())
    complete = [p for _, p in steps if is_checkpoint(p)]
    if not complete:
        raise RunDirError(f"no complete checkpoint to resume from in {run_dir / CHECKPOINTS}",
                          field="--resume", hint="train without --resume to start afresh")
    if complete[-1] != steps[-1][1]:
        print(f"note: skipping {steps[-1][1].name}, cut short before it was complete",
              file=sys.stderr)
    return complete[-1]


def publish_final(run_dir: Path, write: Callable[[Path], None], run_info: dict[str, Any]) -> None:
    """Write the final files through ``write(staging_dir)``, move them into ``run_dir``, mark done."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_INFO).unlink(missing_ok=True)
    staging = run_dir / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    write(staging)
    for item in staging.iterdir():
        target = run_dir / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()
    tmp = run_dir / (RUN_INFO + ".tmp")
    tmp.write_text(json.dumps(run_info, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, run_dir / RUN_INFO)
