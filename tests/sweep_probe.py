"""Run a sweep in this process with test-only Trainer callbacks (for tests that kill or pace it).

    python tests/sweep_probe.py JOB.json

JOB: {"recipe": path, "overrides": [...], "storage": null, "resume": false,
      "hold_in_train": k, "hold_flag": path,     # the k-th trial of this process (1-based) writes
                                                 # hold_flag after its first step, then sleeps
      "barrier_dir": path, "barrier": n,         # each trial's start waits until n files are in
                                                 # barrier_dir (one per worker's first trial)
      "prune_trial": k,                          # the pruner stops trial k at its first report
      "ranks_record": path}                      # under a launch: each rank writes path.format(
                                                 # rank=...) with the trials it trained and steps
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import TrainerCallback  # noqa: E402

from sft_hub.sweep import sweep  # noqa: E402


class Probe(TrainerCallback):
    def __init__(self, job: dict):
        self.job = job
        self.trainings = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainings += 1
        barrier = self.job.get("barrier_dir")
        if barrier and self.trainings == 1:
            Path(barrier).mkdir(parents=True, exist_ok=True)
            (Path(barrier) / str(os.getpid())).write_text("started")
            deadline = time.time() + 300
            while len(list(Path(barrier).iterdir())) < self.job["barrier"] and time.time() < deadline:
                time.sleep(0.2)

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainings == self.job.get("hold_in_train") and state.global_step == 1:
            Path(self.job["hold_flag"]).write_text("holding")
            while True:
                time.sleep(1)


class RankRecord(TrainerCallback):
    """What this rank trained: per trial (run directory), the world size and its optimizer steps."""

    def __init__(self, path: str):
        self.path, self.runs = path, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs.append({"output_dir": args.output_dir, "world_size": args.world_size,
                          "process_index": args.process_index, "steps": 0})

    def on_step_end(self, args, state, control, **kwargs):
        self.runs[-1]["steps"] = state.global_step
        Path(self.path.format(rank=args.process_index)).write_text(json.dumps(self.runs))


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    callbacks = [Probe(job)]
    if job.get("prune_trial") is not None:
        import optuna

        from sft_hub import sweep as sweep_module

        class PruneTrial(optuna.pruners.BasePruner):
            def prune(self, study, trial):
                return trial.number == job["prune_trial"]

        sweep_module._pruner = lambda plan: PruneTrial()
    if job.get("ranks_record"):
        callbacks.append(RankRecord(job["ranks_record"]))
    sweep(job["recipe"], job.get("overrides", []), resume=job.get("resume", False),
          storage=job.get("storage"), callbacks=callbacks)


if __name__ == "__main__":
    main()
