"""A resumed run's ``metrics.json`` describes the whole run, not only the last segment.

``Trainer.train(resume_from_checkpoint=...)`` reports the loss and runtime of the steps it ran
itself (a loss of 0.0 and a runtime of seconds when resumed from the last checkpoint). Here the
time already spent is carried in each checkpoint (``sft_hub_time.json``, written by
:func:`time_keeper`'s callback when the Trainer saves), and :func:`whole_run_train_metrics`
combines the two segments: the loss before the resume is the step-weighted mean of the losses the
Trainer logged up to the checkpoint (its ``log_history`` is restored with the checkpoint), the
loss after it is the Trainer's own figure for its steps.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

TIME_FILE = "sft_hub_time.json"


def _read_seconds(checkpoint: Optional[Path]) -> float:
    if checkpoint is None:
        return 0.0
    try:
        return float(json.loads((Path(checkpoint) / TIME_FILE).read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def checkpoint_step(checkpoint: Optional[Path]) -> int:
    if checkpoint is None:
        return 0
    try:
        return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def time_keeper(resumed_from: Optional[Path]):
    """A TrainerCallback that writes the run's training seconds so far into every checkpoint."""
    from transformers import TrainerCallback

    class TimeKeeper(TrainerCallback):
        def __init__(self):
            self.before = _read_seconds(resumed_from)
            self.started = time.time()

        @property
        def seconds(self) -> float:
            return self.before + time.time() - self.started

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir() and state.is_world_process_zero:
                (folder / TIME_FILE).write_text(json.dumps({"train_seconds": round(self.seconds, 3)}),
                                                encoding="utf-8")

    return TimeKeeper()


def _logged_mean_loss(log_history: list[dict[str, Any]], up_to_step: int) -> Optional[float]:
    """Step-weighted mean of the training losses logged up to ``up_to_step``."""
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        step = entry.get("step", 0)
        if "loss" not in entry or step > up_to_step or step <= previous:
            continue
        total += float(entry["loss"]) * (step - previous)
        steps += step - previous
        previous = step
    return total / steps if steps else None


def whole_run_train_metrics(metrics: dict[str, float], *, log_history: list[dict[str, Any]],
                            resumed_from: Optional[Path], global_step: int,
                            prior_seconds: float, samples_per_step: int) -> dict[str, float]:
    """``metrics`` (the Trainer's train figures without the ``train_`` prefix) for the whole run."""
    if resumed_from is None:
        return metrics
    out = dict(metrics)
    start = checkpoint_step(resumed_from)
    session = max(global_step - start, 0)
    before = _logged_mean_loss(log_history, start)
    if "loss" in metrics and before is not None and global_step > 0:
        out["loss"] = (before * start + float(metrics["loss"]) * session) / max(start + session, 1)
    runtime = prior_seconds + float(metrics.get("runtime", 0.0))
    out["runtime"] = round(runtime, 4)
    if runtime > 0:
        out["steps_per_second"] = round(global_step / runtime, 3)
        out["samples_per_second"] = round(global_step * samples_per_step / runtime, 3)
    out["resumed_at_step"] = start
    return out
