"""The run directory: where a run writes, and the rules that keep earlier work safe.

- sft-hub only ever deletes or replaces its own runs: a directory holding a finished run
  (``run_info.json`` with ``"complete": true``) or the marker ``.sft-hub-run`` that every run writes
  first. Any other non-empty folder, a symlink, the current directory or one of its parents, the
  home directory and filesystem roots are refused, with or without ``--overwrite``.
- ``--overwrite`` never deletes first: the new run trains in a sibling folder
  (``.<name>.sft-hub-new``), and only when it is complete is the previous run moved aside
  (``.<name>.sft-hub-old``), the new one moved into place and the old one removed. Killed at any
  point (kill -9 included), the previous run is still there; :func:`prepare_run_dir` tidies up what
  an interrupted replacement left on the next start.
- The final model is written to a hidden staging folder first and moved into place; the marker
  ``run_info.json`` (with ``"complete": true``) is written last, so a crash never leaves a final
  model that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

from .errors import RunDirError

if TYPE_CHECKING:  # pragma: no cover
    from .recipe.load import LoadedRecipe

CHECKPOINTS = "checkpoints"
STAGING = ".staging"
RUN_INFO = "run_info.json"
MARKER = ".sft-hub-run"  # written first into every folder a run trains in
NEW_SUFFIX, OLD_SUFFIX = ".sft-hub-new", ".sft-hub-old"


def run_directory(loaded: "LoadedRecipe") -> Path:
    """``output.dir`` (relative to the current directory), default ``runs/<recipe name>``."""
    return Path(loaded.recipe.output.dir or Path("runs") / loaded.name)


def is_complete(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / RUN_INFO).read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def is_sft_hub_run(path: Path) -> bool:
    """A folder sft-hub made: a finished run, or one that holds the marker of a started run."""
    return path.is_dir() and not path.is_symlink() and (is_complete(path) or (path / MARKER).is_file())


def _protected(path: Path) -> str | None:
    """Why ``path`` may never be replaced, whatever it holds (None: it may be, if it is ours)."""
    if path.is_symlink():
        return "is a symbolic link"
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd:
        return "is the current directory"
    if resolved in cwd.parents:
        return "is a parent of the current directory"
    if resolved == Path.home().resolve():
        return "is the home directory"
    if resolved.parent == resolved:
        return "is a filesystem root"
    return None


@dataclass(frozen=True)
class RunPlace:
    """Where a run lives (``final``) and where it trains (``work``: the same folder, or a sibling
    when it replaces a previous run that must survive until the new one is complete)."""

    final: Path
    work: Path

    @property
    def replaces(self) -> bool:
        return self.work != self.final

    @property
    def aside(self) -> Path:
        return self.final.parent / f".{self.final.name}{OLD_SUFFIX}"


def place_for(run_dir: Path, *, overwrite: bool) -> RunPlace:
    """The :class:`RunPlace` of a run (pure: every process of a distributed run computes the same)."""
    run_dir = Path(run_dir)
    if overwrite and run_dir.is_dir() and any(run_dir.iterdir()):
        return RunPlace(run_dir, run_dir.parent / f".{run_dir.name}{NEW_SUFFIX}")
    return RunPlace(run_dir, run_dir)


def check_run_dir(run_dir: Path, *, overwrite: bool, resume: bool) -> RunPlace:
    """Refuse a run directory that would lose work; return where the run trains. No side effects."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink() and (overwrite or (run_dir.is_dir() and any(run_dir.iterdir()))):
        raise RunDirError(f"{run_dir} is a symbolic link; sft-hub does not replace links",
                          field="output.dir", hint="set output.dir to the real directory")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError("the run directory path is a file", field="output.dir",
                          hint="choose another output.dir")
    protected = _protected(run_dir) if run_dir.exists() else None
    if protected:
        raise RunDirError(f"{run_dir} {protected}; sft-hub will not train into it",
                          field="output.dir",
                          hint="set output.dir to a directory of its own, e.g. runs/<name>")
    if resume or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return RunPlace(run_dir, run_dir)
    if not is_sft_hub_run(run_dir):
        raise RunDirError(
            f"{run_dir} is not empty and is not an sft-hub run directory (it has no {RUN_INFO} "
            f"nor {MARKER}); sft-hub never writes into or deletes other folders",
            field="output.dir", hint="set output.dir to a new or empty directory")
    if not overwrite:
        state = "a finished run" if is_complete(run_dir) else "an unfinished run"
        raise RunDirError(
            f"run directory {run_dir} already holds {state}; refusing to overwrite it",
            field="output.dir",
            hint="pass --overwrite (or output.overwrite=true) to replace it once the new run is "
                 "complete, --resume to continue it, or set output.dir=<another directory>")
    place = place_for(run_dir, overwrite=True)
    if place.work.exists() and not is_sft_hub_run(place.work):
        raise RunDirError(f"{place.work} exists and is not an sft-hub run directory",
                          field="output.dir", hint=f"move {place.work} away")
    return place


def recover_interrupted_replace(run_dir: Path) -> None:
    """Finish or undo an ``--overwrite`` replacement that a kill interrupted between its steps
    (main process only, before :func:`check_run_dir`)."""
    place = RunPlace(Path(run_dir), Path(run_dir).parent / f".{Path(run_dir).name}{NEW_SUFFIX}")
    if not is_sft_hub_run(place.aside):
        return
    if place.final.exists():  # the new run is in place; the old one was not yet removed
        shutil.rmtree(place.aside)
    elif is_complete(place.work):  # killed between the two renames: finish the swap
        os.replace(place.work, place.final)
        shutil.rmtree(place.aside)
    else:
        os.replace(place.aside, place.final)
    print(f"note: tidied up an interrupted --overwrite of {place.final}", file=sys.stderr)


def start_run_dir(place: RunPlace, *, recipe: str, resume: bool) -> None:
    """Create the folder the run trains in, with its marker (main process only)."""
    if place.replaces and place.work.exists():  # an earlier, interrupted replacement attempt
        shutil.rmtree(place.work)
    place.work.mkdir(parents=True, exist_ok=True)
    if not resume or not (place.work / MARKER).exists():
        marker = {"sft_hub_run": True, "recipe": recipe, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (place.work / MARKER).write_text(json.dumps(marker), encoding="utf-8")


def abandon_run_dir(place: RunPlace) -> None:
    """After a failure: remove what this run created, unless it is a fresh run with a checkpoint
    that ``--resume`` can continue. A previous run being replaced is never touched."""
    if not is_sft_hub_run(place.work) or is_complete(place.work):
        return
    checkpoints = place.work / CHECKPOINTS
    if (not place.replaces and checkpoints.is_dir()
            and any(is_checkpoint(p) for p in checkpoints.iterdir())):
        return
    shutil.rmtree(place.work, ignore_errors=True)


def finish_run_dir(place: RunPlace) -> None:
    """Put a complete new run in place of the previous one: aside, in, then remove the old."""
    if not place.replaces:
        return
    aside = place.aside
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(place.final, aside)
    os.replace(place.work, place.final)
    shutil.rmtree(aside)


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
        if is_complete(run_dir):
            raise RunDirError(f"{run_dir} holds a complete run; its intermediate checkpoints were "
                              "removed when it finished", field="--resume",
                              hint="train again with --overwrite (set output.keep_checkpoints: "
                                   "true to keep the checkpoints of a complete run)")
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
