"""Run a sweep in this process with test-only Trainer callbacks (for tests that kill or pace it).

    python tests/sweep_probe.py JOB.json

JOB: {"recipe": path, "overrides": [...], "storage": null, "resume": false,
      "hold_in_train": k, "hold_flag": path,     # the k-th trial of this process (1-based) writes
                                                 # hold_flag after its first step, then sleeps
      "barrier_dir": path, "barrier": n}         # each trial's start waits until n files are in
                                                 # barrier_dir (one per worker's first trial)
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


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    sweep(job["recipe"], job.get("overrides", []), resume=job.get("resume", False),
          storage=job.get("storage"), callbacks=[Probe(job)])


if __name__ == "__main__":
    main()
