"""Experiment trackers (``training.report_to``) write into the run directory: ``<run dir>/logs/``.

- ``tensorboard`` (extra ``sft-hub[tensorboard]``): event files in ``logs/tensorboard/``, pushed
  with the run, so the Hub shows its "Training metrics" tab.
- ``trackio`` (extra ``sft-hub[trackio]``): local mode (no Space, no network) keeps its database in
  ``logs/trackio/`` (``TRACKIO_DIR``); ``TRACKIO_DIR=<run dir>/logs/trackio trackio show`` opens
  the dashboard. A ``TRACKIO_DIR`` already set in the environment is left alone.

transformers 5 has no ``logging_dir`` argument: its TensorBoard callback writes to its
``logging_dir`` attribute (``TENSORBOARD_LOGGING_DIR`` or ``<output_dir>/runs/...``), which is
set here; trackio reads ``TRACKIO_DIR`` when it is first imported, while the Trainer is built.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LOGS = "logs"
TENSORBOARD = "tensorboard"
TRACKIO = "trackio"


def reporters(report_to: Any) -> list[str]:
    if report_to in (None, "none", "", []):
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return [str(n).lower() for n in names if str(n).lower() != "none"]


def before_trainer(run_dir: Path, report_to: Any) -> None:
    """Settings the trackers read while the Trainer is built (trackio: its directory)."""
    names = reporters(report_to)
    if TRACKIO in names or "all" in names:
        os.environ.setdefault("TRACKIO_DIR", str((Path(run_dir) / LOGS / TRACKIO).resolve()))


def direct_logs(trainer: Any, run_dir: Path) -> None:
    """Point the Trainer's TensorBoard callback (when report_to has one) at ``logs/tensorboard``."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
            callback.logging_dir = str(Path(run_dir) / LOGS / TENSORBOARD)
