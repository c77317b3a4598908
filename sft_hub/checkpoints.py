"""Lean run directories: once a run is complete, its intermediate checkpoints are removed.

Checkpoints (``<run dir>/checkpoints/``) exist so that an unfinished run can be continued with
``--resume``; they hold optimizer and scheduler states, several times the model's size. After the
run is complete (``run_info.json`` written) they are removed unless ``output.keep_checkpoints:
true``. What stays: the final model, its records (``metrics.json``, ``trainer_state.json`` with
every logged step and evaluation, ``run_info.json``) and, in ``run_info.json`` under
``checkpoints``, the best checkpoint's step, metric and evaluation figures.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

from .run_dir import CHECKPOINTS

REMOVING = ".checkpoints.removing"


def _step_of(checkpoint: Optional[str]) -> Optional[int]:
    if not checkpoint:
        return None
    tail = str(checkpoint).rstrip("/").rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def checkpoint_record(trainer_state: Any, metric: Optional[str], *, keep: bool) -> dict[str, Any]:
    """What ``run_info.json`` says about the checkpoints: kept or removed, and the best one."""
    step = _step_of(getattr(trainer_state, "best_model_checkpoint", None))
    best: dict[str, Any] = {}
    if step is not None:
        evaluation = next((entry for entry in reversed(trainer_state.log_history)
                           if entry.get("step") == step and "eval_loss" in entry), {})
        best = {"step": step, "metric": metric, "value": trainer_state.best_metric,
                "eval": {k: v for k, v in evaluation.items()
                         if k.startswith("eval_") and isinstance(v, (int, float))}}
    return {"kept": keep, "best": best or None}


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def prune_checkpoints(run_dir: Path, *, keep: bool) -> tuple[int, int]:
    """Remove ``run_dir/checkpoints`` of a complete run (unless ``keep``); returns (checkpoints,
    bytes) removed. The folder is renamed first, so an interrupted removal leaves no half
    checkpoint that ``--resume`` could mistake for a real one."""
    folder = Path(run_dir) / CHECKPOINTS
    if keep or not folder.is_dir():
        return 0, 0
    count = sum(1 for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-"))
    size = folder_size(folder)
    trash = Path(run_dir) / REMOVING
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return count, size
