"""Probes that watch a real training run from inside, for the distributed and resume tests.

* :class:`BatchProbe` records, per optimizer step, which training examples this process ran
  forward (by a digest of their token ids), a digest of the weights it ends with, and the datasets
  cache files it reused instead of computing; :meth:`BatchProbe.dump` writes that to JSON.
* :class:`HoldAfterSave` pauses the run once a checkpoint at or after a given step is on disk, so
  a test can kill the process at a known point (the kill itself is a real SIGKILL).
* :func:`no_dropout_copy`: a saved model with dropout off, for runs compared across batch splits.

Used in-process by pytest and as a script that ``accelerate launch`` starts on every rank::

    ACCELERATE_USE_CPU=true accelerate launch --config_file accelerate_configs/cpu_2proc.yaml \\
        tests/training_probes.py JOBS.json

``JOBS.json`` lists runs done one after the other in the same processes: ``[{"recipe": path,
"overrides": [...], "record": "out-{rank}.json", "hold_after_step": null}]``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

CACHE_HIT = "Loading cached processed dataset"


def row_key(ids: list[int]) -> str:
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:12]


def weights_digest(model: Any, trainable_only: bool = False) -> str:
    """sha256 of every parameter's float32 bytes, in name order."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if trainable_only and not p.requires_grad:
            continue
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _CacheHits(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if CACHE_HIT in message:
            self.hits.append(message.rsplit("/", 1)[-1])


class BatchProbe(TrainerCallback):
    """What one process trained on and ended with."""

    def __init__(self):
        import datasets

        from sft_hub import console

        console.configure(console.DEBUG)  # library INFO records (datasets' cache hits) pass
        self.steps: list[list[str]] = []
        self._current: list[str] = []
        self.final: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self._cache = _CacheHits()
        self._verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity_info()
        datasets.logging.get_logger().addHandler(self._cache)

    def _record_rows(self, module, args, kwargs) -> None:
        if not module.training:
            return
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        for row, m in zip(ids.tolist(), mask.tolist()):
            self._current.append(row_key([t for t, keep in zip(row, m) if keep]))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from accelerate import PartialState

        s = PartialState()
        self.info = {"rank": s.process_index, "world_size": s.num_processes,
                     "distributed_type": str(s.distributed_type.value), "backend": s.backend,
                     "activation_checkpointing": bool(getattr(model, "is_activation_checkpointing",
                                                              False))}
        model.register_forward_pre_hook(self._record_rows, with_kwargs=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(self._current)
        self._current = []

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.final = {"all": weights_digest(model), "trainable": weights_digest(model, True)}

    def dump(self, path: Path) -> dict[str, Any]:
        import datasets

        datasets.logging.get_logger().removeHandler(self._cache)
        datasets.logging.set_verbosity(self._verbosity)
        record = {**self.info, "steps": self.steps, "final": self.final,
                  "cache_hits": self._cache.hits}
        Path(path).write_text(json.dumps(record, indent=1), encoding="utf-8")
        return record


class HoldAfterSave(TrainerCallback):
    """Once a checkpoint at or after ``step`` is saved: write ``flag`` and wait to be killed."""

    def __init__(self, step: int, flag: Path):
        self.step, self.flag = step, Path(flag)

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            self.flag.write_text(str(state.global_step))
            while True:
                time.sleep(1)


def no_dropout_copy(model_dir: Path, dest: Path) -> Path:
    """A copy of a saved BERT-like model with dropout off: runs that split the same batches
    differently (processes, gradient accumulation) then compute the same thing."""
    import shutil

    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def kill_at_checkpoint(recipe: Path, overrides: list[str], step: int, cwd: Path) -> None:
    """Run ``recipe`` (``--overwrite`` semantics, as :func:`run_job`) in a child process and SIGKILL
    it once a checkpoint at or after ``step`` is on disk."""
    import signal
    import subprocess

    import pytest

    flag = cwd / "checkpoint-saved"
    jobs = cwd / "jobs.json"
    jobs.write_text(json.dumps([{"recipe": str(recipe), "overrides": overrides,
                                 "hold_after_step": step, "flag": str(flag)}]))
    child = subprocess.Popen([sys.executable, __file__, str(jobs)],
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not flag.exists():
        if child.poll() is not None:
            pytest.fail(f"the run ended before its checkpoint:\n{child.stderr.read()[-3000:]}")
        if time.time() > deadline:
            child.kill()
            pytest.fail("no checkpoint within 300 s")
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def run_job(job: dict[str, Any]) -> Optional[dict[str, Any]]:
    from accelerate import PartialState

    from sft_hub.training import train

    probe = BatchProbe()
    callbacks: list = [probe]
    if job.get("hold_after_step"):
        callbacks.append(HoldAfterSave(job["hold_after_step"], job["flag"]))
    train(job["recipe"], job.get("overrides", []), overwrite=not job.get("resume"),
          resume=job.get("resume"), callbacks=callbacks)
    rank = PartialState().process_index
    if job.get("record"):
        return probe.dump(Path(job["record"].format(rank=rank)))
    return None


def main(argv: list[str]) -> int:
    jobs = json.loads(Path(argv[0]).read_text())
    for job in jobs:
        run_job(job)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))
